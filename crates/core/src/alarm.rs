//! Alarms with CloudWatch semantics: one value per period; the alarm is in ALARM when
//! `datapoints_to_alarm` (N) of the last `evaluation_periods` (M) breach.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct AlarmSpec {
    pub name: String,
    pub metric: String,
    pub source: MetricSource,
    pub scope: AlarmScope,
    pub threshold: Threshold,
    pub period: Duration,
    /// N: breaching periods needed to alarm.
    pub datapoints_to_alarm: u32,
    /// M: the periods looked at, `M >= N >= 1`.
    pub evaluation_periods: u32,
    pub missing: TreatMissing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricSource {
    /// Metrics that rollwave measures itself (routers, agents, monitors).
    Builtin,
    /// A PromQL query with `{{service}}`, `{{region}}`… filled in per scope.
    Prometheus { query: String },
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
            metric: "error_rate".into(),
            source: MetricSource::Builtin,
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
