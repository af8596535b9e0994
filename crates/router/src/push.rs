//! Server mode, the other way: the router's traffic per host and version, pushed to the
//! control plane (`POST {server}/v1/metrics`) every interval as deltas since the push
//! before, on a thread of its own.
//!
//! ```json
//! {"service":"web","environment":"prod","samples":[
//!   {"host":"127.0.0.1:9001","version":"v2","requests":120,"errors":3,"latency_buckets":[..13 counts..]}]}
//! ```
//!
//! A push that does not arrive (no answer, or a 5xx) is sent again once, added to the
//! next interval's traffic; if that push fails too, the older traffic is dropped, so at
//! most two intervals are ever held. A push the server refuses (a 4xx: a bad token, an
//! unknown host) is dropped at once. Hosts without traffic in an interval are left out.

use crate::metrics::{Metrics, PushSample};
use rollwave_api::{Client, ClientError, MetricSample, MetricsPush};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The shortest interval between pushes.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Longest time one push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how often to push.
#[derive(Clone, Debug)]
pub struct PushTarget {
    /// Control-plane URL, e.g. `http://127.0.0.1:7400`.
    pub server: String,
    pub service: String,
    pub environment: String,
    /// A deployer token, or an agent token of a host of `service`.
    pub token: String,
    pub every: Duration,
    /// Whom `https` to the server trusts.
    pub roots: rollwave_api::tls::Roots,
}

impl PushTarget {
    fn url(&self) -> String {
        format!("{}/v1/metrics", self.server.trim_end_matches('/'))
    }
}

/// The body of a push.
pub fn push_body(service: &str, environment: &str, samples: &[PushSample]) -> MetricsPush {
    let samples = samples
        .iter()
        .map(|s| MetricSample {
            host: s.host.clone(),
            version: s.version.clone(),
            requests: s.requests,
            errors: s.errors,
            latency_buckets: s.latency_buckets.to_vec(),
        })
        .collect();
    MetricsPush { service: service.to_owned(), environment: environment.to_owned(), samples, gauges: Vec::new() }
}

/// How a push went.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    /// Not delivered, or the server failed: the traffic may be sent again.
    Failed(String),
    /// The server answered that it will never take this push.
    Refused(String),
}

/// The traffic of a failed push, waiting for the next one.
#[derive(Debug, Default)]
struct Pending {
    carried: Vec<PushSample>,
}

impl Pending {
    /// What to send now: the carried traffic plus `fresh`, per host and version.
    fn batch(&self, fresh: &[PushSample]) -> Vec<PushSample> {
        let mut batch = self.carried.clone();
        for sample in fresh {
            match batch.iter_mut().find(|b| b.host == sample.host && b.version == sample.version) {
                Some(same) => same.add(sample),
                None => batch.push(sample.clone()),
            }
        }
        batch
    }

    /// After a push: only `fresh` (never what was already carried once) waits for the
    /// next push, and only when this one failed to arrive.
    fn settle(&mut self, fresh: Vec<PushSample>, outcome: &Outcome) {
        self.carried = match outcome {
            Outcome::Failed(_) => fresh,
            Outcome::Accepted | Outcome::Refused(_) => Vec::new(),
        };
    }
}

/// The pushing thread; dropping this stops it after one last push, in the background.
#[derive(Debug)]
pub struct Pusher {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Pusher {
    /// Pushes what is left now and waits for that push to end (at most its timeout).
    pub fn finish(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Starts pushing `metrics` to `target` every `target.every`.
pub fn start(target: PushTarget, metrics: Arc<Metrics>) -> Pusher {
    let (stop, stopped) = mpsc::channel();
    let thread = std::thread::spawn(move || run(&target, &metrics, &stopped));
    Pusher { stop, thread }
}

fn run(target: &PushTarget, metrics: &Metrics, stopped: &mpsc::Receiver<()>) {
    let client = Client::with_timeout(&target.server, Some(target.token.clone()), PUSH_TIMEOUT).trusting(&target.roots);
    let url = target.url();
    let every = target.every.max(MIN_INTERVAL);
    let mut pending = Pending::default();
    let mut next = Instant::now() + every;
    loop {
        let stopping = match stopped.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        // A slow push delays the next one rather than sending two at once.
        next = (next + every).max(Instant::now());
        let fresh = metrics.take_interval();
        let batch = pending.batch(&fresh);
        if !batch.is_empty() {
            let outcome = send(&client, target, &batch);
            match &outcome {
                Outcome::Accepted => {}
                Outcome::Failed(why) => {
                    tracing::warn!("cannot push traffic to {url}: {why}; it goes with the next push")
                }
                Outcome::Refused(why) => tracing::warn!("{url} refused the traffic push: {why}"),
            }
            pending.settle(fresh, &outcome);
        }
        if stopping {
            return;
        }
    }
}

fn send(client: &Client, target: &PushTarget, samples: &[PushSample]) -> Outcome {
    match client.push_metrics(&push_body(&target.service, &target.environment, samples)) {
        Ok(_) => Outcome::Accepted,
        Err(e @ ClientError::Transport { .. }) => Outcome::Failed(e.to_string()),
        Err(ClientError::Api { status, message, .. }) => {
            let why = format!("{status} {}", message.trim());
            if (400..500).contains(&status) { Outcome::Refused(why) } else { Outcome::Failed(why) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::PUSH_BUCKETS;

    fn sample(host: &str, requests: u64) -> PushSample {
        let mut latency_buckets = [0; PUSH_BUCKETS];
        latency_buckets[1] = requests;
        PushSample { host: host.into(), version: "v2".into(), requests, errors: 1, latency_buckets }
    }

    #[test]
    fn the_body_is_the_servers_metrics_push() {
        let body = serde_json::to_value(push_body("web", "prod", &[sample("127.0.0.1:9001", 120)])).unwrap();
        let expected: serde_json::Value = serde_json::from_str(
            r#"{"service":"web","environment":"prod","samples":[{"host":"127.0.0.1:9001","version":"v2",
                "requests":120,"errors":1,"latency_buckets":[0,120,0,0,0,0,0,0,0,0,0,0,0]}]}"#,
        )
        .unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn a_failed_push_goes_again_once_with_the_next() {
        let mut pending = Pending::default();
        let first = vec![sample("a", 10)];
        assert_eq!(pending.batch(&first), first);
        pending.settle(first, &Outcome::Failed("down".into()));

        let second = vec![sample("a", 5), sample("b", 1)];
        let batch = pending.batch(&second);
        assert_eq!((batch[0].requests, batch[0].errors, batch[0].latency_buckets[1]), (15, 2, 15));
        assert_eq!(batch[1], sample("b", 1));
        pending.settle(second, &Outcome::Failed("down".into()));

        // The first interval is dropped now; the second goes once more.
        let third = vec![sample("a", 1)];
        assert_eq!(pending.batch(&third)[0].requests, 6);
        pending.settle(third, &Outcome::Accepted);
        assert_eq!(pending.batch(&[]), []);
    }

    #[test]
    fn a_refused_push_is_not_sent_again() {
        let mut pending = Pending::default();
        pending.settle(vec![sample("a", 10)], &Outcome::Refused("401 unknown token".into()));
        assert_eq!(pending.batch(&[]), []);
    }
}
