//! The router's metrics, in the Prometheus / OpenMetrics text format.
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

use crate::routes::HostSpec;
use crate::track::Track;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
    version: String,
    track: &'static str,
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
}

/// The series of one host, ready to update.
#[derive(Clone, Debug)]
pub struct HostMetrics {
    pub requests: Counter,
    pub responses_5xx: Counter,
    pub latency: Histogram,
    pub ejections: Counter,
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
        Metrics { registry, requests, responses_5xx, latency, ejections, fallbacks, unavailable, reloads }
    }

    /// The handles of one host's series (created at zero if new).
    pub fn host(&self, host: &HostSpec) -> HostMetrics {
        let labels =
            HostLabels { host: host.address.to_string(), version: host.version.clone(), track: host.track.as_str() };
        HostMetrics {
            requests: self.requests.get_or_create_owned(&labels),
            responses_5xx: self.responses_5xx.get_or_create_owned(&labels),
            latency: self.latency.get_or_create_owned(&labels),
            ejections: self.ejections.get_or_create_owned(&labels),
        }
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

    /// Everything, in the OpenMetrics text format (what `/metrics` serves, and what the
    /// push to the control plane will send).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
