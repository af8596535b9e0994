//! Notifications in each format, posted to a receiver on loopback that checks what a
//! Teams channel, PagerDuty's Events API and a signed generic webhook each take, and
//! verifies the signature itself.

use crate::support;
use hmac::{KeyInit, Mac};
use rollwave_server::Driver;
use rollwave_server::api::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{ADMIN, Received, TestServer};

const ROUTING_KEY: &str = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12";
const SIGNING_KEY: &str = "whsec_s1gn1ng-k3y-of-the-receiver";

/// What the receiver verifies a signature with: HMAC-SHA256 over the bytes it received.
fn verifies(key: &str, received: &Received) -> bool {
    let Some(hex_mac) = received.header("x-rollwave-signature").and_then(|s| s.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(mac_bytes) = hex::decode(hex_mac) else { return false };
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(&received.body);
    mac.verify_slice(&mac_bytes).is_ok()
}

fn json(received: &Received) -> serde_json::Value {
    serde_json::from_slice(&received.body).expect("a JSON body")
}

#[test]
fn teams_pagerduty_and_a_signed_webhook_each_get_their_format_and_secrets_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (routing_file, secret_file) = (dir.path().join("routing-key"), dir.path().join("signing-key"));
    std::fs::write(&routing_file, format!("{ROUTING_KEY}\n")).unwrap();
    std::fs::write(&secret_file, SIGNING_KEY).unwrap();
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = Arc::clone(&received);
    let address = support::receiver(move |_, request| {
        seen.lock().unwrap().push(request.clone());
        ("202 Accepted", "application/json", "{}".to_owned())
    });
    let manifest = format!(
        "service: web\n\
         environments:\n  beta: {{ regions: {{ r1: {{ zones: {{ b1: 1 }} }} }} }}\n  prod: {{ regions: {{ r1: {{ zones: {{ p1: 1 }} }} }} }}\n\
         strategy:\n  one_box: false\n  rolling: {{ batch: 100%, zone_bake: 0s }}\n\
         stages:\n  - {{ name: beta, environment: beta, bake: 0s }}\n  - {{ name: prod, environment: prod, approval: true, bake: 0s }}\n\
         notifications:\n\
         \x20 - {{ url: \"http://{address}/teams\", format: teams, on: [completed, rolled_back] }}\n\
         \x20 - {{ url: \"http://{address}/pagerduty\", format: pagerduty, routing_key: {{ file: {} }}, on: [completed, rolled_back] }}\n\
         \x20 - {{ url: \"http://{address}/signed\", secret: {{ file: {} }}, on: [completed, rolled_back] }}\n",
        routing_file.display(),
        secret_file.display()
    );
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    let release = |v: &str| CreateRelease { version: v.into(), artifact: None, sha256: None, flags: None };

    // v2 waits for the approval, and is rolled back: trouble.
    admin.create_release("web", &release("v2")).unwrap();
    s.wait_for("v2 waits for prod's approval", || admin.release("web", "v2").unwrap().release.waiting == Some(true));
    admin.action("web", "v2", rollwave_api::OperatorAction::Rollback, None).unwrap();
    // Twice each: the rollback in beta completed, and the release is rolled back.
    s.wait_for("each webhook hears v2 was rolled back", || received.lock().unwrap().len() == 6);
    // v3 is approved and completes.
    admin.create_release("web", &release("v3")).unwrap();
    s.wait_for("v3 waits for prod's approval", || admin.release("web", "v3").unwrap().release.waiting == Some(true));
    admin.action("web", "v3", rollwave_api::OperatorAction::Approve, None).unwrap();
    s.wait_for("each webhook hears v3 completed", || received.lock().unwrap().len() == 9);

    let all = received.lock().unwrap().clone();
    let at = |path: &str| all.iter().filter(|r| r.path == path).cloned().collect::<Vec<_>>();

    // Teams: a message whose one attachment is an Adaptive Card, titled with what happened.
    let teams = at("/teams");
    assert_eq!(teams.len(), 3);
    let title_of = |r: &Received| json(r)["attachments"][0]["content"]["body"][0]["text"].as_str().map(str::to_owned);
    for (release, what) in [("v2", "rolled back"), ("v3", "completed")] {
        let heading = format!("rollwave: web {release} {what}");
        let r = teams.iter().find(|r| title_of(r).is_some_and(|t| t.starts_with(&heading))).unwrap_or_else(|| {
            panic!("no Teams card says {heading}: {:?}", teams.iter().map(title_of).collect::<Vec<_>>())
        });
        let body = json(r);
        assert_eq!(body["type"], "message", "{body}");
        let attachment = &body["attachments"][0];
        assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive", "{body}");
        let card = &attachment["content"];
        assert_eq!((card["type"].as_str(), card["version"].as_str()), (Some("AdaptiveCard"), Some("1.4")));
        let facts = card["body"][1]["facts"].as_array().unwrap();
        assert!(facts.iter().any(|f| f["title"] == "Release" && f["value"] == release), "{body}");
        assert!(r.header("x-rollwave-signature").is_none(), "a webhook without a secret is not signed");
    }

    // PagerDuty: the rollback triggers a critical alert, the completion resolves its own.
    let pagerduty = at("/pagerduty");
    let events: Vec<serde_json::Value> = pagerduty.iter().map(json).collect();
    assert_eq!(events.len(), 3);
    let of = |release: &str| {
        events.iter().filter(|e| e["payload"]["custom_details"]["release"] == release).collect::<Vec<_>>()
    };
    let (v2, v3) = (of("v2"), of("v3"));
    assert_eq!((v2.len(), v3.len()), (2, 1), "{events:?}");
    assert!(
        v2.iter().all(|e| e["event_action"] == "trigger" && e["dedup_key"] == "rollwave/web/v2"),
        "one alert for v2's trouble: {v2:?}"
    );
    let trigger = v2.iter().find(|e| e["payload"]["custom_details"]["scope"] == "").expect("the release's own event");
    assert_eq!(trigger["routing_key"], ROUTING_KEY, "the key the file holds, trimmed");
    assert_eq!(
        (trigger["event_action"].as_str(), trigger["dedup_key"].as_str()),
        (Some("trigger"), Some("rollwave/web/v2"))
    );
    let payload = &trigger["payload"];
    assert_eq!(payload["severity"], "critical");
    assert!(payload["summary"].as_str().unwrap().starts_with("rollwave: web v2 rolled back"), "{trigger}");
    for field in ["source", "component", "group", "class", "timestamp"] {
        assert!(payload[field].as_str().is_some_and(|v| !v.is_empty()), "payload.{field}: {trigger}");
    }
    assert_eq!(payload["custom_details"]["release"], "v2");
    let resolve = v3[0];
    assert_eq!(
        (resolve["event_action"].as_str(), resolve["dedup_key"].as_str()),
        (Some("resolve"), Some("rollwave/web/v3"))
    );

    // The signed webhook: its signature verifies with the key, and not with another.
    let signed = at("/signed");
    assert_eq!(signed.len(), 3);
    for r in &signed {
        assert!(verifies(SIGNING_KEY, r), "the signature verifies: {:?}", r.header("x-rollwave-signature"));
        assert!(!verifies("another key", r), "a wrong key does not verify");
        let mut tampered = r.clone();
        tampered.body.push(b' ');
        assert!(!verifies(SIGNING_KEY, &tampered), "a changed body does not verify");
        assert_eq!(r.header("x-rollwave-event"), json(r)["event"].as_str());
    }
    // Each notification has an id of its own, in the form of a UUID.
    let deliveries: std::collections::BTreeSet<&str> =
        all.iter().filter_map(|r| r.header("x-rollwave-delivery")).collect();
    assert_eq!(deliveries.len(), 9, "{deliveries:?}");
    assert!(deliveries.iter().all(|d| d.len() == 36 && d.matches('-').count() == 4), "{deliveries:?}");

    // Every read shows the references, never what they hold.
    let reads = [
        serde_json::to_string(&admin.status("web").unwrap()).unwrap(),
        admin.get::<serde_json::Value>("/v1/services/web").unwrap().to_string(),
        serde_json::to_string(&admin.events(0, 1000).unwrap().events).unwrap(),
    ];
    for read in &reads {
        assert!(!read.contains(ROUTING_KEY) && !read.contains(SIGNING_KEY), "a read shows a secret: {read}");
    }
    let status = admin.status("web").unwrap().notifications;
    assert_eq!(status.len(), 3);
    assert!(status.iter().all(|n| n.delivered == 3 && n.failed_attempts == 0), "{status:?}");
}

#[test]
fn a_secret_that_vanishes_fails_the_delivery_naming_the_file_and_never_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("signing-key");
    std::fs::write(&secret_file, SIGNING_KEY).unwrap();
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = Arc::clone(&received);
    let address = support::receiver(move |_, request| {
        seen.lock().unwrap().push(request.clone());
        ("200 OK", "text/plain", String::new())
    });
    let manifest = format!(
        "service: web\n\
         environments:\n  prod: {{ regions: {{ r1: {{ zones: {{ z1: 1 }} }} }} }}\n\
         strategy:\n  one_box: false\n  rolling: {{ batch: 100%, zone_bake: 0s }}\n\
         stages:\n  - {{ name: prod, environment: prod, bake: 0s }}\n\
         notifications:\n  - {{ url: \"http://{address}/signed\", secret: {{ file: {} }}, on: [completed] }}\n",
        secret_file.display()
    );
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    std::fs::remove_file(&secret_file).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("a failed attempt is recorded", || {
        s.advance(rollwave_server::leader::SWEEP);
        admin.status("web").unwrap().notifications.iter().any(|n| n.failed_attempts > 0)
    });
    let status = admin.status("web").unwrap().notifications;
    let error = status[0].last_error.clone().unwrap_or_default();
    assert!(error.contains(&secret_file.display().to_string()), "the error names the file: {error}");
    assert!(!error.contains(SIGNING_KEY));
    assert!(received.lock().unwrap().is_empty(), "nothing is sent unsigned when the key cannot be read");
}
