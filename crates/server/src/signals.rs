//! Built-in health signals: what routers push (traffic) and agents push (gauges: CPU,
//! memory, restarts) is stored per host and version; the leader turns it into alarm
//! states (CloudWatch semantics, the core's evaluator) and data points for bakes, and
//! hands both to the engines as inputs.

use crate::api::GAUGES;
use crate::state::{LogInput, ReadModel, ServiceState};
use rollwave_api::Lane;
use rollwave_core::alarm::{AlarmScope, AlarmSpec, Evaluator, Gauge, MetricRef, MonitorField, TrafficMetric};
use rollwave_core::judge::{JudgeConfig, Outcome, judge};
use rollwave_core::plan::{EnvId, HostId};
use rollwave_store::{GaugeRow, MetricRow};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Pushes may arrive this long after the end of the period they belong to.
pub const GRACE_MS: i64 = 1_000;
/// Metrics are shown in bins of this length.
pub const BIN_MS: i64 = 10_000;

/// The metrics rollwave measures itself from traffic, besides `monitor:NAME:success_rate`
/// and `monitor:NAME:latency_ms`; agents' [`GAUGES`] are built in too.
pub const BUILTIN: [&str; 3] = ["error_rate", "latency_p99_ms", "request_rate"];

/// Whether `metric` is one of the gauges agents read on their hosts.
pub fn is_gauge(metric: &str) -> bool {
    GAUGES.contains(&metric)
}

/// Whether rollwave measures `metric` (named as in a query) itself, and from which
/// rows: router traffic, or a monitor's checks.
pub fn builtin_source(metric: &str) -> Option<String> {
    if TrafficMetric::named(metric).is_some() {
        return Some("traffic".into());
    }
    let rest = metric.strip_prefix("monitor:")?;
    let (name, what) = rest.rsplit_once(':')?;
    MonitorField::named(what).map(|_| format!("monitor:{name}"))
}

/// What a period of rows (traffic, or a monitor's checks) is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowValue {
    RequestRate,
    ErrorRate,
    SuccessRate,
    P99Ms,
}

impl RowValue {
    /// By the name of a traffic metric or a monitor's field, as a query names it.
    fn named(metric: &str) -> Option<Self> {
        let what = metric.rsplit(':').next().unwrap_or(metric);
        if let Some(m) = TrafficMetric::named(what) {
            return Some(Self::of_traffic(m));
        }
        MonitorField::named(what).map(Self::of_monitor)
    }

    fn of_traffic(metric: TrafficMetric) -> Self {
        match metric {
            TrafficMetric::RequestRate => RowValue::RequestRate,
            TrafficMetric::ErrorRate => RowValue::ErrorRate,
            TrafficMetric::LatencyP99Ms => RowValue::P99Ms,
        }
    }

    fn of_monitor(field: MonitorField) -> Self {
        match field {
            MonitorField::SuccessRate => RowValue::SuccessRate,
            MonitorField::LatencyMs => RowValue::P99Ms,
        }
    }
}

/// What an alarm's values are computed from.
enum Measure {
    /// Rows of this source (`traffic` or `monitor:NAME`), read as `value`.
    Rows {
        source: String,
        value: RowValue,
    },
    Gauge(Gauge),
}

/// How rollwave measures `metric` itself; `None` for a Prometheus query or a CloudWatch metric.
fn measure(metric: &MetricRef) -> Option<Measure> {
    match metric {
        MetricRef::Traffic(m) => Some(Measure::Rows { source: "traffic".into(), value: RowValue::of_traffic(*m) }),
        MetricRef::Gauge(gauge) => Some(Measure::Gauge(*gauge)),
        MetricRef::Monitor { name, field, .. } => {
            Some(Measure::Rows { source: format!("monitor:{name}"), value: RowValue::of_monitor(*field) })
        }
        MetricRef::Prometheus { .. } | MetricRef::CloudWatch(_) => None,
    }
}

/// Requests, errors and a latency histogram, summed over some hosts and time.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<u64>,
}

impl Traffic {
    pub fn add(&mut self, row: &MetricRow) {
        self.requests += row.requests.max(0) as u64;
        self.errors += row.errors.max(0) as u64;
        for (i, n) in row.buckets.split(',').filter_map(|c| c.trim().parse::<u64>().ok()).enumerate() {
            if self.buckets.len() <= i {
                self.buckets.resize(i + 1, 0);
            }
            self.buckets[i] += n;
        }
    }

    /// The 99th percentile, as the upper bound of the bucket it falls in.
    pub fn p99(&self) -> Option<f64> {
        rollwave_core::alarm::bucket_p99(&self.buckets)
    }

    /// A metric named as a query names it; `None` for an unknown name or without data.
    pub fn metric(&self, metric: &str, period_s: f64) -> Option<f64> {
        self.value(RowValue::named(metric)?, period_s)
    }

    pub fn value(&self, value: RowValue, period_s: f64) -> Option<f64> {
        match value {
            RowValue::RequestRate => Some(self.requests as f64 / period_s),
            _ if self.requests == 0 => None,
            RowValue::ErrorRate => Some(self.errors as f64 / self.requests as f64),
            RowValue::SuccessRate => Some(1.0 - self.errors as f64 / self.requests as f64),
            RowValue::P99Ms => self.p99(),
        }
    }
}

/// Readings of one gauge over some hosts and time. `cpu_percent` and `memory_percent`
/// are their mean; `restarts` their maximum (the host that restarted most).
#[derive(Clone, Debug, Default)]
pub struct GaugeReadings {
    sum: f64,
    count: u64,
    max: f64,
}

impl GaugeReadings {
    pub fn add(&mut self, value: f64) {
        self.max = if self.count == 0 { value } else { self.max.max(value) };
        self.sum += value;
        self.count += 1;
    }

    /// None without readings, or for a name that is no gauge.
    pub fn metric(&self, metric: &str) -> Option<f64> {
        self.value(Gauge::named(metric)?)
    }

    /// None without readings.
    pub fn value(&self, gauge: Gauge) -> Option<f64> {
        match (self.count, gauge) {
            (0, _) => None,
            (_, Gauge::Restarts) => Some(self.max),
            (n, Gauge::CpuPercent | Gauge::MemoryPercent) => Some(self.sum / n as f64),
        }
    }
}

/// Where a host sits, by names: (environment, region, zone).
fn place_of(s: &ServiceState, env: EnvId, h: HostId) -> (String, String, String) {
    let zone = s.plan.host_zone(env, h);
    let region = s.plan.zone_region(env, zone);
    (
        s.plan.manifest.environments[env.idx()].name.clone(),
        s.plan.region_name(env, region).to_owned(),
        s.plan.zone_name(env, zone).to_owned(),
    )
}

/// Whether `host` was, or is being, rolled back off `version`: it runs or is being given
/// an older release. What such a version did there was already acted on; counting it
/// again would blame the release the host goes back to (a false `regression_suspected`).
fn rolled_back_off(s: &ServiceState, env: EnvId, h: HostId, version: &str) -> bool {
    let Some(release) = s.engine.release_named(version) else { return false };
    let going_to = s.engine.host_op(env, h).map(|(_, target)| target);
    s.engine.host_version(env, h) < release || going_to.is_some_and(|t| t < release)
}

/// The alarm instance of `scope` that what `host` did on `version` counts for: none when
/// the host is unknown, or was rolled back off that version.
fn instance_of(
    model: &ReadModel,
    service: &str,
    scope: AlarmScope,
    environment: &str,
    host: &str,
    version: &str,
) -> Option<String> {
    let s = model.services.get(service)?;
    let (env_id, h) = s.host(environment, host).ok()?;
    if rolled_back_off(s, env_id, h, version) {
        return None;
    }
    let (env, region, zone) = place_of(s, env_id, h);
    Some(match scope {
        AlarmScope::Environment => env,
        AlarmScope::Region => format!("{env}/{region}"),
        AlarmScope::Zone => format!("{env}/{region}/{zone}"),
        AlarmScope::Host => format!("{env}/{host}"),
    })
}

/// An alarm instance: (service, alarm index, scope).
type AlarmKey = (String, usize, String);
/// A service's alarms on what rollwave measures itself: (index in the manifest, spec, what it is computed from).
type StoredAlarms = (String, Vec<(usize, AlarmSpec, Measure)>);

/// Prometheus queries under way at once, at most.
const MAX_QUERIES_IN_FLIGHT: usize = 16;

/// `source: prometheus` and `source: cloudwatch` alarms: their queries run on tasks of
/// their own, so that the leader never waits on Prometheus or CloudWatch; each task
/// observes its value and sends the input an alarm change makes through `inputs`.
struct QueriedAlarms {
    evaluators: Arc<Mutex<HashMap<AlarmKey, Evaluator>>>,
    /// Instances with a query under way: the next period of one is queried only once the
    /// last has its answer (or timed out), so an instance's values are observed in order.
    in_flight: Arc<Mutex<HashSet<AlarmKey>>>,
    permits: Arc<tokio::sync::Semaphore>,
    inputs: mpsc::Sender<(String, LogInput)>,
}

/// The leader's alarm evaluators and where each alarm got to.
#[derive(Default)]
pub struct Signals {
    evaluators: HashMap<(String, usize, String), Evaluator>,
    evaluated_until: HashMap<(String, usize), i64>,
    served_until: HashMap<String, i64>,
    /// The last verdict given per one-box bake (service, environment, region, release).
    verdicts: HashMap<(String, String, String, String), Outcome>,
    /// The Prometheus HTTP API `source: prometheus` alarms query, when one is configured.
    prometheus: Option<String>,
    /// Where the queries of `source: prometheus` and `source: cloudwatch` alarms run.
    queried: Option<QueriedAlarms>,
    /// Length of the bins requests served are counted in (ms).
    bin_ms: i64,
    /// How often regions of functions' traffic is read from CloudWatch (ms), and up to
    /// when it was.
    function_traffic_ms: i64,
    /// How late CloudWatch's periods are read (ms).
    cloudwatch_delay_ms: i64,
    function_traffic_until: Option<i64>,
}

impl Signals {
    /// `inputs` receives the alarm changes of `source: prometheus` alarms, as their
    /// queries answer.
    pub fn new(
        prometheus: Option<String>,
        datapoint_bin: std::time::Duration,
        function_traffic_every: std::time::Duration,
        cloudwatch_delay: std::time::Duration,
        inputs: mpsc::Sender<(String, LogInput)>,
    ) -> Self {
        let queried = QueriedAlarms {
            evaluators: Arc::default(),
            in_flight: Arc::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_QUERIES_IN_FLIGHT)),
            inputs,
        };
        Signals {
            prometheus,
            queried: Some(queried),
            bin_ms: (datapoint_bin.as_millis() as i64).max(100),
            function_traffic_ms: (function_traffic_every.as_millis() as i64).max(1000),
            cloudwatch_delay_ms: cloudwatch_delay.as_millis() as i64,
            ..Signals::default()
        }
    }
}

/// Fills `{{service}}`, `{{environment}}`, `{{region}}`, `{{zone}}`, `{{host}}` and
/// `{{version}}` into a PromQL query for one alarm instance.
pub fn fill_query(query: &str, service: &str, at: &Instance, version: &str) -> String {
    [
        ("{{service}}", service),
        ("{{environment}}", at.environment.as_str()),
        ("{{region}}", at.region.as_str()),
        ("{{zone}}", at.zone.as_str()),
        ("{{host}}", at.host.as_str()),
        ("{{version}}", version),
    ]
    .iter()
    .fold(query.to_owned(), |q, (k, v)| q.replace(k, &promql_escaped(v)))
}

/// A value as it may stand inside a PromQL string literal (`"…"` or `'…'`): names and
/// versions follow grammars that need none of this, but a value is never read as query text.
fn promql_escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Runs an instant query; the first sample's value, or `None` when the result is empty.
fn prometheus_value(base: &str, query: &str, at_s: f64) -> Result<Option<f64>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent
        .get(format!("{}/api/v1/query", base.trim_end_matches('/')))
        .query("query", query)
        .query("time", format!("{at_s:.3}"))
        .call()
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = response.body_mut().read_json().map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("Prometheus refused the query: {}", body["error"]));
    }
    Ok(body["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()))
}

/// (error rate, p99) of each push with traffic: one data point per host per push.
fn per_host_bins<'a>(rows: impl Iterator<Item = &'a MetricRow>) -> Vec<(f64, Option<f64>)> {
    rows.filter(|r| r.requests > 0)
        .map(|r| {
            let mut t = Traffic::default();
            t.add(r);
            (t.errors as f64 / t.requests as f64, t.p99())
        })
        .collect()
}

impl Signals {
    /// Inputs for every alarm period and data-point bin that has ended since last time.
    pub async fn due(
        &mut self,
        store: &rollwave_store::Store,
        model: &std::sync::RwLock<ReadModel>,
        now_ms: i64,
    ) -> Vec<(String, LogInput)> {
        let services: Vec<StoredAlarms> = {
            let m = model.read().unwrap_or_else(|p| p.into_inner());
            m.services
                .values()
                .map(|s| {
                    let alarms = s
                        .plan
                        .manifest
                        .alarms
                        .iter()
                        .enumerate()
                        .filter_map(|(i, a)| Some((i, a.clone(), measure(&a.metric)?)))
                        .collect();
                    (s.name.clone(), alarms)
                })
                .collect()
        };
        let mut inputs = self.judge_one_boxes(store, model, now_ms).await;
        self.start_prometheus_queries(model, now_ms);
        self.start_cloudwatch_queries(model, now_ms);
        self.start_function_traffic(store, model, now_ms);
        for (service, alarms) in services {
            let bin = self.bin_ms;
            let longest = alarms.iter().map(|(_, a, _)| a.period.as_millis() as i64).max().unwrap_or(0).max(bin);
            let rows = match store.metrics(&service, now_ms - longest - GRACE_MS - bin, now_ms).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(service = %service, "reading metrics failed; alarms wait for the next period: {e}");
                    continue;
                }
            };
            let gauges: Vec<GaugeRow> = if alarms.iter().any(|(_, _, m)| matches!(m, Measure::Gauge(_))) {
                match store.gauges(&service, now_ms - longest - GRACE_MS - bin, now_ms).await {
                    Ok(gauges) => gauges,
                    Err(e) => {
                        tracing::warn!(service = %service, "reading gauges failed; alarms wait for the next period: {e}");
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            // Data points, per finished bin.
            let bin_end = (now_ms - GRACE_MS).div_euclid(bin) * bin;
            let from = *self.served_until.entry(service.clone()).or_insert(bin_end);
            if bin_end > from {
                let mut served: BTreeMap<(Lane, String, String, String), u64> = BTreeMap::new();
                {
                    let m = model.read().unwrap_or_else(|p| p.into_inner());
                    for r in rows.iter().filter(|r| r.at_ms >= from && r.at_ms < bin_end) {
                        let Some(s) = m.services.get(&service) else { continue };
                        let Ok((env_id, h)) = s.host(&r.environment, &r.host) else { continue };
                        let (env, _, zone) = place_of(s, env_id, h);
                        let requests = r.requests.max(0) as u64;
                        *served.entry((Lane::Code, env.clone(), zone.clone(), r.version.clone())).or_default() +=
                            requests;
                        // The same requests are the data points of the flag set the host
                        // serves now, so a flag release's bakes count them too.
                        let flags = s.flag_engine.version_name(s.flag_engine.host_version(env_id, h)).to_owned();
                        *served.entry((Lane::Flags, env, zone, flags)).or_default() += requests;
                    }
                    let known = |lane: Lane, v: &str| {
                        m.services.get(&service).is_some_and(|s| s.lane_engine(lane).release_named(v).is_some())
                    };
                    served.retain(|(lane, _, _, v), n| *n > 0 && known(*lane, v));
                }
                for ((lane, environment, zone, version), requests) in served {
                    inputs.push((service.clone(), LogInput::Served { environment, zone, version, requests, lane }));
                }
                self.served_until.insert(service.clone(), bin_end);
            }
            for (index, spec, measure) in alarms {
                let period = spec.period.as_millis() as i64;
                let end = (now_ms - GRACE_MS).div_euclid(period) * period;
                let last = *self.evaluated_until.entry((service.clone(), index)).or_insert(end - period);
                if end <= last {
                    continue;
                }
                self.evaluated_until.insert((service.clone(), index), end);
                let in_period = |at_ms: i64| at_ms >= end - period && at_ms < end;
                let (values, scopes): (BTreeMap<String, f64>, Vec<String>) = {
                    let m = model.read().unwrap_or_else(|p| p.into_inner());
                    let instance = |environment: &str, host: &str, version: &str| {
                        instance_of(&m, &service, spec.scope, environment, host, version)
                    };
                    let values = match &measure {
                        Measure::Gauge(gauge) => {
                            let mut readings: BTreeMap<String, GaugeReadings> = BTreeMap::new();
                            for g in gauges.iter().filter(|g| in_period(g.at_ms) && g.name == gauge.as_str()) {
                                if let Some(key) = instance(&g.environment, &g.host, &g.version) {
                                    readings.entry(key).or_default().add(g.value);
                                }
                            }
                            readings.into_iter().filter_map(|(k, r)| r.value(*gauge).map(|v| (k, v))).collect()
                        }
                        Measure::Rows { source, value } => {
                            let mut traffic: BTreeMap<String, Traffic> = BTreeMap::new();
                            for r in rows.iter().filter(|r| in_period(r.at_ms) && r.source == *source) {
                                if let Some(key) = instance(&r.environment, &r.host, &r.version) {
                                    traffic.entry(key).or_default().add(r);
                                }
                            }
                            traffic
                                .into_iter()
                                .filter_map(|(k, t)| t.value(*value, period as f64 / 1000.0).map(|v| (k, v)))
                                .collect()
                        }
                    };
                    (values, instances(&m, &service, spec.scope).into_iter().map(|i| i.path).collect())
                };
                for scope in scopes {
                    let value = values.get(&scope).copied();
                    let evaluator = self
                        .evaluators
                        .entry((service.clone(), index, scope.clone()))
                        .or_insert_with(|| Evaluator::new(&spec));
                    if let Some(t) = evaluator.observe(value) {
                        inputs.push((
                            service.clone(),
                            LogInput::Alarm { alarm: spec.name.clone(), scope, state: t.to.into(), reason: t.reason },
                        ));
                    }
                }
            }
        }
        inputs
    }
}

impl Signals {
    /// Starts the queries of `source: prometheus` alarms whose period has ended.
    fn start_prometheus_queries(&mut self, model: &std::sync::RwLock<ReadModel>, now_ms: i64) {
        let (Some(base), Some(queried)) = (&self.prometheus, &self.queried) else { return };
        let m = model.read().unwrap_or_else(|p| p.into_inner());
        for s in m.services.values() {
            for (index, spec) in s.plan.manifest.alarms.iter().enumerate() {
                let MetricRef::Prometheus { query, .. } = &spec.metric else { continue };
                let Some(end) = period_ended(&mut self.evaluated_until, (s.name.clone(), index), spec, now_ms) else {
                    continue;
                };
                let in_flight = s
                    .engine
                    .releases()
                    .into_iter()
                    .filter(|r| r.status == rollwave_core::engine::ReleaseStatus::InProgress)
                    .map(|r| r.version)
                    .next_back()
                    .unwrap_or_default();
                for at in instances(&m, &s.name, spec.scope) {
                    let query = fill_query(query, &s.name, &at, &in_flight);
                    let base = base.clone();
                    queried.start((s.name.clone(), index, at.path), spec, "Prometheus", move || {
                        prometheus_value(&base, &query, end as f64 / 1000.0)
                    });
                }
            }
        }
    }

    /// Starts the `GetMetricData` calls of `source: cloudwatch` alarms whose period has
    /// ended: per instance, each function of its regions with the version in flight there.
    fn start_cloudwatch_queries(&mut self, model: &std::sync::RwLock<ReadModel>, now_ms: i64) {
        let Some(queried) = &self.queried else { return };
        let now_ms = now_ms - self.cloudwatch_delay_ms;
        let m = model.read().unwrap_or_else(|p| p.into_inner());
        for s in m.services.values() {
            for (index, spec) in s.plan.manifest.alarms.iter().enumerate() {
                let MetricRef::CloudWatch(metric) = &spec.metric else { continue };
                let Some(end) = period_ended(&mut self.evaluated_until, (s.name.clone(), index), spec, now_ms) else {
                    continue;
                };
                for at in instances(&m, &s.name, spec.scope) {
                    let queries = cloudwatch_queries(s, metric, &at);
                    if queries.is_empty()
                        && !s.plan.manifest.environments.iter().any(|e| e.name == at.environment && e.is_functions())
                    {
                        continue;
                    }
                    let period_s = (spec.period.as_secs() as i64).max(1);
                    queried.start((s.name.clone(), index, at.path), spec, "CloudWatch", move || {
                        cloudwatch_value(&queries, end / 1000, period_s)
                    });
                }
            }
        }
    }

    /// Judges every baking one-box against the hosts of its region still on other
    /// versions; a verdict is given when it changes, and a failing one rolls back.
    async fn judge_one_boxes(
        &mut self,
        store: &rollwave_store::Store,
        model: &std::sync::RwLock<ReadModel>,
        now_ms: i64,
    ) -> Vec<(String, LogInput)> {
        struct Bake {
            service: String,
            lane: Lane,
            environment: String,
            region: String,
            release: String,
            canary: Vec<String>,
            baseline: Vec<String>,
            since: i64,
            until: i64,
            judging: rollwave_core::manifest::JudgeSettings,
        }
        let bakes: Vec<Bake> = {
            let m = model.read().unwrap_or_else(|p| p.into_inner());
            m.services
                .values()
                .flat_map(|s| {
                    Lane::ALL.into_iter().flat_map(move |lane| {
                        let engine = s.lane_engine(lane);
                        engine.one_box_bakes().into_iter().map(move |b| {
                            let region_hosts = s.plan.env(b.env).regions[b.region.idx()].hosts.clone();
                            let name = |h: u32| s.plan.host_name(b.env, rollwave_core::plan::HostId(h)).to_owned();
                            let canary = b.hosts.clone().map(name).collect();
                            let baseline = region_hosts
                                .filter(|h| !b.hosts.contains(h))
                                .filter(|&h| engine.host_version(b.env, rollwave_core::plan::HostId(h)) != b.release)
                                .map(name)
                                .collect();
                            Bake {
                                service: s.name.clone(),
                                lane,
                                environment: s.plan.manifest.environments[b.env.idx()].name.clone(),
                                region: s.plan.region_name(b.env, b.region).to_owned(),
                                release: engine.version_name(b.release).to_owned(),
                                canary,
                                baseline,
                                since: b.since.as_millisecond(),
                                until: b.until.as_millisecond(),
                                judging: b.judging,
                            }
                        })
                    })
                })
                .collect()
        };
        let mut inputs = Vec::new();
        for bake in bakes {
            let rows = match store.metrics(&bake.service, bake.since, now_ms).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(service = %bake.service, release = %bake.release, "reading metrics for the one-box judge failed: {e}");
                    continue;
                }
            };
            let rows: Vec<&MetricRow> = rows.iter().filter(|r| r.environment == bake.environment).collect();
            let traffic = |r: &&&MetricRow| r.source == "traffic";
            // Traffic is counted by code version. A code one-box is the hosts' traffic on
            // the release; a flag one-box is all its hosts' traffic, compared with the
            // region's other hosts on the same code, so only the flag set differs.
            let (canary, baseline): (Vec<&MetricRow>, Vec<&MetricRow>) = match bake.lane {
                Lane::Code => (
                    rows.iter()
                        .filter(traffic)
                        .copied()
                        .filter(|r| bake.canary.contains(&r.host) && r.version == bake.release)
                        .collect(),
                    rows.iter()
                        .filter(traffic)
                        .copied()
                        .filter(|r| bake.baseline.contains(&r.host) && r.version != bake.release)
                        .collect(),
                ),
                Lane::Flags => {
                    let canary: Vec<&MetricRow> =
                        rows.iter().filter(traffic).copied().filter(|r| bake.canary.contains(&r.host)).collect();
                    let code: std::collections::BTreeSet<&str> = canary.iter().map(|r| r.version.as_str()).collect();
                    let baseline = rows
                        .iter()
                        .filter(traffic)
                        .copied()
                        .filter(|r| bake.baseline.contains(&r.host) && code.contains(r.version.as_str()))
                        .collect();
                    (canary, baseline)
                }
            };
            let Some(mut verdict) = self.verdict(&bake.judging, &canary, &baseline, bake.since) else { continue };
            // The judge sees numbers; the verdict says which hosts and versions they were.
            let hosts = |rows: &[&MetricRow]| -> Vec<String> {
                rows.iter().map(|r| r.host.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
            };
            verdict.report.canary_hosts = hosts(&canary);
            verdict.report.baseline_hosts = hosts(&baseline);
            verdict.report.baseline_versions = baseline
                .iter()
                .map(|r| r.version.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            // A failure can be said as soon as it shows; a pass only on the whole bake,
            // which the engine requires (an early pass would be heard and not counted, and
            // never said again).
            if verdict.outcome != Outcome::Fail && now_ms < bake.until {
                continue;
            }
            let key = (bake.service.clone(), bake.environment.clone(), bake.region.clone(), bake.release.clone());
            if self.verdicts.get(&key) == Some(&verdict.outcome) {
                continue;
            }
            self.verdicts.insert(key, verdict.outcome);
            inputs.push((
                bake.service,
                LogInput::Verdict {
                    environment: bake.environment,
                    region: bake.region,
                    release: bake.release,
                    passed: verdict.outcome != Outcome::Fail,
                    marginal: verdict.outcome == Outcome::Marginal,
                    reason: verdict.reason,
                    table: verdict.report.to_string(),
                    report: Some(verdict.report.into()),
                },
            ));
        }
        inputs
    }
}

/// A verdict on a one-box, from either method: what the log keeps of it.
struct OneBoxVerdict {
    outcome: Outcome,
    reason: String,
    report: rollwave_core::judge::Report,
}

impl Signals {
    /// The judge's verdict on the canary's and the baseline's traffic rows since `since`,
    /// or `None` while there is too little to judge.
    fn verdict(
        &self,
        judging: &rollwave_core::manifest::JudgeSettings,
        canary: &[&MetricRow],
        baseline: &[&MetricRow],
        since: i64,
    ) -> Option<OneBoxVerdict> {
        use rollwave_core::manifest::JudgeMethod;
        match judging.method {
            JudgeMethod::MannWhitney => {
                let (canary, baseline) =
                    (per_host_bins(canary.iter().copied()), per_host_bins(baseline.iter().copied()));
                // Too few points to say anything yet.
                let least = usize::try_from(judging.min_samples).unwrap_or(usize::MAX);
                if canary.len() < least || baseline.len() < least {
                    return None;
                }
                let metrics = rollwave_core::judge::one_box_metrics(&judging.metrics, &canary, &baseline);
                let verdict = judge(&JudgeConfig::default(), &metrics).ok()?;
                Some(OneBoxVerdict { outcome: verdict.outcome, reason: verdict.summary(), report: verdict.report() })
            }
            JudgeMethod::Off => None,
            JudgeMethod::Sequential => {
                let judge = rollwave_core::sequential::SequentialJudge::from_settings(judging).ok()?;
                let bins = sequential_bins(canary, baseline, since, self.bin_ms);
                if bins.is_empty() {
                    return None;
                }
                let verdict = judge.judge(&bins);
                Some(OneBoxVerdict { outcome: verdict.outcome, reason: verdict.summary(), report: verdict.report() })
            }
        }
    }
}

/// The canary's and the baseline's traffic summed per data bin since `since`, in order;
/// bins where neither side served anything are left out.
fn sequential_bins(
    canary: &[&MetricRow],
    baseline: &[&MetricRow],
    since: i64,
    bin_ms: i64,
) -> Vec<rollwave_core::sequential::JudgeBin> {
    use rollwave_core::sequential::{JudgeBin, Traffic as Side};
    let mut bins: std::collections::BTreeMap<i64, JudgeBin> = std::collections::BTreeMap::new();
    let add = |side: &mut Side, row: &MetricRow| {
        let mut t = Traffic::default();
        t.add(row);
        side.add(&Side { requests: t.requests, errors: t.errors, latency: t.buckets });
    };
    for row in canary {
        add(&mut bins.entry((row.at_ms - since).div_euclid(bin_ms.max(1))).or_default().canary, row);
    }
    for row in baseline {
        add(&mut bins.entry((row.at_ms - since).div_euclid(bin_ms.max(1))).or_default().baseline, row);
    }
    bins.into_values().filter(|b| b.canary.requests + b.baseline.requests > 0).collect()
}

/// One alarm instance: its path (`env`, `env/region`, `env/region/zone` or `env/host`)
/// and the names a query template can use.
pub struct Instance {
    pub path: String,
    pub environment: String,
    pub region: String,
    pub zone: String,
    pub host: String,
}

/// The CloudWatch metrics a `source: cloudwatch` alarm instance reads: per function of
/// each region of functions in its scope, the metric with its dimensions filled in, by
/// AWS region. A region with no release on any slice has no version to read and is left
/// out.
fn cloudwatch_queries(
    s: &crate::state::ServiceState,
    metric: &rollwave_core::alarm::CloudWatchMetric,
    at: &Instance,
) -> Vec<(String, rollwave_aws::MetricQuery)> {
    let mut out = Vec::new();
    let Some(e) = s.plan.manifest.environments.iter().position(|e| e.name == at.environment) else { return out };
    let env_id = rollwave_core::plan::EnvId(e as u16);
    let env = &s.plan.manifest.environments[e];
    for (r, region) in env.regions.iter().enumerate() {
        if !region.is_functions() || (!at.region.is_empty() && at.region != region.name) {
            continue;
        }
        // The newest release any slice of the region is on.
        let newest = s.plan.envs[e].regions[r]
            .hosts
            .clone()
            .map(|h| s.engine.host_version(env_id, rollwave_core::plan::HostId(h)))
            .max()
            .filter(|v| v.0 > 0);
        let Some(version) = newest.and_then(|v| s.function_version(v, region).ok().flatten()) else {
            continue;
        };
        for function in &region.functions {
            let fill = |text: &str| {
                [
                    ("{{service}}", s.name.as_str()),
                    ("{{environment}}", env.name.as_str()),
                    ("{{region}}", region.name.as_str()),
                    ("{{function_version}}", version.as_str()),
                    ("{{function}}", function.name.as_str()),
                    ("{{alias}}", function.alias.as_str()),
                ]
                .iter()
                .fold(text.to_owned(), |t, (k, v)| t.replace(k, v))
            };
            out.push((
                region.name.clone(),
                rollwave_aws::MetricQuery {
                    namespace: metric.namespace.clone(),
                    name: metric.name.clone(),
                    dimensions: metric.dimensions.iter().map(|(n, v)| (n.clone(), fill(v))).collect(),
                    statistic: metric.statistic.clone(),
                },
            ));
        }
    }
    out
}

/// The worst (largest) value of the metrics, each read in its AWS region for the period
/// ending at `end_s`; `None` when none has a data point.
fn cloudwatch_value(
    queries: &[(String, rollwave_aws::MetricQuery)],
    end_s: i64,
    period_s: i64,
) -> Result<Option<f64>, String> {
    if queries.is_empty() {
        return Ok(None);
    }
    let env = rollwave_aws::ProcessEnvironment;
    let mut worst: Option<f64> = None;
    let mut regions: Vec<&str> = queries.iter().map(|(r, _)| r.as_str()).collect();
    regions.dedup();
    let credentials = rollwave_aws::Credentials::from_chain(&env).map_err(|e| e.to_string())?;
    for region in regions {
        let credentials = credentials.clone();
        let endpoint = rollwave_aws::endpoint(&env, "CloudWatch", "monitoring", region)?;
        let client =
            rollwave_aws::Client::new("monitoring", region, endpoint, credentials, rollwave_aws::Retry::default());
        let these: Vec<rollwave_aws::MetricQuery> =
            queries.iter().filter(|(r, _)| r == region).map(|(_, q)| q.clone()).collect();
        let values = rollwave_aws::CloudWatch::new(client)
            .values(&these, end_s, period_s, &mut Vec::new())
            .map_err(|e| e.to_string())?;
        for v in values.into_iter().flatten() {
            worst = Some(worst.map_or(v, |w| w.max(v)));
        }
    }
    Ok(worst)
}

/// The end (ms) of an alarm's period that has ended since it was last read, if one has;
/// notes it as read.
fn period_ended(
    read_until: &mut HashMap<(String, usize), i64>,
    key: (String, usize),
    spec: &AlarmSpec,
    now_ms: i64,
) -> Option<i64> {
    let period = (spec.period.as_millis() as i64).max(1);
    let end = (now_ms - GRACE_MS).div_euclid(period) * period;
    let last = *read_until.entry(key.clone()).or_insert(end - period);
    (end > last).then(|| {
        read_until.insert(key, end);
        end
    })
}

/// What one region of functions' traffic is read as: per version its slices hold, the
/// function version (`None`: what the alias routes to, before any release) and the slices.
struct FunctionTraffic {
    service: String,
    environment: String,
    region: String,
    functions: Vec<rollwave_core::manifest::Function>,
    versions: Vec<(String, Option<String>, Vec<String>)>,
}

impl Signals {
    /// Every `function_traffic_ms`, reads each region of functions' invocations and
    /// errors per version from CloudWatch (`AWS/Lambda` `Invocations` and `Errors`, by
    /// `ExecutedVersion`, through the alias and the canary alias) and stores them as the
    /// traffic of the slices on that version, spread evenly: bakes count them as data
    /// points, and alarms and the one-box judge see each version alone, as they see hosts.
    fn start_function_traffic(
        &mut self,
        store: &rollwave_store::Store,
        model: &std::sync::RwLock<ReadModel>,
        now_ms: i64,
    ) {
        let period = self.function_traffic_ms.max(1000);
        let end = (now_ms - self.cloudwatch_delay_ms - GRACE_MS).div_euclid(period) * period;
        let last = *self.function_traffic_until.get_or_insert(end - period);
        if end <= last {
            return;
        }
        self.function_traffic_until = Some(end);
        let m = model.read().unwrap_or_else(|p| p.into_inner());
        let mut regions = Vec::new();
        for s in m.services.values() {
            for (e, env) in s.plan.manifest.environments.iter().enumerate() {
                let env_id = rollwave_core::plan::EnvId(e as u16);
                for (r, region) in env.regions.iter().enumerate().filter(|(_, r)| r.is_functions()) {
                    let mut versions: std::collections::BTreeMap<rollwave_core::engine::ReleaseId, Vec<String>> =
                        Default::default();
                    for h in s.plan.envs[e].regions[r].hosts.clone().map(rollwave_core::plan::HostId) {
                        versions
                            .entry(s.engine.host_version(env_id, h))
                            .or_default()
                            .push(s.plan.host_name(env_id, h).to_owned());
                    }
                    let versions = versions
                        .into_iter()
                        .filter_map(|(release, slices)| {
                            let version = s.function_version(release, region).ok()?;
                            Some((s.engine.version_name(release).to_owned(), version, slices))
                        })
                        .collect();
                    regions.push(FunctionTraffic {
                        service: s.name.clone(),
                        environment: env.name.clone(),
                        region: region.name.clone(),
                        functions: region.functions.clone(),
                        versions,
                    });
                }
            }
        }
        drop(m);
        if regions.is_empty() {
            return;
        }
        let store = store.clone();
        tokio::spawn(async move {
            let rows = tokio::task::spawn_blocking(move || {
                let mut rows = Vec::new();
                for region in &regions {
                    match function_traffic_rows(region, end, period, now_ms) {
                        Ok(mut more) => rows.append(&mut more),
                        Err(e) => tracing::warn!(service = %region.service, region = %region.region, "reading functions' traffic from CloudWatch failed: {e}"),
                    }
                }
                rows
            })
            .await
            .unwrap_or_default();
            if !rows.is_empty()
                && let Err(e) = store.insert_metrics(&rows).await
            {
                tracing::warn!("storing functions' traffic failed: {e}");
            }
        });
    }
}

/// One region of functions' traffic for the period ending at `end_ms`, as rows of its
/// slices (blocking: CloudWatch, and Lambda for what the alias routes to before any release).
fn function_traffic_rows(
    region: &FunctionTraffic,
    end_ms: i64,
    period_ms: i64,
    now_ms: i64,
) -> Result<Vec<MetricRow>, String> {
    let env = rollwave_aws::ProcessEnvironment;
    let credentials = rollwave_aws::Credentials::from_chain(&env).map_err(|e| e.to_string())?;
    let client = |id: &str, prefix: &str, service: &'static str| -> Result<rollwave_aws::Client, String> {
        let endpoint = rollwave_aws::endpoint(&env, id, prefix, &region.region)?;
        Ok(rollwave_aws::Client::new(
            service,
            &region.region,
            endpoint,
            credentials.clone(),
            rollwave_aws::Retry::default(),
        ))
    };
    let cloudwatch = rollwave_aws::CloudWatch::new(client("CloudWatch", "monitoring", "monitoring")?);
    let lambda = rollwave_aws::Lambda::new(client("lambda", "lambda", "lambda")?);
    let mut rows = Vec::new();
    for (name, version, slices) in &region.versions {
        let (mut requests, mut errors) = (0u64, 0u64);
        for function in &region.functions {
            let version = match version {
                Some(v) => v.clone(),
                None => {
                    lambda
                        .get_alias(&function.name, &function.alias, &mut Vec::new())
                        .map_err(|e| e.to_string())?
                        .function_version
                }
            };
            let mut resources = vec![format!("{}:{}", function.name, function.alias)];
            if function.queue.is_some() || function.router.is_some() {
                resources.push(format!("{}:{}", function.name, function.canary_alias));
            }
            let queries: Vec<rollwave_aws::MetricQuery> = resources
                .iter()
                .flat_map(|resource| {
                    ["Invocations", "Errors"].map(|metric| rollwave_aws::MetricQuery {
                        namespace: "AWS/Lambda".into(),
                        name: metric.into(),
                        dimensions: vec![
                            ("FunctionName".into(), function.name.clone()),
                            ("Resource".into(), resource.clone()),
                            ("ExecutedVersion".into(), version.clone()),
                        ],
                        statistic: "Sum".into(),
                    })
                })
                .collect();
            let values = cloudwatch
                .values(&queries, end_ms / 1000, (period_ms / 1000).max(1), &mut Vec::new())
                .map_err(|e| e.to_string())?;
            for (i, value) in values.into_iter().enumerate() {
                let n = value.unwrap_or(0.0).max(0.0).round() as u64;
                if i % 2 == 0 { requests += n } else { errors += n }
            }
        }
        if requests == 0 || slices.is_empty() {
            continue;
        }
        let errors = errors.min(requests);
        let k = slices.len() as u64;
        for (i, host) in slices.iter().enumerate() {
            let i = i as u64;
            let share = |total: u64| total / k + u64::from(i < total % k);
            rows.push(MetricRow {
                service: region.service.clone(),
                environment: region.environment.clone(),
                host: host.clone(),
                version: name.clone(),
                at_ms: now_ms,
                requests: share(requests) as i64,
                errors: share(errors) as i64,
                buckets: String::new(),
                source: "traffic".into(),
            });
        }
    }
    Ok(rows)
}

/// Every instance of an alarm of `scope`.
fn instances(model: &ReadModel, service: &str, scope: AlarmScope) -> Vec<Instance> {
    let Some(s) = model.services.get(service) else { return Vec::new() };
    let mut out = Vec::new();
    for (e, env) in s.plan.manifest.environments.iter().enumerate() {
        let at = |path: String, region: &str, zone: &str, host: &str| Instance {
            path,
            environment: env.name.clone(),
            region: region.to_owned(),
            zone: zone.to_owned(),
            host: host.to_owned(),
        };
        match scope {
            AlarmScope::Environment => out.push(at(env.name.clone(), "", "", "")),
            AlarmScope::Region => {
                out.extend(env.regions.iter().map(|r| at(format!("{}/{}", env.name, r.name), &r.name, "", "")))
            }
            AlarmScope::Zone => {
                for r in &env.regions {
                    out.extend(
                        r.zones.iter().map(|z| at(format!("{}/{}/{}", env.name, r.name, z.name), &r.name, &z.name, "")),
                    );
                }
            }
            AlarmScope::Host => {
                let env_id = rollwave_core::plan::EnvId(e as u16);
                for (h, host) in s.plan.envs[e].hosts.iter().enumerate() {
                    let zone = s.plan.host_zone(env_id, rollwave_core::plan::HostId(h as u32));
                    let region = s.plan.region_name(env_id, s.plan.zone_region(env_id, zone));
                    let zone = s.plan.zone_name(env_id, zone);
                    out.push(at(format!("{}/{}", env.name, host.name), region, zone, &host.name));
                }
            }
        }
    }
    out
}

impl QueriedAlarms {
    /// Reads one alarm instance's value for a period with `read` (blocking, on a task of
    /// its own), unless the instance has a read under way (that period then goes
    /// unobserved). `source` names where it reads from, for the log.
    fn start(
        &self,
        key: AlarmKey,
        spec: &rollwave_core::alarm::AlarmSpec,
        source: &'static str,
        read: impl FnOnce() -> Result<Option<f64>, String> + Send + 'static,
    ) {
        if !self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
            tracing::warn!(alarm = %spec.name, scope = %key.2, "the last {source} query has no answer yet; this period is skipped");
            return;
        }
        let spec = spec.clone();
        let (evaluators, in_flight, permits, inputs) =
            (Arc::clone(&self.evaluators), Arc::clone(&self.in_flight), Arc::clone(&self.permits), self.inputs.clone());
        tokio::spawn(async move {
            let value = match permits.acquire_owned().await {
                Ok(permit) => tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    read()
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            let value = value.unwrap_or_else(|e| {
                tracing::warn!(alarm = %spec.name, scope = %key.2, "querying {source} failed: {e}");
                None
            });
            let change = {
                let mut evaluators = evaluators.lock().unwrap_or_else(|p| p.into_inner());
                evaluators.entry(key.clone()).or_insert_with(|| Evaluator::new(&spec)).observe(value)
            };
            if let Some(t) = change {
                let (service, scope) = (key.0.clone(), key.2.clone());
                let input = LogInput::Alarm { alarm: spec.name.clone(), scope, state: t.to.into(), reason: t.reason };
                // The leader that asked may have stepped down meanwhile: then nobody listens.
                let _ = inputs.send((service, input)).await;
            }
            // Only now may the next period be queried: its change comes after this one.
            in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_in_value_cannot_close_the_promql_string_it_stands_in() {
        let at = Instance {
            environment: "prod".into(),
            region: "r1".into(),
            zone: "z1".into(),
            host: "h\"} or vector(1) or {a=\"".into(),
            path: String::new(),
        };
        let query = fill_query(r#"up{host="{{host}}", version='{{version}}'}"#, "web", &at, "v1'\\");
        assert_eq!(query, r#"up{host="h\"} or vector(1) or {a=\"", version='v1\'\\'}"#);
    }
}
