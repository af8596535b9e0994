//! The simulation loop: virtual time advances from one thing happening to the next.

use crate::fleet::Fleet;
use crate::judge::{self, JudgedBake};
use crate::report::{BlastRadius, Cause, EventRecord, FleetVersions, ReleaseMeasure, ReleaseReport, Report};
use crate::scenario::{Defect, OperatorVerb, Scenario};
use jiff::Timestamp;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};
use rollwave_core::alarm::{AlarmScope, AlarmState, Evaluator, MetricRef, TrafficMetric};
use rollwave_core::engine::{
    Action, Command, CommandId, Engine, EventKind, Input, OperatorCommand, Output, ReleaseId, Scope, render_scope,
};
use rollwave_core::judge::Outcome;
use rollwave_core::plan::{EnvId, HostId, Plan, RegionId, StageId, ZoneId};
use rollwave_core::sequential::JudgeBin;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub seed: u64,
    /// Virtual time after which the simulation stops even if releases are still moving.
    pub until: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { seed: 0, until: Duration::from_secs(30 * 86_400) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the scenario names {0}, which the manifest does not have")]
    Unresolved(String),
}

/// Runs `scenario` against `plan` and tells what happened.
pub fn simulate(plan: Arc<Plan>, scenario: &Scenario, options: Options) -> Result<Report, SimError> {
    let mut sim = Sim::new(plan, scenario, options)?;
    sim.run();
    Ok(sim.report())
}

/// Something scheduled in the scenario, resolved against the plan.
#[derive(Clone, Debug)]
enum Happening {
    Release { version: String, defect: Option<Defect> },
    Operator { verb: OperatorVerb, release: Option<String>, stage: Option<StageId>, at_text: String },
    BreakHost { env: EnvId, host: HostId },
}

#[derive(Clone, Copy, Debug)]
struct ActiveIncident {
    from: Timestamp,
    to: Timestamp,
    env: EnvId,
    region: RegionId,
    zone: Option<ZoneId>,
    error_rate: Option<f64>,
    latency_p99_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pending {
    Host { env: EnvId, host: HostId, command: CommandId, target: ReleaseId },
    Test { command: CommandId, pass: bool },
}

/// Requests, errors and latency over one alarm period in one place.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    requests: u64,
    errors: u64,
    /// The p99 of the mix: the slowest version that serves at least 1 % of the requests.
    slow: SlowParts,
}

/// (requests, latency) pairs are folded into the latency of the slowest share ≥ 1 %.
#[derive(Clone, Copy, Debug, Default)]
struct SlowParts {
    parts: [(u64, f64); 8],
    len: usize,
}

impl SlowParts {
    fn push(&mut self, requests: u64, latency: f64) {
        if self.len < self.parts.len() {
            self.parts[self.len] = (requests, latency);
            self.len += 1;
        } else if let Some(slot) = self.parts.iter_mut().min_by(|a, b| a.1.total_cmp(&b.1)) {
            // Keep the slowest parts; a fleet rarely serves more than a few versions at once.
            if latency > slot.1 {
                *slot = (requests, latency);
            }
        }
    }

    fn p99(&self, total: u64) -> Option<f64> {
        let parts = &self.parts[..self.len];
        let heavy = parts.iter().filter(|(r, _)| *r * 100 >= total).map(|p| p.1).fold(f64::NAN, f64::max);
        if heavy.is_nan() { parts.iter().map(|p| p.1).reduce(f64::min) } else { Some(heavy) }
    }
}

impl Sample {
    fn add(&mut self, other: &Sample) {
        self.requests += other.requests;
        self.errors += other.errors;
        for &(r, l) in &other.slow.parts[..other.slow.len] {
            self.slow.push(r, l);
        }
    }

    fn metric(&self, metric: TrafficMetric, period: Duration) -> Option<f64> {
        match metric {
            TrafficMetric::RequestRate => Some(self.requests as f64 / period.as_secs_f64()),
            _ if self.requests == 0 => None,
            TrafficMetric::ErrorRate => Some(self.errors as f64 / self.requests as f64),
            TrafficMetric::LatencyP99Ms => self.slow.p99(self.requests),
        }
    }
}

/// The traffic metric the simulator measures for `metric`, or why it measures none.
fn simulated(metric: &MetricRef) -> Result<TrafficMetric, &'static str> {
    match metric {
        MetricRef::Traffic(m) => Ok(*m),
        MetricRef::Gauge(_) => Err("the simulated hosts have no CPU, memory or restarts"),
        MetricRef::Monitor { .. } => Err("the simulator sends no monitor checks"),
        MetricRef::Prometheus { .. } => Err("the simulator has no Prometheus"),
        MetricRef::CloudWatch(_) => Err("the simulator has no CloudWatch"),
    }
}

/// One alarm of the manifest, with an evaluator per instance.
struct AlarmRunner {
    alarm: usize,
    scope: AlarmScope,
    metric: TrafficMetric,
    /// Steps per alarm period.
    every: u32,
    /// Per instance: environment-, region- and zone-scoped alarms are keyed by the place,
    /// host-scoped ones by the class of hosts that serve alike (zone, version, broken).
    instances: BTreeMap<InstanceKey, (Evaluator, Sample)>,
    /// Host alarms: the state last reported to the engine per host that is not OK.
    host_reported: BTreeMap<(EnvId, HostId), AlarmState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum InstanceKey {
    Place(Scope),
    HostClass { env: EnvId, zone: ZoneId, version: ReleaseId },
}

struct Sim<'a> {
    plan: Arc<Plan>,
    scenario: &'a Scenario,
    options: Options,
    engine: Engine,
    fleet: Fleet,
    rng: ChaCha8Rng,
    now: Timestamp,
    step: Duration,
    steps: u64,
    next_measure: Timestamp,
    happenings: Vec<(Timestamp, Happening)>,
    next_happening: usize,
    incidents: Vec<ActiveIncident>,
    defects: BTreeMap<ReleaseId, (Defect, Timestamp)>,
    pending: BinaryHeap<Reverse<(Timestamp, u64, Pending)>>,
    seq: u64,
    alarms: Vec<AlarmRunner>,
    /// Hosts whose class changed since the last evaluation, for host-scoped alarms.
    moved_hosts: BTreeSet<(EnvId, HostId)>,
    events: Vec<EventRecord>,
    notes: Vec<String>,
    blast: BlastRadius,
    exposed: BTreeSet<(EnvId, HostId)>,
    /// Hosts deploying right now, per environment and zone: checked against the plan's limit.
    deploying: Vec<Vec<u32>>,
    violations: Vec<String>,
    /// What each baking one-box's judge has seen, by (environment, region, release, bake start).
    one_boxes: BTreeMap<(EnvId, RegionId, ReleaseId, Timestamp), JudgedBake>,
    /// The judge's per-host traffic draws, apart from the world's, so that judging leaves
    /// the rest of a seed's story as it was.
    judge_rng: ChaCha8Rng,
    /// Per environment and host: its own factor on error rate and p99 latency (see
    /// [`crate::scenario::Traffic::host_spread`]).
    host_factor: Vec<Vec<f64>>,
    /// Per release: what a study of many runs reads.
    measures: BTreeMap<ReleaseId, Measure>,
}

/// What happened to one release in one run, as it happened.
#[derive(Clone, Debug, Default)]
struct Measure {
    first_one_box: Option<Timestamp>,
    /// The scope of its first one-box, and when that one-box's bake ended.
    first_one_box_scope: Option<rollwave_core::engine::EventScope>,
    first_one_box_bake_end: Option<Timestamp>,
    /// When a host first finished deploying it.
    first_deployed: Option<Timestamp>,
    first_rollback: Option<(Cause, Timestamp)>,
    exposed_requests: u64,
    exposed_hosts: BTreeSet<(EnvId, HostId)>,
}

impl<'a> Sim<'a> {
    fn new(plan: Arc<Plan>, scenario: &'a Scenario, options: Options) -> Result<Self, SimError> {
        let start = scenario.start;
        let at = |d: Duration| start.checked_add(d).unwrap_or(Timestamp::MAX);
        let mut happenings = Vec::new();
        for r in &scenario.releases {
            happenings.push((at(r.at), 0, Happening::Release { version: r.version.clone(), defect: r.defect.clone() }));
        }
        for o in &scenario.operators {
            let stage = match &o.stage {
                Some(name) => Some(StageId(
                    plan.manifest.stage_named(name).ok_or_else(|| SimError::Unresolved(format!("stage {name}")))?
                        as u16,
                )),
                None => None,
            };
            let at_text = rollwave_core::format_duration(o.at);
            happenings.push((
                at(o.at),
                1,
                Happening::Operator { verb: o.action, release: o.release.clone(), stage, at_text },
            ));
        }
        for f in &scenario.host_failures {
            let mut found = false;
            for (e, env) in plan.manifest.environments.iter().enumerate() {
                if f.environment.as_ref().is_some_and(|n| *n != env.name) {
                    continue;
                }
                let env = EnvId(e as u16);
                if let Some(host) = plan.host_named(env, &f.host) {
                    happenings.push((at(f.at), 2, Happening::BreakHost { env, host }));
                    found = true;
                }
            }
            if !found {
                return Err(SimError::Unresolved(format!("host {}", f.host)));
            }
        }
        happenings.sort_by_key(|(t, order, _)| (*t, *order));
        let happenings = happenings.into_iter().map(|(t, _, h)| (t, h)).collect();

        let mut incidents = Vec::new();
        for i in &scenario.incidents {
            let mut found = false;
            for (e, env) in plan.manifest.environments.iter().enumerate() {
                if i.environment.as_ref().is_some_and(|n| *n != env.name) {
                    continue;
                }
                let Some(r) = env.regions.iter().position(|r| r.name == i.region) else { continue };
                let env_id = EnvId(e as u16);
                let region = RegionId(r as u16);
                let zone = match &i.zone {
                    Some(name) => {
                        let Some(z) =
                            plan.region_zones(env_id, region).find(|&z| plan.zone_name(env_id, ZoneId(z)) == name)
                        else {
                            continue;
                        };
                        Some(ZoneId(z))
                    }
                    None => None,
                };
                found = true;
                incidents.push(ActiveIncident {
                    from: at(i.at),
                    to: at(i.at + i.duration),
                    env: env_id,
                    region,
                    zone,
                    error_rate: i.error_rate,
                    latency_p99_ms: i.latency_p99_ms,
                });
            }
            if !found {
                return Err(SimError::Unresolved(format!("region {} / zone {:?}", i.region, i.zone)));
            }
        }

        let mut notes = Vec::new();
        let step = Duration::from_secs(
            plan.manifest.alarms.iter().map(|a| a.period.as_secs().clamp(10, 60)).min().unwrap_or(60),
        );
        let mut alarms = Vec::new();
        for (i, spec) in plan.manifest.alarms.iter().enumerate() {
            let metric = match simulated(&spec.metric) {
                Ok(metric) => metric,
                Err(why) => {
                    let measured: Vec<&str> = TrafficMetric::ALL.iter().map(|(n, _)| *n).collect();
                    notes.push(format!(
                        "alarm {} ({}) is not simulated: {why}; it measures only {}",
                        spec.name,
                        spec.metric,
                        measured.join(", ")
                    ));
                    continue;
                }
            };
            let every = ((spec.period.as_secs_f64() / step.as_secs_f64()).round() as u32).max(1);
            alarms.push(AlarmRunner {
                alarm: i,
                scope: spec.scope,
                metric,
                every,
                instances: BTreeMap::new(),
                host_reported: BTreeMap::new(),
            });
        }

        let deploying = plan.envs.iter().map(|e| vec![0; e.zones.len()]).collect();
        let engine = Engine::new(Arc::clone(&plan), &scenario.initial_version, start);
        let fleet = Fleet::new(&plan);
        let next_measure = at(step);
        let host_factor = judge::host_factors(
            &mut ChaCha8Rng::seed_from_u64(options.seed ^ 0x686f_7374_7300_0001),
            scenario.traffic.host_spread,
            plan.envs.iter().map(|e| e.hosts.len()),
        );
        Ok(Sim {
            plan,
            scenario,
            options,
            engine,
            fleet,
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            now: start,
            step,
            steps: 0,
            next_measure,
            happenings,
            next_happening: 0,
            incidents,
            defects: BTreeMap::new(),
            pending: BinaryHeap::new(),
            seq: 0,
            alarms,
            moved_hosts: BTreeSet::new(),
            events: Vec::new(),
            notes,
            blast: BlastRadius::default(),
            exposed: BTreeSet::new(),
            deploying,
            violations: Vec::new(),
            one_boxes: BTreeMap::new(),
            judge_rng: ChaCha8Rng::seed_from_u64(options.seed ^ 0x6a75_6467_6573_0001),
            host_factor,
            measures: BTreeMap::new(),
        })
    }

    fn run(&mut self) {
        let end = self.scenario.start.checked_add(self.options.until).unwrap_or(Timestamp::MAX);
        self.report_initial_alarm_states();
        loop {
            if self.finished() {
                break;
            }
            let mut next = self.next_measure;
            if let Some((t, _)) = self.happenings.get(self.next_happening) {
                next = next.min(*t);
            }
            if let Some(Reverse((t, _, _))) = self.pending.peek() {
                next = next.min(*t);
            }
            if let Some(t) = self.engine.next_deadline() {
                next = next.min(t.max(self.now));
            }
            if next > end {
                self.now = end;
                self.feed(Input::Tick);
                break;
            }
            self.now = next.max(self.now);
            self.apply_happenings();
            self.complete_pending();
            if self.now >= self.next_measure {
                self.measure();
                self.next_measure = self.next_measure.checked_add(self.step).unwrap_or(Timestamp::MAX);
            }
            self.feed(Input::Tick);
        }
    }

    /// One step of every baking one-box's judge: each host of its region draws its own
    /// traffic; a failing verdict is told at once, any other once the bake's time is up
    /// (as the server does), each only when it changes.
    fn judge_one_boxes(&mut self, secs: f64) {
        let bakes = self.engine.one_box_bakes();
        self.one_boxes.retain(|k, _| bakes.iter().any(|b| (b.env, b.region, b.release, b.since) == *k));
        let mean = self.scenario.traffic.requests_at(self.now) * secs;
        let median = self.scenario.traffic.latency_p99_ms / 4.0;
        let plan = Arc::clone(&self.plan);
        let mut verdicts = Vec::new();
        for b in bakes {
            let fleet = &self.fleet.envs[b.env.idx()];
            let sides: Vec<(bool, f64, f64, f64)> = plan.env(b.env).regions[b.region.idx()]
                .hosts
                .clone()
                .filter(|&h| !fleet.broken[h as usize])
                .filter_map(|h| {
                    let version = fleet.version[h as usize];
                    let one_box = b.hosts.contains(&h);
                    if one_box != (version == b.release) {
                        // A one-box host still deploying, or a host already on the release.
                        return None;
                    }
                    let zone = plan.host_zone(b.env, HostId(h));
                    let (p, p99) = self.conditions(b.env, b.region, zone, version);
                    let factor = self.host_factor[b.env.idx()].get(h as usize).copied().unwrap_or(1.0);
                    // A host slower by nature is slower all over: its median moves too.
                    Some((one_box, (p * factor).min(1.0), p99 * factor, factor))
                })
                .collect();
            let mut bin = JudgeBin::default();
            let entry = self
                .one_boxes
                .entry((b.env, b.region, b.release, b.since))
                .or_insert_with(|| JudgedBake::new(&b.judging));
            for (one_box, p, p99, factor) in sides {
                let t = judge::host_step(&mut self.judge_rng, mean, p, p99, median * factor);
                let (side, points) = if one_box {
                    (&mut bin.canary, &mut entry.canary_points)
                } else {
                    (&mut bin.baseline, &mut entry.baseline_points)
                };
                points.extend(judge::point(&t));
                side.add(&t);
            }
            entry.push(&bin);
            let ending = self.now >= b.until;
            let Some((outcome, reason)) = judge::verdict(&b.judging, entry, ending) else { continue };
            if (outcome != Outcome::Fail && !ending) || entry.said == Some(outcome) {
                continue;
            }
            entry.said = Some(outcome);
            verdicts.push(Input::Verdict { env: b.env, region: b.region, release: b.release, outcome, reason });
        }
        for verdict in verdicts {
            self.feed(verdict);
        }
    }

    /// Every scenario event has happened and no release moves without an operator.
    fn finished(&self) -> bool {
        self.next_happening >= self.happenings.len()
            && self.pending.is_empty()
            && self.engine.is_idle()
            && self.engine.releases().iter().all(|r| r.status.is_settled())
    }

    /// Whether the one-box of `region` in `stage` waits for the judge's verdict.
    fn feed(&mut self, input: Input) -> bool {
        // What any rollback this input starts is owed to.
        let cause = match &input {
            Input::Verdict { .. } => Cause::Judge,
            Input::Alarm { .. } => Cause::Alarm,
            Input::HostReport { .. } | Input::HostLost { .. } => Cause::FailedHosts,
            Input::TestReport { .. } => Cause::Tests,
            Input::Operator(_) => Cause::Operator,
            _ => Cause::Other,
        };
        let result = self.engine.handle(self.now, input);
        let outputs: Vec<Output> = self.engine.drain().collect();
        for output in outputs {
            match output {
                Output::Event(e) => {
                    if let Some(release) = e.release {
                        let measure = self.measures.entry(release).or_default();
                        match e.kind {
                            EventKind::OneBoxDeployed if measure.first_one_box.is_none() => {
                                measure.first_one_box = Some(e.at);
                                measure.first_one_box_scope = Some(e.scope);
                            }
                            EventKind::BakeCompleted
                                if measure.first_one_box_scope == Some(e.scope)
                                    && measure.first_one_box_bake_end.is_none() =>
                            {
                                measure.first_one_box_bake_end = Some(e.at);
                            }
                            EventKind::RollbackStarted => {
                                measure.first_rollback.get_or_insert((cause, e.at));
                            }
                            _ => {}
                        }
                    }
                    let release = e.release.map(|r| self.engine.version_name(r).to_owned());
                    self.events.push(EventRecord {
                        t: e.at.to_string(),
                        kind: e.kind.as_str(),
                        release,
                        scope: render_scope(&self.plan, e.scope),
                        reason: e.reason,
                    });
                }
                Output::Command(c) => self.start(c),
            }
        }
        match result {
            Ok(()) => true,
            Err(e) => {
                self.notes.push(format!("{}: the engine refused an input: {e}", self.now));
                false
            }
        }
    }

    fn schedule(&mut self, at: Timestamp, what: Pending) {
        self.seq += 1;
        self.pending.push(Reverse((at, self.seq, what)));
    }

    /// Carries out a command: hosts finish deploying after a while; broken ones fail.
    fn start(&mut self, command: Command) {
        match command.action {
            Action::Deploy { env, hosts, version, .. } => {
                for host in hosts {
                    let zone = self.plan.host_zone(env, host);
                    let busy = &mut self.deploying[env.idx()][zone.idx()];
                    *busy += 1;
                    let limit = self.plan.env(env).zones[zone.idx()].max_out_of_service;
                    if *busy > limit {
                        let name = self.plan.zone_name(env, zone).to_owned();
                        self.violations.push(format!(
                            "{}: {busy} hosts of zone {name} deploying at once (limit {limit})",
                            self.now
                        ));
                    }
                    let jitter = 1.0 + self.rng.random::<f64>() * 0.5;
                    // Whole seconds keep the timeline readable.
                    let took = Duration::from_secs((self.scenario.deploy_time.as_secs_f64() * jitter).round() as u64);
                    let at = self.now.checked_add(took).unwrap_or(Timestamp::MAX);
                    self.schedule(at, Pending::Host { env, host, command: command.id, target: version });
                }
            }
            Action::RunTest { release, .. } => {
                let pass = !self.defects.get(&release).is_some_and(|(d, _)| d.fails_tests);
                let at = self.now.checked_add(self.scenario.test_time).unwrap_or(Timestamp::MAX);
                self.schedule(at, Pending::Test { command: command.id, pass });
            }
        }
    }

    fn complete_pending(&mut self) {
        while let Some(Reverse((t, _, _))) = self.pending.peek() {
            if *t > self.now {
                break;
            }
            let Some(Reverse((_, _, what))) = self.pending.pop() else { break };
            match what {
                Pending::Host { env, host, command, target } => {
                    let zone = self.plan.host_zone(env, host);
                    self.deploying[env.idx()][zone.idx()] -= 1;
                    let result = if self.fleet.envs[env.idx()].broken[host.idx()] {
                        Err("host unreachable".to_owned())
                    } else {
                        self.fleet.set_version(&self.plan, env, host, target);
                        self.moved_hosts.insert((env, host));
                        if self.defects.contains_key(&target) {
                            self.exposed.insert((env, host));
                            self.measures.entry(target).or_default().exposed_hosts.insert((env, host));
                        }
                        self.measures.entry(target).or_default().first_deployed.get_or_insert(self.now);
                        Ok(())
                    };
                    self.feed(Input::HostReport { env, host, command, result });
                }
                Pending::Test { command, pass } => {
                    let result = if pass { Ok(()) } else { Err("assertions failed".to_owned()) };
                    self.feed(Input::TestReport { command, result });
                }
            }
        }
    }

    fn apply_happenings(&mut self) {
        while let Some((t, what)) = self.happenings.get(self.next_happening).cloned() {
            if t > self.now {
                break;
            }
            self.next_happening += 1;
            match what {
                Happening::Release { version, defect } => {
                    if self.feed(Input::CreateRelease { version: version.clone() })
                        && let (Some(id), Some(d)) = (self.engine.release_named(&version), defect)
                    {
                        let from = self.now.checked_add(d.appears_after).unwrap_or(Timestamp::MAX);
                        self.defects.insert(id, (d, from));
                    }
                }
                Happening::Operator { verb, release, stage, at_text } => {
                    let id = release.as_deref().and_then(|v| self.engine.release_named(v));
                    let cmd = match (verb, id) {
                        (OperatorVerb::Hold, _) => Some(OperatorCommand::Hold { stage }),
                        (OperatorVerb::Resume, _) => Some(OperatorCommand::Resume { stage }),
                        (OperatorVerb::Approve, Some(release)) => Some(OperatorCommand::Approve { release, stage }),
                        (OperatorVerb::Rollback, Some(release)) => Some(OperatorCommand::Rollback { release }),
                        (OperatorVerb::Retry, Some(release)) => Some(OperatorCommand::Retry { release }),
                        (OperatorVerb::RollForward, Some(release)) => Some(OperatorCommand::RollForward { release }),
                        _ => None,
                    };
                    match cmd {
                        Some(cmd) => {
                            if !self.feed(Input::Operator(cmd)) {
                                self.notes.push(format!("the operator action at {at_text} was refused"));
                            }
                        }
                        None => self.notes.push(format!(
                            "the operator action at {at_text} names release {}, which does not exist then",
                            release.unwrap_or_default()
                        )),
                    }
                }
                Happening::BreakHost { env, host } => {
                    self.fleet.break_host(&self.plan, env, host);
                    self.moved_hosts.insert((env, host));
                }
            }
        }
    }

    fn report_initial_alarm_states(&mut self) {
        let plan = Arc::clone(&self.plan);
        let mut inputs = Vec::new();
        for runner in &self.alarms {
            for (e, env) in plan.envs.iter().enumerate() {
                let env_id = EnvId(e as u16);
                let scopes: Vec<Scope> = match runner.scope {
                    AlarmScope::Environment => vec![Scope::Environment(env_id)],
                    AlarmScope::Region => {
                        (0..env.regions.len()).map(|r| Scope::Region(env_id, RegionId(r as u16))).collect()
                    }
                    AlarmScope::Zone => (0..env.zones.len()).map(|z| Scope::Zone(env_id, ZoneId(z as u32))).collect(),
                    AlarmScope::Host => (0..env.hosts.len()).map(|h| Scope::Host(env_id, HostId(h as u32))).collect(),
                };
                for scope in scopes {
                    inputs.push(Input::Alarm {
                        alarm: runner.alarm,
                        scope,
                        state: AlarmState::InsufficientData,
                        reason: "no data yet".into(),
                        explained_elsewhere: false,
                    });
                }
            }
        }
        for runner in &mut self.alarms {
            if runner.scope == AlarmScope::Host {
                for (e, env) in plan.envs.iter().enumerate() {
                    for h in 0..env.hosts.len() {
                        runner.host_reported.insert((EnvId(e as u16), HostId(h as u32)), AlarmState::InsufficientData);
                    }
                }
            }
        }
        for input in inputs {
            self.feed(input);
        }
    }

    /// What a version serves in a zone at `now`: its error rate and p99 latency.
    fn conditions(&self, env: EnvId, region: RegionId, zone: ZoneId, version: ReleaseId) -> (f64, f64) {
        let t = &self.scenario.traffic;
        let (mut p, mut latency) = (t.error_rate, t.latency_p99_ms);
        if let Some((d, from)) = self.defects.get(&version)
            && self.now >= *from
        {
            p = d.error_rate.unwrap_or(p);
            latency = d.latency_p99_ms.unwrap_or(latency);
        }
        for i in &self.incidents {
            let here = i.env == env && i.region == region && i.zone.is_none_or(|z| z == zone);
            if here && i.from <= self.now && self.now < i.to {
                p = p.max(i.error_rate.unwrap_or(0.0));
                latency = latency.max(i.latency_p99_ms.unwrap_or(0.0));
            }
        }
        (p.clamp(0.0, 1.0), latency)
    }

    fn defect_active(&self, version: ReleaseId) -> bool {
        self.defects.get(&version).is_some_and(|(_, from)| self.now >= *from)
    }

    /// One step of traffic everywhere: data points for bakes, samples for alarms.
    fn measure(&mut self) {
        self.steps += 1;
        let plan = Arc::clone(&self.plan);
        let secs = self.step.as_secs_f64();
        let rate = self.scenario.traffic.requests_at(self.now);
        let mut served = Vec::new();
        let mut zone_samples: Vec<Vec<Sample>> = Vec::with_capacity(plan.envs.len());
        let mut class_samples: Vec<(EnvId, ZoneId, ReleaseId, Sample)> = Vec::new();
        for (e, env) in plan.envs.iter().enumerate() {
            let env_id = EnvId(e as u16);
            let mut per_zone = vec![Sample::default(); env.zones.len()];
            for (z, zone_plan) in env.zones.iter().enumerate() {
                let zone = ZoneId(z as u32);
                let classes = self.fleet.envs[e].serving[z].clone();
                for (version, hosts) in classes {
                    let requests = (f64::from(hosts) * rate * secs).round() as u64;
                    let (p, latency) = self.conditions(env_id, zone_plan.region, zone, version);
                    let errors = match Binomial::new(requests, p) {
                        Ok(b) => b.sample(&mut self.rng),
                        Err(_) => 0,
                    };
                    let latency = latency * (1.0 + (self.rng.random::<f64>() - 0.5) * 0.06);
                    let mut sample = Sample { requests, errors, slow: SlowParts::default() };
                    sample.slow.push(requests, latency);
                    per_zone[z].add(&sample);
                    class_samples.push((env_id, zone, version, sample));
                    self.blast.total_requests += requests;
                    if self.defect_active(version) {
                        self.blast.bad_requests += requests;
                        self.measures.entry(version).or_default().exposed_requests += requests;
                    }
                    if version.0 > 0 && requests > 0 {
                        served.push(Input::Served { env: env_id, zone, version, requests });
                    }
                }
            }
            zone_samples.push(per_zone);
        }
        for input in served {
            self.feed(input);
        }
        self.evaluate_alarms(&zone_samples, &class_samples);
        self.judge_one_boxes(secs);
    }

    fn evaluate_alarms(&mut self, zones: &[Vec<Sample>], classes: &[(EnvId, ZoneId, ReleaseId, Sample)]) {
        let plan = Arc::clone(&self.plan);
        let step = self.step;
        let steps = self.steps;
        let moved = std::mem::take(&mut self.moved_hosts);
        let mut inputs = Vec::new();
        for runner in &mut self.alarms {
            let period = step * runner.every;
            // Accumulate this step's samples into each instance.
            let mut add = |key: InstanceKey, sample: &Sample, spec_alarm: usize| {
                let entry = runner
                    .instances
                    .entry(key)
                    .or_insert_with(|| (Evaluator::new(&plan.manifest.alarms[spec_alarm]), Sample::default()));
                entry.1.add(sample);
            };
            for (e, env_zones) in zones.iter().enumerate() {
                let env = EnvId(e as u16);
                match runner.scope {
                    AlarmScope::Zone => {
                        for (z, s) in env_zones.iter().enumerate() {
                            add(InstanceKey::Place(Scope::Zone(env, ZoneId(z as u32))), s, runner.alarm);
                        }
                    }
                    AlarmScope::Region => {
                        for (r, region) in plan.envs[e].regions.iter().enumerate() {
                            let mut s = Sample::default();
                            for z in region.zones.clone() {
                                s.add(&env_zones[z as usize]);
                            }
                            add(InstanceKey::Place(Scope::Region(env, RegionId(r as u16))), &s, runner.alarm);
                        }
                    }
                    AlarmScope::Environment => {
                        let mut s = Sample::default();
                        for z in env_zones {
                            s.add(z);
                        }
                        add(InstanceKey::Place(Scope::Environment(env)), &s, runner.alarm);
                    }
                    AlarmScope::Host => {}
                }
            }
            if runner.scope == AlarmScope::Host {
                for &(env, zone, version, ref sample) in classes {
                    let hosts = self.fleet.envs[env.idx()].serving[zone.idx()]
                        .iter()
                        .find(|(v, _)| *v == version)
                        .map_or(1, |(_, n)| (*n).max(1));
                    // Per host: the class's error rate and latency, a host's share of its requests.
                    let mut per_host = *sample;
                    per_host.requests = sample.requests / u64::from(hosts);
                    per_host.errors = sample.errors / u64::from(hosts);
                    per_host.slow = SlowParts::default();
                    per_host.slow.push(per_host.requests, sample.slow.p99(sample.requests).unwrap_or(0.0));
                    add(InstanceKey::HostClass { env, zone, version }, &per_host, runner.alarm);
                }
            }
            if !steps.is_multiple_of(u64::from(runner.every)) {
                continue;
            }
            let mut changed_classes = Vec::new();
            for (key, (evaluator, sample)) in runner.instances.iter_mut() {
                let value = sample.metric(runner.metric, period);
                *sample = Sample::default();
                let Some(t) = evaluator.observe(value) else { continue };
                match *key {
                    InstanceKey::Place(scope) => {
                        inputs.push(Input::Alarm {
                            alarm: runner.alarm,
                            scope,
                            state: t.to,
                            reason: t.reason,
                            explained_elsewhere: false,
                        });
                    }
                    InstanceKey::HostClass { env, zone, version } => changed_classes.push((env, zone, version)),
                }
            }
            if runner.scope != AlarmScope::Host {
                continue;
            }
            // Hosts take the state of their class; only hosts that moved or whose class
            // changed need a look.
            let mut look: BTreeSet<(EnvId, HostId)> = moved.clone();
            for (env, zone, version) in changed_classes {
                for h in plan.zone_hosts(env, zone) {
                    if self.fleet.envs[env.idx()].version[h as usize] == version {
                        look.insert((env, HostId(h)));
                    }
                }
            }
            for (env, host) in look {
                let fleet = &self.fleet.envs[env.idx()];
                let state = if fleet.broken[host.idx()] {
                    AlarmState::InsufficientData
                } else {
                    let key = InstanceKey::HostClass {
                        env,
                        zone: plan.host_zone(env, host),
                        version: fleet.version[host.idx()],
                    };
                    runner.instances.get(&key).map_or(AlarmState::InsufficientData, |(e, _)| e.state())
                };
                let before = runner.host_reported.get(&(env, host)).copied().unwrap_or(AlarmState::Ok);
                if before == state {
                    continue;
                }
                if state == AlarmState::Ok {
                    runner.host_reported.remove(&(env, host));
                } else {
                    runner.host_reported.insert((env, host), state);
                }
                inputs.push(Input::Alarm {
                    alarm: runner.alarm,
                    scope: Scope::Host(env, host),
                    state,
                    reason: "the hosts of its zone on its version".into(),
                    explained_elsewhere: false,
                });
            }
        }
        for input in inputs {
            self.feed(input);
        }
    }

    fn fleet_versions(&self) -> Vec<FleetVersions> {
        self.plan
            .manifest
            .environments
            .iter()
            .zip(&self.fleet.envs)
            .map(|(env, fleet)| {
                let mut counts: BTreeMap<ReleaseId, u64> = BTreeMap::new();
                for v in &fleet.version {
                    *counts.entry(*v).or_default() += 1;
                }
                FleetVersions {
                    environment: env.name.clone(),
                    versions: counts.into_iter().map(|(v, n)| (self.engine.version_name(v).to_owned(), n)).collect(),
                }
            })
            .collect()
    }

    fn report(&self) -> Report {
        let releases = self
            .engine
            .releases()
            .into_iter()
            .map(|r| ReleaseReport {
                version: r.version,
                outcome: r.status.as_str(),
                reason: r.reason,
                lead_time_s: r.completed_at.map(|c| c.duration_since(r.created_at).as_secs()),
                reached: r.reached,
                rolled_back_scopes: r.rolled_back_scopes.into_iter().map(|s| render_scope(&self.plan, s)).collect(),
            })
            .collect();
        let measures = self
            .engine
            .releases()
            .into_iter()
            .map(|r| {
                let m = self.measures.get(&r.id).cloned().unwrap_or_default();
                ReleaseMeasure {
                    version: r.version,
                    defective: self.defects.contains_key(&r.id),
                    outcome: r.status.as_str(),
                    rolled_back_by: m.first_rollback.map(|(cause, _)| cause),
                    // From its first one-box if one came before the rollback, else from
                    // the first host it reached.
                    detect: m.first_rollback.and_then(|(_, at)| {
                        let from = m.first_one_box.filter(|t| *t <= at).or(m.first_deployed)?;
                        (at >= from).then(|| at.duration_since(from).unsigned_abs())
                    }),
                    caught_in_one_box: match (m.first_one_box, m.first_rollback) {
                        (Some(one_box), Some((_, at))) => {
                            at >= one_box && m.first_one_box_bake_end.is_none_or(|end| at <= end)
                        }
                        _ => false,
                    },
                    exposed_requests: m.exposed_requests,
                    exposed_hosts: m.exposed_hosts.len() as u64,
                }
            })
            .collect();
        let mut blast = self.blast.clone();
        blast.fraction =
            if blast.total_requests == 0 { 0.0 } else { blast.bad_requests as f64 / blast.total_requests as f64 };
        blast.hosts_exposed = self.exposed.len() as u64;
        Report {
            releases,
            events: self.events.clone(),
            blast_radius: blast,
            started: self.scenario.start.to_string(),
            ended: self.now.to_string(),
            notes: self.notes.clone(),
            fleet: self.fleet_versions(),
            violations: self.violations.clone(),
            measures,
        }
    }
}
