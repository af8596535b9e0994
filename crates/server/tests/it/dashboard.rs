//! The dashboard over plain HTTP: escaping, not found, refused actions, login. (The
//! dashboard in a real browser, against a real server process: `tests/e2e/dashboard.rs`.)

use crate::support;

use rollwave_server::Driver;
use rollwave_server::api::*;
use std::time::Duration;
use support::{ADMIN, TestServer};

/// The pipeline both the plain-HTTP and the browser tests of the dashboard watch.
const MANIFEST: &str = include_str!("../data/dashboard-shop.yaml");

fn noop() -> Driver {
    Driver::Noop { delay: Duration::from_millis(300) }
}

/// A plain HTTP client that neither follows redirects nor fails on error statuses.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

struct Page {
    status: u16,
    body: String,
    location: Option<String>,
    set_cookie: Option<String>,
}

fn get(s: &TestServer, path: &str, cookie: Option<&str>) -> Page {
    let mut r = agent().get(&format!("{}{path}", s.base));
    if let Some(c) = cookie {
        r = r.header("Cookie", format!("rollwave_token={c}"));
    }
    page(r.call().unwrap())
}

fn post_form(s: &TestServer, path: &str, cookie: Option<&str>, origin: Option<&str>, form: &[(&str, &str)]) -> Page {
    let mut r = agent().post(&format!("{}{path}", s.base));
    if let Some(c) = cookie {
        r = r.header("Cookie", format!("rollwave_token={c}"));
    }
    if let Some(o) = origin {
        r = r.header("Origin", o);
    }
    page(r.send_form(form.iter().copied()).unwrap())
}

fn page(mut response: ureq::http::Response<ureq::Body>) -> Page {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let location = header("location");
    let set_cookie = header("set-cookie");
    // Entities by name, whichever way the templates wrote them.
    let body = response.body_mut().read_to_string().unwrap();
    let body = [("&#60;", "&lt;"), ("&#62;", "&gt;"), ("&#34;", "&quot;"), ("&#38;", "&amp;")]
        .iter()
        .fold(body, |b, (from, to)| b.replace(from, to));
    Page { status: response.status().as_u16(), body, location, set_cookie }
}

fn token(s: &TestServer, role: &str, name: &str) -> String {
    s.client(Some(ADMIN))
        .create_token(&CreateToken { role: role.into(), name: Some(name.into()), host: None, ..Default::default() })
        .unwrap()
        .token
}

fn release(s: &TestServer, version: &str, artifact: Option<&str>) {
    let req =
        CreateRelease { version: version.into(), artifact: artifact.map(str::to_owned), sha256: None, flags: None };
    s.client(Some(ADMIN)).create_release("shop", &req).unwrap();
}

#[test]
fn user_text_is_escaped_everywhere() {
    let s = TestServer::builder().driver(noop()).anonymous_read().wall_clock().start();
    s.client(Some(ADMIN)).apply("shop.yaml", MANIFEST).unwrap();
    // An artifact URL cannot hold `<` or `>`, but may hold quotes and ampersands.
    release(&s, "v2", Some("https://example.invalid/'onmouseover='alert(1)'&x.tgz"));
    // Token names cannot carry markup (they follow a grammar).
    let refused = s.client(Some(ADMIN)).create_token(&CreateToken {
        role: "deployer".into(),
        name: Some("<script>alert('token')</script>".into()),
        ..Default::default()
    });
    assert_eq!(refused.unwrap_err().status(), Some(422));
    let evil = token(&s, "deployer", "dee");

    let p = get(&s, "/services/shop/releases/v2", Some(&evil));
    assert_eq!(p.status, 200);
    assert!(p.body.contains("/&#39;onmouseover=&#39;alert(1)&#39;&amp;x.tgz"), "{}", p.body);
    assert!(!p.body.contains("'onmouseover='"), "{}", p.body);
    assert!(!p.body.contains("<script>alert"), "{}", p.body);

    // A name in the path comes back in the 404 page, escaped.
    let p = get(&s, "/services/%3Cscript%3Ealert(1)%3C%2Fscript%3E", None);
    assert_eq!(p.status, 404);
    assert!(p.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", p.body);
    assert!(!p.body.contains("<script>alert"), "{}", p.body);
    let p = get(&s, "/services/shop/releases/%3Cb%3Ev9", None);
    assert_eq!(p.status, 404);
    assert!(p.body.contains("&lt;b&gt;v9") && !p.body.contains("<b>v9"), "{}", p.body);
}

#[test]
fn hook_output_and_addresses_from_agents_are_escaped() {
    let s = TestServer::builder().driver(Driver::Agent).anonymous_read().wall_clock().start();
    let admin = s.client(Some(ADMIN));
    let manifest = "\
service: tiny
environments:
  beta: { regions: { r1: { zones: { b1: 1 } } } }
strategy:
  one_box: false
  rolling: { batch: 1, zone_bake: 0s }
stages:
  - { name: beta, environment: beta, bake: 0s }
";
    admin.apply("tiny.yaml", manifest).unwrap();
    let register = RegisterHost {
        service: Some("tiny".into()),
        environment: "beta".into(),
        host: "b1-1".into(),
        region: Some("r1".into()),
        zone: Some("b1".into()),
        address: Some("<img src=x onerror=alert(1)>:80".into()),
    };
    let _: Registered = admin.post("/v1/hosts/register", &register).unwrap();
    admin
        .create_release("tiny", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    let next: Desired = admin.get("/v1/services/tiny/hosts/beta/b1-1/desired?after=0&wait=10").unwrap();
    assert_eq!(next.version, "v2");
    let hook = HookReport {
        name: "validate".into(),
        exit_code: Some(1),
        duration_ms: 12,
        output: "<script>alert('hook')</script>\nsmoke test failed".into(),
        timed_out: false,
        ok: false,
    };
    let report = HostReport {
        command: next.command,
        ok: false,
        reason: Some("hook validate: <b>exit 1</b>".into()),
        hooks: vec![hook],
        lane: Default::default(),
    };
    let _: Accepted = admin.post("/v1/services/tiny/hosts/beta/b1-1/report", &report).unwrap();
    s.wait_for("the hook is in the timeline", || {
        admin.release("tiny", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::Hook)
    });

    let p = get(&s, "/services/tiny/releases/v2", None);
    assert_eq!(p.status, 200);
    assert!(p.body.contains("&lt;script&gt;alert(&#39;hook&#39;)&lt;/script&gt;"), "{}", p.body);
    assert!(p.body.contains("validate: exit 1"), "{}", p.body);
    assert!(p.body.contains("&lt;b&gt;exit 1&lt;/b&gt;"), "{}", p.body);
    assert!(!p.body.contains("<script>alert") && !p.body.contains("<b>exit"), "{}", p.body);
    let p = get(&s, "/services/tiny/hosts", None);
    assert!(p.body.contains("&lt;img src=x onerror=alert(1)&gt;:80"), "{}", p.body);
    assert!(!p.body.contains("<img"), "{}", p.body);
}

#[test]
fn unknown_services_and_releases_get_a_404_page() {
    let s = TestServer::builder().driver(noop()).anonymous_read().wall_clock().start();
    s.client(Some(ADMIN)).apply("shop.yaml", MANIFEST).unwrap();
    for path in ["/services/nope", "/services/nope/hosts", "/services/nope/alarms", "/services/shop/releases/v9"] {
        let p = get(&s, path, None);
        assert_eq!(p.status, 404, "{path}");
        assert!(p.body.contains("<h1>Not found</h1>"), "{path}: {}", p.body);
        assert!(p.body.contains("no service") || p.body.contains("no release"), "{path}: {}", p.body);
    }
    // Known pages render; a fragment is the main part alone.
    for path in ["/", "/services/shop", "/services/shop/hosts", "/services/shop/alarms", "/login"] {
        let p = get(&s, path, None);
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(p.body.starts_with("<!doctype html>"), "{path}");
    }
    let p = get(&s, "/services/shop?fragment=1", None);
    assert!(!p.body.contains("<html") && p.body.contains("data-region=\"us-east\""), "{}", p.body);
    let p = get(&s, "/dashboard/dashboard.js", None);
    assert!(p.status == 200 && p.body.contains("EventSource"));
}

#[test]
fn actions_need_a_login_and_the_role_and_show_the_apis_error() {
    let s = TestServer::builder().driver(noop()).anonymous_read().wall_clock().start();
    let admin = s.client(Some(ADMIN));
    admin.apply("shop.yaml", MANIFEST).unwrap();
    release(&s, "v2", None);

    // A reader sees no buttons, and is told to log in.
    let p = get(&s, "/services/shop", None);
    assert!(!p.body.contains("data-action="), "{}", p.body);
    assert!(p.body.contains("Log in with a deployer token to act here."), "{}", p.body);
    let p = get(&s, "/services/shop/releases/v2", None);
    assert!(!p.body.contains("data-action="), "{}", p.body);

    // Posting without a login is refused and changes nothing.
    let p = post_form(&s, "/services/shop/act", None, None, &[("action", "hold")]);
    assert_eq!(p.status, 401);
    assert!(p.body.contains("log in with an API token to act"), "{}", p.body);
    assert!(admin.status("shop").unwrap().holds.is_empty());

    // A viewer gets the API's own message.
    let viewer = token(&s, "viewer", "val");
    let p = get(&s, "/services/shop", Some(&viewer));
    assert!(!p.body.contains("data-action="), "{}", p.body);
    assert!(p.body.contains("has the viewer role"), "{}", p.body);
    let p = post_form(&s, "/services/shop/act", Some(&viewer), None, &[("action", "hold")]);
    assert_eq!(p.status, 403);
    assert!(p.body.contains("this needs the deployer role; token &quot;val&quot; has viewer"), "{}", p.body);
    assert!(admin.status("shop").unwrap().holds.is_empty());

    // A deployer may not approve; the engine's refusal is shown too.
    let deployer = token(&s, "deployer", "dee");
    let p = post_form(&s, "/services/shop/act", Some(&deployer), None, &[("action", "approve"), ("release", "v2")]);
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("this needs the approver role"), "{}", p.body);
    let p = post_form(&s, "/services/shop/act", Some(&deployer), None, &[("action", "retry"), ("release", "v2")]);
    assert_eq!(p.status, 409, "{}", p.body);

    // A form from another site is refused even with the cookie.
    let p = post_form(&s, "/services/shop/act", Some(&deployer), Some("http://evil.example"), &[("action", "hold")]);
    assert_eq!(p.status, 403);
    assert!(admin.status("shop").unwrap().holds.is_empty());

    // The deployer holds the service: redirected back with a notice.
    let p = post_form(&s, "/services/shop/act", Some(&deployer), None, &[("action", "hold"), ("stage", "")]);
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/services/shop?done=hold"));
    assert_eq!(admin.status("shop").unwrap().holds, vec!["shop".to_owned()]);
}

#[test]
fn login_sets_an_http_only_strict_cookie_and_logout_clears_it() {
    let s = TestServer::builder().driver(noop()).anonymous_read().wall_clock().start();
    let p = post_form(&s, "/login", None, None, &[("token", "rw_not_a_token"), ("next", "/services/shop")]);
    assert_eq!(p.status, 401);
    assert!(p.body.contains("unknown token"), "{}", p.body);
    assert!(p.set_cookie.is_none());

    let p = post_form(&s, "/login", None, None, &[("token", ADMIN), ("next", "/services/shop")]);
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/services/shop"));
    let cookie = p.set_cookie.unwrap();
    assert!(cookie.starts_with(&format!("rollwave_token={ADMIN};")), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    // Only paths on this server are places to go back to.
    let p = post_form(&s, "/login", None, None, &[("token", ADMIN), ("next", "//evil.example/")]);
    assert_eq!(p.location.as_deref(), Some("/"));

    let p = get(&s, "/", Some(ADMIN));
    assert!(p.body.contains("Logged in as"), "{}", p.body);
    let p = post_form(&s, "/logout", Some(ADMIN), None, &[]);
    assert_eq!(p.status, 303);
    assert!(p.set_cookie.unwrap().contains("Max-Age=0"));
}

/// Without --anonymous-read, pages answer the login form to anyone not logged in with a
/// person's token; the login page and assets stay reachable.
#[test]
fn pages_need_a_viewer_unless_reads_are_anonymous() {
    let s = TestServer::start(noop());
    s.client(Some(ADMIN)).apply("shop.yaml", MANIFEST).unwrap();
    let p = get(&s, "/services/shop", None);
    assert_eq!(p.status, 401);
    assert!(p.body.contains("log in with a viewer token"), "{}", p.body);
    assert!(!p.body.contains("shop.yaml"), "{}", p.body);
    assert_eq!(get(&s, "/login", None).status, 200);
    let viewer = token(&s, "viewer", "vic");
    assert_eq!(get(&s, "/services/shop", Some(&viewer)).status, 200);
}
