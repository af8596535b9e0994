//! A flag release end to end with real processes: a server, three agents started by
//! `rollwave fleet up` (one per zone), each serving its host's flag set over OFREP on
//! localhost, and a relay following the region. Traffic is what each host's app would do:
//! it asks its own agent for `new-checkout` and fails every request while that is on.
//! A good flag release completes; a bad one is caught at its one-box (by the one-box
//! judge or the zone's alarm) and rolled back there only, while the other zones never
//! serve it.

use crate::kit::{BIN, Proc, Server, free_port, one_world_at_a_time, rollwave_process, wait_for};
use rollwave_api::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const MANIFEST: &str = "\
service: web
environments:
  prod: { regions: { r1: { zones: { a1: 1, a2: 1, a3: 1 } } } }
strategy:
  one_box: { hosts: 1, max_share: 34%, bake: { time: 3s, min_datapoints: 5 } }
  rolling: { batch: 100%, zone_bake: { time: 1s, min_datapoints: 5 }, deploy_timeout: 1m }
stages:
  - { name: prod, environment: prod, bake: 1s }
alarms:
  - { name: zone-errors, metric: error_rate, scope: zone, threshold: \"> 0.1\", period: 1s, datapoints: 2 of 2, missing: not_breaching }
";

const ZONES: [&str; 3] = ["a1", "a2", "a3"];

fn flag_set(checkout: &str, banner: &str) -> serde_json::Value {
    serde_json::json!({
        "flags": {
            "new-checkout": { "state": "ENABLED", "variants": { "on": true, "off": false }, "defaultVariant": checkout },
            "banner": { "state": "ENABLED", "variants": { "blue": "blue", "green": "green" }, "defaultVariant": banner }
        }
    })
}

/// One OFREP evaluation at `base` (`http://host:port`): the flag's value, or `None`
/// when the endpoint does not answer with one.
fn evaluate(base: &str, flag: &str, key: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut answer = agent
        .post(format!("{base}/ofrep/v1/evaluate/flags/{flag}"))
        .send_json(serde_json::json!({ "context": { "targetingKey": key } }))
        .ok()?;
    let body: serde_json::Value = answer.body_mut().read_json().ok()?;
    body.get("value").cloned()
}

/// The OFREP base URL a host's agent serves its flags at, once it does.
fn host_ofrep(fleet: &Path, zone: &str) -> Option<String> {
    std::fs::read_to_string(fleet.join(format!("{zone}-1/flags/address"))).ok().map(|s| s.trim().to_owned())
}

/// The flag-set version a host's agent serves (its `flags/current`).
fn host_flags(fleet: &Path, zone: &str) -> Option<String> {
    let text = std::fs::read_to_string(fleet.join(format!("{zone}-1/flags/current"))).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

/// Each host's app: 20 requests per round, all failing while its agent says
/// `new-checkout` is on; pushed as a router of the region would.
fn traffic(base: String, fleet: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let client = Client::new(&base, Some(Server::ADMIN.to_owned()));
        while !stop.load(Ordering::Relaxed) {
            let samples = ZONES
                .iter()
                .map(|zone| {
                    let on = host_ofrep(&fleet, zone)
                        .and_then(|url| evaluate(&url, "new-checkout", "user-1"))
                        .is_some_and(|v| v == serde_json::Value::Bool(true));
                    MetricSample {
                        host: format!("{zone}-1"),
                        version: "baseline".into(),
                        requests: 20,
                        errors: if on { 20 } else { 0 },
                        latency_buckets: Vec::new(),
                    }
                })
                .collect();
            let _ = client.push_metrics(&MetricsPush {
                service: "web".into(),
                environment: "prod".into(),
                samples,
                gauges: Vec::new(),
            });
            // A round of traffic, not a wait for a condition.
            std::thread::sleep(Duration::from_millis(250));
        }
    })
}

fn flag_release(client: &Client, version: &str, flags: serde_json::Value) {
    let release = CreateRelease { version: version.into(), artifact: None, sha256: None, flags: Some(flags) };
    let view = client.create_release("web", &release).unwrap();
    assert_eq!(view.lane, Lane::Flags);
}

fn outcome(client: &Client, version: &str) -> Outcome {
    client.release("web", version).unwrap().release.outcome
}

#[test]
fn a_bad_flag_release_is_rolled_back_in_the_zone_that_tripped_and_nowhere_else() {
    let _alone = one_world_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder().driver(Some("agent")).args(&["--datapoint-bin", "1s"]).start();
    let client = server.client();
    client.apply("web.yaml", MANIFEST).unwrap();
    let fleet_dir = dir.path().join("fleet");
    let _fleet = Proc(
        Command::new(BIN)
            .args(["fleet", "up", "--server", &server.base, "--service", "web", "--environment", "prod"])
            .args(["--region", "r1", "--zones", "a1,a2,a3", "--hosts-per-zone", "1"])
            .args(["--workdir", fleet_dir.to_str().unwrap()])
            .env("ROLLWAVE_TOKEN", Server::ADMIN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let router_token = client
        .create_token(&CreateToken { role: "router".into(), region: Some("web/prod/r1".into()), ..Default::default() })
        .unwrap()
        .token;
    let relay_port = free_port();
    let relay_listen = format!("127.0.0.1:{relay_port}");
    let relay_state = dir.path().join("relay");
    let _relay = rollwave_process(
        &["relay", "--server", &server.base, "--service", "web", "--environment", "prod", "--region", "r1"],
        &[
            ("ROLLWAVE_TOKEN", router_token.as_str()),
            ("ROLLWAVE_RELAY_LISTEN", relay_listen.as_str()),
            ("ROLLWAVE_STATE_DIR", relay_state.to_str().unwrap()),
        ],
    );
    let relay = format!("http://{relay_listen}");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = traffic(server.base.clone(), fleet_dir.clone(), Arc::clone(&stop));

    // A good flag release goes through one-box and every zone.
    flag_release(&client, "f1", flag_set("off", "blue"));
    wait_for("f1 to complete", Duration::from_secs(120), || outcome(&client, "f1") == Outcome::Completed);
    for zone in ZONES {
        assert_eq!(host_flags(&fleet_dir, zone).as_deref(), Some("f1"), "{zone}");
        let url = host_ofrep(&fleet_dir, zone).unwrap();
        assert_eq!(evaluate(&url, "banner", "user-1"), Some(serde_json::json!("blue")), "{zone} serves f1");
    }
    wait_for("the relay to serve f1", Duration::from_secs(30), || {
        evaluate(&relay, "banner", "user-1") == Some(serde_json::json!("blue"))
    });

    // A bad one: its one-box (a1) fails every request.
    flag_release(&client, "f2", flag_set("on", "green"));
    wait_for("f2 to halt", Duration::from_secs(120), || outcome(&client, "f2") == Outcome::Halted);
    wait_for("a1's rollback to finish", Duration::from_secs(60), || {
        client.release("web", "f2").unwrap().events.iter().any(|e| e.kind == EventKind::RollbackCompleted)
    });
    let detail = client.release("web", "f2").unwrap();
    assert_eq!(detail.release.rolled_back_scopes, ["prod/r1/a1"], "{:?}", detail.release);
    // Caught at the one-box: by the one-box judge (its hosts against the region's others
    // on the same code) or by the zone's alarm, whichever speaks first.
    let rollback =
        detail.events.iter().find(|e| e.kind == EventKind::RollbackStarted).expect("a rollback in f2's timeline");
    assert!(rollback.scope.starts_with("prod/r1/a1"), "{rollback:?}");
    let reason = rollback.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("one-box judge") || reason.contains("alarm zone-errors"), "{rollback:?}");
    for zone in ZONES {
        assert_eq!(host_flags(&fleet_dir, zone).as_deref(), Some("f1"), "{zone} serves f1 (again)");
        let url = host_ofrep(&fleet_dir, zone).unwrap();
        assert_eq!(evaluate(&url, "new-checkout", "user-1"), Some(serde_json::json!(false)), "{zone}");
    }
    // a2 and a3 never served f2: their agents never fetched it.
    for zone in ["a2", "a3"] {
        assert!(!fleet_dir.join(format!("{zone}-1/flags/f2.json")).exists(), "{zone} never got f2");
    }
    assert!(fleet_dir.join("a1-1/flags/f2.json").exists(), "the one-box got f2");
    // With no host of the region on f2, the relay gives everyone f1.
    wait_for("the relay to serve f1 to every key", Duration::from_secs(30), || {
        (0..50).all(|i| evaluate(&relay, "new-checkout", &format!("user-{i}")) == Some(serde_json::json!(false)))
    });
    // The code lane saw none of it.
    assert!(client.status("web").unwrap().releases.iter().all(|r| r.lane == Lane::Flags));
    // The dashboard's pipeline shows the region's flags lane: f2 rolled back, every host on f1.
    let board = ureq::get(&format!("{}/services/web", server.base))
        .header("Cookie", format!("rollwave_token={}", Server::ADMIN))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let lane = &board[board.find("class=\"lane-flags").expect("a flags lane in the cell")..];
    let lane = &lane[..lane.find("</div>").unwrap()];
    assert!(lane.contains("data-flag-versions=\"f1:3\""), "{lane}");
    assert!(lane.contains("<span class=\"release\">f2</span>"), "{lane}");

    // The operator's word: roll f2 back everywhere.
    let _: ReleaseView = client.action("web", "f2", OperatorAction::Rollback, None).unwrap();
    wait_for("f2 to be rolled back", Duration::from_secs(30), || outcome(&client, "f2") == Outcome::RolledBack);
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
}
