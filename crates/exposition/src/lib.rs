//! `/metrics` in the Prometheus text format, version 0.0.4, from a prometheus-client
//! registry.
//!
//! prometheus-client writes only OpenMetrics. Prometheus reads both, but `promtool check
//! metrics` and many other readers know only the text format, where OpenMetrics counters
//! have no help text and no type (their family is named `x`, their samples `x_total`).
//! For the metric types prometheus-client has (counter, gauge, histogram, info, unknown),
//! without exemplars, the two formats differ only in:
//! - a counter family's name: `x` in OpenMetrics, `x_total` (the samples' name) here;
//! - an info family: `x` with samples `x_info`, here a gauge named `x_info`;
//! - `unknown`, here `untyped`;
//! - `# UNIT` and `# EOF`, which the text format does not have.
//!
//! Sample lines are the same in both, so they are copied as they are.

pub mod testing;

use prometheus_client::registry::Registry;

/// What a body from [`encode`] is, for the `Content-Type` header.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of `registry`, in the text format.
pub fn encode(registry: &Registry) -> String {
    let mut openmetrics = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut openmetrics, registry);
    from_openmetrics(&openmetrics)
}

/// The text-format version of an OpenMetrics body written by prometheus-client (which
/// writes each family's `# HELP` line, then its `# TYPE` line, then its samples).
fn from_openmetrics(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 512);
    // A family's HELP line, held until its TYPE line says what the family is called here.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, kind) = text_family(kind);
            if let Some(text) = help.take().and_then(|h| h.strip_prefix(name)).and_then(|t| t.strip_prefix(' ')) {
                push_line(&mut out, &["# HELP ", name, suffix, " ", text]);
            }
            push_line(&mut out, &["# TYPE ", name, suffix, " ", kind]);
        } else if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        } else {
            push_line(&mut out, &[line]);
        }
    }
    out
}

/// The suffix a family's name takes in the text format, and its type there, given its
/// OpenMetrics type.
fn text_family(openmetrics_type: &str) -> (&'static str, &str) {
    match openmetrics_type {
        "counter" => ("_total", "counter"),
        "info" => ("_info", "gauge"),
        "unknown" => ("", "untyped"),
        other => ("", other),
    }
}

fn push_line(out: &mut String, parts: &[&str]) {
    for part in parts {
        out.push_str(part);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;

    type Labels = Vec<(String, String)>;

    #[test]
    fn counters_are_named_by_their_samples_and_the_rest_is_copied() {
        let mut registry = Registry::with_prefix("app");
        let plain = Counter::<u64>::default();
        plain.inc();
        registry.register("jobs", "Jobs done", plain);
        let family = Family::<Labels, Counter>::default();
        family.get_or_create(&vec![("route".into(), "/a \"b\"".into())]).inc_by(3);
        registry.register("requests", "Requests", family);
        let gauge = Gauge::<i64>::default();
        gauge.set(-2);
        registry.register("depth", "Queue depth", gauge);
        let histogram = Histogram::new([0.5, 1.0]);
        histogram.observe(0.7);
        registry.register("wait_seconds", "Time waited", histogram);
        registry.register("build", "Build facts", Info::new(vec![("version".to_owned(), "1".to_owned())]));

        assert_eq!(
            encode(&registry),
            "# HELP app_jobs_total Jobs done.\n\
             # TYPE app_jobs_total counter\n\
             app_jobs_total 1\n\
             # HELP app_requests_total Requests.\n\
             # TYPE app_requests_total counter\n\
             app_requests_total{route=\"/a \\\"b\\\"\"} 3\n\
             # HELP app_depth Queue depth.\n\
             # TYPE app_depth gauge\n\
             app_depth -2\n\
             # HELP app_wait_seconds Time waited.\n\
             # TYPE app_wait_seconds histogram\n\
             app_wait_seconds_sum 0.7\n\
             app_wait_seconds_count 1\n\
             app_wait_seconds_bucket{le=\"0.5\"} 0\n\
             app_wait_seconds_bucket{le=\"1.0\"} 1\n\
             app_wait_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP app_build_info Build facts.\n\
             # TYPE app_build_info gauge\n\
             app_build_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn units_and_the_end_marker_are_left_out() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register_with_unit("busy", "Time busy", prometheus_client::registry::Unit::Seconds, counter);
        assert_eq!(
            encode(&registry),
            "# HELP busy_seconds_total Time busy.\n# TYPE busy_seconds_total counter\nbusy_seconds_total 0\n"
        );
    }

    #[test]
    fn an_empty_registry_is_an_empty_body() {
        assert_eq!(encode(&Registry::default()), "");
    }
}
