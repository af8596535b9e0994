//! A `source: prometheus` alarm against a real Prometheus scraping a real exporter.

use crate::support;

use rollwave_server::api::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use support::{ADMIN, TestServer};

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

/// An exporter whose one gauge (per zone) the test sets.
fn exporter(z1_errors: Arc<AtomicU64>) -> u16 {
    let address = support::responder(move |_, _| {
        let value = f64::from_bits(z1_errors.load(Ordering::SeqCst));
        let body = format!(
            "# TYPE rollwave_test_error_ratio gauge\n\
             rollwave_test_error_ratio{{service=\"web\",zone=\"z1\"}} {value}\n\
             rollwave_test_error_ratio{{service=\"web\",zone=\"z2\"}} 0\n"
        );
        ("200 OK", "text/plain; version=0.0.4", body)
    });
    address.rsplit(':').next().unwrap().parse().unwrap()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_prometheus_alarm_trips_from_a_real_prometheus_and_rolls_back_its_zone() {
    if Command::new("prometheus").arg("--version").output().is_err() {
        let _ =
            writeln!(std::io::stderr(), "SKIPPED a_prometheus_alarm_trips: install Debian's `prometheus` to run it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let errors = Arc::new(AtomicU64::new(0f64.to_bits()));
    let exporter_port = exporter(Arc::clone(&errors));
    let prom_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: app\n    static_configs: [ {{ targets: ['127.0.0.1:{exporter_port}'] }} ]\n"
        ),
    )
    .unwrap();
    let _prometheus = Killed(
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
    // Prometheus stamps its samples with the wall's time, and the alarm queries it at
    // the server's: both keep real time.
    let s = TestServer::builder()
        .wall_clock()
        .configure({
            let prometheus = prometheus.clone();
            move |c| c.prometheus = Some(prometheus)
        })
        .start();
    let scraped = |value: &str| {
        let query = format!("{prometheus}/api/v1/query?query=rollwave_test_error_ratio%7Bzone%3D%22z1%22%7D");
        ureq::get(query)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|body| body.contains(&format!("\"{value}\"]")))
    };
    s.wait_for("Prometheus scrapes the healthy value", || scraped("0"));
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", MANIFEST).unwrap();
    admin.create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None }).unwrap();
    s.wait_for("the one-box to bake", || {
        admin.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeStarted)
    });
    // The leader sweeps for 3 s more, querying periods where Prometheus has seen nothing
    // but the healthy value.
    let until = s.node.clock.now_ms() + 3_000;
    s.wait_for("the leader queries healthy periods", || *s.node.swept.borrow() >= until);
    let baking = admin.release("web", "v2").unwrap();
    assert_eq!(baking.release.outcome, rollwave_api::Outcome::InProgress);
    errors.store(0.9f64.to_bits(), Ordering::SeqCst);
    s.wait_for("the alarm to roll z1 back", || {
        admin.release("web", "v2").unwrap().release.outcome == rollwave_api::Outcome::Halted
    });
    let detail = admin.release("web", "v2").unwrap();
    let fired = detail.events.iter().find(|e| e.kind == rollwave_api::EventKind::AlarmFired).unwrap();
    assert_eq!(fired.scope, "prod/r1/z1");
    assert!(fired.reason.as_deref().unwrap().contains("prom-errors"), "{fired:?}");
    assert_eq!(detail.release.rolled_back_scopes, ["prod/r1/z1"]);
}
