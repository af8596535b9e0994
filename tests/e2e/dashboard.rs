//! The dashboard in a real headless Chromium driven over WebDriver, against a real server
//! process: it watches a rollout, follows it live, reads a release's timeline and acts
//! after logging in. Screenshots are kept in `target/dashboard-screenshots/`. Without
//! chromium and chromedriver on PATH it says so and passes, unless
//! `ROLLWAVE_TEST_BROWSER=required`.

use crate::kit::{Server, wait_for};
use rollwave_api::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// The dashboard tests' one pipeline (`crates/server/tests/it/dashboard.rs` reads it too).
const MANIFEST: &str = include_str!("../../crates/server/tests/data/dashboard-shop.yaml");

fn token(s: &Server, role: &str, name: &str) -> String {
    s.client()
        .create_token(&CreateToken { role: role.into(), name: Some(name.into()), host: None, ..Default::default() })
        .unwrap()
        .token
}

fn release(s: &Server, version: &str) {
    let req = CreateRelease { version: version.into(), artifact: None, sha256: None, flags: None };
    s.client().create_release("shop", &req).unwrap();
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
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
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
fn api_cells(s: &Server, version: &str) -> Vec<(String, String)> {
    let detail = s.client().release("shop", version).unwrap();
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
    let s = Server::builder().args(&["--noop-delay", "300ms", "--anonymous-read"]).start();
    let admin = s.client();
    admin.apply("shop.yaml", MANIFEST).unwrap();
    release(&s, "v2");
    // Beta done, prod waiting for approval: a state that holds still.
    wait_for("v2 waits for approval", WAIT, || {
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
    release(&s, "v3");
    b.wait_for("v3 shows up in beta", Duration::from_secs(30), |b| {
        b.cells().iter().any(|(scope, versions, _)| scope == "beta/b-east" && versions.contains("v3:"))
    });
    b.screenshot("03-overview-two-releases-in-flight");
    assert_eq!(b.script("return window.notReloaded === true;"), json!(true), "the page was reloaded");
    wait_for("v2 completes", WAIT, || {
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
