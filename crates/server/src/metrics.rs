//! The control plane's own metrics, in the Prometheus text format (0.0.4) at `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What `/metrics` serves: the Prometheus text format, which promtool and every scraper read.
pub use rollwave_exposition::CONTENT_TYPE;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub events_appended: Counter,
    pub leader: Gauge,
    /// Releases by outcome, refreshed at each scrape.
    pub releases: Family<Labels, Gauge>,
    pub request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Flag evaluations relays and agents pushed, by flag, variant and flag-set version.
    pub flag_evaluations: Family<Labels, Counter>,
    /// Hosts (or functions' slices) per version, by service and environment, refreshed at each scrape.
    pub hosts: Family<Labels, Gauge>,
    /// Webhook delivery attempts by service, webhook (as reads show it) and result,
    /// brought up to the notifier's counts at each scrape.
    pub webhook_attempts: Family<Labels, Counter>,
    /// Notifications given up after every retry failed, by service and webhook.
    pub webhook_given_up: Family<Labels, Counter>,
    /// How long appending a batch to the log took, as the store answered it.
    pub log_append_seconds: Histogram,
    /// When this replica last took or renewed the leader lease (Unix seconds; 0 never):
    /// `time() - rollwave_lease_renewed_timestamp_seconds` is the lease's age.
    pub lease_renewed: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rollwave");
        let events_appended = Counter::default();
        registry.register(
            "log_records_appended",
            "Records appended to the event log by this replica",
            events_appended.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        let releases = Family::<Labels, Gauge>::default();
        registry.register("releases", "Releases by service and outcome", releases.clone());
        let request_seconds = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "API request latency by route and status",
            request_seconds.clone(),
        );
        let flag_evaluations = Family::<Labels, Counter>::default();
        registry.register(
            "flag_evaluations",
            "Flag evaluations pushed by relays and agents, by service, environment, region, flag, variant and flag-set version",
            flag_evaluations.clone(),
        );
        let hosts = Family::<Labels, Gauge>::default();
        registry.register(
            "hosts",
            "Hosts (or functions' slices) per version, by service and environment",
            hosts.clone(),
        );
        let webhook_attempts = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by service, webhook and result (delivered or failed)",
            webhook_attempts.clone(),
        );
        let webhook_given_up = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_notifications_given_up",
            "Notifications given up after every retry failed, by service and webhook",
            webhook_given_up.clone(),
        );
        let log_append_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "log_append_duration_seconds",
            "How long appending a batch of records to the log took on this replica",
            log_append_seconds.clone(),
        );
        let lease_renewed = Gauge::default();
        registry.register(
            "lease_renewed_timestamp_seconds",
            "When this replica last took or renewed the leader lease, in Unix seconds (0: never)",
            lease_renewed.clone(),
        );
        Metrics {
            registry,
            log_append_seconds,
            lease_renewed,
            events_appended,
            leader,
            releases,
            request_seconds,
            flag_evaluations,
            hosts,
            webhook_attempts,
            webhook_given_up,
        }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = vec![
            ("method".to_owned(), method.to_owned()),
            ("route".to_owned(), route.to_owned()),
            ("status".to_owned(), status.to_string()),
        ];
        self.request_seconds.get_or_create(&labels).observe(seconds);
    }

    /// Brings a counter up to `total`, a count kept elsewhere that only grows.
    pub fn count_up_to(family: &Family<Labels, Counter>, labels: &Labels, total: u64) {
        let counter = family.get_or_create(labels);
        let counted = counter.get();
        if total > counted {
            counter.inc_by(total - counted);
        }
    }

    /// Every metric, in the format [`CONTENT_TYPE`] names.
    pub fn render(&self) -> String {
        rollwave_exposition::encode(&self.registry)
    }
}
