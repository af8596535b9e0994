//! Who may call what: every route the server serves against every kind of caller, over
//! real HTTP, with the expected status as data. Then the token lifecycle across two
//! replicas, and tokens' names as actors in the audit.

use crate::support;

use rollwave_server::Driver;
use rollwave_server::api::*;
use rollwave_server::clock::Clock;
use rollwave_server::leader::SWEEP;
use std::collections::BTreeSet;
use std::time::Duration;
use support::{ADMIN, TestServer};

const MANIFEST: &str = "\
service: web
environments:
  prod:
    regions:
      r1: { zones: { z1: 1 } }
      r2: { zones: { z2: 1 } }
stages:
  - { name: prod, environment: prod }
";

/// The callers, in the order of each row's statuses.
const WHO: [&str; 9] = ["none", "viewer", "deployer", "approver", "admin", "agent", "router", "revoked", "expired"];

/// A token of `role`, scoped where it needs to be: the agent speaks for z2-1 and the
/// router fronts r2, while the rows below are about z1-1 and r1.
fn token(admin: &rollwave_server::client::Client, role: &str, ttl_s: Option<u64>) -> String {
    let (host, region) = match role {
        "agent" => (Some("web/prod/z2-1".to_owned()), None),
        "router" => (None, Some("web/prod/r2".to_owned())),
        _ => (None, None),
    };
    admin.create_token(&CreateToken { role: role.into(), host, region, ttl_s, ..Default::default() }).unwrap().token
}

/// Sends a request with the token as bearer and as the dashboard's cookie, by hand;
/// returns the status from the status line alone (streams never end, redirects are not
/// followed).
fn status(base: &str, method: &str, path: &str, token: Option<&str>, form: bool, body: &str) -> u16 {
    use std::io::{BufRead, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let content_type = if form { "application/x-www-form-urlencoded" } else { "application/json" };
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\nCookie: rollwave_token={t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).unwrap();
    line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{method} {path}: {line:?}"))
}

const OPEN: [u16; 9] = [200; 9];
/// A read: a person's token, never a machine's, nor a revoked or expired one.
const READ: [u16; 9] = [401, 200, 200, 200, 200, 403, 403, 401, 401];
/// A dashboard page: the login form (401) for anyone who may not read.
const PAGE: [u16; 9] = [401, 200, 200, 200, 200, 401, 401, 401, 401];
/// Admin only; the admin's request gets past authorization to `ok`.
const fn admin(ok: u16) -> [u16; 9] {
    [401, 403, 403, 403, ok, 403, 403, 401, 401]
}
/// Deployer or more; they reach `ok`.
const fn deployer(ok: u16) -> [u16; 9] {
    [401, 403, ok, ok, ok, 403, 403, 401, 401]
}

/// (route as in the server's list, path, form body?, body, statuses). `{who}` in a body is
/// the caller's name, so that successful creations do not collide.
fn table() -> Vec<(&'static str, &'static str, bool, &'static str, [u16; 9])> {
    let push =
        r#"{"service":"web","environment":"prod","samples":[{"host":"z1-1","version":"v1","requests":1,"errors":0}]}"#;
    let register = r#"{"service":"web","environment":"prod","host":"z1-1","region":"r1","zone":"z1"}"#;
    let flag_push = r#"{"service":"web","environment":"prod","region":"r1","counts":[]}"#;
    vec![
        ("GET /healthz", "/healthz", false, "", OPEN),
        ("GET /readyz", "/readyz", false, "", OPEN),
        // Counts per route and per service's release outcome only: scrapers need no token.
        ("GET /metrics", "/metrics", false, "", OPEN),
        ("GET /v1/openapi.json", "/v1/openapi.json", false, "", OPEN),
        ("GET /v1/services", "/v1/services", false, "", READ),
        // The admin gets as far as reading the (empty) manifest.
        ("POST /v1/services", "/v1/services", false, r#"{"manifest":"service: web\n"}"#, admin(422)),
        ("GET /v1/services/{service}", "/v1/services/web", false, "", READ),
        ("GET /v1/services/{service}/releases", "/v1/services/web/releases", false, "", READ),
        (
            "POST /v1/services/{service}/releases",
            "/v1/services/ghost/releases",
            false,
            r#"{"version":"v9"}"#,
            deployer(404),
        ),
        ("GET /v1/services/{service}/releases/{version}", "/v1/services/web/releases/v1", false, "", READ),
        (
            "POST /v1/services/{service}/releases/{version}/{action}",
            "/v1/services/web/releases/nosuch/approve",
            false,
            "{}",
            [401, 403, 403, 404, 404, 403, 403, 401, 401],
        ),
        ("POST /v1/services/{service}/hold", "/v1/services/ghost/hold", false, "{}", deployer(404)),
        ("POST /v1/services/{service}/resume", "/v1/services/ghost/resume", false, "{}", deployer(404)),
        ("POST /v1/hosts/register", "/v1/hosts/register", false, register, admin(200)),
        (
            "GET /v1/services/{service}/hosts/{environment}/{host}/desired",
            "/v1/services/web/hosts/prod/z1-1/desired",
            false,
            "",
            admin(200),
        ),
        (
            "POST /v1/services/{service}/hosts/{environment}/{host}/report",
            "/v1/services/ghost/hosts/prod/z1-1/report",
            false,
            r#"{"command":1,"ok":true}"#,
            admin(404),
        ),
        ("GET /v1/events", "/v1/events", false, "", READ),
        ("GET /v1/events/stream", "/v1/events/stream", false, "", READ),
        ("GET /v1/tokens", "/v1/tokens", false, "", admin(200)),
        ("POST /v1/tokens", "/v1/tokens", false, r#"{"role":"viewer","name":"made-by-{who}"}"#, admin(201)),
        ("DELETE /v1/tokens/{id}", "/v1/tokens/99999", false, "", admin(404)),
        ("POST /v1/tokens/{id}/revoke", "/v1/tokens/99999/revoke", false, "", admin(404)),
        ("GET /v1/audit/verify", "/v1/audit/verify", false, "", admin(200)),
        ("GET /v1/cluster", "/v1/cluster", false, "", READ),
        (
            "GET /v1/services/{service}/routes/{environment}/{region}",
            "/v1/services/web/routes/prod/r1",
            false,
            "",
            READ,
        ),
        ("GET /v1/services/{service}/flags/{environment}/{region}", "/v1/services/web/flags/prod/r1", false, "", READ),
        // The service's agents serve its flag sets on their hosts.
        (
            "GET /v1/services/{service}/flag-sets/{version}",
            "/v1/services/web/flag-sets/baseline",
            false,
            "",
            [401, 200, 200, 200, 200, 200, 403, 401, 401],
        ),
        ("POST /v1/flag-evaluations", "/v1/flag-evaluations", false, flag_push, admin(200)),
        ("GET /v1/metrics", "/v1/metrics?service=web&metric=error_rate&scope=prod", false, "", READ),
        ("POST /v1/metrics", "/v1/metrics", false, push, admin(200)),
        ("GET /", "/", false, "", PAGE),
        ("GET /services/{service}", "/services/web", false, "", PAGE),
        ("GET /services/{service}/releases/{version}", "/services/web/releases/v1", false, "", PAGE),
        ("GET /services/{service}/hosts", "/services/web/hosts", false, "", PAGE),
        ("GET /services/{service}/alarms", "/services/web/alarms", false, "", PAGE),
        ("GET /services/{service}/confirm", "/services/web/confirm?action=hold", false, "", PAGE),
        // The form's action needs a deployer (who reaches the unknown stage); the others are told so.
        (
            "POST /services/{service}/act",
            "/services/web/act",
            true,
            "action=hold&stage=nosuch",
            [401, 403, 404, 404, 404, 403, 403, 401, 401],
        ),
        ("GET /login", "/login", false, "", OPEN),
        ("POST /login", "/login", true, "token=rw_unknown&next=/", [401; 9]),
        ("POST /logout", "/logout", true, "", [303; 9]),
        ("GET /dashboard/live", "/dashboard/live", false, "", PAGE),
        ("GET /dashboard/dashboard.css", "/dashboard/dashboard.css", false, "", OPEN),
        ("GET /dashboard/dashboard.js", "/dashboard/dashboard.js", false, "", OPEN),
    ]
}

#[test]
fn every_route_answers_every_caller_as_the_table_says() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    let admin_client = s.client(Some(ADMIN));
    admin_client.apply("web.yaml", MANIFEST).unwrap();
    admin_client
        .create_release("web", &CreateRelease { version: "v1".into(), artifact: None, sha256: None, flags: None })
        .unwrap();

    let revoked = token(&admin_client, "viewer", None);
    let id = admin_client.tokens().unwrap().into_iter().max_by_key(|t| t.id).unwrap().id;
    admin_client.revoke_token(id).unwrap();
    let expired = token(&admin_client, "viewer", Some(1));
    let mut tokens: Vec<Option<String>> = vec![None];
    for role in ["viewer", "deployer", "approver"] {
        tokens.push(Some(token(&admin_client, role, None)));
    }
    tokens.push(Some(ADMIN.to_owned()));
    tokens.push(Some(token(&admin_client, "agent", None)));
    tokens.push(Some(token(&admin_client, "router", None)));
    tokens.push(Some(revoked));
    s.wait_for("the one-second token expires", || {
        s.advance(SWEEP);
        status(&s.base, "GET", "/v1/services", Some(&expired), false, "") == 401
    });
    tokens.push(Some(expired));

    let rows = table();
    let covered: BTreeSet<&str> = rows.iter().map(|r| r.0).collect();
    let served_list = rollwave_server::http::served_routes();
    let served: BTreeSet<&str> = served_list.iter().map(String::as_str).collect();
    assert_eq!(covered, served, "the table covers exactly the routes the server serves");
    assert_eq!(covered.len(), rows.len(), "each route once");

    let mut wrong = Vec::new();
    for (route, path, form, body, expected) in &rows {
        for (i, who) in WHO.iter().enumerate() {
            let method = route.split(' ').next().unwrap();
            let body = body.replace("{who}", who);
            let got = status(&s.base, method, path, tokens[i].as_deref(), *form, &body);
            if got != expected[i] {
                wrong.push(format!("{route} as {who}: {got}, expected {}", expected[i]));
            }
        }
    }
    assert!(wrong.is_empty(), "{} unexpected answer(s):\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn a_request_without_a_valid_token_is_refused_before_its_body_is_read() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    for token in [None, Some("rw_not_a_token")] {
        let (code, body) = s.raw("POST", "/v1/services/web/releases", token, b"{bad");
        assert_eq!((code, body.code.as_str()), (401, "unauthorized"), "{token:?}: {body:?}");
        assert!(!body.message.contains("JSON"), "nothing of the body is echoed: {body:?}");
    }
}

#[test]
fn token_names_follow_a_grammar_are_unique_and_cannot_pose_as_machines() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", MANIFEST).unwrap();
    let create = |name: &str| {
        let request = CreateToken { role: "deployer".into(), name: Some(name.into()), ..Default::default() };
        s.raw("POST", "/v1/tokens", Some(ADMIN), serde_json::to_string(&request).unwrap().as_bytes())
    };
    for machine in ["clock", "driver", "signals", "agent"] {
        let (code, body) = create(machine);
        assert_eq!((code, body.code.as_str()), (422, "invalid"), "{machine}: {body:?}");
        assert!(body.message.contains("reserved"), "{body:?}");
    }
    for bad in ["", "Admin", "-x", "a b", "<script>", &"a".repeat(65)] {
        let (code, body) = create(bad);
        assert_eq!((code, body.details["field"].as_str()), (422, Some("name")), "{bad:?}: {body:?}");
    }
    let (code, body) = create("admin");
    assert_eq!((code, body.code.as_str()), (409, "conflict"), "the bootstrap token is named admin: {body:?}");

    // A deployer named like a person is audited under its own name and id.
    let (code, _) = create("ci.deploy");
    assert_eq!(code, 201);
    let ci = admin.tokens().unwrap().into_iter().find(|t| t.name == "ci.deploy").unwrap();
    let list = serde_json::to_string(&admin.tokens().unwrap()).unwrap();
    assert!(!list.contains("rw_") && !list.contains("hash"), "a listing carries no secret: {list}");
    let secret = {
        let request = CreateToken { role: "deployer".into(), name: Some("ci.two".into()), ..Default::default() };
        admin.create_token(&request).unwrap().token
    };
    s.client(Some(&secret))
        .create_release("web", &CreateRelease { version: "v1".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    let audit = s.block_on(s.node.store.audit_entries()).unwrap();
    let release = audit.iter().find(|a| a.action == "create_release").expect("the release is audited");
    let two = admin.tokens().unwrap().into_iter().find(|t| t.name == "ci.two").unwrap();
    assert_eq!((release.actor.as_str(), release.token_id), ("ci.two", Some(two.id)));
    assert_ne!(ci.id, two.id);
    assert_eq!(s.block_on(s.node.store.verify_audit()).unwrap(), Ok(audit.len()));
}

#[test]
fn a_revoked_or_expired_token_is_refused_on_every_replica_within_a_second() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", MANIFEST).unwrap();
    let (second, _running) = s.replica("second");
    let viewer = token(&admin, "viewer", None);
    // Both replicas know the token (and remember it).
    for base in [&s.base, &second] {
        assert_eq!(status(base, "GET", "/v1/services", Some(&viewer), false, ""), 200);
    }
    let id = admin.tokens().unwrap().into_iter().max_by_key(|t| t.id).unwrap().id;
    admin.revoke_token(id).unwrap();
    assert_eq!(status(&s.base, "GET", "/v1/services", Some(&viewer), false, ""), 401, "at once where it was revoked");
    let revoked = s.virtual_clock().now();
    s.wait_for("the other replica refuses it", || {
        s.advance(SWEEP);
        status(&second, "GET", "/v1/services", Some(&viewer), false, "") == 401
    });
    let took = s.virtual_clock().now().duration_since(revoked);
    assert!(took <= jiff::SignedDuration::from_secs(1), "refused within the cache's second: {took:?}");

    let listed = admin.tokens().unwrap().into_iter().find(|t| t.id == id).unwrap();
    assert!(listed.revoked_ms.is_some());
    s.wait_for("its last use is written", || {
        // Written every 5 s.
        s.advance(SWEEP);
        admin.tokens().unwrap().into_iter().find(|t| t.id == id).is_some_and(|t| t.last_used_ms.is_some())
    });
    assert_eq!(status(&s.base, "DELETE", &format!("/v1/tokens/{id}"), Some(ADMIN), false, ""), 404, "revoked once");

    // A token whose role is lowered in the store loses its rights on both replicas.
    let deployer = token(&admin, "deployer", None);
    for base in [&s.base, &second] {
        assert_eq!(status(base, "POST", "/v1/services/ghost/hold", Some(&deployer), false, "{}"), 404, "may hold");
    }
    let id = admin.tokens().unwrap().into_iter().max_by_key(|t| t.id).unwrap().id;
    s.block_on(s.node.store.raw_execute(&format!("UPDATE tokens SET role = 'viewer' WHERE id = {id}"))).unwrap();
    for base in [&s.base, &second] {
        s.wait_for("the downgrade takes effect", || {
            s.advance(SWEEP);
            status(base, "POST", "/v1/services/ghost/hold", Some(&deployer), false, "{}") == 403
        });
    }
}

#[test]
fn scoped_machine_tokens_push_and_poll_only_for_their_own_place() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", MANIFEST).unwrap();
    let agent_z2 = token(&admin, "agent", None);
    let router_r2 = token(&admin, "router", None);
    let push = |host: &str| {
        format!(
            r#"{{"service":"web","environment":"prod","samples":[{{"host":"{host}","version":"v1","requests":5,"errors":0}}]}}"#
        )
    };
    let gauges = |host: &str| {
        format!(
            r#"{{"service":"web","environment":"prod","gauges":[{{"host":"{host}","version":"v1","name":"cpu_percent","value":5}}]}}"#
        )
    };
    let post = |token: &str, body: String| status(&s.base, "POST", "/v1/metrics", Some(token), false, &body);
    assert_eq!(post(&agent_z2, push("z2-1")), 200, "an agent's own host's traffic");
    assert_eq!(post(&agent_z2, push("z1-1")), 403, "not another host's traffic");
    assert_eq!(post(&agent_z2, gauges("z1-1")), 403, "nor its gauges");
    assert_eq!(post(&router_r2, push("z2-1")), 200, "a router's region's hosts");
    assert_eq!(post(&router_r2, push("z1-1")), 403, "not another region's");
    assert_eq!(post(&router_r2, gauges("z2-1")), 403, "routers push no gauges");
    let deployer = token(&admin, "deployer", None);
    assert_eq!(post(&deployer, push("z1-1")), 403, "people do not pose as machines");

    // Only the host's own agent polls for it (a poll is a heartbeat).
    let desired = |host: &str, token: &str| {
        status(&s.base, "GET", &format!("/v1/services/web/hosts/prod/{host}/desired"), Some(token), false, "")
    };
    assert_eq!(desired("z1-1", &agent_z2), 403);
    assert_eq!(status(&s.base, "GET", "/v1/services/web/hosts/prod/z1-1/desired", None, false, ""), 401);
    assert_eq!(desired("z2-1", &agent_z2), 200);
}

#[test]
fn anonymous_reads_open_reads_only() {
    let s = TestServer::builder().driver(Driver::Noop { delay: Duration::from_millis(20) }).anonymous_read().start();
    s.client(Some(ADMIN)).apply("web.yaml", MANIFEST).unwrap();
    assert_eq!(status(&s.base, "GET", "/v1/services/web", None, false, ""), 200);
    assert_eq!(status(&s.base, "GET", "/services/web", None, false, ""), 200);
    assert_eq!(
        status(&s.base, "GET", "/v1/services/web", Some("rw_not_a_token"), false, ""),
        401,
        "a bad token is still bad"
    );
    assert_eq!(status(&s.base, "POST", "/v1/services/web/hold", None, false, "{}"), 401);
    assert_eq!(status(&s.base, "GET", "/v1/tokens", None, false, ""), 401);
    assert_eq!(status(&s.base, "GET", "/v1/services/web/routes/prod/r1?router=127.0.0.1:1", None, false, ""), 403);
    assert!(s.node.routers_heard().is_empty());
}
