//! The control plane's own metrics, in the Prometheus text format (0.0.4) at `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

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
    /// Bakes under way: the time left and the data points still missing, by service,
    /// release and scope, refreshed at each scrape.
    pub bake_seconds_left: Family<Labels, Gauge<f64, AtomicU64>>,
    pub bake_datapoints_missing: Family<Labels, Gauge>,
    /// Scopes where each alarm of each service is in ALARM (0 for an alarm firing nowhere).
    pub alarms_firing: Family<Labels, Gauge>,
    /// How far this replica's read model is behind the log: records, and the age of the
    /// oldest one not applied yet (0 when caught up). On the leader both stay near 0.
    pub replication_lag_records: Gauge,
    pub replication_lag_seconds: Gauge<f64, AtomicU64>,
}

/// How far a replica that applied the log up to `applied` is behind a log that ends at
/// `last`, whose first record after `applied` was written at `oldest_unapplied_ms`:
/// (records, seconds). A replica ahead of what it read (the log read first) is not behind.
pub fn replication_lag(applied: i64, last: i64, oldest_unapplied_ms: Option<i64>, now_ms: i64) -> (i64, f64) {
    let records = (last - applied).max(0);
    let seconds = match oldest_unapplied_ms {
        Some(at) if records > 0 => (now_ms - at).max(0) as f64 / 1000.0,
        _ => 0.0,
    };
    (records, seconds)
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
        let bake_seconds_left = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "bake_remaining_seconds",
            "Time left of each bake under way, by service, release and scope (0: only data points are missing)",
            bake_seconds_left.clone(),
        );
        let bake_datapoints_missing = Family::<Labels, Gauge>::default();
        registry.register(
            "bake_remaining_datapoints",
            "Data points each bake under way still waits for, by service, release and scope",
            bake_datapoints_missing.clone(),
        );
        let alarms_firing = Family::<Labels, Gauge>::default();
        registry.register(
            "alarms_firing",
            "Scopes where the alarm is in ALARM, by service and alarm (0: firing nowhere)",
            alarms_firing.clone(),
        );
        let replication_lag_records = Gauge::default();
        registry.register(
            "replication_lag_records",
            "Records of the log this replica has not applied yet",
            replication_lag_records.clone(),
        );
        let replication_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "replication_lag_seconds",
            "Age of the oldest record of the log this replica has not applied yet (0: caught up)",
            replication_lag_seconds.clone(),
        );
        Metrics {
            registry,
            bake_seconds_left,
            bake_datapoints_missing,
            alarms_firing,
            replication_lag_records,
            replication_lag_seconds,
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

#[cfg(test)]
mod tests {
    use super::replication_lag;

    #[test]
    fn a_replica_is_behind_by_the_records_it_has_not_applied_and_the_age_of_the_oldest() {
        assert_eq!(replication_lag(10, 10, None, 5_000), (0, 0.0), "caught up");
        assert_eq!(replication_lag(7, 10, Some(2_500), 5_000), (3, 2.5));
        // A record stamped after the reading replica's now (clocks apart) is not a negative lag.
        assert_eq!(replication_lag(7, 10, Some(6_000), 5_000), (3, 0.0));
        // The log was read before the model moved past it.
        assert_eq!(replication_lag(12, 10, Some(1_000), 5_000), (0, 0.0));
    }
}
