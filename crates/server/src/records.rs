//! What happened to a service, as the read model keeps it: the engine's events and the
//! reports beside them (hook runs, test runs, the one-box judge's verdicts) as data.
//! The API's [`EventView`] and the dashboard's rows are projections of these records,
//! made where they are shown. The judge's report reaches the log as data; the one text
//! taken apart is that report in records written before the data was kept, once, where
//! the log becomes a record ([`VerdictTable::from_log`]).

use crate::api::{EventView, HookReport};
use jiff::Timestamp;
use rollwave_core::engine::{EventKind, EventScope};
use rollwave_core::judge::Outcome;
use rollwave_core::plan::Plan;
use std::fmt;

/// One entry of a service's timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub at: Timestamp,
    pub kind: RecordKind,
    /// The release's version.
    pub release: Option<String>,
    pub scope: ScopePath,
    /// The engine's reason, for engine events.
    pub reason: Option<String>,
    pub detail: Option<Detail>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Event(EventKind),
    /// A host's lifecycle hook ran.
    Hook,
}

impl RecordKind {
    /// The kind as the API and the log name it.
    pub fn wire(self) -> rollwave_api::EventKind {
        match self {
            RecordKind::Event(k) => k.into(),
            RecordKind::Hook => rollwave_api::EventKind::Hook,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.wire().as_str()
    }
}

/// What a record carries beside the engine's reason.
#[derive(Clone, Debug, PartialEq)]
pub enum Detail {
    Hook(HookRun),
    Test(TestRun),
    Verdict(JudgeVerdict),
}

impl Record {
    pub fn hook(&self) -> Option<&HookRun> {
        match &self.detail {
            Some(Detail::Hook(h)) => Some(h),
            _ => None,
        }
    }

    pub fn verdict(&self) -> Option<&JudgeVerdict> {
        match &self.detail {
            Some(Detail::Verdict(v)) => Some(v),
            _ => None,
        }
    }

    /// The record as the API and the log show it.
    pub fn view(&self, service: &str) -> EventView {
        let (reason, output) = match &self.detail {
            Some(Detail::Hook(h)) => (Some(h.summary()), (!h.output.is_empty()).then(|| h.output.clone())),
            Some(Detail::Test(t)) => (self.reason.clone(), (!t.output.is_empty()).then(|| t.output.clone())),
            Some(Detail::Verdict(v)) => (self.reason.clone(), Some(v.table.render())),
            None => (self.reason.clone(), None),
        };
        EventView {
            seq: None,
            t: self.at.to_string(),
            service: service.to_owned(),
            kind: self.kind.wire(),
            release: self.release.clone(),
            scope: self.scope.to_string(),
            reason,
            output,
        }
    }
}

/// Where an event happened, by name: a stage and, within it, a wave or a region, zone
/// and host. Names rather than indexes, so a record reads the same under a later plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ScopePath {
    Service,
    Stage { stage: String },
    Wave { stage: String, wave: String },
    Region { stage: String, region: String },
    Zone { stage: String, region: String, zone: String },
    Host { stage: String, region: String, zone: String, host: String },
}

impl ScopePath {
    pub fn of(plan: &Plan, scope: EventScope) -> Self {
        let stage = |s: rollwave_core::plan::StageId| plan.manifest.stages[s.idx()].name.clone();
        match scope {
            EventScope::Service => ScopePath::Service,
            EventScope::Stage(s) | EventScope::Environment(s, _) => ScopePath::Stage { stage: stage(s) },
            EventScope::Wave(s, w) => {
                ScopePath::Wave { stage: stage(s), wave: plan.manifest.stages[s.idx()].waves[w].name.clone() }
            }
            EventScope::Region(s, r) => {
                ScopePath::Region { stage: stage(s), region: plan.region_name(plan.stage_env(s), r).to_owned() }
            }
            EventScope::Zone(s, env, z) => ScopePath::Zone {
                stage: stage(s),
                region: plan.region_name(env, plan.zone_region(env, z)).to_owned(),
                zone: plan.zone_name(env, z).to_owned(),
            },
            EventScope::Host(s, env, h) => {
                let z = plan.host_zone(env, h);
                ScopePath::Host {
                    stage: stage(s),
                    region: plan.region_name(env, plan.zone_region(env, z)).to_owned(),
                    zone: plan.zone_name(env, z).to_owned(),
                    host: plan.host_name(env, h).to_owned(),
                }
            }
        }
    }

    pub fn stage(&self) -> Option<&str> {
        match self {
            ScopePath::Service => None,
            ScopePath::Stage { stage }
            | ScopePath::Wave { stage, .. }
            | ScopePath::Region { stage, .. }
            | ScopePath::Zone { stage, .. }
            | ScopePath::Host { stage, .. } => Some(stage),
        }
    }

    /// The region the scope lies in, if it names one.
    pub fn region(&self) -> Option<&str> {
        match self {
            ScopePath::Region { region, .. } | ScopePath::Zone { region, .. } | ScopePath::Host { region, .. } => {
                Some(region)
            }
            _ => None,
        }
    }

    fn zone(&self) -> Option<&str> {
        match self {
            ScopePath::Zone { zone, .. } | ScopePath::Host { zone, .. } => Some(zone),
            _ => None,
        }
    }

    /// Whether `other` lies within this scope (a scope contains itself). A wave holds
    /// regions only through the plan, so by name it contains nothing but itself.
    pub fn contains(&self, other: &ScopePath) -> bool {
        match self {
            ScopePath::Service => true,
            ScopePath::Stage { stage } => other.stage() == Some(stage),
            ScopePath::Wave { .. } => self == other,
            ScopePath::Region { stage, region } => other.stage() == Some(stage) && other.region() == Some(region),
            ScopePath::Zone { stage, region, zone } => {
                other.stage() == Some(stage) && other.region() == Some(region) && other.zone() == Some(zone)
            }
            ScopePath::Host { .. } => self == other,
        }
    }

    pub fn is_within(&self, other: &ScopePath) -> bool {
        other.contains(self)
    }

    fn rank(&self) -> u8 {
        match self {
            ScopePath::Service => 0,
            ScopePath::Stage { .. } => 1,
            ScopePath::Wave { .. } => 2,
            ScopePath::Region { .. } => 3,
            ScopePath::Zone { .. } => 4,
            ScopePath::Host { .. } => 5,
        }
    }
}

/// Ordered as their paths read, so that lists keyed by scope keep the order they have on
/// the wire; a wave and a region of the same name come wave first.
impl Ord for ScopePath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string()).then_with(|| self.rank().cmp(&other.rank()))
    }
}

impl PartialOrd for ScopePath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// `stage`, `stage/wave`, `stage/region`, `stage/region/zone`, `stage/region/zone/host`;
/// the whole service is the empty path.
impl fmt::Display for ScopePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopePath::Service => Ok(()),
            ScopePath::Stage { stage } => write!(f, "{stage}"),
            ScopePath::Wave { stage, wave } => write!(f, "{stage}/{wave}"),
            ScopePath::Region { stage, region } => write!(f, "{stage}/{region}"),
            ScopePath::Zone { stage, region, zone } => write!(f, "{stage}/{region}/{zone}"),
            ScopePath::Host { stage, region, zone, host } => write!(f, "{stage}/{region}/{zone}/{host}"),
        }
    }
}

/// One lifecycle hook's run on a host, as its agent reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    /// `stop`, `before_install`, `after_install`, `start` or `validate`.
    pub step: String,
    pub ok: bool,
    pub exit: HookExit,
    pub duration_ms: u64,
    /// The tail of its output.
    pub output: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookExit {
    /// It exited with this status.
    Status(i32),
    TimedOut,
    /// Killed, or never started.
    NoStatus,
}

impl HookRun {
    pub fn of(report: &HookReport) -> Self {
        let exit = match (report.timed_out, report.exit_code) {
            (true, _) => HookExit::TimedOut,
            (_, Some(code)) => HookExit::Status(code),
            (_, None) => HookExit::NoStatus,
        };
        HookRun {
            step: report.name.clone(),
            ok: report.ok,
            exit,
            duration_ms: report.duration_ms,
            output: report.output.clone(),
        }
    }

    /// How it ended, in a word or two: `ok`, `timed out`, `exit 2`, `failed`.
    pub fn outcome(&self) -> String {
        match (self.ok, self.exit) {
            (true, _) => "ok".to_owned(),
            (_, HookExit::TimedOut) => "timed out".to_owned(),
            (_, HookExit::Status(code)) => format!("exit {code}"),
            (_, HookExit::NoStatus) => "failed".to_owned(),
        }
    }

    /// `validate: exit 1 in 120 ms`: the event's reason.
    pub fn summary(&self) -> String {
        format!("{}: {} in {} ms", self.step, self.outcome(), self.duration_ms)
    }
}

/// A stage's test run against a release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    pub ok: bool,
    pub output: String,
}

/// The one-box judge's verdict on a region's one-box.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeVerdict {
    pub outcome: Outcome,
    pub table: VerdictTable,
}

impl JudgeVerdict {
    pub fn new(passed: bool, marginal: bool, table: VerdictTable) -> Self {
        let outcome = match (passed, marginal) {
            (false, _) => Outcome::Fail,
            (true, true) => Outcome::Marginal,
            (true, false) => Outcome::Pass,
        };
        JudgeVerdict { outcome, table }
    }

    pub fn passed(&self) -> bool {
        self.outcome != Outcome::Fail
    }
}

/// The judge's report: a headline, one row per metric and notes (groups, reasons,
/// warnings). The log keeps it as data ([`VerdictReport`]) beside the text the judge
/// printed, which [`VerdictTable::render`] gives back exactly; records from before the
/// data was kept are taken apart from the text ([`VerdictTable::from_log`]).
#[derive(Clone, Debug, PartialEq)]
pub enum VerdictTable {
    Table(VerdictReport),
    /// A report of another shape, kept as it came.
    Text(String),
}

/// The judge's report as data, as the log keeps it beside the printed text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerdictReport {
    pub headline: String,
    /// The columns' names, `metric` first and `result` fifth.
    pub columns: Vec<String>,
    pub rows: Vec<VerdictRow>,
    /// What follows the table, as printed.
    pub notes: String,
    /// The one-box's hosts, the baseline's and the versions the baseline ran; empty in
    /// records from before the verdict named them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_versions: Vec<String>,
}

impl From<&VerdictReport> for rollwave_core::judge::Report {
    fn from(report: &VerdictReport) -> Self {
        rollwave_core::judge::Report {
            headline: report.headline.clone(),
            columns: report.columns.clone(),
            rows: report.rows.iter().map(|r| r.cells().into_iter().map(str::to_owned).collect()).collect(),
            notes: report.notes.clone(),
            canary_hosts: report.canary_hosts.clone(),
            baseline_hosts: report.baseline_hosts.clone(),
            baseline_versions: report.baseline_versions.clone(),
        }
    }
}

impl From<rollwave_core::judge::Report> for VerdictReport {
    fn from(report: rollwave_core::judge::Report) -> Self {
        let rows = report
            .rows
            .into_iter()
            .map(|mut cells| {
                let outcome = if cells.len() > RESULT_COLUMN { cells.remove(RESULT_COLUMN) } else { String::new() };
                let metric = if cells.is_empty() { String::new() } else { cells.remove(0) };
                VerdictRow { metric, outcome, values: cells }
            })
            .collect();
        VerdictReport {
            headline: report.headline,
            columns: report.columns,
            rows,
            notes: report.notes,
            canary_hosts: report.canary_hosts,
            baseline_hosts: report.baseline_hosts,
            baseline_versions: report.baseline_versions,
        }
    }
}

/// One metric's line of the judge's table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerdictRow {
    pub metric: String,
    /// `Pass`, `High`, `Low` or `NoData`.
    pub outcome: String,
    /// The other columns, in order: group, bad if, critical, then the figures.
    pub values: Vec<String>,
}

impl VerdictRow {
    /// Every cell, in the table's column order.
    pub fn cells(&self) -> Vec<&str> {
        let mut cells = vec![self.metric.as_str()];
        cells.extend(self.values.iter().take(WORD_COLUMNS - 2).map(String::as_str));
        cells.push(&self.outcome);
        cells.extend(self.values.iter().skip(WORD_COLUMNS - 2).map(String::as_str));
        cells
    }
}

/// The judge prints its first five columns as words (left-aligned) and the rest as
/// numbers (right-aligned), two spaces apart.
const WORD_COLUMNS: usize = 5;
const RESULT_COLUMN: usize = 4;

impl VerdictTable {
    /// The report as the log holds it (the judge's own text). The log is the record
    /// followers replay, so the table is taken from it by the columns' positions, and
    /// only when printing the result again gives the same text; else it stays text.
    pub fn from_log(text: &str) -> Self {
        match Self::columns_of(text) {
            Some(table) if table.render() == text => table,
            _ => VerdictTable::Text(text.to_owned()),
        }
    }

    fn columns_of(text: &str) -> Option<Self> {
        let (headline, body) = text.split_once('\n')?;
        let lines: Vec<&str> = body.split_inclusive('\n').collect();
        let end = lines.iter().position(|l| l.trim_end().ends_with(':')).unwrap_or(lines.len());
        let block: Vec<Vec<char>> = lines[..end].iter().map(|l| l.trim_end_matches('\n').chars().collect()).collect();
        let width = block.iter().map(Vec::len).max()?;
        // Columns are two spaces apart, the widest cell of each fills it, and no cell holds
        // two spaces in a row: the gaps are the runs of two or more positions blank on
        // every line, and the columns what lies between them.
        let blank: Vec<bool> = (0..width).map(|p| block.iter().all(|l| l.get(p).is_none_or(|c| *c == ' '))).collect();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut p = 0;
        while p < width {
            let run = blank[p..].iter().take_while(|b| **b).count();
            if run >= 2 || (p == 0 && run > 0) {
                p += run;
                continue;
            }
            let start = p;
            p += run.max(1);
            while p < width && !(blank[p] && blank.get(p + 1).is_none_or(|b| *b)) {
                p += 1;
            }
            spans.push((start, p));
        }
        let cells = |line: &Vec<char>| -> Vec<String> {
            spans
                .iter()
                .map(|&(s, e)| {
                    line.get(s.min(line.len())..e.min(line.len()))
                        .unwrap_or_default()
                        .iter()
                        .collect::<String>()
                        .trim()
                        .to_owned()
                })
                .collect()
        };
        let mut rows = block.iter().map(cells);
        let columns = rows.next()?;
        if columns.len() <= WORD_COLUMNS || columns[0] != "metric" || columns[RESULT_COLUMN] != "result" {
            return None;
        }
        let rows = rows
            .map(|mut cells| {
                if cells.len() != columns.len() {
                    return None;
                }
                let outcome = cells.remove(RESULT_COLUMN);
                let metric = cells.remove(0);
                Some(VerdictRow { metric, outcome, values: cells })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(VerdictTable::Table(VerdictReport {
            headline: headline.to_owned(),
            columns,
            rows,
            notes: lines[end..].concat(),
            canary_hosts: Vec::new(),
            baseline_hosts: Vec::new(),
            baseline_versions: Vec::new(),
        }))
    }

    /// The report's text, as the judge printed it.
    pub fn render(&self) -> String {
        match self {
            VerdictTable::Text(text) => text.clone(),
            VerdictTable::Table(report) => rollwave_core::judge::Report::from(report).to_string(),
        }
    }

    /// The headline, for a report of the usual shape; else its first line.
    pub fn headline(&self) -> &str {
        match self {
            VerdictTable::Table(report) => &report.headline,
            VerdictTable::Text(text) => text.lines().next().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollwave_core::judge::{Direction, JudgeConfig, MetricComparison, judge};

    /// A run like its baseline and a run far worse.
    fn runs() -> [(Vec<f64>, Vec<f64>); 2] {
        [
            (vec![0.01, 0.02, 0.015, 0.01, 0.012], vec![0.011, 0.018, 0.014, 0.01, 0.013, 0.012]),
            (vec![0.5, 0.6, 0.55, 0.7], vec![0.01, 0.02, 0.015, 0.012]),
        ]
    }

    fn verdict_text(canary: Vec<f64>, baseline: Vec<f64>) -> String {
        verdict(canary, baseline).to_string()
    }

    fn verdict(canary: Vec<f64>, baseline: Vec<f64>) -> rollwave_core::judge::Verdict {
        let metrics = vec![
            MetricComparison {
                direction: Direction::Increase,
                critical: true,
                ..MetricComparison::new("error_rate", canary.clone(), baseline.clone())
            },
            MetricComparison {
                direction: Direction::Increase,
                ..MetricComparison::new(
                    "latency_p99_ms",
                    canary.iter().map(|v| v * 1000.0).collect(),
                    baseline.iter().map(|v| v * 1000.0).collect(),
                )
            },
            MetricComparison::new("empty", Vec::new(), Vec::new()),
        ];
        judge(&JudgeConfig::default(), &metrics).expect("a valid comparison")
    }

    #[test]
    fn the_report_kept_as_data_is_the_table_the_text_gives_and_prints_as_the_judge_did() {
        for (canary, baseline) in runs() {
            let verdict = verdict(canary, baseline);
            let text = verdict.to_string();
            let kept = VerdictReport::from(verdict.report());
            // Through the log's JSON and back.
            let kept: VerdictReport = serde_json::from_str(&serde_json::to_string(&kept).unwrap()).unwrap();
            let table = VerdictTable::Table(kept);
            assert_eq!(table, VerdictTable::from_log(&text));
            assert_eq!(table.render(), text);
        }
    }

    #[test]
    fn a_judge_report_is_taken_apart_by_column_and_printed_back_as_it_was() {
        for (canary, baseline) in runs() {
            let text = verdict_text(canary, baseline);
            let table = VerdictTable::from_log(&text);
            let VerdictTable::Table(VerdictReport { headline, columns, rows, notes, .. }) = &table else {
                panic!("the judge's own report has the usual shape:\n{text}")
            };
            assert_eq!(table.render(), text);
            assert_eq!(headline, text.lines().next().unwrap());
            assert_eq!(columns[..5], ["metric", "group", "bad if", "critical", "result"]);
            assert_eq!(
                rows.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>(),
                ["error_rate", "latency_p99_ms", "empty"]
            );
            assert_eq!(rows[2].outcome, "NoData");
            assert!(rows.iter().all(|r| r.values.len() == columns.len() - 2), "{rows:?}");
            assert_eq!(rows[0].values[2], "yes", "error_rate is critical");
            assert!(rows[2].values.iter().skip(3).any(|v| v == "-"), "no data shows as -: {:?}", rows[2]);
            assert!(notes.starts_with("reasons:") || notes.starts_with("groups:"), "{notes}");
        }
    }

    #[test]
    fn a_report_of_another_shape_is_kept_as_text() {
        for text in ["", "verdict PASS", "verdict PASS\nno table here\n", "h\nmetric  result\nx\n"] {
            let table = VerdictTable::from_log(text);
            assert_eq!(table, VerdictTable::Text(text.to_owned()));
            assert_eq!(table.render(), text);
        }
    }

    #[test]
    fn a_verdict_s_outcome_comes_from_what_the_judge_decided() {
        let t = || VerdictTable::Text(String::new());
        assert_eq!(JudgeVerdict::new(true, false, t()).outcome, Outcome::Pass);
        assert_eq!(JudgeVerdict::new(true, true, t()).outcome, Outcome::Marginal);
        assert!(JudgeVerdict::new(true, true, t()).passed());
        assert_eq!(JudgeVerdict::new(false, false, t()).outcome, Outcome::Fail);
        assert!(!JudgeVerdict::new(false, true, t()).passed());
    }

    fn hook(ok: bool, exit_code: Option<i32>, timed_out: bool) -> HookRun {
        HookRun::of(&HookReport {
            name: "validate".into(),
            exit_code,
            duration_ms: 120,
            output: "smoke".into(),
            timed_out,
            ok,
        })
    }

    #[test]
    fn a_hook_run_reads_as_it_always_has() {
        assert_eq!(hook(true, Some(0), false).summary(), "validate: ok in 120 ms");
        assert_eq!(hook(false, Some(1), false).summary(), "validate: exit 1 in 120 ms");
        assert_eq!(hook(false, None, true).summary(), "validate: timed out in 120 ms");
        assert_eq!(hook(false, Some(137), true).exit, HookExit::TimedOut);
        assert_eq!(hook(false, None, false).summary(), "validate: failed in 120 ms");
    }

    fn region(stage: &str, region: &str) -> ScopePath {
        ScopePath::Region { stage: stage.into(), region: region.into() }
    }

    fn zone(stage: &str, region: &str, zone: &str) -> ScopePath {
        ScopePath::Zone { stage: stage.into(), region: region.into(), zone: zone.into() }
    }

    #[test]
    fn scopes_hold_what_lies_within_them() {
        let stage = ScopePath::Stage { stage: "prod".into() };
        let wave = ScopePath::Wave { stage: "prod".into(), wave: "w1".into() };
        let host = ScopePath::Host { stage: "prod".into(), region: "r1".into(), zone: "z1".into(), host: "h1".into() };
        assert!(stage.contains(&region("prod", "r1")) && stage.contains(&host) && stage.contains(&wave));
        assert!(region("prod", "r1").contains(&zone("prod", "r1", "z1")));
        assert!(zone("prod", "r1", "z1").contains(&host) && host.is_within(&region("prod", "r1")));
        assert!(!region("prod", "r1").contains(&region("prod", "r10")), "not a prefix of names");
        assert!(!region("prod", "r1").contains(&zone("beta", "r1", "z1")), "another stage");
        assert!(!zone("prod", "r1", "z1").contains(&zone("prod", "r2", "z1")), "a zone name in another region");
        assert!(!wave.contains(&region("prod", "r1")) && wave.contains(&wave));
        assert!(!host.contains(&zone("prod", "r1", "z1")) && host.contains(&host));
        assert!(ScopePath::Service.contains(&host) && !stage.contains(&ScopePath::Service));
    }

    #[test]
    fn scopes_print_and_sort_as_their_paths() {
        let host = ScopePath::Host { stage: "prod".into(), region: "r1".into(), zone: "z1".into(), host: "h1".into() };
        assert_eq!(host.to_string(), "prod/r1/z1/h1");
        assert_eq!(ScopePath::Service.to_string(), "");
        assert_eq!(ScopePath::Wave { stage: "prod".into(), wave: "w1".into() }.to_string(), "prod/w1");
        let mut scopes = [region("beta", "b"), ScopePath::Stage { stage: "beta-2".into() }, zone("beta", "a", "z")];
        scopes.sort();
        let paths: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "a list keyed by scope keeps the order of its paths");
        assert_eq!(paths, ["beta-2", "beta/a/z", "beta/b"]);
    }

    #[test]
    fn a_hook_record_renders_the_event_the_api_has_always_served() {
        let record = Record {
            at: Timestamp::from_second(1_700_000_000).unwrap(),
            kind: RecordKind::Hook,
            release: Some("v2".into()),
            scope: zone("prod", "r1", "z1"),
            reason: None,
            detail: Some(Detail::Hook(hook(false, Some(1), false))),
        };
        let json = serde_json::to_string(&record.view("web")).unwrap();
        assert_eq!(
            json,
            r#"{"t":"2023-11-14T22:13:20Z","service":"web","kind":"hook","release":"v2","scope":"prod/r1/z1","reason":"validate: exit 1 in 120 ms","output":"smoke"}"#
        );
        let quiet = Record {
            kind: RecordKind::Event(EventKind::TestPassed),
            reason: Some("smoke".into()),
            detail: Some(Detail::Test(TestRun { ok: true, output: String::new() })),
            ..record
        };
        assert_eq!(quiet.view("web").reason.as_deref(), Some("smoke"));
        assert_eq!(quiet.view("web").output, None, "an empty output is left out");
    }
}
