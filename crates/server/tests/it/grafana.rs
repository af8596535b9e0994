//! The Grafana dashboard in `packaging/grafana/` graphs only what the server exports, and
//! what it exports for hosts and webhooks follows what happened.

use crate::support;
use rollwave_server::Driver;
use rollwave_server::api::CreateRelease;
use std::collections::BTreeSet;
use std::time::Duration;
use support::{ADMIN, TestServer};

const DASHBOARD: &str = include_str!("../../../../packaging/grafana/rollwave.json");

/// The metric names a PromQL expression reads: every identifier that starts with
/// `rollwave_` (what rollwave exports is named so; functions, labels and keywords are not).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let (mut word, mut quoted) = (String::new(), false);
    // A trailing space ends the last word.
    for c in expr.chars().chain([' ']) {
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        // Inside a string (a label's value) it is not a name: strings are never words.
        if word.starts_with("rollwave_") {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
        if c == '"' {
            quoted = !quoted;
        }
    }
    names
}

/// Every sample name `/metrics` can carry: from each `# TYPE` line (a counter's samples
/// end in `_total`, a histogram's in `_bucket`, `_sum` and `_count`) and each sample.
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            names.extend(line.split(['{', ' ']).next().filter(|n| !n.is_empty()).map(str::to_owned));
        }
    }
    names
}

#[test]
fn the_scanner_finds_each_metric_of_an_expression_and_only_those() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(rollwave_http_request_duration_seconds_bucket{route!="a rollwave_x"}[5m]))) / rollwave_bogus_total"#,
    );
    let expected: BTreeSet<String> =
        ["rollwave_http_request_duration_seconds_bucket", "rollwave_bogus_total"].map(str::to_owned).into();
    assert_eq!(names, expected);
    let exported = exported("# TYPE rollwave_http_request_duration_seconds histogram\n");
    assert!(!names.is_subset(&exported), "a name the server does not export is found missing");
}

#[test]
fn every_panel_of_the_dashboard_reads_metrics_the_server_exports_and_they_follow_what_happened() {
    let bodies = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&bodies);
    // Fails the first attempt, takes the rest.
    let webhook = support::responder(move |n, _| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 0 {
            ("500 Internal Server Error", "text/plain", String::new())
        } else {
            ("200 OK", "text/plain", String::new())
        }
    });
    let manifest = format!(
        "service: shop\n\
         environments:\n  prod: {{ regions: {{ r1: {{ zones: {{ p1: 2 }} }} }} }}\n\
         strategy:\n  one_box: false\n  rolling: {{ batch: 100%, zone_bake: 0s }}\n\
         stages:\n  - {{ name: prod, environment: prod, bake: 30s }}\n\
         alarms:\n  - {{ name: errors, metric: error_rate, scope: zone, threshold: \"> 0.5\", period: 2s, datapoints: 1 of 1 }}\n\
         notifications:\n  - {{ url: \"http://{webhook}/hook\", on: [completed] }}\n"
    );
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(10) });
    let admin = s.client(Some(ADMIN));
    admin.apply("shop.yaml", &manifest).unwrap();
    admin
        .create_release("shop", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("v2 bakes in prod", || {
        s.advance(rollwave_server::leader::SWEEP);
        admin.release("shop", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeStarted)
    });
    let baking = support::Scrape::of(&s.base);
    let left = baking.value(r#"rollwave_bake_remaining_seconds{service="shop",release="v2",scope="prod/wave-1"}"#);
    assert!(left.is_some_and(|l| l > 0.0 && l <= 30.0), "{}", baking.0);
    s.wait_for("v2 completes and its notification is delivered on the second attempt", || {
        s.advance(rollwave_server::leader::SWEEP);
        admin.status("shop").unwrap().notifications.iter().any(|n| n.delivered == 1)
    });
    // A flag release, and a relay's count of its evaluations, which the flags panel graphs.
    let flags = serde_json::json!({ "flags": { "new-checkout": {
        "state": "ENABLED", "variants": { "on": true, "off": false }, "defaultVariant": "off"
    } } });
    admin
        .create_release(
            "shop",
            &CreateRelease { version: "flags-1".into(), artifact: None, sha256: None, flags: Some(flags) },
        )
        .unwrap();
    let push = rollwave_server::api::FlagEvaluationsPush {
        service: "shop".into(),
        environment: "prod".into(),
        region: "r1".into(),
        counts: vec![rollwave_server::api::FlagEvaluationCount {
            flag: "new-checkout".into(),
            variant: Some("on".into()),
            version: "flags-1".into(),
            count: 3,
        }],
    };
    admin.push_flag_evaluations(&push).unwrap();
    let scrape = support::Scrape::of(&s.base);
    let (metrics, sample) = (&scrape.0, |series: &str| scrape.value(series));
    assert_eq!(sample(r#"rollwave_hosts{service="shop",environment="prod",version="v2"}"#), Some(2.0), "{metrics}");
    let webhook_labels = format!(r#"service="shop",webhook="http://{webhook}/…""#);
    assert_eq!(
        sample(&format!(r#"rollwave_webhook_attempts_total{{{webhook_labels},result="delivered"}}"#)),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&format!(r#"rollwave_webhook_attempts_total{{{webhook_labels},result="failed"}}"#)),
        Some(1.0),
        "{metrics}"
    );

    assert!(sample("rollwave_lease_renewed_timestamp_seconds").is_some_and(|t| t > 1.7e9), "the leader took its lease");
    assert!(sample("rollwave_log_append_duration_seconds_count").is_some_and(|n| n > 0.0), "appends are timed");
    // A follower says how far behind the log it is; once caught up, not at all.
    let (follower, running) = s.replica("follower");
    // The leader may append meanwhile (a heartbeat's flush): the follower is scraped
    // again each time it applies more, until it reports itself caught up.
    let behind = s.block_on(async {
        let mut changed = running.node.changed.subscribe();
        let caught_up = async {
            loop {
                let scrape = tokio::task::block_in_place(|| support::Scrape::of(&follower));
                if scrape.value("rollwave_replication_lag_records") == Some(0.0) {
                    return scrape;
                }
                changed.changed().await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), caught_up).await.expect("the follower catches up")
    });
    assert_eq!(behind.value("rollwave_leader"), Some(0.0), "{}", behind.0);
    assert_eq!(behind.value("rollwave_replication_lag_records"), Some(0.0), "{}", behind.0);
    assert_eq!(behind.value("rollwave_replication_lag_seconds"), Some(0.0), "{}", behind.0);
    assert_eq!(sample("rollwave_replication_lag_records"), Some(0.0), "the leader is never behind");
    assert_eq!(sample(r#"rollwave_alarms_firing{service="shop",alarm="errors"}"#), Some(0.0), "{metrics}");
    let exported: BTreeSet<String> = &exported(metrics) | &exported(&baking.0);
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 39));
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} reads nothing", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("an expression");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "panel {} reads no rollwave metric: {expr}", panel["title"]);
            for name in names {
                assert!(
                    exported.contains(&name),
                    "panel {} reads {name}, which the server does not export",
                    panel["title"]
                );
                used.insert(name);
            }
        }
    }
    let variables = dashboard["templating"]["list"].to_string();
    for name in metric_names(&variables) {
        assert!(exported.contains(&name), "a variable reads {name}, which the server does not export");
    }
    for name in [
        "rollwave_hosts",
        "rollwave_webhook_attempts_total",
        "rollwave_leader",
        "rollwave_releases",
        "rollwave_lease_renewed_timestamp_seconds",
        "rollwave_log_append_duration_seconds_bucket",
        "rollwave_alarms_firing",
        "rollwave_bake_remaining_seconds",
        "rollwave_replication_lag_seconds",
    ] {
        assert!(used.contains(name), "no panel graphs {name}");
    }
}
