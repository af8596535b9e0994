//! A `source: prometheus` alarm against a real Prometheus scraping a real exporter, with
//! a real server process querying it. Without `prometheus` on PATH it says so and passes.

use crate::kit::{Proc, Server, free_port, wait_for};
use rollwave_api::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

const MANIFEST: &str = "\
service: web
environments:
  prod: { regions: { r1: { zones: { z1: 2, z2: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 25%, bake: 5m }
  rolling: { batch: 50%, zone_bake: 0s }
stages:
  - { name: prod, environment: prod }
alarms:
  - name: prom-errors
    source: prometheus
    query: 'max(rollwave_test_error_ratio{service=\"{{service}}\", zone=\"{{zone}}\"})'
    metric: error_ratio
    scope: zone
    threshold: \"> 0.5\"
    period: 2s
    datapoints: 1 of 1
";

/// An exporter whose one gauge (per zone) the test sets; returns its port.
fn exporter(z1_errors: Arc<AtomicU64>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let value = f64::from_bits(z1_errors.load(Ordering::SeqCst));
            let body = format!(
                "# TYPE rollwave_test_error_ratio gauge\n\
                 rollwave_test_error_ratio{{service=\"web\",zone=\"z1\"}} {value}\n\
                 rollwave_test_error_ratio{{service=\"web\",zone=\"z2\"}} 0\n"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// How many instant queries Prometheus has answered, by its own metrics.
fn queries_answered(prometheus: &str) -> u64 {
    let Ok(mut r) = ureq::get(format!("{prometheus}/metrics")).call() else { return 0 };
    let text = r.body_mut().read_to_string().unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("prometheus_http_requests_total{") && l.contains("handler=\"/api/v1/query\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_prometheus_alarm_trips_from_a_real_prometheus_and_rolls_back_its_zone() {
    if Command::new("prometheus").arg("--version").output().is_err() {
        let required = std::env::var("ROLLWAVE_TEST_PROMTOOL").is_ok_and(|v| v == "required");
        assert!(!required, "ROLLWAVE_TEST_PROMTOOL=required but prometheus is not on PATH");
        println!("SKIPPED a_prometheus_alarm_trips: install Debian's `prometheus` to run it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let errors = Arc::new(AtomicU64::new(0f64.to_bits()));
    let exporter_port = exporter(Arc::clone(&errors));
    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: app\n    static_configs: [ {{ targets: ['127.0.0.1:{exporter_port}'] }} ]\n"
        ),
    )
    .unwrap();
    let _prometheus = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prometheus = format!("http://127.0.0.1:{prom_port}");
    let scraped = |value: &str| {
        let query = format!("{prometheus}/api/v1/query?query=rollwave_test_error_ratio%7Bzone%3D%22z1%22%7D");
        ureq::get(query)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|body| body.contains(&format!("\"{value}\"]")))
    };
    wait_for("Prometheus scrapes the healthy value", WAIT, || scraped("0"));
    let s = Server::builder().args(&["--prometheus", &prometheus]).start();
    let admin = s.client();
    admin.apply("web.yaml", MANIFEST).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    wait_for("the one-box to bake", WAIT, || {
        admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == EventKind::BakeStarted)
    });
    // The server queries periods where Prometheus has seen nothing but the healthy value.
    let before = queries_answered(&prometheus);
    wait_for("the server to query two healthy periods", WAIT, || queries_answered(&prometheus) >= before + 2);
    assert_eq!(admin.release("web", "v2").unwrap().release.outcome, Outcome::InProgress);
    errors.store(0.9f64.to_bits(), Ordering::SeqCst);
    wait_for("the alarm to roll z1 back", WAIT, || {
        admin.release("web", "v2").unwrap().release.outcome == Outcome::Halted
    });
    let detail = admin.release("web", "v2").unwrap();
    let fired = detail.events.iter().find(|e| e.kind == EventKind::AlarmFired).unwrap();
    assert_eq!(fired.scope, "prod/r1/z1");
    assert!(fired.reason.as_deref().unwrap().contains("prom-errors"), "{fired:?}");
    assert_eq!(detail.release.rolled_back_scopes, ["prod/r1/z1"]);
}
