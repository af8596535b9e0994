//! What each input changes: new releases, the operator's commands, and what hosts,
//! tests, alarms, traffic and the judge report.

use super::state::{HostOp, JudgeWait, OpKind, Phase, Release, TestsState};
use super::{CommandId, Engine, EventKind, EventScope, OperatorCommand, Place, ReleaseId, ReleaseStatus, Scope};
use crate::alarm::AlarmState;
use crate::judge::Outcome;
use crate::plan::{EnvId, HostId, RegionId, StageId, ZoneId};

impl Engine {
    pub(super) fn create_release(&mut self, version: String) {
        let id = ReleaseId(self.releases.len() as u32);
        let approvals = self.plan.manifest.stages.iter().map(|s| !s.approval).collect();
        self.releases.push(Release::new(version, self.now, ReleaseStatus::InProgress, approvals));
        self.slots[0][0].waiting.push(id);
        self.emit(EventKind::ReleaseCreated, Some(id), EventScope::Service, None);
    }

    pub(super) fn operate(&mut self, cmd: OperatorCommand) {
        match cmd {
            OperatorCommand::Approve { release, stage } => self.approve(release, stage),
            OperatorCommand::Rollback { release } => self.operator_rollback(release),
            OperatorCommand::Retry { release } => self.retry(release),
            OperatorCommand::RollForward { release } => {
                self.finish_release(release, ReleaseStatus::Superseded, "rolled forward by the operator".into());
            }
            OperatorCommand::Hold { stage } => self.set_hold(stage, true),
            OperatorCommand::Resume { stage } => self.set_hold(stage, false),
        }
    }

    /// Without a stage, approves every stage.
    fn approve(&mut self, release: ReleaseId, stage: Option<StageId>) {
        let approvals = &mut self.releases[release.idx()].approvals;
        match stage {
            Some(s) => approvals[s.idx()] = true,
            None => approvals.iter_mut().for_each(|a| *a = true),
        }
        self.emit(EventKind::Approved, Some(release), stage.map_or(EventScope::Service, EventScope::Stage), None);
    }

    /// Without a stage, holds or resumes the whole service.
    fn set_hold(&mut self, stage: Option<StageId>, hold: bool) {
        match stage {
            Some(s) => self.stage_hold[s.idx()] = hold,
            None => self.service_hold = hold,
        }
        let kind = if hold { EventKind::Held } else { EventKind::Resumed };
        self.emit(kind, None, stage.map_or(EventScope::Service, EventScope::Stage), None);
    }

    pub(super) fn on_host_report(&mut self, env: EnvId, host: HostId, command: CommandId, result: Result<(), String>) {
        let state = &self.hosts[env.idx()][host.idx()];
        // A report for a command the host is no longer running (a redelivery, or one that
        // already timed out) changes nothing.
        let Some(op) = state.op.filter(|op| op.command == command) else { return };
        self.deadlines.remove(&(op.deadline, env, host));
        self.end_op(env, host, op, result);
    }

    /// A lost host fails whatever deployment it was running; its zone waits for it to return.
    pub(super) fn on_host_lost(&mut self, env: EnvId, host: HostId) {
        let state = &mut self.hosts[env.idx()][host.idx()];
        state.present = false;
        if let Some(op) = state.op {
            self.deadlines.remove(&(op.deadline, env, host));
            self.end_op(env, host, op, Err("host lost: no heartbeat".to_owned()));
        }
    }

    pub(super) fn expire_deadlines(&mut self) {
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

    /// A host's deployment ended, by its report, a timeout or its loss.
    fn end_op(&mut self, env: EnvId, host: HostId, op: HostOp, result: Result<(), String>) {
        let zone = self.plan.host_zone(env, host);
        self.zone_busy[env.idx()][zone.idx()] -= 1;
        let state = &mut self.hosts[env.idx()][host.idx()];
        let rollback_after = state.rollback_after.take();
        state.record(op, result.is_ok());
        match op.kind {
            OpKind::Rollout { stage, wave } => {
                self.end_rollout(env, host, op.target, (stage, wave), result, rollback_after)
            }
            OpKind::Rollback { job } => {
                self.hosts[env.idx()][host.idx()].rolled_back_at = Some(self.now);
                if let Err(reason) = result {
                    let release = self.rollback_jobs.get(&job).map(|j| j.release);
                    let stage = self.plan.first_stage_of(env);
                    let why = format!("rollback failed: {reason}");
                    self.emit(EventKind::HostFailed, release, EventScope::Host(stage, env, host), Some(why));
                }
                self.job_host_done(job);
            }
        }
    }

    /// A host's rollout ended: its region's deployment has one host less in flight, and a
    /// rollback that waited for it may start.
    fn end_rollout(
        &mut self,
        env: EnvId,
        host: HostId,
        release: ReleaseId,
        (stage, wave): (StageId, usize),
        result: Result<(), String>,
        rollback_after: Option<u64>,
    ) {
        let succeeded = result.is_ok();
        if let Err(reason) = result {
            self.on_host_failed(env, host, release, stage, wave, reason);
        }
        let region = self.plan.zone_region(env, self.plan.host_zone(env, host));
        if let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut().filter(|r| r.release == release)
            && let Some(r) = rollout.regions.iter_mut().find(|r| r.region == region)
        {
            r.phase = r.phase.host_reported();
        }
        match rollback_after {
            Some(job) if succeeded => self.queue_rollback(env, host, job),
            Some(job) => self.job_host_done(job),
            None => {}
        }
    }

    /// A failed host counts against its zone's tolerance; past it, the zone rolls back and
    /// the release halts.
    fn on_host_failed(
        &mut self,
        env: EnvId,
        host: HostId,
        release: ReleaseId,
        stage: StageId,
        wave: usize,
        reason: String,
    ) {
        self.emit(EventKind::HostFailed, Some(release), EventScope::Host(stage, env, host), Some(reason));
        let max_failures = self.strategy(stage, wave).rolling.max_failures;
        let zone = self.plan.host_zone(env, host);
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut().filter(|r| r.release == release) else {
            return;
        };
        rollout.failed_hosts.insert(host);
        let failures = rollout.zone_failures.entry(zone).or_insert(0);
        *failures += 1;
        if *failures <= max_failures {
            return;
        }
        let why = format!(
            "{failures} host deployment(s) failed in zone {} (the strategy tolerates {max_failures})",
            self.plan.zone_name(env, zone)
        );
        self.roll_back_scope(release, stage, Scope::Zone(env, zone), &why);
        self.halt(release, why);
    }

    pub(super) fn on_test_report(&mut self, command: CommandId, result: Result<(), String>) {
        let Some(run) = self.tests.remove(&command) else { return };
        let stage = &self.plan.manifest.stages[run.stage.idx()];
        let stage_name = stage.name.clone();
        let test_name = stage.tests[run.test].name.clone();
        let Some(rollout) = self.slots[run.stage.idx()][run.wave].active.as_mut().filter(|r| r.release == run.release)
        else {
            return;
        };
        let TestsState::Running { pending } = &mut rollout.tests else { return };
        let scope = EventScope::Stage(run.stage);
        match result {
            Ok(()) => {
                *pending -= 1;
                if *pending == 0 {
                    rollout.tests = TestsState::Passed;
                }
                self.emit(EventKind::TestPassed, Some(run.release), scope, Some(test_name));
            }
            Err(why) => {
                rollout.tests = TestsState::Failed;
                let why = format!("test {test_name} failed in {stage_name}: {why}");
                self.emit(EventKind::TestFailed, Some(run.release), scope, Some(why.clone()));
                let env = self.plan.stage_env(run.stage);
                self.roll_back_scope(run.release, run.stage, Scope::Environment(env), &why);
                self.halt(run.release, why);
            }
        }
    }

    /// Traffic served by a release feeds its wave's bake, and the bake of the zone that
    /// served it: the one-box's zone while the one-box bakes, the zone baking otherwise.
    pub(super) fn on_served(&mut self, env: EnvId, zone: ZoneId, version: ReleaseId, requests: u64) {
        let Some(Place::Active { stage, wave }) = self.place(version) else { return };
        if self.plan.stage_env(stage) != env {
            return;
        }
        let region = self.plan.zone_region(env, zone);
        let first_zone = self.plan.region_zones(env, region).start;
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() else { return };
        let Some(r) = rollout.regions.iter_mut().find(|r| r.region == region) else { return };
        if let Some(b) = rollout.bake.as_mut() {
            b.seen += requests;
        }
        match &mut r.phase {
            Phase::OneBoxBake(b) if zone.0 == first_zone => b.seen += requests,
            Phase::ZoneBake { zone: pos, bake } if first_zone + *pos == zone.0 => bake.seen += requests,
            _ => {}
        }
    }

    pub(super) fn on_alarm(
        &mut self,
        alarm: usize,
        scope: Scope,
        state: AlarmState,
        reason: String,
        explained_elsewhere: bool,
    ) {
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
        if state == AlarmState::Alarm {
            let explained = explained_elsewhere || self.rolled_back_within(scope, alarm);
            self.alarm_fired(scope, format!("alarm {name}: {reason}"), explained);
        } else if previous == AlarmState::Alarm {
            let why = format!("alarm {name} is {}: {reason}", state.as_str());
            let stage = self.plan.first_stage_of(scope.env());
            self.emit(EventKind::AlarmCleared, None, scope.in_stage(stage), Some(why));
        }
    }

    /// An alarm rolls back every release in flight in its scope and halts them; with none
    /// in flight, and no other change to explain it (`explained`: another lane's release
    /// changing hosts there, or a rollback there within the alarm's window), the release
    /// that last finished there is suspected.
    fn alarm_fired(&mut self, scope: Scope, why: String, explained: bool) {
        let in_flight = self.in_flight_in(scope);
        let default_stage = self.plan.first_stage_of(scope.env());
        let (release, stage) = in_flight.first().map_or((None, default_stage), |&(r, s)| (Some(r), s));
        self.emit(EventKind::AlarmFired, release, scope.in_stage(stage), Some(why.clone()));
        if in_flight.is_empty() && !explained {
            self.suspect_regression(scope, &why);
        }
        for (release, stage) in in_flight {
            self.roll_back_scope(release, stage, scope, &why);
            self.halt(release, why.clone());
        }
    }

    /// A failing verdict on a one-box that is still baking rolls it back and halts the
    /// release; a pass given once the bake's time is up lets a judged bake end; a marginal
    /// one, or a pass on the first minutes of data only, keeps it baking.
    pub(super) fn on_verdict(
        &mut self,
        env: EnvId,
        region: RegionId,
        release: ReleaseId,
        outcome: Outcome,
        reason: String,
    ) {
        let Some(bake) =
            self.one_box_bakes().into_iter().find(|b| b.env == env && b.region == region && b.release == release)
        else {
            return;
        };
        self.emit(EventKind::JudgeVerdict, Some(release), EventScope::Region(bake.stage, region), Some(reason.clone()));
        match outcome {
            Outcome::Pass => self.pass_one_box(bake.stage, region, release),
            Outcome::Marginal => {}
            Outcome::Fail => {
                let why = format!("one-box judge: {reason}");
                let first_zone = ZoneId(self.plan.region_zones(env, region).start);
                self.roll_back_scope(release, bake.stage, Scope::Zone(env, first_zone), &why);
                self.halt(release, why);
            }
        }
    }

    /// Records a passing verdict on the one-box bake of `region`, which may then end. A
    /// pass counts only once the bake's time is up: a judge that has seen a few minutes of
    /// a slow leak cannot tell it from noise, so an early pass must not outlive the data.
    fn pass_one_box(&mut self, stage: StageId, region: RegionId, release: ReleaseId) {
        let now = self.now;
        let rollouts = self.slots[stage.idx()].iter_mut().filter_map(|s| s.active.as_mut());
        for rollout in rollouts.filter(|r| r.release == release) {
            for r in rollout.regions.iter_mut().filter(|r| r.region == region) {
                if let Phase::OneBoxBake(clock) = &mut r.phase
                    && clock.judge == JudgeWait::AwaitingPass
                    && now >= clock.until
                {
                    clock.judge = JudgeWait::Passed;
                }
            }
        }
    }
}
