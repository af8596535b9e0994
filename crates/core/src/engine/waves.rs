//! Wave gates: when a release may enter a wave and start a step in it, and how a wave
//! ends (its bake, the stage's tests, then the next wave's gate).

use super::state::{BakeClock, TestRun, TestsState, WaveRollout};
use super::{Action, Engine, EventKind, EventScope, ReleaseId, ReleaseStatus, Scope, render_scope};
use crate::manifest::Strategy;
use crate::plan::{HostId, RegionId, StageId, ZoneId, describe_bake};
use jiff::Timestamp;

impl Engine {
    pub(super) fn strategy(&self, stage: StageId, wave: usize) -> &Strategy {
        &self.plan.manifest.stages[stage.idx()].waves[wave].strategy
    }

    /// Lets the newest release waiting at a free slot's gate in; older ones waiting there
    /// are superseded by it (releases are cumulative).
    pub(super) fn admit(&mut self, stage: StageId, wave: usize) -> bool {
        let slot = &self.slots[stage.idx()][wave];
        if slot.active.is_some() {
            return false;
        }
        let Some(&newest) =
            slot.waiting.iter().filter(|r| self.releases[r.idx()].status == ReleaseStatus::InProgress).max()
        else {
            return false;
        };
        if let Err(why) = self.gate(newest, stage, wave) {
            self.report_gate_blocked(newest, stage, wave, why);
            return false;
        }
        self.releases[newest.idx()].gate_blocked = None;
        // Only older releases are superseded; a newer one waiting here halted (a suspected
        // regression) stays for the operator to decide on.
        let older: Vec<ReleaseId> =
            self.slots[stage.idx()][wave].waiting.iter().copied().filter(|&r| r < newest).collect();
        self.slots[stage.idx()][wave].waiting.retain(|&r| r > newest);
        let name = self.releases[newest.idx()].name.clone();
        for r in older {
            self.finish_release(r, ReleaseStatus::Superseded, format!("superseded by {name}"));
        }
        let regions = self.plan.manifest.stages[stage.idx()].waves[wave].regions.iter().map(|&r| RegionId(r as u16));
        self.slots[stage.idx()][wave].active = Some(WaveRollout::new(newest, regions));
        if wave == 0 {
            self.emit(EventKind::StageEntered, Some(newest), EventScope::Stage(stage), None);
        }
        self.emit(EventKind::WaveStarted, Some(newest), EventScope::Wave(stage, wave), None);
        true
    }

    fn report_gate_blocked(&mut self, release: ReleaseId, stage: StageId, wave: usize, why: String) {
        let rel = &mut self.releases[release.idx()];
        if rel.gate_blocked.as_ref() == Some(&why) {
            return;
        }
        rel.gate_blocked = Some(why.clone());
        let scope = if wave == 0 { EventScope::Stage(stage) } else { EventScope::Wave(stage, wave) };
        self.emit(EventKind::Blocked, Some(release), scope, Some(why));
    }

    /// Whether a release may enter a slot: holds and approvals.
    fn gate(&self, release: ReleaseId, stage: StageId, wave: usize) -> Result<(), String> {
        self.check_holds(stage)?;
        if wave == 0 && !self.releases[release.idx()].approvals[stage.idx()] {
            return Err(format!("waiting for approval to enter {}", self.plan.manifest.stages[stage.idx()].name));
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

    /// Whether a step may start now in a region: holds, hosts yet to register, alarms of
    /// its scopes, windows.
    pub(super) fn step_gate(
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

    /// Takes a slot's rollout as far as it can go now; a halted release stays where it is.
    pub(super) fn drive(&mut self, stage: StageId, wave: usize) -> bool {
        let Some(rollout) = &self.slots[stage.idx()][wave].active else { return false };
        if self.releases[rollout.release.idx()].status != ReleaseStatus::InProgress {
            return false;
        }
        let mut progressed = false;
        for i in 0..rollout.regions.len() {
            progressed |= self.drive_region(stage, wave, i);
        }
        progressed | self.drive_wave_end(stage, wave)
    }

    /// Once every region is done, the wave bakes (and the last wave of a stage runs the
    /// stage's tests); when both are through, the wave completes.
    fn drive_wave_end(&mut self, stage: StageId, wave: usize) -> bool {
        let now = self.now;
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() else { return false };
        if !rollout.regions.iter().all(|r| r.phase.is_done()) {
            return false;
        }
        let release = rollout.release;
        let Some(clock) = rollout.bake.as_mut() else {
            self.start_wave_bake(stage, wave);
            return true;
        };
        let waiting = clock.newly_waiting(now);
        let done = clock.done(now) && rollout.tests == TestsState::Passed;
        if let Some(waiting) = waiting {
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

    /// Starts the wave's bake, and the stage's tests after its last wave.
    fn start_wave_bake(&mut self, stage: StageId, wave: usize) {
        let now = self.now;
        let s = &self.plan.manifest.stages[stage.idx()];
        let bake = s.waves[wave].strategy.bake;
        let test_count = if wave + 1 == s.waves.len() { s.tests.len() } else { 0 };
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() else { return };
        let release = rollout.release;
        rollout.bake = Some(BakeClock::start(now, &bake));
        let start_tests = test_count > 0 && rollout.tests == TestsState::NotStarted;
        if start_tests {
            rollout.tests = TestsState::Running { pending: test_count as u32 };
        } else if test_count == 0 {
            rollout.tests = TestsState::Passed;
        }
        self.emit(EventKind::BakeStarted, Some(release), EventScope::Wave(stage, wave), Some(describe_bake(&bake)));
        if start_tests {
            self.start_tests(release, stage, wave);
        }
    }

    fn start_tests(&mut self, release: ReleaseId, stage: StageId, wave: usize) {
        let plan = std::sync::Arc::clone(&self.plan);
        for (test, spec) in plan.manifest.stages[stage.idx()].tests.iter().enumerate() {
            let run = spec.run.clone();
            let id = self.command(Action::RunTest { release, stage, test, run, timeout: spec.timeout });
            let deadline = self.now.checked_add(spec.timeout).unwrap_or(Timestamp::MAX);
            self.tests.insert(id, TestRun { release, stage, wave, test, deadline });
            self.emit(EventKind::TestStarted, Some(release), EventScope::Stage(stage), Some(spec.name.clone()));
        }
    }

    /// Records the wave as reached and moves the release to the next wave's gate, the
    /// next stage's, or to its end.
    fn complete_wave(&mut self, stage: StageId, wave: usize) {
        let Some(rollout) = self.slots[stage.idx()][wave].active.take() else { return };
        let release = rollout.release;
        self.record_finished_regions(stage, &rollout);
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
            Some((s, w)) => self.slots[s.idx()][w].waiting.push(release),
            None => {
                let rel = &mut self.releases[release.idx()];
                rel.status = ReleaseStatus::Completed;
                rel.completed_at = Some(self.now);
                self.emit(EventKind::ReleaseCompleted, Some(release), EventScope::Service, None);
            }
        }
    }

    /// Remembers when the release finished each region of the wave: an alarm there within
    /// the watch period suspects it. Entries past the watch period are dropped.
    fn record_finished_regions(&mut self, stage: StageId, rollout: &WaveRollout) {
        let env = self.plan.stage_env(stage);
        let watch = self.plan.manifest.watch;
        let now = self.now;
        for r in &rollout.regions {
            let list = &mut self.finished[env.idx()][r.region.idx()];
            list.retain(|(_, at)| at.checked_add(watch).is_ok_and(|end| end >= now));
            list.push((rollout.release, now));
        }
    }
}
