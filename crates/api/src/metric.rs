//! The metrics rollwave measures itself, as the wire and the manifest name them, and
//! the latency buckets every traffic push uses.

use crate::vocab::vocabulary;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

vocabulary! {
    /// Metrics of the traffic routers push.
    Builtin {
        /// Failed requests as a fraction of all requests, from 0 to 1.
        ErrorRate => "error_rate",
        /// The 99th percentile of request latency, in milliseconds.
        LatencyP99Ms => "latency_p99_ms",
        /// Requests per second.
        RequestRate => "request_rate",
    }
}

vocabulary! {
    /// Readings agents take on their hosts.
    Gauge {
        /// Busy share of every CPU since the reading before, 0 to 100.
        CpuPercent => "cpu_percent",
        /// Memory in use, 0 to 100.
        MemoryPercent => "memory_percent",
        /// How often the agent has started again on this host; 0 or more.
        Restarts => "restarts",
    }
}

impl Gauge {
    /// The largest value a reading may have: percentages stop at 100.
    pub fn max(self) -> Option<f64> {
        match self {
            Gauge::CpuPercent | Gauge::MemoryPercent => Some(100.0),
            Gauge::Restarts => None,
        }
    }
}

vocabulary! {
    /// What a synthetic monitor's checks give.
    MonitorField {
        SuccessRate => "success_rate",
        LatencyMs => "latency_ms",
    }
}

/// The gauges' wire names, in [`Gauge::ALL`] order.
pub const GAUGES: [&str; 3] = [Gauge::CpuPercent.as_str(), Gauge::MemoryPercent.as_str(), Gauge::Restarts.as_str()];

/// A metric as the wire and the manifest spell it: `error_rate`, `cpu_percent`,
/// `monitor:NAME:success_rate`, or any other name (a Prometheus alarm's label).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MetricRef {
    Builtin(Builtin),
    Gauge(Gauge),
    Monitor {
        name: String,
        field: MonitorField,
    },
    /// A name measured outside rollwave (a Prometheus query's label, a CloudWatch
    /// metric's name): any name that is none of the above.
    Prometheus {
        name: String,
    },
}

impl MetricRef {
    /// Reads a spelling; a name rollwave does not measure itself is a Prometheus label.
    pub fn parse(text: &str) -> MetricRef {
        if let Some(b) = Builtin::named(text) {
            return MetricRef::Builtin(b);
        }
        if let Some(g) = Gauge::named(text) {
            return MetricRef::Gauge(g);
        }
        let monitor = text.strip_prefix("monitor:").and_then(|rest| rest.rsplit_once(':'));
        if let Some((name, field)) = monitor
            && let Some(field) = MonitorField::named(field)
        {
            return MetricRef::Monitor { name: name.to_owned(), field };
        }
        MetricRef::Prometheus { name: text.to_owned() }
    }

    /// Measured by rollwave itself (from traffic, gauges or monitors).
    pub fn is_measured(&self) -> bool {
        match self {
            MetricRef::Builtin(_) | MetricRef::Gauge(_) | MetricRef::Monitor { .. } => true,
            MetricRef::Prometheus { .. } => false,
        }
    }
}

impl fmt::Display for MetricRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricRef::Builtin(b) => f.write_str(b.as_str()),
            MetricRef::Gauge(g) => f.write_str(g.as_str()),
            MetricRef::Monitor { name, field } => write!(f, "monitor:{name}:{field}"),
            MetricRef::Prometheus { name } => f.write_str(name),
        }
    }
}

impl Serialize for MetricRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MetricRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(MetricRef::parse(&String::deserialize(d)?))
    }
}

impl From<&rollwave_core::alarm::MetricRef> for MetricRef {
    fn from(m: &rollwave_core::alarm::MetricRef) -> Self {
        use rollwave_core::alarm as core;
        match m {
            core::MetricRef::Traffic(t) => MetricRef::Builtin(match t {
                core::TrafficMetric::ErrorRate => Builtin::ErrorRate,
                core::TrafficMetric::LatencyP99Ms => Builtin::LatencyP99Ms,
                core::TrafficMetric::RequestRate => Builtin::RequestRate,
            }),
            core::MetricRef::Gauge(g) => MetricRef::Gauge(match g {
                core::Gauge::CpuPercent => Gauge::CpuPercent,
                core::Gauge::MemoryPercent => Gauge::MemoryPercent,
                core::Gauge::Restarts => Gauge::Restarts,
            }),
            core::MetricRef::Monitor { name, field, .. } => MetricRef::Monitor {
                name: name.clone(),
                field: match field {
                    core::MonitorField::SuccessRate => MonitorField::SuccessRate,
                    core::MonitorField::LatencyMs => MonitorField::LatencyMs,
                },
            },
            core::MetricRef::Prometheus { name, .. } => MetricRef::Prometheus { name: name.clone() },
            // Measured outside rollwave too: on the wire, a label like a query's.
            core::MetricRef::CloudWatch(m) => MetricRef::Prometheus { name: m.name.clone() },
        }
    }
}

/// Upper bounds (ms) of the latency histogram buckets every push uses; one more bucket
/// counts what is slower. The engine's vocabulary (the simulator draws into them too).
pub use rollwave_core::alarm::LATENCY_BOUNDS_MS;

/// Counts in a push's `latency_buckets`: one per bound and one for slower.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;
