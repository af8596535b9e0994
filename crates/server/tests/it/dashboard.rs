//! The dashboard: plain HTTP checks (escaping, not found, refused actions, login) and a
//! real headless Chromium driven over WebDriver that watches a rollout, follows it live,
//! reads a release's timeline and acts after logging in. Screenshots are kept in
//! `target/dashboard-screenshots/`.

use crate::support;

use rollwave_server::Driver;
use rollwave_server::api::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{ADMIN, TestServer};

const MANIFEST: &str = "\
service: shop
environments:
  beta: { regions: { b-east: { zones: { b1: 2 } } } }
  prod:
    regions:
      us-east: { zones: { ue1: 2, ue2: 2 } }
      us-west: { zones: { uw1: 2 } }
      eu-west: { zones: { ew1: 3 } }
strategy:
  one_box: { hosts: 1, max_share: 50%, bake: 1s }
  rolling: { batch: 50%, zone_bake: 1s }
stages:
  - { name: beta, environment: beta, one_box: false, bake: 1s }
  - name: prod
    environment: prod
    approval: true
    bake: 1s
    waves:
      - { name: w1, regions: [us-east] }
      - { name: w2, regions: [us-west, eu-west] }
";

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
    let req = CreateRelease { version: version.into(), artifact: artifact.map(str::to_owned), sha256: None };
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
    admin.create_release("tiny", &CreateRelease { version: "v2".into(), artifact: None, sha256: None }).unwrap();
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

// ---------------------------------------------------------------------------------------
// A real browser.

/// chromedriver on a free port, and one browser session through it.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    http: ureq::Agent,
    shots: PathBuf,
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// None (after saying so) when there is no browser and none is required.
    fn start() -> Option<Browser> {
        let required = std::env::var("ROLLWAVE_TEST_BROWSER").is_ok_and(|v| v == "required");
        let (Some(chromium), Some(chromedriver)) = (find_program("chromium"), find_program("chromedriver")) else {
            assert!(
                !required,
                "ROLLWAVE_TEST_BROWSER=required but chromium or chromedriver is not on PATH; \
                 install the Debian packages chromium and chromium-driver"
            );
            println!("SKIPPED: chromium/chromedriver not found (install chromium and chromium-driver)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver, base, session: String::new(), http, shots: screenshot_dir() };
        let start = Instant::now();
        loop {
            let ready =
                browser.http.get(&format!("{}/status", browser.base)).call().ok().and_then(|mut r| {
                    r.body_mut().read_json::<Value>().ok().map(|v| v["value"]["ready"] == json!(true))
                });
            if ready == Some(true) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000"]
            }
        }}});
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"].as_str().expect("a session").to_owned();
        Some(browser)
    }

    /// One WebDriver command; its `value`. Panics with the driver's message on an error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.attempt(method, path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    fn attempt(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut response = match method {
            "GET" => self.http.get(&url).call(),
            "DELETE" => self.http.delete(&url).call(),
            _ => self.http.post(&url).send_json(body.unwrap_or(json!({}))),
        }
        .map_err(|e| format!("WebDriver {method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let v: Value = response.body_mut().read_json().map_err(|e| format!("WebDriver {method} {path}: {e}"))?;
        if status >= 400 {
            return Err(format!("WebDriver {method} {path}: {status} {v}"));
        }
        Ok(v["value"].clone())
    }

    /// Finds `css` and does `what` with it, again if the live script replaced the element
    /// in between (a stale element), for up to 10 s.
    fn on(&self, css: &str, method: &str, what: &str, body: Option<Value>) -> Value {
        let start = Instant::now();
        loop {
            let element = self.find(css);
            match self.attempt(method, &format!("/element/{element}/{what}"), body.clone()) {
                Ok(v) => return v,
                Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn text_of(&self, css: &str) -> String {
        self.on(css, "GET", "text", None).as_str().unwrap_or_default().to_owned()
    }

    fn click_on(&self, css: &str) {
        self.on(css, "POST", "click", Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        self.on(css, "POST", "value", Some(json!({ "text": text })));
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap_or_default().to_owned()
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        self.call("POST", "/elements", Some(json!({ "using": "css selector", "value": css })))
            .as_array()
            .map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting up to 10 s for it (a page may still load).
    fn find(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            if start.elapsed() > Duration::from_secs(10) {
                self.screenshot(&format!("missing-{}", css.replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
                panic!("no element {css:?} on {}", self.url());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn script(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    /// Every cell's `stage/region` and its `data-versions`, read in one go (the live
    /// script may swap the page in between two separate reads).
    fn cells(&self) -> Vec<(String, String, String)> {
        let v = self.script(
            "return Array.from(document.querySelectorAll('#live section.service .cell')).map(c => \
             [c.dataset.stage + '/' + c.dataset.region, c.dataset.versions, c.dataset.state]);",
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let s = |i: usize| c[i].as_str().unwrap_or_default().to_owned();
                (s(0), s(1), s(2))
            })
            .collect()
    }

    fn wait_for(&self, what: &str, timeout: Duration, mut ok: impl FnMut(&Browser) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            if start.elapsed() > timeout {
                self.screenshot(&format!("timeout-{}", what.replace(' ', "-")));
                panic!("timed out waiting until {what} on {}", self.url());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) {
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64_decode(png.as_str().unwrap_or_default());
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http.delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// `stage/region` → `version:hosts,…` as the API tells it.
fn api_cells(s: &TestServer, version: &str) -> Vec<(String, String)> {
    let detail = s.client(None).release("shop", version).unwrap();
    detail
        .scopes
        .iter()
        .map(|sc| {
            let versions: Vec<String> = sc.versions.iter().map(|(v, n)| format!("{v}:{n}")).collect();
            (sc.scope.clone(), versions.join(","))
        })
        .collect()
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some(b) = Browser::start() else { return };
    let s = TestServer::builder().driver(noop()).anonymous_read().wall_clock().start();
    let admin = s.client(Some(ADMIN));
    admin.apply("shop.yaml", MANIFEST).unwrap();
    release(&s, "v2", None);
    // Beta done, prod waiting for approval: a state that holds still.
    s.wait_for("v2 waits for approval", || {
        admin.status("shop").unwrap().blocked.iter().any(|b| b.reason.contains("approval"))
    });

    // The overview's cells say what the API says, region by region.
    b.goto(&format!("{}/", s.base));
    b.find("section.service[data-service=shop]");
    let mut page: Vec<(String, String)> = b.cells().into_iter().map(|(scope, versions, _)| (scope, versions)).collect();
    page.sort();
    let mut api = api_cells(&s, "v2");
    api.sort();
    assert_eq!(page, api);
    let states: Vec<(String, String)> = b.cells().into_iter().map(|(scope, _, state)| (scope, state)).collect();
    assert!(states.contains(&("beta/b-east".into(), "done".into())), "{states:?}");
    assert!(states.contains(&("prod/us-east".into(), "blocked".into())), "{states:?}");
    let blocked = b.text_of(".cell[data-stage=prod][data-region=us-east] .detail");
    assert!(blocked.contains("approval"), "{blocked}");
    b.screenshot("01-overview-waiting-for-approval");

    // Approved through the API, the page follows without reloading.
    b.script("window.notReloaded = true;");
    b.wait_for("the live stream is open", Duration::from_secs(10), |b| b.text_of("#live-status").contains("live"));
    admin.action("shop", "v2", rollwave_api::OperatorAction::Approve, None).unwrap();
    b.wait_for("us-east runs v2 somewhere", Duration::from_secs(30), |b| {
        b.cells().iter().any(|(scope, versions, _)| scope == "prod/us-east" && versions.contains("v2:"))
    });
    b.screenshot("02-overview-live-prod-deploying");
    release(&s, "v3", None);
    b.wait_for("v3 shows up in beta", Duration::from_secs(30), |b| {
        b.cells().iter().any(|(scope, versions, _)| scope == "beta/b-east" && versions.contains("v3:"))
    });
    b.screenshot("03-overview-two-releases-in-flight");
    assert_eq!(b.script("return window.notReloaded === true;"), json!(true), "the page was reloaded");
    s.wait_for("v2 completes", || {
        admin.release("shop", "v2").unwrap().release.outcome == rollwave_api::Outcome::Completed
    });
    b.wait_for("every prod region runs v2 alone", Duration::from_secs(30), |b| {
        b.cells()
            .iter()
            .filter(|(scope, _, _)| scope.starts_with("prod/"))
            .all(|(_, v, _)| v.starts_with("v2:") && !v.contains(','))
    });
    assert_eq!(b.script("return window.notReloaded === true;"), json!(true), "the page was reloaded");

    // The release page: the timeline is the API's, newest first.
    b.goto(&format!("{}/services/shop/releases/v2", s.base));
    let rows = b.script(
        "return Array.from(document.querySelectorAll('tr.event')).map(r => [r.dataset.kind, r.dataset.scope]);",
    );
    let page: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_str().unwrap().to_owned()))
        .collect();
    let mut api: Vec<(String, String)> = admin
        .release("shop", "v2")
        .unwrap()
        .events
        .iter()
        .map(|e| (e.kind.as_str().replace('_', " "), e.scope.clone()))
        .collect();
    api.reverse();
    assert_eq!(page, api);
    assert!(page.iter().any(|(k, _)| k == "release completed"));
    assert_eq!(b.text_of("#release-outcome"), "completed");
    assert!(!b.find_all("svg.chart rect").is_empty(), "the rollout chart has its steps");
    b.screenshot("04-release-page");

    // A reader sees no buttons and is told to log in.
    b.goto(&format!("{}/services/shop", s.base));
    assert!(b.find_all("button[data-action]").is_empty());
    assert!(b.text_of("#action-hint").contains("Log in"));

    // A viewer logs in, still sees no buttons, and a confirmed action shows the API's error.
    let viewer = token(&s, "viewer", "vera");
    b.click_on("#login-link");
    b.type_into("#token", &viewer);
    b.click_on("#login-submit");
    b.wait_for("back on the service page", Duration::from_secs(10), |b| {
        b.url().ends_with("/services/shop") && !b.url().contains("/login")
    });
    assert!(b.text_of(".who").contains("vera"));
    assert!(b.find_all("button[data-action]").is_empty());
    assert!(b.text_of("#action-hint").contains("viewer role"));
    b.goto(&format!("{}/services/shop/confirm?action=hold&stage=", s.base));
    b.click_on("#confirm");
    b.wait_for("the action's answer", Duration::from_secs(10), |b| !b.find_all("#action-error").is_empty());
    let error = b.text_of("#action-error");
    assert!(error.contains("this needs the deployer role"), "{error}");
    b.screenshot("05-viewer-refused");
    assert!(admin.status("shop").unwrap().holds.is_empty());

    // A deployer logs in, holds the prod stage, confirms, and the API agrees.
    b.click_on(".who button");
    b.wait_for("logged out", Duration::from_secs(10), |b| !b.find_all("#login-link").is_empty());
    let deployer = token(&s, "deployer", "dora");
    b.goto(&format!("{}/login?next=/services/shop", s.base));
    b.type_into("#token", &deployer);
    b.click_on("#login-submit");
    b.wait_for("back on the service page", Duration::from_secs(10), |b| {
        b.url().ends_with("/services/shop") && !b.url().contains("/login")
    });
    b.click_on("select[name=stage] option[value=prod]");
    b.click_on("button[data-action=hold]");
    b.wait_for("the confirmation page", Duration::from_secs(10), |b| b.url().contains("/confirm?"));
    assert!(b.text_of(".question").contains("Hold stage prod of shop?"));
    b.screenshot("06-confirm-hold");
    b.click_on("#confirm");
    b.wait_for("back with a notice", Duration::from_secs(10), |b| b.url().ends_with("/services/shop?done=hold"));
    assert_eq!(admin.status("shop").unwrap().holds, vec!["prod".to_owned()]);
    b.wait_for("the prod stage shows held", Duration::from_secs(10), |b| {
        !b.find_all(".stage.held[data-stage=prod]").is_empty()
    });
    b.screenshot("07-prod-held");

    // The hosts and alarms pages render for the browser too.
    b.goto(&format!("{}/services/shop/hosts", s.base));
    assert_eq!(b.find_all("tr[data-host]").len(), 2 + 4 + 2 + 3);
    b.screenshot("08-hosts");
    b.goto(&format!("{}/services/shop/alarms", s.base));
    assert!(b.text_of("h1").contains("Alarms of shop"));
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
