//! The leader's loop against an outside world that does not answer: monitor targets,
//! Prometheus and webhooks that accept connections and never reply. Real sockets hang
//! for real: this test runs on the wall clock.

use crate::support;

use rollwave_server::api::*;
use rollwave_server::state::LogInput;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{ADMIN, TestServer, silent_listener};

/// Well under the 2 s a check of a silent host waits before it times out (twice the
/// monitor's `max_latency`): a leader that waited on one would answer later than this.
const PROMPT: Duration = Duration::from_millis(1500);

fn manifest(webhook: &str) -> String {
    format!(
        "\
service: web
environments:
  prod: {{ regions: {{ r1: {{ zones: {{ z1: 1 }} }} }} }}
strategy:
  one_box: {{ hosts: 1, max_share: 100%, bake: 0s }}
  rolling: {{ batch: 100%, zone_bake: 0s }}
stages:
  - {{ name: prod, environment: prod, bake: 0s }}
monitors:
  - {{ name: health, request: {{ path: /health }}, expect: {{ status: 200, max_latency: 1s }}, every: 1s }}
alarms:
  - name: prom-errors
    source: prometheus
    query: 'max(errors{{service=\"{{{{service}}}}\"}})'
    metric: error_ratio
    scope: environment
    threshold: \"> 0.5\"
    period: 1s
    datapoints: 1 of 1
notifications:
  - {{ url: \"http://{webhook}/hook\", on: [completed, halted] }}
"
    )
}

/// Holds or resumes the service, and says how long the answer took.
fn hold(s: &TestServer, resume: bool) -> (ServiceStatus, Duration) {
    let started = Instant::now();
    let status = s.client(Some(ADMIN)).hold("web", resume, None).unwrap();
    (status, started.elapsed())
}

fn term(s: &TestServer) -> i64 {
    s.node.lease.borrow().as_ref().map(|l| l.term).unwrap_or(0)
}

/// The operator actions in the log, in order.
fn logged_actions(s: &TestServer) -> Vec<String> {
    let records = s.block_on(s.node.store.read_log(0, 100_000, Some(&["input"]))).unwrap();
    records
        .iter()
        .filter_map(|r| match serde_json::from_str::<LogInput>(&r.body).unwrap() {
            LogInput::Operator { action, .. } => Some(action.as_str().to_owned()),
            LogInput::CreateRelease { version, .. } => Some(format!("release {version}")),
            _ => None,
        })
        .collect()
}

#[test]
fn holds_and_resumes_answer_promptly_while_probes_queries_and_webhooks_hang() {
    let (host, host_connections) = silent_listener();
    let (prometheus, prometheus_connections) = silent_listener();
    let (webhook, webhook_connections) = silent_listener();
    let s = TestServer::builder()
        .wall_clock()
        .configure(move |c| {
            c.prometheus = Some(format!("http://{prometheus}"));
            // Renewed every third of it while everything else hangs.
            c.lease_ttl = Duration::from_secs(2);
        })
        .start();
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", &manifest(&webhook)).unwrap();
    let register = RegisterHost {
        service: Some("web".into()),
        environment: "prod".into(),
        host: "z1-1".into(),
        region: Some("r1".into()),
        zone: Some("z1".into()),
        address: Some(host),
    };
    let _: Registered = admin.post("/v1/hosts/register", &register).unwrap();
    s.wait_for("a check and a query are under way", || {
        host_connections.load(Ordering::SeqCst) > 0 && prometheus_connections.load(Ordering::SeqCst) > 0
    });
    let mut answered = Vec::new();
    for round in 0..2 {
        let (held, took) = hold(&s, false);
        assert!(took < PROMPT, "round {round}: hold took {took:?}");
        assert_eq!(held.holds, vec!["web".to_owned()], "round {round}");
        let (resumed, took) = hold(&s, true);
        assert!(took < PROMPT, "round {round}: resume took {took:?}");
        assert!(resumed.holds.is_empty(), "round {round}: {:?}", resumed.holds);
        answered.extend(["hold".to_owned(), "resume".to_owned()]);
        if round == 0 {
            // A completed release sends a webhook that hangs too.
            admin
                .create_release(
                    "web",
                    &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None },
                )
                .unwrap();
            answered.push("release v2".into());
            s.wait_for("v2 completes", || {
                admin.release("web", "v2").unwrap().release.outcome == rollwave_api::Outcome::Completed
            });
            s.wait_for("the webhook is under way", || webhook_connections.load(Ordering::SeqCst) > 0);
        }
    }
    // Outlive the lease's time to live and the first check's timeout: the check of the
    // silent host is started again once the first has timed out, never while it hangs.
    s.wait_for("the first check times out and a second starts", || host_connections.load(Ordering::SeqCst) >= 2);
    let (held, took) = hold(&s, false);
    assert!(took < PROMPT, "the last hold took {took:?}");
    assert_eq!(held.holds, vec!["web".to_owned()]);
    answered.push("hold".into());
    assert_eq!(term(&s), 1, "the lease changed hands");
    let (_, lease_term, _) = s.block_on(s.node.store.lease_status()).unwrap().unwrap();
    assert_eq!(lease_term, 1, "the lease was taken again");
    assert_eq!(logged_actions(&s), answered, "every answered change is in the log once, in order");
}
