//! The API over real HTTP against a server in this process with a real SQLite file.

use crate::support;

use rollwave_server::Driver;
use rollwave_server::api::*;
use rollwave_server::client::{Client, ClientError};
use rollwave_server::leader::SWEEP;
use std::time::Duration;
use support::{ADMIN, TestServer};

const MANIFEST: &str = "\
service: shop
environments:
  beta: { regions: { r1: { zones: { b1: 2 } } } }
  prod: { regions: { r1: { zones: { p1: 2, p2: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 50%, bake: 1s }
  rolling: { batch: 50%, zone_bake: 0s }
stages:
  - { name: beta, environment: beta, bake: 0s }
  - { name: prod, environment: prod, approval: true, bake: 1s }
";

fn api_status(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other}"),
    }
}

#[test]
fn bad_requests_get_json_errors_and_write_nothing() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("shop.yaml", MANIFEST).unwrap();
    let viewer = admin
        .create_token(&CreateToken {
            role: "viewer".into(),
            name: Some("val".into()),
            host: None,
            ..Default::default()
        })
        .unwrap()
        .token;
    let before = s.applied_seq();

    let (status, body) = s.raw("POST", "/v1/services/shop/releases", None, br#"{"version":"v2"}"#);
    assert_eq!((status, body.code.as_str()), (401, "unauthorized"));
    let (status, body) = s.raw("POST", "/v1/services/shop/releases", Some(&viewer), br#"{"version":"v2"}"#);
    assert_eq!((status, body.code.as_str()), (403, "forbidden"));
    assert!(body.message.contains("deployer"), "{}", body.message);
    let (status, body) = s.raw("POST", "/v1/services/shop/releases", Some(ADMIN), br#"{"version": "v2",,}"#);
    assert_eq!((status, body.code.as_str()), (400, "bad_request"));
    assert_eq!(body.details["col"], 18, "the second comma");
    let (status, body) = s.oversized("/v1/services/shop/releases", rollwave_server::MAX_BODY + 1);
    assert_eq!((status, body.code.as_str()), (413, "too_large"));
    let (status, _) = s.raw("GET", "/v1/services/nope", Some(&viewer), b"");
    assert_eq!(status, 404);
    let (status, body) = s.raw("GET", "/v1/no/such/thing", None, b"");
    assert_eq!((status, body.code.as_str()), (404, "not_found"));
    let (status, body) =
        s.raw("POST", "/v1/services/shop/releases", Some(ADMIN), br#"{"version":"v2","sha256":"xyz"}"#);
    assert_eq!((status, body.code.as_str()), (422, "invalid"));

    let err = admin.apply("bad.yaml", "service: shop\nstages: []\nwatch: forever\n").unwrap_err();
    match err {
        ClientError::Api { status, code, details, .. } => {
            assert_eq!((status, code.as_str()), (422, "invalid"));
            let items = details.as_array().unwrap();
            assert!(items.iter().any(|d| d["line"] == 3 && d["col"] == 8), "{details}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(api_status(admin.action("shop", "v9", rollwave_api::OperatorAction::Approve, None).unwrap_err()).0, 404);
    admin
        .create_release("shop", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    let after_create = s.applied_seq();
    assert!(after_create > before);
    assert_eq!(
        api_status(admin.action("shop", "v2", rollwave_api::OperatorAction::Retry, None).unwrap_err()),
        (409, "conflict".to_owned())
    );
    assert_eq!(
        api_status(
            admin
                .create_release(
                    "shop",
                    &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None }
                )
                .unwrap_err()
        )
        .0,
        409
    );
    // Refused requests left no trace in the log.
    let log = s.block_on(s.node.store.read_log(after_create, 1000, Some(&["input"]))).unwrap();
    assert!(log.iter().all(|r| r.body.contains("\"tick\"") || r.body.contains("host_report")), "{log:?}");
}

#[test]
fn a_release_rolls_out_with_the_noop_driver_and_its_timeline_is_kept() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    let summary = admin.apply("shop.yaml", MANIFEST).unwrap();
    assert_eq!((summary.name.as_str(), summary.hosts), ("shop", 6));
    let sha = "a".repeat(64);
    let r = admin
        .create_release(
            "shop",
            &CreateRelease {
                version: "v2".into(),
                artifact: Some("https://example.invalid/v2.tgz".into()),
                sha256: Some(sha.clone()),
                flags: None,
            },
        )
        .unwrap();
    assert_eq!(r.outcome, rollwave_api::Outcome::InProgress);
    assert_eq!(r.sha256.as_deref(), Some(sha.as_str()));

    // Prod needs approval: the release waits at its gate and says why.
    s.wait_for("v2 waits for approval", || {
        // The one-box bakes for a second of virtual time.
        s.advance(SWEEP);
        admin.status("shop").unwrap().blocked.iter().any(|b| b.reason.contains("approval"))
    });
    let viewer = admin.create_token(&CreateToken { role: "viewer".into(), ..Default::default() }).unwrap().token;
    let viewer_view = s.client(Some(&viewer)).release("shop", "v2").unwrap();
    assert!(viewer_view.release.reached.contains(&"beta".to_owned()));
    admin.action("shop", "v2", rollwave_api::OperatorAction::Approve, None).unwrap();
    s.wait_for("v2 completes", || {
        s.advance(SWEEP);
        admin.release("shop", "v2").unwrap().release.outcome == rollwave_api::Outcome::Completed
    });

    let status = admin.status("shop").unwrap();
    for env in &status.environments {
        assert_eq!(env.versions, vec![("v2".to_owned(), if env.environment == "beta" { 2 } else { 4 })]);
    }
    assert!(status.blocked.is_empty(), "{:?}", status.blocked);
    let detail = admin.release("shop", "v2").unwrap();
    use rollwave_api::EventKind;
    let kinds: Vec<EventKind> = detail.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&EventKind::ReleaseCreated));
    assert_eq!(kinds.last(), Some(&EventKind::ReleaseCompleted));
    assert!(kinds.contains(&EventKind::OneBoxDeployed) && kinds.contains(&EventKind::Approved));

    // The event log pages in order, with increasing sequence numbers.
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = admin.events(after, 7).unwrap();
        if page.events.is_empty() {
            break;
        }
        seen.extend(page.events.iter().map(|e| e.seq.unwrap()));
        after = page.next;
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(seen.len(), detail.events.len());

    // The live stream replays from a point and goes on.
    let mut streamed = Vec::new();
    admin
        .follow(Some(0), |e| {
            streamed.push(e.kind);
            e.kind != rollwave_api::EventKind::ReleaseCompleted
        })
        .unwrap();
    assert_eq!(streamed, kinds);

    // Every change is in the audit log with its actor, and the chain holds.
    let audit = s.block_on(s.node.store.audit_entries()).unwrap();
    let actions: Vec<(&str, &str)> = audit.iter().map(|a| (a.actor.as_str(), a.action.as_str())).collect();
    assert_eq!(
        actions,
        [("admin", "apply_manifest"), ("admin", "create_release"), ("admin", "create_token"), ("admin", "approve")]
    );
    assert!(audit.iter().all(|a| a.token_id == Some(1)), "the bootstrap token's id is kept: {audit:?}");
    assert_eq!(s.block_on(s.node.store.verify_audit()).unwrap(), Ok(4));
}

#[test]
fn agents_speak_only_for_their_own_host() {
    let s = TestServer::start(Driver::Agent);
    let admin = s.client(Some(ADMIN));
    admin.apply("shop.yaml", MANIFEST).unwrap();
    let token = admin
        .create_token(&CreateToken {
            role: "agent".into(),
            name: None,
            host: Some("shop/beta/b1-1".into()),
            ..Default::default()
        })
        .unwrap()
        .token;
    let agent = s.client(Some(&token));
    let register_as = |client: &Client, host: &str| -> Result<Registered, ClientError> {
        client.post(
            "/v1/hosts/register",
            &RegisterHost {
                service: None,
                environment: "beta".into(),
                host: host.into(),
                region: Some("r1".into()),
                zone: Some("b1".into()),
                address: None,
            },
        )
    };
    let register = |host: &str| register_as(&agent, host);
    let registered = register("b1-1").unwrap();
    assert_eq!(registered.service, "shop", "found by its environment and zone");
    let desired = registered.desired;
    assert_eq!((desired.command, desired.version.as_str()), (0, "baseline"));
    assert_eq!(api_status(register("b1-2").unwrap_err()).0, 403);
    assert_eq!(
        api_status(
            agent
                .create_release(
                    "shop",
                    &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None }
                )
                .unwrap_err()
        )
        .0,
        403
    );

    // A release asks the first beta batch to deploy; the long-poll wakes for it.
    // The zone waits until every host the manifest expects there has registered.
    admin
        .create_release("shop", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("the rollout waits for b1-2", || {
        admin.status("shop").unwrap().blocked.iter().any(|b| b.reason.contains("1 of 2 host(s) of zone b1 to register"))
    });
    register_as(&admin, "b1-2").unwrap();
    let next: Desired = agent.get("/v1/services/shop/hosts/beta/b1-1/desired?after=0&wait=10").unwrap();
    assert_eq!(next.version, "v2");
    assert!(next.command > 0);
    let other = admin
        .create_token(&CreateToken {
            role: "agent".into(),
            name: None,
            host: Some("shop/beta/b1-2".into()),
            ..Default::default()
        })
        .unwrap()
        .token;
    let report =
        HostReport { command: next.command, ok: true, reason: None, hooks: Vec::new(), lane: Default::default() };
    let refused: Result<Accepted, _> = s.client(Some(&other)).post("/v1/services/shop/hosts/beta/b1-1/report", &report);
    assert_eq!(api_status(refused.unwrap_err()).0, 403);
    let accepted: Accepted = agent.post("/v1/services/shop/hosts/beta/b1-1/report", &report).unwrap();
    assert!(accepted.ok);
    s.wait_for("b1-1 runs v2", || {
        admin.status("shop").unwrap().environments[0].versions.contains(&("v2".to_owned(), 1))
    });
}

#[test]
fn the_openapi_document_describes_every_route_the_client_uses() {
    let s = TestServer::start(Driver::Agent);
    let doc: serde_json::Value = s.client(None).get("/v1/openapi.json").unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/services",
        "/v1/services/{service}",
        "/v1/services/{service}/releases",
        "/v1/services/{service}/releases/{version}",
        "/v1/services/{service}/releases/{version}/{action}",
        "/v1/services/{service}/hold",
        "/v1/services/{service}/resume",
        "/v1/hosts/register",
        "/v1/services/{service}/hosts/{environment}/{host}/desired",
        "/v1/services/{service}/hosts/{environment}/{host}/report",
        "/v1/events",
        "/v1/events/stream",
        "/v1/tokens",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
    let metrics = ureq::get(format!("{}/metrics", s.base)).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(metrics.contains("rollwave_leader 1"), "{metrics}");
}

#[test]
fn exec_environments_run_their_commands_with_the_share_filled_in() {
    let s = TestServer::start(Driver::Agent);
    let out = s.dir().join("exec.log");
    let manifest = format!(
        "service: fn\n\
         environments:\n\
         \x20 prod:\n\
         \x20   regions: {{ r1: {{ zones: {{ z1: 10 }} }} }}\n\
         \x20   exec: {{ deploy: \"echo {{{{host}}}} {{{{version}}}} {{{{share}}}} >> {out}; echo deployed\", timeout: 10s }}\n\
         strategy:\n\
         \x20 one_box: {{ hosts: 1, max_share: 10%, bake: 0s }}\n\
         \x20 rolling: {{ batch: 3, zone_bake: 0s }}\n\
         stages:\n\
         \x20 - {{ name: prod, environment: prod }}\n",
        out = out.display()
    );
    let admin = s.client(Some(ADMIN));
    admin.apply("fn.yaml", &manifest).unwrap();
    admin
        .create_release("fn", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("v2 completes through exec", || {
        admin.release("fn", "v2").unwrap().release.outcome == rollwave_api::Outcome::Completed
    });
    let log = std::fs::read_to_string(&out).unwrap();
    let shares: Vec<u32> = log.lines().map(|l| l.split(' ').nth(2).unwrap().parse().unwrap()).collect();
    assert_eq!(log.lines().count(), 10, "{log}");
    assert!(log.lines().all(|l| l.contains(" v2 ")), "{log}");
    assert_eq!(shares.first(), Some(&10), "the one-box is 10% of the region: {log}");
    assert_eq!(shares.last(), Some(&100));
    assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
    let hooks: Vec<EventView> = admin
        .release("fn", "v2")
        .unwrap()
        .events
        .into_iter()
        .filter(|e| e.kind == rollwave_api::EventKind::Hook)
        .collect();
    assert_eq!(hooks.len(), 10);
    assert!(
        hooks
            .iter()
            .all(|h| h.output.as_deref() == Some("deployed\n") && h.reason.as_deref().unwrap().starts_with("exec: ok"))
    );
}

#[test]
fn stage_tests_run_on_the_server_and_a_failing_one_stops_the_release() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    let flag = s.dir().join("broken");
    // The test fails while the file `broken` exists, and says what it checked.
    let manifest = format!(
        "service: web\n\
         environments:\n\
         \x20 beta: {{ regions: {{ r1: {{ zones: {{ z1: 1 }} }} }} }}\n\
         \x20 prod: {{ regions: {{ r1: {{ zones: {{ z1: 2 }} }} }} }}\n\
         strategy:\n\
         \x20 one_box: false\n\
         \x20 rolling: {{ batch: 100%, zone_bake: 0s }}\n\
         stages:\n\
         \x20 - name: beta\n\
         \x20   environment: beta\n\
         \x20   tests: [ {{ name: smoke, run: \"echo $ROLLWAVE_STAGE $ROLLWAVE_TEST $ROLLWAVE_VERSION; test ! -e {flag}\", timeout: 10s }} ]\n\
         \x20 - {{ name: prod, environment: prod }}\n",
        flag = flag.display()
    );
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("v2 completes", || {
        admin.release("web", "v2").unwrap().release.outcome == rollwave_api::Outcome::Completed
    });
    let v2 = admin.release("web", "v2").unwrap();
    let passed = v2.events.iter().find(|e| e.kind == rollwave_api::EventKind::TestPassed).expect("the test ran");
    assert_eq!(passed.output.as_deref(), Some("beta smoke v2\n"), "{passed:?}");

    std::fs::write(&flag, "").unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v3".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("v3 stops", || admin.release("web", "v3").unwrap().release.outcome != rollwave_api::Outcome::InProgress);
    let v3 = admin.release("web", "v3").unwrap();
    let failed = v3.events.iter().find(|e| e.kind == rollwave_api::EventKind::TestFailed).expect("the test failed");
    assert!(failed.reason.as_deref().unwrap().contains("smoke"), "{failed:?}");
    assert_ne!(v3.release.outcome, rollwave_api::Outcome::Completed);
    assert!(!v3.release.reached.iter().any(|r| r.starts_with("prod")), "{:?}", v3.release);
}

#[test]
fn a_host_that_goes_silent_mid_deployment_is_lost_and_fails_its_zone() {
    let s = TestServer::builder().driver(Driver::Agent).host_timeout(Duration::from_secs(2)).start();
    let admin = s.client(Some(ADMIN));
    admin.apply("shop.yaml", MANIFEST).unwrap();
    for host in ["b1-1", "b1-2"] {
        let _: Registered = admin
            .post(
                "/v1/hosts/register",
                &RegisterHost {
                    service: Some("shop".into()),
                    environment: "beta".into(),
                    host: host.into(),
                    region: Some("r1".into()),
                    zone: Some("b1".into()),
                    address: None,
                },
            )
            .unwrap();
    }
    admin
        .create_release("shop", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    // Nobody polls or reports: both hosts fall silent, and the one-box deployment fails.
    s.advance(Duration::from_millis(2500));
    s.wait_for("v2 halts", || admin.release("shop", "v2").unwrap().release.outcome == rollwave_api::Outcome::Halted);
    let events = admin.release("shop", "v2").unwrap().events;
    let failed = events.iter().find(|e| e.kind == rollwave_api::EventKind::HostFailed).expect("a host_failed event");
    assert_eq!(failed.scope, "beta/r1/b1/b1-1");
    assert!(failed.reason.as_deref().unwrap().contains("host lost"), "{failed:?}");
    // The zone now waits for its hosts to come back.
    let release = admin.release("shop", "v2").unwrap().release;
    assert!(release.reason.as_deref().unwrap().contains("failed in zone b1"), "{release:?}");
}

#[test]
fn a_router_announcing_itself_must_give_host_and_port() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    let admin = s.client(Some(ADMIN));
    admin
        .apply("web.yaml", "service: web\nenvironments:\n  prod: { regions: { r1: { zones: { z1: 1 } } } }\nstages:\n  - { name: prod, environment: prod }\n")
        .unwrap();
    let router = |region: &str| {
        let scope = Some(format!("web/prod/{region}"));
        admin.create_token(&CreateToken { role: "router".into(), region: scope, ..Default::default() }).unwrap().token
    };
    let (r1, nowhere) = (router("r1"), router("nowhere"));
    let (status, body) = s.raw("GET", "/v1/services/web/routes/prod/r1?router=no%20port", Some(&r1), b"");
    assert_eq!((status, body.code.as_str()), (422, "invalid"), "{body:?}");
    assert!(body.message.contains("host:port"), "{body:?}");
    let (status, body) =
        s.raw("GET", "/v1/services/web/routes/prod/nowhere?router=127.0.0.1:8000", Some(&nowhere), b"");
    assert_eq!(status, 404, "{body:?}");
    // Only the region's own router gives an address: not another region's, not an admin, not nobody.
    for token in [None, Some(ADMIN), Some(nowhere.as_str())] {
        let (status, body) = s.raw("GET", "/v1/services/web/routes/prod/r1?router=127.0.0.1:8000", token, b"");
        assert_eq!(status, if token.is_none() { 401 } else { 403 }, "{token:?}: {body:?}");
    }
    assert!(s.node.routers_heard().is_empty(), "no address was taken");
    let table: Routes = s.client(Some(&r1)).get("/v1/services/web/routes/prod/r1?router=127.0.0.1:8000").unwrap();
    assert_eq!(table.canary_share, 0);
    let heard = s.node.routers_heard();
    assert_eq!(heard.values().flat_map(|a| a.keys()).collect::<Vec<_>>(), ["127.0.0.1:8000"]);
}
