//! The rollout engine: a state machine that turns inputs (time, observations, operator
//! commands) into commands for the outside world and events for the record.
//!
//! Sans-I/O in the manner of `quinn-proto`: the caller passes `now` with every input and
//! takes the outputs with [`Engine::drain`]. Nothing here reads a clock, touches the
//! network or draws a random number, and every collection that is iterated is ordered, so
//! the same inputs always give the same outputs.
//!
//! The rules live in one module each:
//! - `state`: what is remembered, down to the phase each region is in;
//! - `inputs`: what each input changes;
//! - `waves`: the gates a release passes to enter a wave, and how a wave ends;
//! - `region`: a region's way through its phases, one step per phase;
//! - `rollback`: rollbacks, halts and the operator's decisions on a release;
//! - `query`: what callers may ask without changing anything.

mod alarm_instances;
mod bake_sources;
mod inputs;
mod query;
mod region;
mod rollback;
mod state;
mod types;
mod waves;

pub use alarm_instances::AlarmInstance;
pub use bake_sources::BakeProgress;
pub use query::render_scope;
pub use types::*;

use crate::alarm::AlarmState;
use crate::plan::{EnvId, HostId, Plan, StageId, ZoneId};
use jiff::Timestamp;
use state::{HostOp, HostState, OpKind, Release, RollbackJob, Slot, TestRun};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

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

impl Engine {
    /// An engine for a fleet whose hosts all run `initial_version`.
    pub fn new(plan: Arc<Plan>, initial_version: &str, now: Timestamp) -> Self {
        let stages = plan.manifest.stages.len();
        let hosts = plan.envs.iter().map(|e| vec![HostState::running(ReleaseId(0)); e.hosts.len()]).collect();
        let zone_busy = plan.envs.iter().map(|e| vec![0; e.zones.len()]).collect();
        let finished = plan.envs.iter().map(|e| vec![Vec::new(); e.regions.len()]).collect();
        let mut baseline = Release::new(initial_version.to_owned(), now, ReleaseStatus::Completed, vec![true; stages]);
        baseline.completed_at = Some(now);
        Engine {
            slots: empty_slots(&plan),
            plan,
            now,
            releases: vec![baseline],
            hosts,
            zone_busy,
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
            Input::Operator(cmd) => self.operate(cmd),
            Input::HostReport { env, host, command, result } => self.on_host_report(env, host, command, result),
            Input::TestReport { command, result } => self.on_test_report(command, result),
            Input::Alarm { alarm, scope, state, reason, explained_elsewhere } => {
                self.on_alarm(alarm, scope, state, reason, explained_elsewhere)
            }
            Input::Served { env, zone, version, requests } => self.on_served(env, zone, version, requests),
            Input::HostJoined { env, host } => self.hosts[env.idx()][host.idx()].present = true,
            Input::HostLost { env, host } => self.on_host_lost(env, host),
            Input::Verdict { env, region, release, outcome, reason } => {
                self.on_verdict(env, region, release, outcome, reason)
            }
        }
        self.advance();
        Ok(())
    }

    /// Swaps in a new plan for the same fleet: allowed while no release is in flight and
    /// every environment keeps its hosts, so that host state carries over. Operators'
    /// holds stay: the service's, and each stage's under its name (a stage the new
    /// manifest drops takes its hold with it).
    pub fn replace_plan(&mut self, plan: Arc<Plan>) -> Result<(), InputError> {
        if self.releases.iter().any(Release::is_open) || !self.is_idle() {
            return Err(InputError::NotAllowed(
                "a release is in flight: finish, roll back or roll it forward before changing the pipeline".into(),
            ));
        }
        if !same_fleet(&self.plan, &plan) {
            return Err(InputError::NotAllowed(
                "the new manifest changes the fleet (environments, zones or host counts); apply it as a new service"
                    .into(),
            ));
        }
        let stages = plan.manifest.stages.len();
        self.stage_hold = plan.manifest.stages.iter().map(|s| self.stage_held(&s.name)).collect();
        self.slots = empty_slots(&plan);
        for r in &mut self.releases {
            r.approvals.resize(stages, true);
        }
        self.plan = plan;
        Ok(())
    }

    fn stage_held(&self, name: &str) -> bool {
        self.plan.manifest.stage_named(name).is_some_and(|i| self.stage_hold[i])
    }

    /// Refuses an input naming what the plan or the engine does not know, before
    /// anything changes.
    fn check(&self, input: &Input) -> Result<(), InputError> {
        let env_ok = |e: EnvId| e.idx() < self.plan.envs.len();
        let release_ok = |r: ReleaseId| {
            if r.idx() < self.releases.len() { Ok(()) } else { Err(InputError::UnknownRelease(r.0.to_string())) }
        };
        match input {
            Input::CreateRelease { version } if version.is_empty() => Err(InputError::EmptyVersion),
            Input::CreateRelease { version } if self.release_named(version).is_some() => {
                Err(InputError::DuplicateVersion(version.clone()))
            }
            Input::HostReport { env, host, .. } | Input::HostJoined { env, host } | Input::HostLost { env, host }
                if !env_ok(*env) || host.idx() >= self.plan.env(*env).hosts.len() =>
            {
                Err(InputError::UnknownHost)
            }
            Input::Alarm { alarm, .. } if *alarm >= self.plan.manifest.alarms.len() => {
                Err(InputError::UnknownAlarm(*alarm))
            }
            Input::Alarm { scope, .. } if !scope.is_valid(&self.plan) => Err(InputError::UnknownScope),
            Input::Served { env, zone, version, .. } => {
                if !env_ok(*env) || zone.idx() >= self.plan.env(*env).zones.len() {
                    return Err(InputError::UnknownScope);
                }
                release_ok(*version)
            }
            Input::Verdict { env, region, release, .. } => {
                if !env_ok(*env) || region.idx() >= self.plan.env(*env).regions.len() {
                    return Err(InputError::UnknownScope);
                }
                release_ok(*release)
            }
            Input::Operator(cmd) => self.check_operator(cmd),
            Input::CreateRelease { .. }
            | Input::HostReport { .. }
            | Input::HostJoined { .. }
            | Input::HostLost { .. }
            | Input::Alarm { .. }
            | Input::Tick
            | Input::TestReport { .. } => Ok(()),
        }
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
                stage_ok(stage)
            }
            OperatorCommand::Rollback { release: r } => match release(r)? {
                rel if rel.status == ReleaseStatus::RolledBack => {
                    Err(InputError::NotAllowed(format!("{} is already rolled back", rel.name)))
                }
                _ => Ok(()),
            },
            OperatorCommand::Retry { release: r } | OperatorCommand::RollForward { release: r } => match release(r)? {
                rel if rel.status != ReleaseStatus::Halted => Err(InputError::NotAllowed(format!(
                    "{} is {}, not halted",
                    rel.name,
                    rel.status.as_str().replace('_', " ")
                ))),
                _ => Ok(()),
            },
            OperatorCommand::Hold { stage } | OperatorCommand::Resume { stage } => stage_ok(stage),
        }
    }

    /// Moves every slot as far as it can go; a step that frees a zone or a slot may let
    /// another start, so this repeats until nothing moves.
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

    /// Starts deploying `target` to `hosts` of one environment; every host gets the same command.
    fn deploy(&mut self, env: EnvId, hosts: Vec<HostId>, target: ReleaseId, kind: OpKind, timeout: Duration) {
        let purpose = match kind {
            OpKind::Rollout { .. } => Purpose::Rollout,
            OpKind::Rollback { .. } => Purpose::Rollback,
        };
        let command = self.command(Action::Deploy { env, hosts: hosts.clone(), version: target, purpose, timeout });
        let deadline = self.now.checked_add(timeout).unwrap_or(Timestamp::MAX);
        for h in hosts {
            let zone = self.plan.host_zone(env, h);
            self.zone_busy[env.idx()][zone.idx()] += 1;
            self.hosts[env.idx()][h.idx()].op = Some(HostOp { command, target, deadline, kind });
            self.deadlines.insert((deadline, env, h));
        }
    }
}

fn empty_slots(plan: &Plan) -> Vec<Vec<Slot>> {
    plan.manifest.stages.iter().map(|s| s.waves.iter().map(|_| Slot::default()).collect()).collect()
}

/// Whether two plans deploy to the same hosts, environment by environment, so that what
/// the engine knows of each host carries over from one to the other.
fn same_fleet(a: &Plan, b: &Plan) -> bool {
    a.envs.len() == b.envs.len()
        && a.envs
            .iter()
            .zip(&b.envs)
            .all(|(x, y)| x.hosts.len() == y.hosts.len() && x.hosts.iter().zip(&y.hosts).all(|(p, q)| p.name == q.name))
}
