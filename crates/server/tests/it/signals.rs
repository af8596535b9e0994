//! Health signals end to end through the API: pushed traffic and agents' gauges become
//! alarm states and bake data points; an alarm where a release is deploying rolls that
//! zone back at once.

use crate::support;

use rollwave_server::Driver;
use rollwave_server::api::*;
use rollwave_server::clock::Clock;
use rollwave_server::leader::SWEEP;
use std::time::Duration;
use support::{ADMIN, TestServer};

/// Virtual time a test lets pass, at most, for what it waits on: 120 sweeps (a minute).
const PATIENCE: u32 = 120;

const MANIFEST: &str = "\
service: web
environments:
  prod: { regions: { r1: { zones: { z1: 2, z2: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 25%, bake: { time: 30s, min_datapoints: 50 } }
  rolling: { batch: 50%, zone_bake: 0s }
stages:
  - { name: prod, environment: prod, bake: 0s }
alarms:
  - { name: errors, metric: error_rate, scope: zone, threshold: \"> 0.05\", period: 2s, datapoints: 1 of 1 }
";

/// Latency buckets with every request under 25 ms.
fn fast(requests: u64) -> Vec<u64> {
    let mut b = vec![0; LATENCY_BOUNDS_MS.len() + 1];
    b[2] = requests;
    b
}

fn push(s: &TestServer, samples: Vec<MetricSample>) {
    let admin = s.client(Some(ADMIN));
    let _: Accepted = admin.post("/v1/metrics", &gauges_push(samples, Vec::new())).unwrap();
}

fn gauges_push(samples: Vec<MetricSample>, gauges: Vec<GaugeSample>) -> MetricsPush {
    MetricsPush { service: "web".into(), environment: "prod".into(), samples, gauges }
}

fn gauge(host: &str, version: &str, name: &str, value: f64) -> GaugeSample {
    GaugeSample { host: host.into(), version: version.into(), name: name.into(), value }
}

/// Once `release`'s one-box bakes, pushes `traffic(round)` each sweep until the release
/// halts; the release then and the failing verdict in its timeline.
fn judged_until_halted(
    s: &TestServer,
    release: &str,
    traffic: impl Fn(u32) -> Vec<MetricSample>,
) -> (ReleaseDetail, EventView) {
    let admin = s.client(Some(ADMIN));
    s.wait_for("the one-box bakes", || {
        admin.release("web", release).unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeStarted)
    });
    for round in 0..PATIENCE {
        push(s, traffic(round));
        if admin.release("web", release).unwrap().release.outcome == rollwave_api::Outcome::Halted {
            break;
        }
        s.advance(SWEEP);
    }
    let detail = admin.release("web", release).unwrap();
    assert_eq!(detail.release.outcome, rollwave_api::Outcome::Halted, "{:?}", detail.events);
    let verdict = detail
        .events
        .iter()
        .find(|e| e.kind == rollwave_api::EventKind::JudgeVerdict)
        .expect("a verdict in the timeline")
        .clone();
    assert!(verdict.reason.as_deref().unwrap().contains("FAIL"), "{verdict:?}");
    (detail, verdict)
}

/// A server with the manifest's one-box judged by `method` (no alarm: only the judge
/// stands between the one-box and its zone), and v2 created.
fn v2_judged_by(method: &str) -> TestServer {
    let manifest = MANIFEST
        .split("alarms:")
        .next()
        .unwrap()
        .replace("min_datapoints: 50 }", &format!("min_datapoints: 50 }}, judge: {{ method: {method} }}"));
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s
}

fn sample(host: &str, version: &str, requests: u64, errors: u64) -> MetricSample {
    MetricSample { host: host.into(), version: version.into(), requests, errors, latency_buckets: fast(requests) }
}

#[test]
fn an_alarm_where_the_one_box_bakes_rolls_it_back_within_seconds() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", MANIFEST).unwrap();
    for (zone, host, port) in [("z1", "z1-1", 9101), ("z1", "z1-2", 9102), ("z2", "z2-1", 9103), ("z2", "z2-2", 9104)] {
        let _: Registered = admin
            .post(
                "/v1/hosts/register",
                &RegisterHost {
                    service: Some("web".into()),
                    environment: "prod".into(),
                    host: host.into(),
                    region: Some("r1".into()),
                    zone: Some(zone.into()),
                    address: Some(format!("127.0.0.1:{port}")),
                },
            )
            .unwrap();
    }
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("the one-box bakes", || {
        admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeStarted)
    });

    // The router's table: the one-box is the canary, a quarter of the region.
    let routes: Routes = admin.get("/v1/services/web/routes/prod/r1").unwrap();
    assert_eq!((routes.release.as_deref(), routes.canary_share), (Some("v2"), 2500));
    assert_eq!(routes.salt, "web-v2");
    let canary: Vec<&str> =
        routes.hosts.iter().filter(|h| h.track == rollwave_api::Track::Canary).map(|h| h.address.as_str()).collect();
    assert_eq!(canary, ["127.0.0.1:9101"]);

    // Healthy traffic for a while: data points count toward the bake, no alarm. (Only
    // the one-box reports, so the one-box judge has no baseline and stays out of it.)
    for _ in 0..3 {
        push(&s, vec![sample("127.0.0.1:9101", "v2", 40, 0)]);
        s.advance(Duration::from_secs(1));
    }
    let series: MetricSeries =
        admin.get("/v1/metrics?service=web&metric=error_rate&scope=prod/r1/z1&since=60").unwrap();
    assert!(!series.points.is_empty() && series.points.iter().all(|(_, v)| *v == 0.0), "{series:?}");
    // What an operator graphs meanwhile: the one-box's bake counting down, no alarm firing.
    let scrape = support::Scrape::of(&s.base);
    let bake = r#"{service="web",release="v2",scope="prod/r1"}"#;
    let left = scrape.value(&format!("rollwave_bake_remaining_seconds{bake}")).expect("the bake's time left");
    assert!(left > 0.0 && left <= 30.0, "{}", scrape.0);
    let missing = scrape.value(&format!("rollwave_bake_remaining_datapoints{bake}")).expect("its data points");
    assert!((0.0..=50.0).contains(&missing), "{}", scrape.0);
    let firing = r#"rollwave_alarms_firing{service="web",alarm="errors"}"#;
    assert_eq!(scrape.value(firing), Some(0.0), "{}", scrape.0);

    // Then the one-box fails 30% of its requests.
    let breach = s.virtual_clock().now();
    let mut rolled_back = false;
    for _ in 0..PATIENCE {
        push(&s, vec![sample("127.0.0.1:9101", "v2", 40, 12)]);
        let events = admin.release("web", "v2").unwrap().events;
        if events.iter().any(|e| e.kind == rollwave_api::EventKind::RollbackStarted && e.scope == "prod/r1/z1") {
            rolled_back = true;
            break;
        }
        s.advance(SWEEP);
    }
    let took = s.virtual_clock().now().duration_since(breach);
    assert!(rolled_back, "no rollback after {took:?}");
    // The alarm's 2 s period closes, then its grace passes: seconds, not minutes.
    assert!(took.as_secs() <= 10, "rollback started {took:?} after the first breaching push");
    let detail = admin.release("web", "v2").unwrap();
    assert_eq!(detail.release.outcome, rollwave_api::Outcome::Halted);
    let fired = detail.events.iter().find(|e| e.kind == rollwave_api::EventKind::AlarmFired).unwrap();
    assert!(
        fired.reason.as_deref().unwrap().starts_with("alarm errors: 1 of the last 1 periods breached > 0.05"),
        "{fired:?}"
    );
    // Only the zone that tripped is rolled back.
    assert_eq!(detail.release.rolled_back_scopes, ["prod/r1/z1"]);
    let scrape = support::Scrape::of(&s.base);
    assert_eq!(scrape.value(firing), Some(1.0), "firing in z1: {}", scrape.0);
    assert_eq!(scrape.value(&format!("rollwave_bake_remaining_seconds{bake}")), None, "the bake ended");
}

#[test]
fn the_one_box_judge_rolls_back_a_one_box_worse_than_its_baseline() {
    // Kayenta's rank test, whose table this checks; the flag test below uses the default.
    let s = v2_judged_by("mann_whitney");
    // The one-box fails about 8% of requests; the baseline well under 1%.
    let (detail, verdict) = judged_until_halted(&s, "v2", |round| {
        vec![
            sample("z1-1", "v2", 100, 7 + u64::from(round % 3)),
            sample("z1-2", "baseline", 100, u64::from(round % 2)),
            sample("z2-1", "baseline", 100, 0),
            sample("z2-2", "baseline", 100, 1),
        ]
    });
    let table = verdict.output.as_deref().expect("the per-metric table");
    assert!(table.contains("error_rate") && table.contains("latency_p99_ms"), "{table}");
    assert_eq!(detail.release.rolled_back_scopes, ["prod/r1/z1"]);
    // The release page shows the verdict as a table of its metrics, marked as failed.
    let page = ureq::get(&format!("{}/services/web/releases/v2", s.base))
        .header("Cookie", format!("rollwave_token={ADMIN}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let judge = &page[page.find("One-box judge").expect("the judge's section")..];
    assert!(judge.contains("verdict state-halted"), "{judge}");
    assert!(judge.contains("<th scope=\"col\">bad if</th>"), "{judge}");
    assert!(judge.contains("<td>error_rate</td>") && judge.contains("<td>latency_p99_ms</td>"), "{judge}");
    assert!(judge.contains("Compared: canary z1-1 against baseline z1-2, z2-1, z2-2 (on baseline)"), "{judge}");
}

#[test]
fn the_sequential_judge_rolls_back_sparse_errors_on_the_one_box() {
    // Sparse errors: 1 or 2 in a push of 20 on the one-box, none elsewhere. Most per-push
    // error rates of both sides are 0: on this traffic `mann_whitney` passes the one-box
    // (p = 2.5e-22, but a shift of 0 and an interval of [0, 0.05]).
    let s = v2_judged_by("sequential, alpha: 0.01");
    let (detail, verdict) = judged_until_halted(&s, "v2", |round| {
        vec![
            sample("z1-1", "v2", 20, u64::from(round % 3 == 0) + u64::from(round % 5 == 0)),
            sample("z1-2", "baseline", 20, 0),
            sample("z2-1", "baseline", 20, 0),
            sample("z2-2", "baseline", 20, 0),
        ]
    });
    assert!(verdict.reason.as_deref().unwrap().starts_with("sequential (FAIL)"), "{verdict:?}");
    let table = verdict.output.as_deref().expect("the per-test table");
    assert!(table.contains("e-value") && table.contains("error_rate"), "{table}");
    // It says whom it compared, and where each test stood at its looks.
    assert!(table.contains("compared: canary z1-1 against baseline z1-2, z2-1, z2-2 (on baseline)"), "{table}");
    assert!(
        table.contains("looks (e-value per test; boundaries error_rate 200.000, latency_p99_ms 200.000)"),
        "{table}"
    );
    assert!(table.contains("    bin 1: canary n "), "{table}");
    assert_eq!(detail.release.rolled_back_scopes, ["prod/r1/z1"]);
}

#[test]
fn a_metric_the_manifest_makes_not_critical_holds_the_one_box_instead_of_rolling_it_back() {
    let s = v2_judged_by("sequential, metrics: [{ metric: error_rate, critical: false }]");
    let admin = s.client(Some(ADMIN));
    s.wait_for("the one-box bakes", || {
        admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeStarted)
    });
    let verdict = |admin: &rollwave_server::client::Client| {
        admin.release("web", "v2").unwrap().events.into_iter().find(|e| e.kind == rollwave_api::EventKind::JudgeVerdict)
    };
    for round in 0..PATIENCE {
        push(
            &s,
            vec![
                sample("z1-1", "v2", 20, 1 + u64::from(round % 2)),
                sample("z1-2", "baseline", 20, 0),
                sample("z2-1", "baseline", 20, 0),
                sample("z2-2", "baseline", 20, 0),
            ],
        );
        if verdict(&admin).is_some() {
            break;
        }
        s.advance(SWEEP);
    }
    let verdict = verdict(&admin).expect("a verdict once the bake's time is up");
    let reason = verdict.reason.as_deref().unwrap();
    assert!(reason.starts_with("sequential (MARGINAL): held for an operator: `error_rate` is High"), "{reason}");
    // Only the metric the manifest lists was tested.
    let table = verdict.output.as_deref().unwrap();
    assert!(!table.contains("latency_p99_ms"), "{table}");
    let detail = admin.release("web", "v2").unwrap();
    assert!(detail.release.rolled_back_scopes.is_empty(), "{:?}", detail.events);
    assert!(!detail.events.iter().any(|e| e.kind == rollwave_api::EventKind::RollbackStarted), "{:?}", detail.events);
}

#[test]
fn the_sequential_judge_passes_a_good_one_box_once_its_bake_is_up_and_it_moves_on() {
    let s = v2_judged_by("sequential");
    let admin = s.client(Some(ADMIN));
    s.wait_for("the one-box bakes", || {
        admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeStarted)
    });
    for round in 0..PATIENCE {
        // Errors in proportion to traffic on every host: nothing to blame the one-box for.
        let errors = u64::from(round % 4 == 0);
        push(
            &s,
            ["z1-1", "z1-2", "z2-1", "z2-2"]
                .iter()
                .map(|h| sample(h, if *h == "z1-1" { "v2" } else { "baseline" }, 20, errors))
                .collect(),
        );
        let events = admin.release("web", "v2").unwrap().events;
        if events.iter().any(|e| e.kind == rollwave_api::EventKind::JudgeVerdict) {
            break;
        }
        s.advance(SWEEP);
    }
    let detail = admin.release("web", "v2").unwrap();
    let verdict = detail
        .events
        .iter()
        .find(|e| e.kind == rollwave_api::EventKind::JudgeVerdict)
        .expect("a verdict once the bake's time is up");
    assert!(verdict.reason.as_deref().unwrap().starts_with("sequential (PASS)"), "{verdict:?}");
    assert_ne!(detail.release.outcome, rollwave_api::Outcome::Halted, "{:?}", detail.events);
}

#[test]
fn what_a_rolled_back_release_did_is_not_blamed_on_the_release_before_it() {
    // v2 completes; v3's one-box fails and is rolled back. Its errors are still in the
    // region's recent data (and late pushes bring more): they must not fire the region
    // alarm against v2 as a regression.
    let manifest = MANIFEST
        .replace("bake: { time: 30s, min_datapoints: 50 }", "bake: { time: 5s, min_datapoints: 1 }")
        .replace(
            "datapoints: 1 of 1 }",
            "datapoints: 1 of 1, missing: not_breaching }\n  - { name: region-errors, metric: error_rate, scope: region, threshold: \"> 0.05\", period: 2s, datapoints: 2 of 2, missing: not_breaching }",
        );
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("v2 completes", || {
        push(&s, ["z1-1", "z1-2", "z2-1", "z2-2"].iter().map(|h| sample(h, "v2", 20, 0)).collect());
        s.advance(SWEEP);
        admin.release("web", "v2").unwrap().release.outcome == rollwave_api::Outcome::Completed
    });
    admin
        .create_release("web", &CreateRelease { version: "v3".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("v3's one-box is rolled back", || {
        push(&s, vec![sample("z1-1", "v3", 40, 20), sample("z1-2", "v2", 40, 0)]);
        s.advance(SWEEP);
        admin.release("web", "v3").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::RollbackCompleted)
    });
    // The operator rolls v3 back everywhere: nothing of it is in flight any more.
    admin.action("web", "v3", rollwave_api::OperatorAction::Rollback, None).unwrap();
    // Late pushes of what v3 did on z1-1, and healthy v2 traffic, over three periods.
    for _ in 0..12 {
        push(&s, vec![sample("z1-1", "v3", 40, 20), sample("z1-1", "v2", 40, 0), sample("z1-2", "v2", 40, 0)]);
        s.advance(SWEEP);
    }
    let v2 = admin.release("web", "v2").unwrap();
    assert_eq!(v2.release.outcome, rollwave_api::Outcome::Completed, "{:?}", v2.events);
    let events: EventPage = admin.get("/v1/events?after=0&limit=1000").unwrap();
    let suspected: Vec<&EventView> =
        events.events.iter().filter(|e| e.kind == rollwave_api::EventKind::RegressionSuspected).collect();
    assert!(suspected.is_empty(), "{suspected:?}");
    assert_eq!(admin.release("web", "v3").unwrap().release.outcome, rollwave_api::Outcome::RolledBack);
}

#[test]
fn a_judged_one_box_waits_for_a_passing_verdict_before_its_zone() {
    let manifest = MANIFEST
        .split("alarms:")
        .next()
        .unwrap()
        .replace("bake: { time: 30s, min_datapoints: 50 }", "bake: { time: 1s, min_datapoints: 1 }, judge: true");
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("the one-box bakes", || {
        admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeStarted)
    });
    // The one-box alone serves: its time and data points are met, but there is nothing
    // to compare it with, so no verdict, and the bake holds.
    s.wait_for("the bake says what it waits for", || {
        push(&s, vec![sample("z1-1", "v2", 50, 0)]);
        s.advance(SWEEP);
        admin.release("web", "v2").unwrap().events.iter().any(|e| {
            e.kind == rollwave_api::EventKind::Blocked
                && e.reason.as_deref().is_some_and(|r| r.contains("waiting for the one-box judge"))
        })
    });
    assert!(!admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::ZoneStarted));
    // With a healthy baseline beside it, the judge passes it and the zone goes on.
    s.wait_for("the zone starts after a passing verdict", || {
        push(
            &s,
            vec![
                sample("z1-1", "v2", 100, 0),
                sample("z1-2", "baseline", 100, 0),
                sample("z2-1", "baseline", 100, 0),
                sample("z2-2", "baseline", 100, 0),
            ],
        );
        s.advance(SWEEP);
        admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::ZoneStarted)
    });
    let events = admin.release("web", "v2").unwrap().events;
    let completed =
        events.iter().position(|e| e.kind == rollwave_api::EventKind::BakeCompleted).expect("the bake completed");
    let verdicts: Vec<&str> = events[..completed]
        .iter()
        .filter(|e| e.kind == rollwave_api::EventKind::JudgeVerdict)
        .map(|e| e.reason.as_deref().unwrap_or_default())
        .collect();
    // While the one-box served alone the judge could only say it had nothing to compare
    // with (marginal: the bake keeps waiting); the pass came with the baseline.
    let (last, earlier) = verdicts.split_last().expect("a verdict before the bake completed");
    assert!(last.contains("(PASS)"), "{verdicts:?}");
    assert!(earlier.iter().all(|v| v.contains("(MARGINAL)") && v.contains("no baseline")), "{verdicts:?}");
}

/// A webhook receiver that fails its first request and takes the rest.
fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&bodies);
    let address = support::responder(move |n, body| {
        if n == 0 {
            return ("500 Internal Server Error", "text/plain", String::new());
        }
        seen.lock().unwrap().push(String::from_utf8_lossy(body).into_owned());
        ("200 OK", "text/plain", String::new())
    });
    (format!("http://{address}/hook"), bodies)
}

#[test]
fn webhooks_hear_of_a_completed_release_and_retry_after_a_failure() {
    let (url, bodies) = receiver();
    let manifest = format!(
        "{}notifications:\n  - {{ url: \"{url}\", on: [completed, halted] }}\n",
        MANIFEST.split("alarms:").next().unwrap().replace("bake: { time: 30s, min_datapoints: 50 }", "bake: 0s")
    );
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("the notification arrives on the second attempt, and is recorded", || {
        // The retry waits a second of virtual time.
        s.advance(SWEEP);
        !bodies.lock().unwrap().is_empty() && admin.status("web").unwrap().notifications.iter().any(|n| n.delivered > 0)
    });
    let body: serde_json::Value = serde_json::from_str(&bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(
        (body["event"].as_str(), body["release"].as_str(), body["service"].as_str()),
        (Some("completed"), Some("v2"), Some("web"))
    );
    assert!(body["text"].as_str().unwrap().starts_with("rollwave: web v2 completed"), "{body}");
    let status = admin.status("web").unwrap().notifications;
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].delivered, status[0].failed_attempts, status[0].given_up), (1, 1, 0));
    assert_eq!(status[0].last_error.as_deref(), Some("the webhook answered 500"));
}

/// The test manifest without alarms and bakes, with `hooks` as its notifications.
fn with_webhooks(hooks: &str) -> String {
    format!(
        "{}notifications:\n{hooks}",
        MANIFEST.split("alarms:").next().unwrap().replace("bake: { time: 30s, min_datapoints: 50 }", "bake: 0s")
    )
}

/// A receiver that takes every request and keeps its body.
fn accepting_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&bodies);
    let address = support::responder(move |_, body| {
        seen.lock().unwrap().push(String::from_utf8_lossy(body).into_owned());
        ("200 OK", "text/plain", String::new())
    });
    (address, bodies)
}

#[test]
fn a_literal_webhook_url_is_shown_only_up_to_its_host() {
    let (url, bodies) = receiver();
    let address = url.trim_start_matches("http://").trim_end_matches("/hook").to_owned();
    // A port nothing listens on: every attempt fails, and the error must not quote the URL.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let manifest = with_webhooks(&format!(
        "  - {{ url: \"http://{address}/services/T0/B0/SECRETPATH?token=SECRETQUERY\", on: [completed] }}\n\
         \x20 - {{ url: \"http://{closed}/services/T1/B1/SECRETPATH2\", on: [completed] }}\n"
    ));
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("the notification arrives on the second attempt", || {
        s.advance(SWEEP);
        !bodies.lock().unwrap().is_empty()
    });
    s.wait_for("the closed port has failed twice", || {
        s.advance(SWEEP);
        admin.status("web").unwrap().notifications.iter().any(|n| n.failed_attempts >= 2 && n.delivered == 0)
    });
    let status = admin.status("web").unwrap().notifications;
    let shown: Vec<&str> = status.iter().map(|n| n.url.as_str()).collect();
    let (open_shown, closed_shown) = (format!("http://{address}/…"), format!("http://{closed}/…"));
    assert!(shown.contains(&open_shown.as_str()) && shown.contains(&closed_shown.as_str()), "{shown:?}");
    assert!(status.iter().all(|n| n.last_error.is_some()), "both failed at least once: {status:?}");
    // What every read of the service gives, as text.
    let read: serde_json::Value = admin.get("/v1/services/web").unwrap();
    let read = read.to_string();
    for secret in ["SECRETPATH", "SECRETQUERY", "T0/B0", "T1/B1"] {
        assert!(!read.contains(secret), "{secret} in {read}");
    }
}

#[test]
fn a_webhook_url_read_from_a_file_is_delivered_and_a_vanished_file_is_a_failed_delivery() {
    let (address, bodies) = accepting_receiver();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook");
    std::fs::write(&secret, format!("http://{address}/hook/SECRETPATH\n")).unwrap();
    let manifest = with_webhooks(&format!("  - {{ url: {{ file: {} }}, on: [completed] }}\n", secret.display()));
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
    assert_eq!((body["event"].as_str(), body["release"].as_str()), (Some("completed"), Some("v2")));
    let status = admin.status("web").unwrap().notifications;
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].url.clone(), status[0].delivered), (format!("file:{}", secret.display()), 1));

    // The file is read at each delivery: once it is gone, a delivery fails and says why.
    std::fs::remove_file(&secret).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v3".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("the delivery fails", || admin.status("web").unwrap().notifications[0].failed_attempts > 0);
    let status = admin.status("web").unwrap().notifications;
    let error = status[0].last_error.clone().unwrap();
    assert!(error.starts_with(&format!("cannot read file {} on the server", secret.display())), "{error}");
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

#[test]
fn a_secret_reference_the_server_cannot_resolve_is_refused_at_its_place_when_applied() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_url = dir.path().join("not-a-url");
    std::fs::write(&not_a_url, "SECRET-BUT-NOT-A-URL").unwrap();
    let manifest = with_webhooks(&format!(
        "  - {{ url: {{ env: ROLLWAVE_TEST_WEBHOOK_NEVER_SET }} }}\n  - {{ url: {{ file: {} }} }}\n",
        not_a_url.display()
    ));
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    let err = admin.apply("web.yaml", &manifest).unwrap_err();
    let rollwave_server::client::ClientError::Api { status, message, .. } = err else { panic!("{err}") };
    assert_eq!(status, 422);
    assert!(
        message
            .contains("web.yaml:10:19: environment variable ROLLWAVE_TEST_WEBHOOK_NEVER_SET is not set on the server"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "web.yaml:11:20: file {} on the server does not hold an http:// or https:// URL",
            not_a_url.display()
        )),
        "{message}"
    );
    assert!(!message.contains("SECRET-BUT-NOT-A-URL"), "{message}");
    assert!(admin.status("web").is_err(), "nothing was applied");
}

/// A host's service: answers every request with 200 "ok".
fn healthy_backend() -> String {
    support::responder(|_, _| ("200 OK", "text/plain", "ok".to_owned()))
}

#[test]
fn a_quiet_region_completes_its_bakes_on_monitor_checks_alone() {
    let manifest = "\
service: quiet
environments:
  prod: { regions: { r1: { zones: { z1: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 50%, bake: { time: 1s, min_datapoints: 3 } }
  rolling: { batch: 50%, zone_bake: { time: 0s, min_datapoints: 3 } }
stages:
  - { name: prod, environment: prod, bake: 0s }
monitors:
  - { name: health, request: { path: /health }, expect: { status: 200, body_contains: ok }, every: 1s }
";
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("quiet.yaml", manifest).unwrap();
    for host in ["z1-1", "z1-2"] {
        let _: Registered = admin
            .post(
                "/v1/hosts/register",
                &RegisterHost {
                    service: Some("quiet".into()),
                    environment: "prod".into(),
                    host: host.into(),
                    region: Some("r1".into()),
                    zone: Some("z1".into()),
                    address: Some(healthy_backend()),
                },
            )
            .unwrap();
    }
    admin
        .create_release("quiet", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    // No router pushes anything: only the monitor's checks count as data points.
    s.wait_for("v2 completes", || {
        // Checks run every second of virtual time.
        s.advance(SWEEP);
        admin.release("quiet", "v2").unwrap().release.outcome == rollwave_api::Outcome::Completed
    });
    let success: MetricSeries =
        admin.get("/v1/metrics?service=quiet&metric=monitor:health:success_rate&scope=prod/r1/z1&since=120").unwrap();
    assert!(!success.points.is_empty() && success.points.iter().all(|(_, v)| *v == 1.0), "{success:?}");
}

fn register_all(admin: &rollwave_server::client::Client) {
    for (zone, host) in [("z1", "z1-1"), ("z1", "z1-2"), ("z2", "z2-1"), ("z2", "z2-2")] {
        let register = RegisterHost {
            service: Some("web".into()),
            environment: "prod".into(),
            host: host.into(),
            region: Some("r1".into()),
            zone: Some(zone.into()),
            address: None,
        };
        let _: Registered = admin.post("/v1/hosts/register", &register).unwrap();
    }
}

#[test]
fn gauges_pushed_by_agents_are_queried_in_bins_per_scope() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", MANIFEST).unwrap();
    register_all(&admin);
    // An agent's token pushes its own host's gauges (no traffic samples at all).
    let token = admin
        .create_token(&CreateToken {
            role: "agent".into(),
            name: None,
            host: Some("web/prod/z1-1".into()),
            ..Default::default()
        })
        .unwrap()
        .token;
    let agent = s.client(Some(&token));
    // Virtual time stands still at the start of a 10 s bin: every push below falls in it.
    assert_eq!(s.virtual_clock().now_ms() % 10_000, 0);
    let own = vec![
        gauge("z1-1", "baseline", "cpu_percent", 20.0),
        gauge("z1-1", "baseline", "memory_percent", 40.0),
        gauge("z1-1", "baseline", "restarts", 2.0),
    ];
    let _: Accepted = agent.post("/v1/metrics", &gauges_push(Vec::new(), own)).unwrap();
    let _: Accepted = admin
        .post(
            "/v1/metrics",
            &gauges_push(
                Vec::new(),
                vec![
                    gauge("z1-2", "baseline", "cpu_percent", 60.0),
                    gauge("z1-2", "baseline", "restarts", 5.0),
                    gauge("z2-1", "baseline", "cpu_percent", 99.0),
                ],
            ),
        )
        .unwrap();
    // But not another host's.
    let other =
        agent.post::<_, Accepted>("/v1/metrics", &gauges_push(Vec::new(), vec![gauge("z1-2", "v", "restarts", 1.0)]));
    assert_eq!(other.unwrap_err().status(), Some(403));

    let series = |metric: &str, scope: &str| -> Vec<f64> {
        let q = format!("/v1/metrics?service=web&metric={metric}&scope={scope}&since=60");
        let series: MetricSeries = admin.get(&q).unwrap();
        assert_eq!((series.metric.to_string().as_str(), series.scope.as_str()), (metric, scope));
        series.points.iter().map(|(_, v)| *v).collect()
    };
    // Every push fell in one 10 s bin. Mean over the hosts in scope for CPU and memory;
    // the most restarts for restarts.
    assert_eq!(series("cpu_percent", "prod/z1-1"), [20.0]);
    assert_eq!(series("memory_percent", "prod/z1-1"), [40.0]);
    assert_eq!(series("restarts", "prod/z1-1"), [2.0]);
    assert_eq!(series("cpu_percent", "prod/r1/z1"), [40.0]);
    assert_eq!(series("restarts", "prod/r1/z1"), [5.0]);
    assert_eq!(series("cpu_percent", "prod"), [(20.0 + 60.0 + 99.0) / 3.0]);
    assert!(series("memory_percent", "prod/r1/z2").is_empty());
    // A version filter, and traffic metrics untouched by gauges.
    let q = "/v1/metrics?service=web&metric=cpu_percent&scope=prod&version=v9&since=60";
    assert!(admin.get::<MetricSeries>(q).unwrap().points.is_empty());
    assert!(series("request_rate", "prod").is_empty());
    // An unknown metric names the gauges among the choices.
    let err = admin.get::<MetricSeries>("/v1/metrics?service=web&metric=cpu&scope=prod").unwrap_err();
    assert!(
        matches!(&err, rollwave_server::client::ClientError::Api { status: 422, message, .. }
        if message.contains("cpu_percent, memory_percent, restarts")),
        "{err}"
    );
}

#[test]
fn a_bad_gauge_is_refused_naming_it_and_nothing_of_its_push_is_stored() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", MANIFEST).unwrap();
    register_all(&admin);
    let good = || vec![gauge("z1-1", "baseline", "cpu_percent", 10.0)];
    for (bad, says) in [
        (gauge("z1-2", "baseline", "load_average", 1.0), "unknown gauge \"load_average\""),
        (gauge("z1-2", "baseline", "cpu_percent", -1.0), "negative"),
        (gauge("z1-2", "baseline", "memory_percent", 100.5), "over 100"),
        (gauge("z1-2", "baseline", "restarts", -3.0), "negative"),
    ] {
        let push = gauges_push(vec![sample("z1-1", "baseline", 10, 0)], [good(), vec![bad.clone()]].concat());
        match admin.post::<_, Accepted>("/v1/metrics", &push).unwrap_err() {
            rollwave_server::client::ClientError::Api { status, code, message, details } => {
                assert_eq!((status, code.as_str()), (422, "invalid"), "{message}");
                assert!(
                    message.contains("gauges[1]") && message.contains(&bad.name) && message.contains(says),
                    "{message}"
                );
                assert_eq!(details["name"], bad.name.as_str());
            }
            other => panic!("{other}"),
        }
    }
    // Not a number at all: the body is malformed.
    let body = serde_json::json!({ "service": "web", "environment": "prod",
        "gauges": [{ "host": "z1-1", "version": "baseline", "name": "cpu_percent", "value": null }] });
    let err = admin.post::<_, Accepted>("/v1/metrics", &body).unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    // An unknown host is not found; nothing of that push is stored either.
    let push = gauges_push(Vec::new(), [good(), vec![gauge("nowhere", "baseline", "cpu_percent", 1.0)]].concat());
    assert_eq!(admin.post::<_, Accepted>("/v1/metrics", &push).unwrap_err().status(), Some(404));

    let stored = s.block_on(s.node.store.gauges("web", 0, i64::MAX)).unwrap();
    assert!(stored.is_empty(), "{stored:?}");
    let traffic = s.block_on(s.node.store.metrics("web", 0, i64::MAX)).unwrap();
    assert!(traffic.is_empty(), "{traffic:?}");
    // A push without gauges, as routers send it, is still taken.
    let _: Accepted = admin
        .post(
            "/v1/metrics",
            &serde_json::json!({ "service": "web", "environment": "prod",
        "samples": [{ "host": "z1-1", "version": "baseline", "requests": 3, "errors": 0 }] }),
        )
        .unwrap();
}

#[test]
fn a_host_cpu_alarm_fed_by_gauges_rolls_back_the_one_box_it_fires_on() {
    let manifest = MANIFEST.replace(
        "  - { name: errors, metric: error_rate, scope: zone, threshold: \"> 0.05\", period: 2s, datapoints: 1 of 1 }",
        "  - { name: hot, metric: cpu_percent, scope: host, threshold: \"> 90\", period: 2s, datapoints: 1 of 1 }",
    );
    assert!(manifest.contains("cpu_percent"));
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    register_all(&admin);
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("the one-box bakes", || {
        admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeStarted)
    });
    // A calm CPU for a while: nothing fires.
    for _ in 0..3 {
        let _: Accepted = admin
            .post("/v1/metrics", &gauges_push(Vec::new(), vec![gauge("z1-1", "v2", "cpu_percent", 35.0)]))
            .unwrap();
        s.advance(Duration::from_secs(1));
    }
    assert!(admin.release("web", "v2").unwrap().events.iter().all(|e| e.kind != rollwave_api::EventKind::AlarmFired));

    // Then the one-box runs hot; the other hosts stay calm.
    let hot = s.virtual_clock().now();
    let mut fired = None;
    for _ in 0..PATIENCE {
        let gauges = vec![
            gauge("z1-1", "v2", "cpu_percent", 97.5),
            gauge("z1-2", "baseline", "cpu_percent", 30.0),
            gauge("z2-1", "baseline", "cpu_percent", 30.0),
        ];
        let _: Accepted = admin.post("/v1/metrics", &gauges_push(Vec::new(), gauges)).unwrap();
        let events = admin.release("web", "v2").unwrap().events;
        if events.iter().any(|e| e.kind == rollwave_api::EventKind::RollbackStarted) {
            fired = events.into_iter().find(|e| e.kind == rollwave_api::EventKind::AlarmFired);
            break;
        }
        s.advance(SWEEP);
    }
    let took = s.virtual_clock().now().duration_since(hot);
    let fired = fired.unwrap_or_else(|| panic!("no rollback {took:?} after the CPU went hot"));
    assert!(took.as_secs() <= 10, "rollback started {took:?} after the first hot reading: {fired:?}");
    assert!(fired.scope.ends_with("z1-1"), "{fired:?}");
    assert!(
        fired.reason.as_deref().unwrap().starts_with("alarm hot: 1 of the last 1 periods breached > 90"),
        "{fired:?}"
    );
    let detail = admin.release("web", "v2").unwrap();
    assert_eq!(detail.release.outcome, rollwave_api::Outcome::Halted);
    let series: MetricSeries =
        admin.get("/v1/metrics?service=web&metric=cpu_percent&scope=prod/z1-1&version=v2&since=60").unwrap();
    // The latest bin holds hot readings (with calm ones, when the bin began before them).
    assert!(series.points.last().is_some_and(|(_, v)| *v > 35.0), "{series:?}");
}

#[test]
fn the_one_box_judge_rolls_back_a_flag_one_box_worse_than_the_hosts_on_the_same_code() {
    // A flag set that breaks the one-box's requests; the code is the same on every host.
    let manifest = MANIFEST.split("alarms:").next().unwrap().to_owned();
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(50) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest).unwrap();
    let flags = serde_json::json!({"flags": {"new-checkout": {
        "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"
    }}});
    admin
        .create_release(
            "web",
            &CreateRelease { version: "f1".into(), artifact: None, sha256: None, flags: Some(flags) },
        )
        .unwrap();
    // Traffic is counted by code version: every host on the same code, the one-box worse.
    let (detail, _) = judged_until_halted(&s, "f1", |round| {
        vec![
            sample("z1-1", "baseline", 100, 7 + u64::from(round % 3)),
            sample("z1-2", "baseline", 100, u64::from(round % 2)),
            sample("z2-1", "baseline", 100, 0),
            sample("z2-2", "baseline", 100, 1),
        ]
    });
    assert_eq!(detail.release.lane, rollwave_api::Lane::Flags);
    assert!(detail.release.reason.as_deref().unwrap().starts_with("one-box judge"), "{:?}", detail.release);
    assert_eq!(detail.release.rolled_back_scopes, ["prod/r1/z1"]);
}
