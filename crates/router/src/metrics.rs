//! The router's metrics, in the Prometheus text format (0.0.4).
//!
//! Per host (`host`, `version`, `track` labels):
//! - `rollwave_router_requests_total`: requests sent to the host, whatever came back;
//! - `rollwave_router_responses_5xx_total`: of those, answered with a 5xx by the host, or
//!   failed to connect or timed out (the router answered 502 or 504);
//! - `rollwave_router_request_duration_seconds`: histogram, from the request's arrival
//!   to the end of the response body;
//! - `rollwave_router_ejections_total`: times the host was taken out of service.
//!
//! Router-wide:
//! - `rollwave_router_fallbacks_total{from, to}`: requests whose track had no host that
//!   could take them, sent to the other track;
//! - `rollwave_router_unavailable_total`: requests answered 503 because no host of
//!   either track could take them;
//! - `rollwave_router_table_reloads_total{outcome="applied"|"rejected"}`.
//!
//! Handles for a host's series are looked up once, when a table is built, so a request
//! only touches atomics (and the histogram's own short lock).
//!
//! Beside the Prometheus series, each host and version keeps the traffic of the current
//! push interval (requests, 5xx, a latency histogram on the control plane's buckets,
//! [`PUSH_LATENCY_BOUNDS_MS`]) in plain atomics; [`Metrics::take_interval`] swaps them to
//! zero and returns what they held, for the push to the control plane.

use crate::routes::HostSpec;
use crate::track::Track;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What `/metrics` serves: the Prometheus text format, which promtool and every scraper read.
pub use rollwave_exposition::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
    version: String,
    track: &'static str,
}

/// Upper bounds, in milliseconds, of the latency buckets pushed to the control plane
/// ([`rollwave_api::LATENCY_BOUNDS_MS`]); one more bucket counts what is slower.
pub const PUSH_LATENCY_BOUNDS_MS: [u64; rollwave_api::LATENCY_BOUNDS_MS.len()] = {
    // The wire's bounds, in whole milliseconds (each is one).
    let mut out = [0; rollwave_api::LATENCY_BOUNDS_MS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = rollwave_api::LATENCY_BOUNDS_MS[i] as u64;
        i += 1;
    }
    out
};

/// Buckets of a pushed latency histogram: one per bound, plus the overflow.
pub const PUSH_BUCKETS: usize = rollwave_api::LATENCY_BUCKETS;

/// The pushed bucket of a request that took `elapsed`: the first whose bound it does not
/// exceed, else the overflow bucket.
pub fn push_bucket(elapsed: Duration) -> usize {
    let micros = elapsed.as_micros();
    PUSH_LATENCY_BOUNDS_MS
        .iter()
        .position(|&bound| micros <= u128::from(bound) * 1000)
        .unwrap_or(PUSH_LATENCY_BOUNDS_MS.len())
}

/// The traffic of one host and version since the last push to the control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushSample {
    /// The host's address, as in the routes table.
    pub host: String,
    pub version: String,
    pub requests: u64,
    /// 5xx from the host, connect errors and timeouts.
    pub errors: u64,
    /// Counts per bucket of [`PUSH_LATENCY_BOUNDS_MS`], then the overflow (not cumulative).
    pub latency_buckets: [u64; PUSH_BUCKETS],
}

impl PushSample {
    fn is_empty(&self) -> bool {
        self.requests == 0 && self.errors == 0 && self.latency_buckets.iter().all(|&n| n == 0)
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &PushSample) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (mine, theirs) in self.latency_buckets.iter_mut().zip(other.latency_buckets) {
            *mine += theirs;
        }
    }
}

/// The counters of one host and version for the current push interval.
#[derive(Debug, Default)]
struct Interval {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; PUSH_BUCKETS],
}

impl Interval {
    /// What the counters held, leaving them at zero.
    fn take(&self) -> (u64, u64, [u64; PUSH_BUCKETS]) {
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let errors = self.errors.swap(0, Ordering::Relaxed);
        (requests, errors, std::array::from_fn(|i| self.latency[i].swap(0, Ordering::Relaxed)))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
}

#[derive(Clone, Copy, Debug)]
struct LatencyHistogram;

impl MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        Histogram::new(LATENCY_BUCKETS)
    }
}

/// Every metric of one router.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<HostLabels, Counter>,
    responses_5xx: Family<HostLabels, Counter>,
    latency: Family<HostLabels, Histogram, LatencyHistogram>,
    ejections: Family<HostLabels, Counter>,
    fallbacks: [Counter; 2],
    unavailable: Counter,
    reloads: Family<ReloadLabels, Counter>,
    /// The current push interval per (address, version).
    intervals: Mutex<HashMap<(String, String), Arc<Interval>>>,
}

/// The series of one host, ready to update.
#[derive(Clone, Debug)]
pub struct HostMetrics {
    requests: Counter,
    responses_5xx: Counter,
    latency: Histogram,
    ejections: Counter,
    interval: Arc<Interval>,
}

impl HostMetrics {
    /// A request was sent to the host (an attempt, whatever came back).
    pub fn sent(&self) {
        self.requests.inc();
        self.interval.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The attempt got a 5xx, failed to connect, broke or timed out.
    pub fn failed(&self) {
        self.responses_5xx.inc();
        self.interval.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The exchange ended (response body done or dropped) `elapsed` after the request came.
    pub fn finished(&self, elapsed: Duration) {
        self.latency.observe(elapsed.as_secs_f64());
        self.interval.latency[push_bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The host was taken out of service.
    pub fn ejected(&self) {
        self.ejections.inc();
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<HostLabels, Counter>::default();
        let responses_5xx = Family::<HostLabels, Counter>::default();
        let latency = Family::new_with_constructor(LatencyHistogram);
        let ejections = Family::<HostLabels, Counter>::default();
        let fallback_family = Family::<FallbackLabels, Counter>::default();
        let unavailable = Counter::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("rollwave_router_requests", "Requests sent to a host", requests.clone());
        registry.register(
            "rollwave_router_responses_5xx",
            "Requests to a host answered with a 5xx, a connect error or a timeout",
            responses_5xx.clone(),
        );
        registry.register(
            "rollwave_router_request_duration_seconds",
            "Time from a request's arrival to the end of its response",
            latency.clone(),
        );
        registry.register("rollwave_router_ejections", "Times a host was taken out of service", ejections.clone());
        registry.register(
            "rollwave_router_fallbacks",
            "Requests sent to the other track because theirs had no host able to take them",
            fallback_family.clone(),
        );
        registry.register(
            "rollwave_router_unavailable",
            "Requests answered 503 because no host could take them",
            unavailable.clone(),
        );
        registry.register("rollwave_router_table_reloads", "Routes file reloads", reloads.clone());
        let fallbacks = Track::ALL.map(|from| {
            fallback_family.get_or_create_owned(&FallbackLabels { from: from.as_str(), to: from.other().as_str() })
        });
        Metrics {
            registry,
            requests,
            responses_5xx,
            latency,
            ejections,
            fallbacks,
            unavailable,
            reloads,
            intervals: Mutex::default(),
        }
    }

    /// The handles of one host's series (created at zero if new).
    pub fn host(&self, host: &HostSpec) -> HostMetrics {
        let labels =
            HostLabels { host: host.address.to_string(), version: host.version.clone(), track: host.track.as_str() };
        let interval = self
            .intervals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry((labels.host.clone(), labels.version.clone()))
            .or_default()
            .clone();
        HostMetrics {
            requests: self.requests.get_or_create_owned(&labels),
            responses_5xx: self.responses_5xx.get_or_create_owned(&labels),
            latency: self.latency.get_or_create_owned(&labels),
            ejections: self.ejections.get_or_create_owned(&labels),
            interval,
        }
    }

    /// The traffic per host and version since the previous call, sorted by host and
    /// version; hosts without any are left out. Hosts no table lists any more are
    /// forgotten once their last traffic is taken.
    pub fn take_interval(&self) -> Vec<PushSample> {
        let mut intervals = self.intervals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut samples = Vec::new();
        intervals.retain(|(host, version), interval| {
            let (requests, errors, latency_buckets) = interval.take();
            let sample = PushSample { host: host.clone(), version: version.clone(), requests, errors, latency_buckets };
            if !sample.is_empty() {
                samples.push(sample);
            }
            // When only this map holds it, no table lists the host and no request to it
            // is on its way, so nothing can count on it any more (new handles are made
            // under this lock).
            Arc::strong_count(interval) > 1
        });
        drop(intervals);
        samples.sort_by(|a, b| (&a.host, &a.version).cmp(&(&b.host, &b.version)));
        samples
    }

    /// Counts a request sent to the other track than `wanted`.
    pub fn fallback(&self, wanted: Track) {
        self.fallbacks[wanted.index()].inc();
    }

    pub fn unavailable(&self) {
        self.unavailable.inc();
    }

    pub fn reload(&self, applied: bool) {
        self.reloads.get_or_create(&ReloadLabels { outcome: if applied { "applied" } else { "rejected" } }).inc();
    }

    /// Everything, in the format [`CONTENT_TYPE`] names (what `/metrics` serves).
    pub fn encode(&self) -> String {
        rollwave_exposition::encode(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_falls_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let ms = |n: u64| Duration::from_millis(n);
        assert_eq!(push_bucket(Duration::ZERO), 0);
        assert_eq!(push_bucket(ms(5)), 0);
        assert_eq!(push_bucket(ms(5) + Duration::from_micros(1)), 1);
        assert_eq!(push_bucket(ms(10)), 1);
        assert_eq!(push_bucket(ms(11)), 2);
        assert_eq!(push_bucket(ms(799)), 7);
        assert_eq!(push_bucket(ms(800)), 7);
        assert_eq!(push_bucket(ms(801)), 8);
        assert_eq!(push_bucket(ms(10_000)), 11);
        assert_eq!(push_bucket(ms(10_001)), 12);
        assert_eq!(push_bucket(Duration::from_secs(3600)), PUSH_BUCKETS - 1);
        // Every bound is the last value of its own bucket.
        for (i, &bound) in PUSH_LATENCY_BOUNDS_MS.iter().enumerate() {
            assert_eq!(push_bucket(ms(bound)), i);
            assert_eq!(push_bucket(ms(bound) + Duration::from_nanos(1001)), i + 1);
        }
    }

    fn spec(address: &str, version: &str) -> HostSpec {
        HostSpec { address: address.parse().unwrap(), version: version.into(), track: Track::Stable, draining: false }
    }

    #[test]
    fn an_interval_holds_the_traffic_since_the_last_take_and_skips_quiet_hosts() {
        let metrics = Metrics::new();
        let a = metrics.host(&spec("127.0.0.1:9001", "v2"));
        let b = metrics.host(&spec("127.0.0.1:9002", "v3"));
        let _quiet = metrics.host(&spec("127.0.0.1:9003", "v3"));
        for _ in 0..3 {
            a.sent();
            a.finished(Duration::from_millis(3));
        }
        a.failed();
        b.sent();
        b.failed();
        b.finished(Duration::from_secs(20));
        let samples = metrics.take_interval();
        assert_eq!(samples.len(), 2, "{samples:?}");
        assert_eq!((samples[0].host.as_str(), samples[0].version.as_str()), ("127.0.0.1:9001", "v2"));
        assert_eq!((samples[0].requests, samples[0].errors), (3, 1));
        assert_eq!(samples[0].latency_buckets[0], 3);
        assert_eq!((samples[1].requests, samples[1].errors), (1, 1));
        assert_eq!(samples[1].latency_buckets[PUSH_BUCKETS - 1], 1);
        // Deltas: the next interval starts from zero.
        assert_eq!(metrics.take_interval(), []);
        a.sent();
        assert_eq!(metrics.take_interval()[0].requests, 1);
        // The Prometheus counters keep counting.
        assert!(
            metrics
                .encode()
                .contains("rollwave_router_requests_total{host=\"127.0.0.1:9001\",version=\"v2\",track=\"stable\"} 4")
        );
    }

    #[test]
    fn a_host_no_table_lists_is_forgotten_after_its_last_traffic() {
        let metrics = Metrics::new();
        let a = metrics.host(&spec("127.0.0.1:9001", "v2"));
        a.sent();
        drop(a);
        assert_eq!(metrics.take_interval().len(), 1);
        assert!(metrics.intervals.lock().unwrap().is_empty());
    }
}
