//! The rollout engine: a state machine that turns inputs (time, observations, operator
//! commands) into commands for the outside world and events for the record.
//!
//! Sans-I/O in the manner of `quinn-proto`: the caller passes `now` with every input and
//! takes the outputs with [`Engine::drain`]. Nothing here reads a clock, touches the
//! network or draws a random number, and every collection that is iterated is ordered, so
//! the same inputs always give the same outputs.

mod alarm_instances;
mod bake_sources;
mod types;

pub use alarm_instances::AlarmInstance;
pub use bake_sources::BakeProgress;

pub use types::*;

use crate::alarm::AlarmState;
use crate::manifest::{Bake, Strategy};
use crate::plan::{EnvId, HostId, Plan, RegionId, StageId, ZoneId, describe_bake};
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// How many earlier versions a host remembers for rollbacks.
const HOST_HISTORY: usize = 8;

pub struct Engine {
    plan: Arc<Plan>,
    now: Timestamp,
    /// Index 0 is the fleet's initial version; releases follow in creation order, which is
    /// also version order (releases are cumulative).
    releases: Vec<Release>,
    hosts: Vec<Vec<HostState>>,
    /// Hosts with a deployment in flight, per environment and zone.
    zone_busy: Vec<Vec<u32>>,
    /// Per stage, per wave.
    slots: Vec<Vec<Slot>>,
    /// Alarm instances that are not OK; an instance never reported counts as OK.
    not_ok: BTreeMap<Scope, BTreeMap<usize, AlarmState>>,
    service_hold: bool,
    stage_hold: Vec<bool>,
    next_command: u64,
    outputs: Vec<Output>,
    deadlines: BTreeSet<(Timestamp, EnvId, HostId)>,
    rollback_queue: BTreeMap<(EnvId, ZoneId), Vec<(HostId, u64)>>,
    rollback_jobs: BTreeMap<u64, RollbackJob>,
    next_job: u64,
    tests: BTreeMap<CommandId, TestRun>,
    /// When each release finished each region, per environment and region: for `watch`.
    finished: Vec<Vec<Vec<(ReleaseId, Timestamp)>>>,
}

struct Release {
    name: String,
    created_at: Timestamp,
    status: ReleaseStatus,
    reason: Option<String>,
    approvals: Vec<bool>,
    at: Position,
    reached: Vec<String>,
    rolled_back_scopes: Vec<EventScope>,
    completed_at: Option<Timestamp>,
    /// The last `blocked` reason reported at a gate, so it is reported once.
    gate_blocked: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    Waiting(StageId, usize),
    Active(StageId, usize),
    Gone,
}

#[derive(Default)]
struct Slot {
    waiting: Vec<ReleaseId>,
    active: Option<WaveRollout>,
}

struct WaveRollout {
    release: ReleaseId,
    regions: Vec<RegionRollout>,
    bake: Option<BakeClock>,
    tests: TestsState,
    zone_failures: BTreeMap<ZoneId, u32>,
    failed_hosts: BTreeSet<HostId>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TestsState {
    NotStarted,
    Running { pending: u32 },
    Passed,
    Failed,
}

struct RegionRollout {
    region: RegionId,
    phase: Phase,
    blocked: Option<String>,
}

#[derive(Clone, Copy)]
enum Phase {
    Pending,
    OneBox { in_flight: Option<u32> },
    OneBoxBake(BakeClock),
    Zone { pos: u32, started: bool, batch_in_flight: Option<u32> },
    ZoneBake { pos: u32, bake: BakeClock },
    Done,
}

#[derive(Clone, Copy)]
struct BakeClock {
    started: Timestamp,
    until: Timestamp,
    need: u64,
    seen: u64,
    /// What the bake was last said to wait for, so each wait is said once.
    reported_waiting: Option<Waiting>,
    /// A one-box bake that ends only on the judge's word: whether it has passed.
    verdict: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    DataPoints,
    Judge,
}

impl BakeClock {
    fn start(now: Timestamp, bake: &Bake) -> Self {
        let until = now.checked_add(bake.time).unwrap_or(Timestamp::MAX);
        BakeClock { started: now, until, need: bake.min_datapoints, seen: 0, reported_waiting: None, verdict: None }
    }

    /// A one-box bake that also waits for a passing verdict.
    fn judged(mut self) -> Self {
        self.verdict = Some(false);
        self
    }

    fn done(&self, now: Timestamp) -> bool {
        now >= self.until && self.seen >= self.need && self.verdict != Some(false)
    }

    /// What the bake still waits for once its time is up, said once per kind of wait.
    fn newly_waiting(&mut self, now: Timestamp) -> Option<String> {
        if now < self.until {
            return None;
        }
        let (waiting, why) = if self.seen < self.need {
            (Waiting::DataPoints, format!("waiting for data points: {} of {}", self.seen, self.need))
        } else if self.verdict == Some(false) {
            (Waiting::Judge, "waiting for the one-box judge to pass the one-box".to_owned())
        } else {
            return None;
        };
        if self.reported_waiting == Some(waiting) {
            return None;
        }
        self.reported_waiting = Some(waiting);
        Some(why)
    }
}

#[derive(Clone)]
struct HostState {
    version: ReleaseId,
    /// Earlier versions, most recent last.
    history: Vec<ReleaseId>,
    op: Option<HostOp>,
    /// A rollback to run once the deployment in flight ends.
    rollback_after: Option<u64>,
    /// Whether the host is there to deploy to: always, for fleets the engine is told
    /// about up front; once its agent registered (and until it is lost), otherwise.
    present: bool,
    /// A deployment of this release failed on the host, which may have been left half
    /// changed: a rollback of the release includes it, to put it back in a known state.
    failed_deploy: Option<ReleaseId>,
}

#[derive(Clone, Copy)]
struct HostOp {
    command: CommandId,
    target: ReleaseId,
    deadline: Timestamp,
    kind: OpKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Rollout { stage: StageId, wave: usize },
    Rollback { job: u64 },
}

struct RollbackJob {
    release: ReleaseId,
    /// Hosts return to their most recent version older than this one.
    below: ReleaseId,
    scope: EventScope,
    remaining: u32,
}

struct TestRun {
    release: ReleaseId,
    stage: StageId,
    wave: usize,
    test: usize,
    deadline: Timestamp,
}

impl Engine {
    /// An engine for a fleet whose hosts all run `initial_version`.
    pub fn new(plan: Arc<Plan>, initial_version: &str, now: Timestamp) -> Self {
        let stages = plan.manifest.stages.len();
        let hosts = plan
            .envs
            .iter()
            .map(|e| {
                vec![
                    HostState {
                        version: ReleaseId(0),
                        history: Vec::new(),
                        op: None,
                        rollback_after: None,
                        present: true,
                        failed_deploy: None,
                    };
                    e.hosts.len()
                ]
            })
            .collect();
        let zone_busy = plan.envs.iter().map(|e| vec![0; e.zones.len()]).collect();
        let slots = plan.manifest.stages.iter().map(|s| s.waves.iter().map(|_| Slot::default()).collect()).collect();
        let finished = plan.envs.iter().map(|e| vec![Vec::new(); e.regions.len()]).collect();
        let baseline = Release {
            name: initial_version.to_owned(),
            created_at: now,
            status: ReleaseStatus::Completed,
            reason: None,
            approvals: vec![true; stages],
            at: Position::Gone,
            reached: Vec::new(),
            rolled_back_scopes: Vec::new(),
            completed_at: Some(now),
            gate_blocked: None,
        };
        Engine {
            plan,
            now,
            releases: vec![baseline],
            hosts,
            zone_busy,
            slots,
            not_ok: BTreeMap::new(),
            service_hold: false,
            stage_hold: vec![false; stages],
            next_command: 1,
            outputs: Vec::new(),
            deadlines: BTreeSet::new(),
            rollback_queue: BTreeMap::new(),
            rollback_jobs: BTreeMap::new(),
            next_job: 1,
            tests: BTreeMap::new(),
            finished,
        }
    }

    /// Hosts are absent until they join (their agent registers): a zone's steps wait
    /// until every host the manifest expects there has joined. Call before any input.
    pub fn expect_hosts_to_join(&mut self, env: EnvId) {
        for host in &mut self.hosts[env.idx()] {
            host.present = false;
        }
    }

    /// Whether a host is there to deploy to (see [`Engine::expect_hosts_to_join`]).
    pub fn host_present(&self, env: EnvId, host: HostId) -> bool {
        self.hosts[env.idx()][host.idx()].present
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Takes the outputs produced so far, in the order they were produced.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.outputs.drain(..)
    }

    /// Applies one input at `now` (earlier times are taken as `now` unchanged: time never
    /// runs backwards). A rejected input changes nothing.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Result<(), InputError> {
        self.check(&input)?;
        if now > self.now {
            self.now = now;
        }
        match input {
            Input::Tick => self.expire_deadlines(),
            Input::CreateRelease { version } => self.create_release(version),
            Input::Operator(cmd) => self.operate(cmd)?,
            Input::HostReport { env, host, command, result } => self.on_host_report(env, host, command, result),
            Input::TestReport { command, result } => self.on_test_report(command, result),
            Input::Alarm { alarm, scope, state, reason } => self.on_alarm(alarm, scope, state, reason),
            Input::Served { env, zone, version, requests } => self.on_served(env, zone, version, requests),
            Input::HostJoined { env, host } => self.hosts[env.idx()][host.idx()].present = true,
            Input::HostLost { env, host } => self.on_host_lost(env, host),
            Input::Verdict { env, region, release, passed, marginal, reason } => {
                self.on_verdict(env, region, release, passed, marginal, reason)
            }
        }
        self.advance();
        Ok(())
    }

    fn check(&self, input: &Input) -> Result<(), InputError> {
        let env_ok = |e: EnvId| e.idx() < self.plan.envs.len();
        match input {
            Input::CreateRelease { version } => {
                if version.is_empty() {
                    return Err(InputError::EmptyVersion);
                }
                if self.release_named(version).is_some() {
                    return Err(InputError::DuplicateVersion(version.clone()));
                }
            }
            Input::HostReport { env, host, .. } | Input::HostJoined { env, host } | Input::HostLost { env, host } => {
                if !env_ok(*env) || host.idx() >= self.plan.env(*env).hosts.len() {
                    return Err(InputError::UnknownHost);
                }
            }
            Input::Alarm { alarm, scope, .. } => {
                if *alarm >= self.plan.manifest.alarms.len() {
                    return Err(InputError::UnknownAlarm(*alarm));
                }
                if !scope.is_valid(&self.plan) {
                    return Err(InputError::UnknownScope);
                }
            }
            Input::Served { env, zone, version, .. } => {
                if !env_ok(*env) || zone.idx() >= self.plan.env(*env).zones.len() {
                    return Err(InputError::UnknownScope);
                }
                if version.idx() >= self.releases.len() {
                    return Err(InputError::UnknownRelease(version.0.to_string()));
                }
            }
            Input::Operator(cmd) => self.check_operator(cmd)?,
            Input::Verdict { env, region, release, .. } => {
                if !env_ok(*env) || region.idx() >= self.plan.env(*env).regions.len() {
                    return Err(InputError::UnknownScope);
                }
                if release.idx() >= self.releases.len() {
                    return Err(InputError::UnknownRelease(release.0.to_string()));
                }
            }
            Input::Tick | Input::TestReport { .. } => {}
        }
        Ok(())
    }

    fn check_operator(&self, cmd: &OperatorCommand) -> Result<(), InputError> {
        let release = |r: ReleaseId| -> Result<&Release, InputError> {
            match self.releases.get(r.idx()) {
                Some(rel) if r.0 > 0 => Ok(rel),
                _ => Err(InputError::UnknownRelease(r.0.to_string())),
            }
        };
        let stage_ok = |s: Option<StageId>| match s {
            Some(s) if s.idx() >= self.plan.manifest.stages.len() => Err(InputError::UnknownStage),
            _ => Ok(()),
        };
        match *cmd {
            OperatorCommand::Approve { release: r, stage } => {
                release(r)?;
                stage_ok(stage)?;
            }
            OperatorCommand::Rollback { release: r } => {
                let rel = release(r)?;
                if rel.status == ReleaseStatus::RolledBack {
                    return Err(InputError::NotAllowed(format!("{} is already rolled back", rel.name)));
                }
            }
            OperatorCommand::Retry { release: r } | OperatorCommand::RollForward { release: r } => {
                let rel = release(r)?;
                if rel.status != ReleaseStatus::Halted {
                    return Err(InputError::NotAllowed(format!(
                        "{} is {}, not halted",
                        rel.name,
                        rel.status.as_str().replace('_', " ")
                    )));
                }
            }
            OperatorCommand::Hold { stage } | OperatorCommand::Resume { stage } => stage_ok(stage)?,
        }
        Ok(())
    }

    pub fn release_named(&self, version: &str) -> Option<ReleaseId> {
        self.releases.iter().skip(1).position(|r| r.name == version).map(|i| ReleaseId(i as u32 + 1))
    }

    /// Every release (not the initial version) with its outcome so far.
    pub fn releases(&self) -> Vec<ReleaseSummary> {
        self.releases
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, r)| ReleaseSummary {
                id: ReleaseId(i as u32),
                version: r.name.clone(),
                status: r.status,
                reason: r.reason.clone(),
                created_at: r.created_at,
                completed_at: r.completed_at,
                reached: r.reached.clone(),
                rolled_back_scopes: r.rolled_back_scopes.clone(),
                position: match r.at {
                    Position::Waiting(s, w) => Some((s, w, false)),
                    Position::Active(s, w) => Some((s, w, true)),
                    Position::Gone => None,
                },
            })
            .collect()
    }

    pub fn version_name(&self, id: ReleaseId) -> &str {
        &self.releases[id.idx()].name
    }

    /// The version a host runs now.
    pub fn host_version(&self, env: EnvId, host: HostId) -> ReleaseId {
        self.hosts[env.idx()][host.idx()].version
    }

    /// True when nothing is in flight: no host deployment, test or rollback outstanding.
    pub fn is_idle(&self) -> bool {
        self.deadlines.is_empty() && self.tests.is_empty() && self.rollback_jobs.is_empty()
    }

    /// What is on hold: the whole service, and the stages held one by one.
    pub fn holds(&self) -> (bool, Vec<StageId>) {
        let stages = self.stage_hold.iter().enumerate().filter(|(_, h)| **h).map(|(i, _)| StageId(i as u16)).collect();
        (self.service_hold, stages)
    }

    /// Host deployments in flight: (environment, host, command, version). A driver that
    /// restarts delivers these again; the command id makes that harmless.
    pub fn in_flight(&self) -> Vec<(EnvId, HostId, CommandId, ReleaseId)> {
        self.deadlines
            .iter()
            .filter_map(|&(_, env, host)| {
                self.hosts[env.idx()][host.idx()].op.map(|op| (env, host, op.command, op.target))
            })
            .collect()
    }

    /// The deployment each host should have now: the last one asked of it, or its version.
    pub fn host_op(&self, env: EnvId, host: HostId) -> Option<(CommandId, ReleaseId)> {
        self.hosts[env.idx()][host.idx()].op.map(|op| (op.command, op.target))
    }

    /// Swaps in a new plan for the same fleet: allowed while no release is in flight and
    /// every environment keeps its hosts, so that host state carries over.
    pub fn replace_plan(&mut self, plan: Arc<Plan>) -> Result<(), InputError> {
        let busy = self.releases.iter().any(|r| matches!(r.status, ReleaseStatus::InProgress | ReleaseStatus::Halted));
        if busy || !self.is_idle() {
            return Err(InputError::NotAllowed(
                "a release is in flight: finish, roll back or roll it forward before changing the pipeline".into(),
            ));
        }
        let same_fleet = plan.envs.len() == self.plan.envs.len()
            && plan.envs.iter().zip(&self.plan.envs).all(|(a, b)| {
                a.hosts.len() == b.hosts.len() && a.hosts.iter().zip(&b.hosts).all(|(x, y)| x.name == y.name)
            });
        if !same_fleet {
            return Err(InputError::NotAllowed(
                "the new manifest changes the fleet (environments, zones or host counts); apply it as a new service"
                    .into(),
            ));
        }
        let stages = plan.manifest.stages.len();
        self.slots = plan.manifest.stages.iter().map(|s| s.waves.iter().map(|_| Slot::default()).collect()).collect();
        self.stage_hold = vec![false; stages];
        for r in &mut self.releases {
            r.approvals.resize(stages, true);
        }
        self.plan = plan;
        Ok(())
    }

    /// The next time at which the engine has something to do without any other input:
    /// a bake ending or a deployment timing out. Window openings are not included: a
    /// driver ticks at least every minute.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let mut next = self.deadlines.first().map(|d| d.0);
        let mut consider = |t: Timestamp| {
            if t > self.now && next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        for t in self.tests.values() {
            consider(t.deadline);
        }
        for slot in self.slots.iter().flatten() {
            let Some(rollout) = &slot.active else { continue };
            if let Some(b) = &rollout.bake {
                consider(b.until);
            }
            for region in &rollout.regions {
                match region.phase {
                    Phase::OneBoxBake(b) | Phase::ZoneBake { bake: b, .. } => consider(b.until),
                    _ => {}
                }
            }
        }
        next
    }

    // ---------------------------------------------------------------------------------
    // Outputs

    fn emit(&mut self, kind: EventKind, release: Option<ReleaseId>, scope: EventScope, reason: Option<String>) {
        self.outputs.push(Output::Event(Event { at: self.now, kind, release, scope, reason }));
    }

    fn command(&mut self, action: Action) -> CommandId {
        let id = CommandId(self.next_command);
        self.next_command += 1;
        self.outputs.push(Output::Command(Command { id, action }));
        id
    }

    fn strategy(&self, stage: StageId, wave: usize) -> &Strategy {
        &self.plan.manifest.stages[stage.idx()].waves[wave].strategy
    }

    /// Starts deploying `target` to `hosts` of one environment; every host gets the same command.
    fn deploy(
        &mut self,
        env: EnvId,
        hosts: Vec<HostId>,
        target: ReleaseId,
        kind: OpKind,
        timeout: Duration,
    ) -> CommandId {
        let purpose = match kind {
            OpKind::Rollout { .. } => Purpose::Rollout,
            OpKind::Rollback { .. } => Purpose::Rollback,
        };
        let id = self.command(Action::Deploy { env, hosts: hosts.clone(), version: target, purpose, timeout });
        let deadline = self.now.checked_add(timeout).unwrap_or(Timestamp::MAX);
        for h in hosts {
            let zone = self.plan.host_zone(env, h);
            self.zone_busy[env.idx()][zone.idx()] += 1;
            self.hosts[env.idx()][h.idx()].op = Some(HostOp { command: id, target, deadline, kind });
            self.deadlines.insert((deadline, env, h));
        }
        id
    }

    // ---------------------------------------------------------------------------------
    // Inputs

    fn create_release(&mut self, version: String) {
        let id = ReleaseId(self.releases.len() as u32);
        let approvals = self.plan.manifest.stages.iter().map(|s| !s.approval).collect();
        self.releases.push(Release {
            name: version,
            created_at: self.now,
            status: ReleaseStatus::InProgress,
            reason: None,
            approvals,
            at: Position::Waiting(StageId(0), 0),
            reached: Vec::new(),
            rolled_back_scopes: Vec::new(),
            completed_at: None,
            gate_blocked: None,
        });
        self.slots[0][0].waiting.push(id);
        self.emit(EventKind::ReleaseCreated, Some(id), EventScope::Service, None);
    }

    fn operate(&mut self, cmd: OperatorCommand) -> Result<(), InputError> {
        match cmd {
            OperatorCommand::Approve { release, stage } => {
                let stages: Vec<usize> = match stage {
                    Some(s) => vec![s.idx()],
                    None => (0..self.plan.manifest.stages.len()).collect(),
                };
                for s in stages {
                    self.releases[release.idx()].approvals[s] = true;
                }
                let scope = stage.map_or(EventScope::Service, EventScope::Stage);
                self.emit(EventKind::Approved, Some(release), scope, None);
            }
            OperatorCommand::Rollback { release } => self.operator_rollback(release),
            OperatorCommand::Retry { release } => self.retry(release),
            OperatorCommand::RollForward { release } => {
                self.finish_release(release, ReleaseStatus::Superseded, "rolled forward by the operator".into());
            }
            OperatorCommand::Hold { stage } | OperatorCommand::Resume { stage } => {
                let hold = matches!(cmd, OperatorCommand::Hold { .. });
                match stage {
                    Some(s) => self.stage_hold[s.idx()] = hold,
                    None => self.service_hold = hold,
                }
                let kind = if hold { EventKind::Held } else { EventKind::Resumed };
                self.emit(kind, None, stage.map_or(EventScope::Service, EventScope::Stage), None);
            }
        }
        Ok(())
    }

    fn on_host_report(&mut self, env: EnvId, host: HostId, command: CommandId, result: Result<(), String>) {
        let state = &self.hosts[env.idx()][host.idx()];
        // A report for a command the host is no longer running (a redelivery, or one that
        // already timed out) changes nothing.
        let Some(op) = state.op.filter(|op| op.command == command) else { return };
        self.deadlines.remove(&(op.deadline, env, host));
        self.end_op(env, host, op, result);
    }

    /// Every one-box baking now.
    pub fn one_box_bakes(&self) -> Vec<OneBoxBake> {
        let mut out = Vec::new();
        for (s, slots) in self.slots.iter().enumerate() {
            for (w, slot) in slots.iter().enumerate() {
                let Some(rollout) = &slot.active else { continue };
                let stage = StageId(s as u16);
                let env = self.plan.stage_env(stage);
                for r in &rollout.regions {
                    if let Phase::OneBoxBake(clock) = r.phase {
                        let strategy = self.strategy(stage, w);
                        let Some(hosts) = self.plan.one_box_hosts(env, r.region, strategy) else { continue };
                        out.push(OneBoxBake {
                            stage,
                            env,
                            region: r.region,
                            release: rollout.release,
                            hosts,
                            since: clock.started,
                            until: clock.until,
                        });
                    }
                }
            }
        }
        out
    }

    /// A failing verdict on a one-box that is still baking rolls it back and halts the
    /// release; a clear pass lets a judged bake end; a marginal one keeps it baking.
    fn on_verdict(
        &mut self,
        env: EnvId,
        region: RegionId,
        release: ReleaseId,
        passed: bool,
        marginal: bool,
        reason: String,
    ) {
        let Some(bake) =
            self.one_box_bakes().into_iter().find(|b| b.env == env && b.region == region && b.release == release)
        else {
            return;
        };
        self.emit(EventKind::JudgeVerdict, Some(release), EventScope::Region(bake.stage, region), Some(reason.clone()));
        if passed {
            if !marginal {
                self.pass_one_box(bake.stage, region, release);
            }
            return;
        }
        let why = format!("one-box judge: {reason}");
        let first_zone = ZoneId(self.plan.region_zones(env, region).start);
        self.roll_back_scope(release, bake.stage, Scope::Zone(env, first_zone), &why);
        self.halt(release, why);
    }

    /// Records a passing verdict on the one-box bake of `region`, which may then end.
    fn pass_one_box(&mut self, stage: StageId, region: RegionId, release: ReleaseId) {
        for slot in &mut self.slots[stage.idx()] {
            let Some(rollout) = slot.active.as_mut().filter(|r| r.release == release) else { continue };
            for r in &mut rollout.regions {
                if r.region == region
                    && let Phase::OneBoxBake(clock) = &mut r.phase
                    && clock.verdict.is_some()
                {
                    clock.verdict = Some(true);
                }
            }
        }
    }

    /// A lost host fails whatever deployment it was running; its zone waits for it to return.
    fn on_host_lost(&mut self, env: EnvId, host: HostId) {
        let state = &mut self.hosts[env.idx()][host.idx()];
        state.present = false;
        if let Some(op) = state.op {
            self.deadlines.remove(&(op.deadline, env, host));
            self.end_op(env, host, op, Err("host lost: no heartbeat".to_owned()));
        }
    }

    fn expire_deadlines(&mut self) {
        while let Some(&(deadline, env, host)) = self.deadlines.first() {
            if deadline > self.now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(op) = self.hosts[env.idx()][host.idx()].op {
                self.end_op(env, host, op, Err("deployment timed out".to_owned()));
            }
        }
        let expired: Vec<CommandId> =
            self.tests.iter().filter(|(_, t)| t.deadline <= self.now).map(|(id, _)| *id).collect();
        for id in expired {
            self.on_test_report(id, Err("test timed out".to_owned()));
        }
    }

    fn end_op(&mut self, env: EnvId, host: HostId, op: HostOp, result: Result<(), String>) {
        let zone = self.plan.host_zone(env, host);
        self.zone_busy[env.idx()][zone.idx()] -= 1;
        let state = &mut self.hosts[env.idx()][host.idx()];
        state.op = None;
        let rollback_after = state.rollback_after.take();
        let succeeded = result.is_ok();
        if succeeded {
            state.failed_deploy = None;
            match op.kind {
                OpKind::Rollout { .. } => {
                    let old = std::mem::replace(&mut state.version, op.target);
                    state.history.push(old);
                    if state.history.len() > HOST_HISTORY {
                        state.history.remove(0);
                    }
                }
                // Putting a failed host back on the version it has changes no history.
                OpKind::Rollback { .. } if op.target == state.version => {}
                OpKind::Rollback { .. } => {
                    let keep = state.history.iter().rposition(|&v| v == op.target).unwrap_or(0);
                    state.history.truncate(keep);
                    state.version = op.target;
                }
            }
        } else if matches!(op.kind, OpKind::Rollout { .. }) {
            state.failed_deploy = Some(op.target);
        }
        match op.kind {
            OpKind::Rollout { stage, wave } => {
                let release = op.target;
                if let Err(reason) = result {
                    self.on_host_failed(env, host, release, Some((stage, wave)), reason);
                }
                if let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut().filter(|r| r.release == release) {
                    let region = self.plan.zone_region(env, zone);
                    if let Some(r) = rollout.regions.iter_mut().find(|r| r.region == region) {
                        match &mut r.phase {
                            Phase::OneBox { in_flight: Some(n) } => *n = n.saturating_sub(1),
                            Phase::Zone { batch_in_flight: Some(n), .. } => *n = n.saturating_sub(1),
                            _ => {}
                        }
                    }
                }
                if let Some(job) = rollback_after {
                    if succeeded {
                        self.queue_rollback(env, host, job);
                    } else {
                        self.job_host_done(job);
                    }
                }
            }
            OpKind::Rollback { job } => {
                if let Err(reason) = result {
                    let release = self.rollback_jobs.get(&job).map(|j| j.release);
                    let stage = self.plan.first_stage_of(env);
                    self.emit(
                        EventKind::HostFailed,
                        release,
                        EventScope::Host(stage, env, host),
                        Some(format!("rollback failed: {reason}")),
                    );
                }
                self.job_host_done(job);
            }
        }
    }

    fn on_host_failed(
        &mut self,
        env: EnvId,
        host: HostId,
        release: ReleaseId,
        slot: Option<(StageId, usize)>,
        reason: String,
    ) {
        let stage = slot.map_or_else(|| self.plan.first_stage_of(env), |s| s.0);
        self.emit(EventKind::HostFailed, Some(release), EventScope::Host(stage, env, host), Some(reason));
        let Some((stage, wave)) = slot else { return };
        let max_failures = self.strategy(stage, wave).rolling.max_failures;
        let zone = self.plan.host_zone(env, host);
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut().filter(|r| r.release == release) else {
            return;
        };
        rollout.failed_hosts.insert(host);
        let failures = rollout.zone_failures.entry(zone).or_insert(0);
        *failures += 1;
        if *failures > max_failures {
            let failures = *failures;
            let why = format!(
                "{failures} host deployment(s) failed in zone {} (the strategy tolerates {max_failures})",
                self.plan.zone_name(env, zone)
            );
            self.roll_back_scope(release, stage, Scope::Zone(env, zone), &why);
            self.halt(release, why);
        }
    }

    fn on_test_report(&mut self, command: CommandId, result: Result<(), String>) {
        let Some(run) = self.tests.remove(&command) else { return };
        let stage_name = self.plan.manifest.stages[run.stage.idx()].name.clone();
        let test_name = self.plan.manifest.stages[run.stage.idx()].tests[run.test].name.clone();
        let Some(rollout) = self.slots[run.stage.idx()][run.wave].active.as_mut().filter(|r| r.release == run.release)
        else {
            return;
        };
        match (&mut rollout.tests, result) {
            (TestsState::Running { pending }, Ok(())) => {
                *pending -= 1;
                if *pending == 0 {
                    rollout.tests = TestsState::Passed;
                }
                self.emit(EventKind::TestPassed, Some(run.release), EventScope::Stage(run.stage), Some(test_name));
            }
            (TestsState::Running { .. }, Err(why)) => {
                rollout.tests = TestsState::Failed;
                let why = format!("test {test_name} failed in {stage_name}: {why}");
                self.emit(EventKind::TestFailed, Some(run.release), EventScope::Stage(run.stage), Some(why.clone()));
                let env = self.plan.stage_env(run.stage);
                self.roll_back_scope(run.release, run.stage, Scope::Environment(env), &why);
                self.halt(run.release, why);
            }
            _ => {}
        }
    }

    fn on_served(&mut self, env: EnvId, zone: ZoneId, version: ReleaseId, requests: u64) {
        let Position::Active(stage, wave) = self.releases[version.idx()].at else { return };
        if self.plan.stage_env(stage) != env {
            return;
        }
        let region = self.plan.zone_region(env, zone);
        let first_zone = ZoneId(self.plan.region_zones(env, region).start);
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() else { return };
        let Some(r) = rollout.regions.iter_mut().find(|r| r.region == region) else { return };
        if let Some(b) = rollout.bake.as_mut() {
            b.seen += requests;
        }
        match &mut r.phase {
            Phase::OneBoxBake(b) if zone == first_zone => b.seen += requests,
            Phase::ZoneBake { pos, bake } if first_zone.0 + *pos == zone.0 => bake.seen += requests,
            _ => {}
        }
    }

    fn on_alarm(&mut self, alarm: usize, scope: Scope, state: AlarmState, reason: String) {
        let instances = self.not_ok.entry(scope).or_default();
        let previous = instances.get(&alarm).copied().unwrap_or(AlarmState::Ok);
        if previous == state {
            return;
        }
        if state == AlarmState::Ok {
            instances.remove(&alarm);
            if instances.is_empty() {
                self.not_ok.remove(&scope);
            }
        } else {
            instances.insert(alarm, state);
        }
        let name = self.plan.manifest.alarms[alarm].name.clone();
        let default_stage = self.plan.first_stage_of(scope.env());
        if state == AlarmState::Alarm {
            let why = format!("alarm {name}: {reason}");
            let in_flight = self.in_flight_in(scope);
            let (release, stage) = in_flight.first().map_or((None, default_stage), |&(r, s)| (Some(r), s));
            self.emit(EventKind::AlarmFired, release, scope.in_stage(stage), Some(why.clone()));
            if in_flight.is_empty() {
                self.suspect_regression(scope, &why);
            }
            for (release, stage) in in_flight {
                self.roll_back_scope(release, stage, scope, &why);
                self.halt(release, why.clone());
            }
        } else if previous == AlarmState::Alarm {
            self.emit(
                EventKind::AlarmCleared,
                None,
                scope.in_stage(default_stage),
                Some(format!("alarm {name} is {}: {reason}", state.as_str())),
            );
        }
    }

    // ---------------------------------------------------------------------------------
    // Rollbacks, halts and operator decisions

    /// The releases deploying or baking in `scope`: those whose rollout holds the scope and
    /// that some host of the scope runs, or is being deployed to.
    fn in_flight_in(&self, scope: Scope) -> Vec<(ReleaseId, StageId)> {
        let env = scope.env();
        let mut hit = Vec::new();
        for (s, stage) in self.plan.manifest.stages.iter().enumerate() {
            if stage.environment != env.idx() {
                continue;
            }
            for slot in &self.slots[s] {
                let Some(rollout) = &slot.active else { continue };
                let release = rollout.release;
                if !matches!(self.releases[release.idx()].status, ReleaseStatus::InProgress | ReleaseStatus::Halted) {
                    continue;
                }
                let regions: Vec<RegionId> = rollout.regions.iter().map(|r| r.region).collect();
                if self.hosts_in(scope, &regions).any(|h| self.host_runs(env, h, release)) {
                    hit.push((release, StageId(s as u16)));
                }
            }
        }
        hit
    }

    fn host_runs(&self, env: EnvId, host: HostId, release: ReleaseId) -> bool {
        let h = &self.hosts[env.idx()][host.idx()];
        h.version == release
            || h.failed_deploy == Some(release)
            || h.op.is_some_and(|op| op.target == release && matches!(op.kind, OpKind::Rollout { .. }))
    }

    /// Hosts of `scope` that lie in `regions`.
    fn hosts_in<'a>(&'a self, scope: Scope, regions: &'a [RegionId]) -> impl Iterator<Item = HostId> + 'a {
        let env = scope.env();
        let ranges: Vec<Range<u32>> = match scope {
            Scope::Environment(_) => {
                regions.iter().map(|&r| self.plan.env(env).regions[r.idx()].hosts.clone()).collect()
            }
            Scope::Region(_, r) if regions.contains(&r) => vec![self.plan.env(env).regions[r.idx()].hosts.clone()],
            Scope::Zone(_, z) if regions.contains(&self.plan.zone_region(env, z)) => vec![self.plan.zone_hosts(env, z)],
            Scope::Host(_, h) if regions.contains(&self.plan.zone_region(env, self.plan.host_zone(env, h))) => {
                vec![Range { start: h.0, end: h.0 + 1 }]
            }
            _ => Vec::new(),
        };
        ranges.into_iter().flatten().map(HostId)
    }

    /// Returns every host of `scope` that runs `release` to the version it had before.
    fn roll_back_scope(&mut self, release: ReleaseId, stage: StageId, scope: Scope, why: &str) {
        let env = scope.env();
        let regions: Vec<RegionId> = (0..self.plan.env(env).regions.len() as u16).map(RegionId).collect();
        let hosts: Vec<HostId> = self.hosts_in(scope, &regions).filter(|&h| self.host_runs(env, h, release)).collect();
        let event_scope = scope.in_stage(stage);
        let rel = &mut self.releases[release.idx()];
        if !rel.rolled_back_scopes.contains(&event_scope) {
            rel.rolled_back_scopes.push(event_scope);
        }
        self.start_rollback_job(release, release, event_scope, env, hosts, why);
    }

    fn start_rollback_job(
        &mut self,
        release: ReleaseId,
        below: ReleaseId,
        scope: EventScope,
        env: EnvId,
        hosts: Vec<HostId>,
        why: &str,
    ) {
        let job = self.next_job;
        self.next_job += 1;
        self.emit(EventKind::RollbackStarted, Some(release), scope, Some(format!("{} host(s): {why}", hosts.len())));
        self.rollback_jobs.insert(job, RollbackJob { release, below, scope, remaining: hosts.len() as u32 });
        for h in hosts {
            let state = &mut self.hosts[env.idx()][h.idx()];
            match state.op {
                Some(op) if matches!(op.kind, OpKind::Rollout { .. }) => {
                    // Let the deployment in flight end, then undo it.
                    if let Some(previous) = state.rollback_after.replace(job) {
                        self.job_host_done(previous);
                    }
                }
                Some(_) => self.job_host_done(job),
                None => self.queue_rollback(env, h, job),
            }
        }
        self.finish_job_if_done(job);
    }

    fn queue_rollback(&mut self, env: EnvId, host: HostId, job: u64) {
        let zone = self.plan.host_zone(env, host);
        self.rollback_queue.entry((env, zone)).or_default().push((host, job));
    }

    fn job_host_done(&mut self, job: u64) {
        if let Some(j) = self.rollback_jobs.get_mut(&job) {
            j.remaining = j.remaining.saturating_sub(1);
        }
        self.finish_job_if_done(job);
    }

    fn finish_job_if_done(&mut self, job: u64) {
        if self.rollback_jobs.get(&job).is_some_and(|j| j.remaining == 0) {
            if let Some(j) = self.rollback_jobs.remove(&job) {
                self.emit(EventKind::RollbackCompleted, Some(j.release), j.scope, None);
            }
        }
    }

    /// Starts queued rollbacks, never taking more of a zone out of service than its batch.
    fn dispatch_rollbacks(&mut self) {
        let keys: Vec<(EnvId, ZoneId)> = self.rollback_queue.keys().copied().collect();
        for (env, zone) in keys {
            let limit = self.plan.env(env).zones[zone.idx()].max_out_of_service;
            let busy = self.zone_busy[env.idx()][zone.idx()];
            if busy >= limit {
                continue;
            }
            let Some(queue) = self.rollback_queue.get_mut(&(env, zone)) else { continue };
            let take = ((limit - busy) as usize).min(queue.len());
            let batch: Vec<(HostId, u64)> = queue.drain(..take).collect();
            if queue.is_empty() {
                self.rollback_queue.remove(&(env, zone));
            }
            // Group by (target, job) so each command deploys one version.
            let mut groups: BTreeMap<(ReleaseId, u64), Vec<HostId>> = BTreeMap::new();
            for (host, job) in batch {
                let Some(below) = self.rollback_jobs.get(&job).map(|j| j.below) else { continue };
                let state = &self.hosts[env.idx()][host.idx()];
                let half_changed = state.failed_deploy.is_some_and(|r| r >= below);
                if state.version < below && !half_changed {
                    self.job_host_done(job);
                    continue;
                }
                let target = if state.version < below {
                    state.version
                } else {
                    state.history.iter().rev().find(|&&v| v < below).copied().unwrap_or(ReleaseId(0))
                };
                groups.entry((target, job)).or_default().push(host);
            }
            let timeout = self.deploy_timeout_for(env);
            for ((target, job), hosts) in groups {
                self.deploy(env, hosts, target, OpKind::Rollback { job }, timeout);
            }
        }
    }

    fn deploy_timeout_for(&self, env: EnvId) -> Duration {
        self.plan
            .manifest
            .stages
            .iter()
            .filter(|s| s.environment == env.idx())
            .flat_map(|s| &s.waves)
            .map(|w| w.strategy.rolling.deploy_timeout)
            .max()
            .unwrap_or(Duration::from_secs(600))
    }

    fn halt(&mut self, release: ReleaseId, why: String) {
        let rel = &mut self.releases[release.idx()];
        if rel.status != ReleaseStatus::InProgress {
            return;
        }
        rel.status = ReleaseStatus::Halted;
        rel.reason = Some(why.clone());
        self.emit(EventKind::ReleaseHalted, Some(release), EventScope::Service, Some(why));
    }

    fn suspect_regression(&mut self, scope: Scope, why: &str) {
        let env = scope.env();
        let watch = self.plan.manifest.watch;
        let regions: Vec<RegionId> = match scope {
            Scope::Environment(_) => (0..self.plan.env(env).regions.len() as u16).map(RegionId).collect(),
            Scope::Region(_, r) => vec![r],
            Scope::Zone(_, z) => vec![self.plan.zone_region(env, z)],
            Scope::Host(_, h) => vec![self.plan.zone_region(env, self.plan.host_zone(env, h))],
        };
        let now = self.now;
        let suspect = regions
            .iter()
            .flat_map(|r| self.finished[env.idx()][r.idx()].iter())
            .filter(|(_, at)| at.checked_add(watch).is_ok_and(|end| end >= now))
            .max_by_key(|(release, at)| (*at, *release))
            .map(|(release, _)| *release);
        let Some(release) = suspect else { return };
        let stage = self.plan.first_stage_of(env);
        self.emit(EventKind::RegressionSuspected, Some(release), scope.in_stage(stage), Some(why.to_owned()));
        self.halt(release, format!("regression suspected: {why}"));
    }

    fn operator_rollback(&mut self, release: ReleaseId) {
        let why = format!("operator rolled back {}", self.releases[release.idx()].name);
        for e in 0..self.plan.envs.len() {
            let env = EnvId(e as u16);
            let hosts: Vec<HostId> = (0..self.plan.envs[e].hosts.len() as u32)
                .map(HostId)
                .filter(|&h| {
                    let s = &self.hosts[e][h.idx()];
                    s.version >= release
                        || s.op.is_some_and(|op| op.target >= release && matches!(op.kind, OpKind::Rollout { .. }))
                })
                .collect();
            if hosts.is_empty() {
                continue;
            }
            let scope = EventScope::Stage(self.plan.first_stage_of(env));
            self.start_rollback_job(release, release, scope, env, hosts, &why);
        }
        let newer: Vec<ReleaseId> = (release.0 + 1..self.releases.len() as u32)
            .map(ReleaseId)
            .filter(|r| matches!(self.releases[r.idx()].status, ReleaseStatus::InProgress | ReleaseStatus::Halted))
            .collect();
        self.finish_release(release, ReleaseStatus::RolledBack, why.clone());
        let name = self.releases[release.idx()].name.clone();
        for r in newer {
            self.finish_release(
                r,
                ReleaseStatus::RolledBack,
                format!("cancelled: it contains {name}, which was rolled back"),
            );
        }
    }

    /// Ends a release for good and frees the slot or gate it held.
    fn finish_release(&mut self, release: ReleaseId, status: ReleaseStatus, why: String) {
        let at = self.releases[release.idx()].at;
        match at {
            Position::Waiting(s, w) => self.slots[s.idx()][w].waiting.retain(|&r| r != release),
            Position::Active(s, w) => self.slots[s.idx()][w].active = None,
            Position::Gone => {}
        }
        let rel = &mut self.releases[release.idx()];
        rel.at = Position::Gone;
        rel.status = status;
        rel.reason = Some(why.clone());
        let kind = match status {
            ReleaseStatus::Superseded => EventKind::ReleaseSuperseded,
            ReleaseStatus::RolledBack => EventKind::ReleaseRolledBack,
            _ => EventKind::ReleaseCompleted,
        };
        self.emit(kind, Some(release), EventScope::Service, Some(why));
    }

    fn retry(&mut self, release: ReleaseId) {
        let rel = &mut self.releases[release.idx()];
        rel.status = ReleaseStatus::InProgress;
        rel.reason = None;
        rel.gate_blocked = None;
        self.emit(EventKind::ReleaseResumed, Some(release), EventScope::Service, Some("retry".into()));
        let Position::Active(stage, wave) = self.releases[release.idx()].at else { return };
        let env = self.plan.stage_env(stage);
        let strategy = self.strategy(stage, wave).clone();
        let plan = Arc::clone(&self.plan);
        let hosts = &self.hosts[env.idx()];
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() else { return };
        rollout.zone_failures.clear();
        rollout.failed_hosts.clear();
        if rollout.tests == TestsState::Failed {
            rollout.tests = TestsState::NotStarted;
            rollout.bake = None;
        }
        let runs = |h: u32| hosts[h as usize].version == release;
        for region in &mut rollout.regions {
            if matches!(region.phase, Phase::Pending) {
                continue;
            }
            let one_box_done = plan.one_box_hosts(env, region.region, &strategy).is_none_or(|mut r| r.all(runs));
            // A one-box deployed but not yet baked is not done: the region starts over
            // (its one-box is not deployed again, but baked again in full).
            let one_box_baked = !matches!(region.phase, Phase::OneBox { .. } | Phase::OneBoxBake(_));
            let zones = plan.region_zones(env, region.region);
            let first_gap = zones.clone().position(|z| !plan.zone_hosts(env, ZoneId(z)).all(runs));
            let restart = if !one_box_done || !one_box_baked {
                Some(Phase::Pending)
            } else {
                first_gap.map(|pos| Phase::Zone { pos: pos as u32, started: false, batch_in_flight: None })
            };
            if let Some(phase) = restart {
                region.phase = phase;
                region.blocked = None;
                rollout.bake = None;
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Progress

    fn advance(&mut self) {
        loop {
            let mut progressed = false;
            for s in 0..self.slots.len() {
                for w in 0..self.slots[s].len() {
                    progressed |= self.admit(StageId(s as u16), w);
                    progressed |= self.drive(StageId(s as u16), w);
                }
            }
            self.dispatch_rollbacks();
            if !progressed {
                break;
            }
        }
    }

    /// Lets the newest release waiting at a free slot's gate in; older ones waiting there
    /// are superseded by it (releases are cumulative).
    fn admit(&mut self, stage: StageId, wave: usize) -> bool {
        let slot = &self.slots[stage.idx()][wave];
        if slot.active.is_some() {
            return false;
        }
        let Some(&newest) =
            slot.waiting.iter().filter(|r| self.releases[r.idx()].status == ReleaseStatus::InProgress).max()
        else {
            return false;
        };
        let gate = self.gate(newest, stage, wave);
        let rel = &mut self.releases[newest.idx()];
        if let Err(why) = gate {
            if rel.gate_blocked.as_ref() != Some(&why) {
                rel.gate_blocked = Some(why.clone());
                let scope = if wave == 0 { EventScope::Stage(stage) } else { EventScope::Wave(stage, wave) };
                self.emit(EventKind::Blocked, Some(newest), scope, Some(why));
            }
            return false;
        }
        rel.gate_blocked = None;
        rel.at = Position::Active(stage, wave);
        // Only older releases are superseded; a newer one waiting here halted (a suspected
        // regression) stays for the operator to decide on.
        let older: Vec<ReleaseId> =
            self.slots[stage.idx()][wave].waiting.iter().copied().filter(|&r| r < newest).collect();
        self.slots[stage.idx()][wave].waiting.retain(|&r| r > newest);
        let name = self.releases[newest.idx()].name.clone();
        for r in older {
            self.releases[r.idx()].at = Position::Gone;
            self.finish_release(r, ReleaseStatus::Superseded, format!("superseded by {name}"));
        }
        let regions = self.plan.manifest.stages[stage.idx()].waves[wave]
            .regions
            .iter()
            .map(|&r| RegionRollout { region: RegionId(r as u16), phase: Phase::Pending, blocked: None })
            .collect();
        self.slots[stage.idx()][wave].active = Some(WaveRollout {
            release: newest,
            regions,
            bake: None,
            tests: TestsState::NotStarted,
            zone_failures: BTreeMap::new(),
            failed_hosts: BTreeSet::new(),
        });
        if wave == 0 {
            self.emit(EventKind::StageEntered, Some(newest), EventScope::Stage(stage), None);
        }
        self.emit(EventKind::WaveStarted, Some(newest), EventScope::Wave(stage, wave), None);
        true
    }

    /// Whether a release may enter a slot: holds and approvals.
    fn gate(&self, release: ReleaseId, stage: StageId, wave: usize) -> Result<(), String> {
        self.check_holds(stage)?;
        let s = &self.plan.manifest.stages[stage.idx()];
        if wave == 0 && !self.releases[release.idx()].approvals[stage.idx()] {
            return Err(format!("waiting for approval to enter {}", s.name));
        }
        Ok(())
    }

    fn check_holds(&self, stage: StageId) -> Result<(), String> {
        if self.service_hold {
            return Err("the service is on hold".into());
        }
        if self.stage_hold[stage.idx()] {
            return Err(format!("stage {} is on hold", self.plan.manifest.stages[stage.idx()].name));
        }
        Ok(())
    }

    /// Whether a step may start now in a region: holds, alarms of its scopes, windows.
    fn step_gate(
        &self,
        stage: StageId,
        region: RegionId,
        zone: Option<ZoneId>,
        hosts: &[HostId],
    ) -> Result<(), String> {
        self.check_holds(stage)?;
        let env = self.plan.stage_env(stage);
        if let Some(z) = zone {
            let hosts = self.plan.zone_hosts(env, z);
            let expected = hosts.len();
            let absent = hosts.filter(|&h| !self.hosts[env.idx()][h as usize].present).count();
            if absent > 0 {
                return Err(format!(
                    "waiting for {absent} of {expected} host(s) of zone {} to register",
                    self.plan.zone_name(env, z)
                ));
            }
        }
        let mut scopes = vec![Scope::Environment(env), Scope::Region(env, region)];
        scopes.extend(zone.map(|z| Scope::Zone(env, z)));
        scopes.extend(hosts.iter().map(|&h| Scope::Host(env, h)));
        for scope in scopes {
            if let Some((&alarm, &state)) = self.not_ok.get(&scope).and_then(|m| m.iter().next()) {
                return Err(format!(
                    "alarm {} is {} in {}",
                    self.plan.manifest.alarms[alarm].name,
                    state.as_str(),
                    render_scope(&self.plan, scope.in_stage(stage))
                ));
            }
        }
        let tz = &self.plan.manifest.environments[env.idx()].regions[region.idx()].timezone;
        self.plan.manifest.stages[stage.idx()].windows.check(self.now, tz).map_err(|c| c.to_string())
    }

    fn drive(&mut self, stage: StageId, wave: usize) -> bool {
        let Some(rollout) = &self.slots[stage.idx()][wave].active else { return false };
        let release = rollout.release;
        if self.releases[release.idx()].status != ReleaseStatus::InProgress {
            return false;
        }
        let mut progressed = false;
        for i in 0..rollout.regions.len() {
            progressed |= self.drive_region(stage, wave, i);
        }
        progressed | self.drive_wave_end(stage, wave)
    }

    fn drive_wave_end(&mut self, stage: StageId, wave: usize) -> bool {
        let now = self.now;
        let s = &self.plan.manifest.stages[stage.idx()];
        let last_wave = wave + 1 == s.waves.len();
        let bake = s.waves[wave].strategy.bake;
        let test_count = if last_wave { s.tests.len() } else { 0 };
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() else { return false };
        if !rollout.regions.iter().all(|r| matches!(r.phase, Phase::Done)) {
            return false;
        }
        let release = rollout.release;
        let Some(clock) = rollout.bake.as_mut() else {
            rollout.bake = Some(BakeClock::start(now, &bake));
            let start_tests = test_count > 0 && rollout.tests == TestsState::NotStarted;
            if start_tests {
                rollout.tests = TestsState::Running { pending: test_count as u32 };
            } else if test_count == 0 {
                rollout.tests = TestsState::Passed;
            }
            self.emit(EventKind::BakeStarted, Some(release), EventScope::Wave(stage, wave), Some(describe_bake(&bake)));
            if start_tests {
                for (t, spec) in self.plan.manifest.stages[stage.idx()].tests.clone().iter().enumerate() {
                    let id = self.command(Action::RunTest {
                        release,
                        stage,
                        test: t,
                        run: spec.run.clone(),
                        timeout: spec.timeout,
                    });
                    let deadline = now.checked_add(spec.timeout).unwrap_or(Timestamp::MAX);
                    self.tests.insert(id, TestRun { release, stage, wave, test: t, deadline });
                    self.emit(EventKind::TestStarted, Some(release), EventScope::Stage(stage), Some(spec.name.clone()));
                }
            }
            return true;
        };
        let short = clock.newly_waiting(now);
        let done = clock.done(now) && rollout.tests == TestsState::Passed;
        if let Some(waiting) = short {
            let why = format!("bake {waiting}");
            self.emit(EventKind::Blocked, Some(release), EventScope::Wave(stage, wave), Some(why));
        }
        if !done {
            return false;
        }
        self.emit(EventKind::BakeCompleted, Some(release), EventScope::Wave(stage, wave), None);
        self.complete_wave(stage, wave);
        true
    }

    fn complete_wave(&mut self, stage: StageId, wave: usize) {
        let Some(rollout) = self.slots[stage.idx()][wave].active.take() else { return };
        let release = rollout.release;
        let env = self.plan.stage_env(stage);
        let watch = self.plan.manifest.watch;
        let now = self.now;
        for r in &rollout.regions {
            let list = &mut self.finished[env.idx()][r.region.idx()];
            list.retain(|(_, at)| at.checked_add(watch).is_ok_and(|end| end >= now));
            list.push((release, now));
        }
        let s = &self.plan.manifest.stages[stage.idx()];
        let stage_name = s.name.clone();
        let wave_name = s.waves[wave].name.clone();
        let last_wave = wave + 1 == s.waves.len();
        self.emit(EventKind::WaveCompleted, Some(release), EventScope::Wave(stage, wave), None);
        self.releases[release.idx()].reached.push(format!("{stage_name}/{wave_name}"));
        let next = if !last_wave {
            Some((stage, wave + 1))
        } else {
            self.emit(EventKind::StageCompleted, Some(release), EventScope::Stage(stage), None);
            self.releases[release.idx()].reached.push(stage_name);
            (stage.idx() + 1 < self.slots.len()).then(|| (StageId(stage.0 + 1), 0))
        };
        match next {
            Some((s, w)) => {
                self.releases[release.idx()].at = Position::Waiting(s, w);
                self.slots[s.idx()][w].waiting.push(release);
            }
            None => {
                let rel = &mut self.releases[release.idx()];
                rel.at = Position::Gone;
                rel.status = ReleaseStatus::Completed;
                rel.completed_at = Some(now);
                self.emit(EventKind::ReleaseCompleted, Some(release), EventScope::Service, None);
            }
        }
    }

    /// Takes one region of a wave as far as it can go now.
    fn drive_region(&mut self, stage: StageId, wave: usize, i: usize) -> bool {
        let env = self.plan.stage_env(stage);
        let plan = Arc::clone(&self.plan);
        let strategy = &plan.manifest.stages[stage.idx()].waves[wave].strategy;
        let now = self.now;
        let mut progressed = false;
        loop {
            let Some(rollout) = self.slots[stage.idx()][wave].active.as_ref() else { return progressed };
            let release = rollout.release;
            let region = rollout.regions[i].region;
            let zones = plan.region_zones(env, region);
            let next = match rollout.regions[i].phase {
                Phase::Pending => match self.step_gate(stage, region, None, &[]) {
                    Err(why) => {
                        self.report_blocked(stage, wave, i, release, EventScope::Region(stage, region), why);
                        None
                    }
                    Ok(()) => {
                        self.emit(EventKind::RegionStarted, Some(release), EventScope::Region(stage, region), None);
                        Some(match plan.one_box_hosts(env, region, strategy) {
                            Some(_) => Phase::OneBox { in_flight: None },
                            None => Phase::Zone { pos: 0, started: false, batch_in_flight: None },
                        })
                    }
                },
                Phase::OneBox { in_flight: None } => {
                    let Some(range) = plan.one_box_hosts(env, region, strategy) else { return progressed };
                    let hosts: Vec<HostId> = range.map(HostId).filter(|&h| self.needs(env, h, release)).collect();
                    let zone = ZoneId(zones.start);
                    match self.step_gate(stage, region, Some(zone), &hosts) {
                        Err(why) => {
                            self.report_blocked(stage, wave, i, release, EventScope::Zone(stage, env, zone), why);
                            None
                        }
                        Ok(()) if self.zone_busy[env.idx()][zone.idx()] > 0 => None,
                        Ok(()) => {
                            let n = hosts.len() as u32;
                            if n > 0 {
                                let timeout = strategy.rolling.deploy_timeout;
                                self.deploy(env, hosts, release, OpKind::Rollout { stage, wave }, timeout);
                            }
                            Some(Phase::OneBox { in_flight: Some(n) })
                        }
                    }
                }
                Phase::OneBox { in_flight: Some(0) } => {
                    let names: Vec<&str> = plan
                        .one_box_hosts(env, region, strategy)
                        .into_iter()
                        .flatten()
                        .map(|h| plan.host_name(env, HostId(h)))
                        .collect();
                    self.emit(
                        EventKind::OneBoxDeployed,
                        Some(release),
                        EventScope::Region(stage, region),
                        Some(names.join(", ")),
                    );
                    let bake = strategy.one_box.as_ref().map(|o| o.bake).unwrap_or(strategy.bake);
                    self.emit(
                        EventKind::BakeStarted,
                        Some(release),
                        EventScope::Region(stage, region),
                        Some(format!("one-box bake: {}", describe_bake(&bake))),
                    );
                    let judged = strategy.one_box.as_ref().is_some_and(|o| o.judge);
                    let clock = BakeClock::start(now, &bake);
                    Some(Phase::OneBoxBake(if judged { clock.judged() } else { clock }))
                }
                Phase::OneBox { .. } => None,
                Phase::OneBoxBake(mut clock) => {
                    if clock.done(now) {
                        self.emit(EventKind::BakeCompleted, Some(release), EventScope::Region(stage, region), None);
                        Some(Phase::Zone { pos: 0, started: false, batch_in_flight: None })
                    } else if let Some(waiting) = clock.newly_waiting(now) {
                        let why = format!("one-box bake {waiting}");
                        self.emit(EventKind::Blocked, Some(release), EventScope::Region(stage, region), Some(why));
                        Some(Phase::OneBoxBake(clock))
                    } else {
                        None
                    }
                }
                Phase::Zone { pos, started, batch_in_flight } => {
                    let zone = ZoneId(zones.start + pos);
                    let scope = EventScope::Zone(stage, env, zone);
                    match batch_in_flight {
                        Some(0) => {
                            self.emit(EventKind::BatchDeployed, Some(release), scope, None);
                            Some(Phase::Zone { pos, started, batch_in_flight: None })
                        }
                        Some(_) => None,
                        None if !started => match self.step_gate(stage, region, Some(zone), &[]) {
                            Err(why) => {
                                self.report_blocked(stage, wave, i, release, scope, why);
                                None
                            }
                            Ok(()) => {
                                self.emit(EventKind::ZoneStarted, Some(release), scope, None);
                                Some(Phase::Zone { pos, started: true, batch_in_flight: None })
                            }
                        },
                        None => {
                            let zone_hosts = plan.zone_hosts(env, zone);
                            let limit = strategy
                                .rolling
                                .batch
                                .hosts_in(zone_hosts.len() as u32)
                                .min(plan.env(env).zones[zone.idx()].max_out_of_service);
                            let failed = &rollout.failed_hosts;
                            let batch: Vec<HostId> = zone_hosts
                                .map(HostId)
                                .filter(|&h| !failed.contains(&h) && self.needs(env, h, release))
                                .take(limit as usize)
                                .collect();
                            if batch.is_empty() {
                                self.emit(EventKind::ZoneCompleted, Some(release), scope, None);
                                let bake = strategy.rolling.zone_bake;
                                self.emit(EventKind::BakeStarted, Some(release), scope, Some(describe_bake(&bake)));
                                Some(Phase::ZoneBake { pos, bake: BakeClock::start(now, &bake) })
                            } else {
                                match self.step_gate(stage, region, Some(zone), &batch) {
                                    Err(why) => {
                                        self.report_blocked(stage, wave, i, release, scope, why);
                                        None
                                    }
                                    Ok(()) if self.zone_busy[env.idx()][zone.idx()] > 0 => None,
                                    Ok(()) => {
                                        let n = batch.len() as u32;
                                        let timeout = strategy.rolling.deploy_timeout;
                                        self.deploy(env, batch, release, OpKind::Rollout { stage, wave }, timeout);
                                        Some(Phase::Zone { pos, started, batch_in_flight: Some(n) })
                                    }
                                }
                            }
                        }
                    }
                }
                Phase::ZoneBake { pos, bake: mut clock } => {
                    let zone = ZoneId(zones.start + pos);
                    let scope = EventScope::Zone(stage, env, zone);
                    if clock.done(now) {
                        self.emit(EventKind::BakeCompleted, Some(release), scope, None);
                        if pos + 1 < zones.len() as u32 {
                            Some(Phase::Zone { pos: pos + 1, started: false, batch_in_flight: None })
                        } else {
                            self.emit(
                                EventKind::RegionCompleted,
                                Some(release),
                                EventScope::Region(stage, region),
                                None,
                            );
                            Some(Phase::Done)
                        }
                    } else if let Some(waiting) = clock.newly_waiting(now) {
                        let why = format!("zone bake {waiting}");
                        self.emit(EventKind::Blocked, Some(release), scope, Some(why));
                        Some(Phase::ZoneBake { pos, bake: clock })
                    } else {
                        None
                    }
                }
                Phase::Done => None,
            };
            let Some(phase) = next else { return progressed };
            if let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() {
                let r = &mut rollout.regions[i];
                r.phase = phase;
                r.blocked = None;
            }
            progressed = true;
        }
    }

    /// Whether a host still has to be deployed with `release`.
    fn needs(&self, env: EnvId, host: HostId, release: ReleaseId) -> bool {
        let h = &self.hosts[env.idx()][host.idx()];
        h.version != release && h.op.is_none()
    }

    fn report_blocked(
        &mut self,
        stage: StageId,
        wave: usize,
        i: usize,
        release: ReleaseId,
        scope: EventScope,
        why: String,
    ) {
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() else { return };
        let r = &mut rollout.regions[i];
        if r.blocked.as_ref() == Some(&why) {
            return;
        }
        r.blocked = Some(why.clone());
        self.emit(EventKind::Blocked, Some(release), scope, Some(why));
    }
}

/// Renders a scope as `stage/region/zone/host`, or `stage/wave` for a wave.
pub fn render_scope(plan: &Plan, scope: EventScope) -> String {
    let stage_name = |s: StageId| plan.manifest.stages[s.idx()].name.as_str();
    match scope {
        EventScope::Service => String::new(),
        EventScope::Stage(s) => stage_name(s).to_owned(),
        EventScope::Wave(s, w) => format!("{}/{}", stage_name(s), plan.manifest.stages[s.idx()].waves[w].name),
        EventScope::Environment(s, _) => stage_name(s).to_owned(),
        EventScope::Region(s, r) => format!("{}/{}", stage_name(s), plan.region_name(plan.stage_env(s), r)),
        EventScope::Zone(s, env, z) => {
            format!("{}/{}/{}", stage_name(s), plan.region_name(env, plan.zone_region(env, z)), plan.zone_name(env, z))
        }
        EventScope::Host(s, env, h) => {
            let z = plan.host_zone(env, h);
            format!(
                "{}/{}/{}/{}",
                stage_name(s),
                plan.region_name(env, plan.zone_region(env, z)),
                plan.zone_name(env, z),
                plan.host_name(env, h)
            )
        }
    }
}
