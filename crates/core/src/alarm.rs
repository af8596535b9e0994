//! Alarms with CloudWatch semantics: one value per period; the alarm is in ALARM when
//! `datapoints_to_alarm` (N) of the last `evaluation_periods` (M) breach.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// Upper bounds (ms) of the latency histogram buckets every traffic push uses; one more
/// bucket counts what is slower.
pub const LATENCY_BOUNDS_MS: [f64; 12] =
    [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 800.0, 1000.0, 2500.0, 5000.0, 10000.0];

/// The 99th percentile of a histogram over [`LATENCY_BOUNDS_MS`], as the upper bound of the
/// bucket it falls in (twice the last bound for the bucket past it); `None` when empty.
pub fn bucket_p99(buckets: &[u64]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * 0.99).ceil() as u64;
    let mut seen = 0;
    let i = buckets.iter().position(|n| {
        seen += n;
        seen >= rank
    })?;
    Some(LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(2.0 * LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1]))
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlarmSpec {
    pub name: String,
    /// What is measured, resolved when the manifest is read.
    pub metric: MetricRef,
    pub scope: AlarmScope,
    pub threshold: Threshold,
    pub period: Duration,
    /// N: breaching periods needed to alarm.
    pub datapoints_to_alarm: u32,
    /// M: the periods looked at, `M >= N >= 1`.
    pub evaluation_periods: u32,
    pub missing: TreatMissing,
}

/// The metric an alarm watches. The manifest spells it `error_rate`, `cpu_percent`,
/// `monitor:NAME:success_rate`…; the decoder resolves that spelling (and a monitor's name
/// to its index), so code that evaluates alarms matches on this and never on text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricRef {
    /// Measured from the traffic that routers push.
    Traffic(TrafficMetric),
    /// Read by agents on their hosts.
    Gauge(Gauge),
    /// Measured from a synthetic monitor's checks.
    Monitor {
        /// Index into [`crate::manifest::Manifest::monitors`].
        index: usize,
        name: String,
        field: MonitorField,
    },
    /// A PromQL query with `{{service}}`, `{{region}}`… filled in per scope; `name` is
    /// the alarm's `metric` label, which nothing resolves.
    Prometheus { name: String, query: String },
    /// A CloudWatch metric of a region of functions, read with `GetMetricData`; `name` is
    /// the CloudWatch metric's name.
    CloudWatch(CloudWatchMetric),
}

/// What a `source: cloudwatch` alarm reads, per region of functions: each dimension's value
/// may hold `{{service}}`, `{{environment}}`, `{{region}}`, `{{function}}`, `{{alias}}` and
/// `{{function_version}}` (the version the release in flight ships), filled in per
/// function; the alarm sees the worst of the region's functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudWatchMetric {
    pub namespace: String,
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    /// `Sum`, `Average`, `Minimum`, `Maximum`, `SampleCount` or a percentile such as `p99`.
    pub statistic: String,
}

/// The names `{{…}}` may stand for in a CloudWatch dimension's value.
pub const CLOUDWATCH_TEMPLATES: [&str; 6] =
    ["service", "environment", "region", "function", "alias", "function_version"];

/// Metrics of router traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficMetric {
    /// Failed requests as a fraction of all requests, from 0 to 1.
    ErrorRate,
    /// The 99th percentile of request latency, in milliseconds.
    LatencyP99Ms,
    /// Requests per second.
    RequestRate,
}

/// Readings agents take on their hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gauge {
    /// Share of time every CPU was busy, from 0 to 100.
    CpuPercent,
    /// Memory in use, from 0 to 100.
    MemoryPercent,
    /// How many times the agent has started again on the host.
    Restarts,
}

/// What a synthetic monitor's checks give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MonitorField {
    /// Checks that passed as a fraction of all checks, from 0 to 1.
    SuccessRate,
    /// The 99th percentile of check latency, in milliseconds.
    LatencyMs,
}

/// The values a metric can take: a threshold outside them can never be crossed, or is
/// always crossed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricRange {
    pub min: f64,
    /// `None`: no upper bound.
    pub max: Option<f64>,
    /// The unit, as a reader should be told it.
    pub unit: &'static str,
}

const FRACTION: MetricRange = MetricRange { min: 0.0, max: Some(1.0), unit: "a fraction from 0 to 1 (0.05 is 5%)" };
const PERCENT: MetricRange = MetricRange { min: 0.0, max: Some(100.0), unit: "a percentage from 0 to 100" };
const MILLISECONDS: MetricRange = MetricRange { min: 0.0, max: None, unit: "milliseconds, 0 or more" };

impl TrafficMetric {
    pub const ALL: [(&'static str, TrafficMetric); 3] = [
        ("error_rate", TrafficMetric::ErrorRate),
        ("latency_p99_ms", TrafficMetric::LatencyP99Ms),
        ("request_rate", TrafficMetric::RequestRate),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrafficMetric::ErrorRate => "error_rate",
            TrafficMetric::LatencyP99Ms => "latency_p99_ms",
            TrafficMetric::RequestRate => "request_rate",
        }
    }

    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    pub fn range(self) -> MetricRange {
        match self {
            TrafficMetric::ErrorRate => FRACTION,
            TrafficMetric::LatencyP99Ms => MILLISECONDS,
            TrafficMetric::RequestRate => MetricRange { min: 0.0, max: None, unit: "requests per second, 0 or more" },
        }
    }
}

impl Gauge {
    pub const ALL: [(&'static str, Gauge); 3] =
        [("cpu_percent", Gauge::CpuPercent), ("memory_percent", Gauge::MemoryPercent), ("restarts", Gauge::Restarts)];

    pub fn as_str(self) -> &'static str {
        match self {
            Gauge::CpuPercent => "cpu_percent",
            Gauge::MemoryPercent => "memory_percent",
            Gauge::Restarts => "restarts",
        }
    }

    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, g)| *g)
    }

    pub fn range(self) -> MetricRange {
        match self {
            Gauge::CpuPercent | Gauge::MemoryPercent => PERCENT,
            Gauge::Restarts => MetricRange { min: 0.0, max: None, unit: "a count of restarts, 0 or more" },
        }
    }
}

impl MonitorField {
    pub const ALL: [(&'static str, MonitorField); 2] =
        [("success_rate", MonitorField::SuccessRate), ("latency_ms", MonitorField::LatencyMs)];

    pub fn as_str(self) -> &'static str {
        match self {
            MonitorField::SuccessRate => "success_rate",
            MonitorField::LatencyMs => "latency_ms",
        }
    }

    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn range(self) -> MetricRange {
        match self {
            MonitorField::SuccessRate => FRACTION,
            MonitorField::LatencyMs => MILLISECONDS,
        }
    }
}

impl MetricRef {
    /// The values the metric can take; `None` for a Prometheus query or a CloudWatch
    /// metric, which can give any.
    pub fn range(&self) -> Option<MetricRange> {
        match self {
            MetricRef::Traffic(m) => Some(m.range()),
            MetricRef::Gauge(g) => Some(g.range()),
            MetricRef::Monitor { field, .. } => Some(field.range()),
            MetricRef::Prometheus { .. } | MetricRef::CloudWatch(_) => None,
        }
    }
}

/// The manifest's spelling.
impl fmt::Display for MetricRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricRef::Traffic(m) => f.write_str(m.as_str()),
            MetricRef::Gauge(g) => f.write_str(g.as_str()),
            MetricRef::Monitor { name, field, .. } => write!(f, "monitor:{name}:{}", field.as_str()),
            MetricRef::Prometheus { name, .. } => f.write_str(name),
            MetricRef::CloudWatch(m) => f.write_str(&m.name),
        }
    }
}

impl MetricRange {
    /// Why `threshold` can never be crossed, or is always crossed, by a value in this range.
    pub fn check(&self, threshold: &Threshold) -> Result<(), String> {
        let v = threshold.value;
        let below_max = |inclusive: bool| self.max.is_none_or(|max| if inclusive { v <= max } else { v < max });
        let above_min = |inclusive: bool| if inclusive { v >= self.min } else { v > self.min };
        // `> v` fires only if some value is above v, and not always only if some value is not.
        let (possible, not_always) = match threshold.comparison {
            Comparison::Greater => (below_max(false), above_min(true)),
            Comparison::GreaterOrEqual => (below_max(true), above_min(false)),
            Comparison::Less => (above_min(false), below_max(true)),
            Comparison::LessOrEqual => (above_min(true), below_max(false)),
        };
        if !possible {
            return Err(format!("`{threshold}` can never be crossed: the metric is {}", self.unit));
        }
        if !not_always {
            return Err(format!("`{threshold}` is always crossed: the metric is {}", self.unit));
        }
        Ok(())
    }
}

/// The granularity an alarm is evaluated at: one instance per host, zone, region or environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmScope {
    Host,
    Zone,
    Region,
    Environment,
}

impl AlarmScope {
    pub const ALL: [AlarmScope; 4] = [AlarmScope::Host, AlarmScope::Zone, AlarmScope::Region, AlarmScope::Environment];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmScope::Host => "host",
            AlarmScope::Zone => "zone",
            AlarmScope::Region => "region",
            AlarmScope::Environment => "environment",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub comparison: Comparison,
    pub value: f64,
}

impl Threshold {
    pub fn is_breached_by(&self, v: f64) -> bool {
        match self.comparison {
            Comparison::Greater => v > self.value,
            Comparison::GreaterOrEqual => v >= self.value,
            Comparison::Less => v < self.value,
            Comparison::LessOrEqual => v <= self.value,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.comparison {
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
        };
        write!(f, "{op} {}", self.value)
    }
}

/// CloudWatch's `TreatMissingData`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TreatMissing {
    /// A missing period is unknown: it can make the state INSUFFICIENT_DATA.
    #[default]
    Missing,
    NotBreaching,
    Breaching,
    /// A missing period is skipped; the state stays as it is.
    Ignore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Period {
    Breaching(f64),
    NotBreaching(f64),
    Missing,
}

/// One alarm instance (an alarm in one scope). Starts in INSUFFICIENT_DATA.
#[derive(Clone, Debug)]
pub struct Evaluator {
    threshold: Threshold,
    n: u32,
    m: u32,
    missing: TreatMissing,
    window: VecDeque<Period>,
    state: AlarmState,
}

/// A change of state, with the data points that caused it.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub from: AlarmState,
    pub to: AlarmState,
    pub reason: String,
}

impl Evaluator {
    pub fn new(spec: &AlarmSpec) -> Self {
        Self {
            threshold: spec.threshold,
            n: spec.datapoints_to_alarm,
            m: spec.evaluation_periods,
            missing: spec.missing,
            window: VecDeque::with_capacity(spec.evaluation_periods as usize),
            state: AlarmState::InsufficientData,
        }
    }

    pub fn state(&self) -> AlarmState {
        self.state
    }

    /// Feeds the value of the period that just ended (`None`: no data) and returns the
    /// state change it caused, if any.
    pub fn observe(&mut self, value: Option<f64>) -> Option<Transition> {
        let period = match (value, self.missing) {
            (Some(v), _) if self.threshold.is_breached_by(v) => Period::Breaching(v),
            (Some(v), _) => Period::NotBreaching(v),
            (None, TreatMissing::Ignore) => return None,
            (None, TreatMissing::Breaching) => Period::Breaching(f64::NAN),
            (None, TreatMissing::NotBreaching) => Period::NotBreaching(f64::NAN),
            (None, TreatMissing::Missing) => Period::Missing,
        };
        if self.window.len() == self.m as usize {
            self.window.pop_front();
        }
        self.window.push_back(period);

        let breaching = self.window.iter().filter(|p| matches!(p, Period::Breaching(_))).count() as u32;
        let not_breaching = self.window.iter().filter(|p| matches!(p, Period::NotBreaching(_))).count() as u32;
        // ALARM once N periods breach; OK once ALARM is out of reach even if every unknown
        // period were to breach; anything in between is not known yet.
        let unknown = self.m - breaching - not_breaching;
        let next = if breaching >= self.n {
            AlarmState::Alarm
        } else if breaching + unknown < self.n {
            AlarmState::Ok
        } else {
            AlarmState::InsufficientData
        };
        if next == self.state {
            return None;
        }
        let from = std::mem::replace(&mut self.state, next);
        Some(Transition { from, to: next, reason: self.describe(breaching) })
    }

    fn describe(&self, breaching: u32) -> String {
        let points: Vec<String> = self
            .window
            .iter()
            .map(|p| match p {
                Period::Breaching(v) | Period::NotBreaching(v) if v.is_finite() => format_value(*v),
                _ => "-".to_owned(),
            })
            .collect();
        format!(
            "{breaching} of the last {} periods breached {} (need {}): [{}]",
            self.m,
            self.threshold,
            self.n,
            points.join(", ")
        )
    }
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.4}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: u32, m: u32, missing: TreatMissing) -> AlarmSpec {
        AlarmSpec {
            name: "errors".into(),
            metric: MetricRef::Traffic(TrafficMetric::ErrorRate),
            scope: AlarmScope::Zone,
            threshold: Threshold { comparison: Comparison::Greater, value: 0.02 },
            period: Duration::from_secs(60),
            datapoints_to_alarm: n,
            evaluation_periods: m,
            missing,
        }
    }

    fn states(e: &mut Evaluator, values: &[Option<f64>]) -> Vec<AlarmState> {
        values
            .iter()
            .map(|v| {
                e.observe(*v);
                e.state()
            })
            .collect()
    }

    #[test]
    fn three_of_five_alarms_on_the_third_breach_and_clears_when_out_of_reach() {
        let mut e = Evaluator::new(&spec(3, 5, TreatMissing::Missing));
        let ok = Some(0.001);
        let bad = Some(0.05);
        use AlarmState::*;
        // Unknown until ALARM is out of reach (3 good periods), ALARM on the third breach in
        // five, OK again once the breaches fall below three.
        assert_eq!(
            states(&mut e, &[ok, ok, ok, bad, ok, bad, bad, ok, ok, ok, ok]),
            vec![InsufficientData, InsufficientData, Ok, Ok, Ok, Ok, Alarm, Alarm, Ok, Ok, Ok]
        );
    }

    #[test]
    fn missing_data_is_insufficient_unless_the_alarm_says_otherwise() {
        let mut e = Evaluator::new(&spec(1, 1, TreatMissing::Missing));
        assert_eq!(e.observe(Some(0.0)).map(|t| t.to), Some(AlarmState::Ok));
        assert_eq!(e.observe(None).map(|t| t.to), Some(AlarmState::InsufficientData));

        let mut e = Evaluator::new(&spec(1, 1, TreatMissing::Breaching));
        assert_eq!(e.observe(None).map(|t| t.to), Some(AlarmState::Alarm));

        let mut e = Evaluator::new(&spec(1, 1, TreatMissing::NotBreaching));
        assert_eq!(e.observe(None).map(|t| t.to), Some(AlarmState::Ok));

        let mut e = Evaluator::new(&spec(1, 1, TreatMissing::Ignore));
        e.observe(Some(0.5));
        assert_eq!(e.observe(None), None);
        assert_eq!(e.state(), AlarmState::Alarm);
    }

    #[test]
    fn a_transition_names_the_data_points_behind_it() {
        let mut e = Evaluator::new(&spec(1, 2, TreatMissing::Missing));
        e.observe(Some(0.0));
        let t = e.observe(Some(0.25)).unwrap();
        assert_eq!(t.to, AlarmState::Alarm);
        assert_eq!(t.reason, "1 of the last 2 periods breached > 0.02 (need 1): [0.0000, 0.2500]");
    }
}
