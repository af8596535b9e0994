//! A webhook URL named by an environment variable of the server. Its own test binary:
//! the variable is set before the server starts, and this is the only test in the
//! process, so no other thread reads the environment while it is written.

#[path = "it/support/mod.rs"]
mod support;

use rollwave_server::Driver;
use rollwave_server::api::*;
use std::time::Duration;
use support::{ADMIN, TestServer};

const VARIABLE: &str = "ROLLWAVE_TEST_WEBHOOK_URL";

#[test]
fn a_webhook_url_from_the_environment_is_resolved_and_delivered_and_never_shown() {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&bodies);
    let address = support::responder(move |_, body| {
        seen.lock().unwrap().push(String::from_utf8_lossy(body).into_owned());
        ("200 OK", "text/plain", String::new())
    });
    // SAFETY: the only test of this binary, before the server or any thread that reads
    // the environment starts (the responder thread only accepts connections).
    unsafe { std::env::set_var(VARIABLE, format!("http://{address}/services/T0/B0/SECRETPATH")) };
    let manifest = format!(
        "service: web\n\
         environments:\n  prod: {{ regions: {{ r1: {{ zones: {{ z1: 2 }} }} }} }}\n\
         strategy:\n  one_box: false\n  rolling: {{ batch: 100%, zone_bake: 0s }}\n\
         stages:\n  - {{ name: prod, environment: prod, bake: 0s }}\n\
         notifications:\n  - {{ url: {{ env: {VARIABLE} }}, format: slack, on: [completed] }}\n"
    );
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("the notification arrives and its delivery is recorded", || {
        !bodies.lock().unwrap().is_empty() && admin.status("web").unwrap().notifications.iter().any(|n| n.delivered > 0)
    });
    let body: serde_json::Value = serde_json::from_str(&bodies.lock().unwrap()[0]).unwrap();
    assert!(body["text"].as_str().unwrap().starts_with("rollwave: web v2 completed"), "{body}");
    let status = admin.status("web").unwrap().notifications;
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].url.as_str(), status[0].delivered), (format!("env:{VARIABLE}").as_str(), 1));
    let read: serde_json::Value = admin.get("/v1/services/web").unwrap();
    assert!(!read.to_string().contains("SECRETPATH"), "{read}");
}
