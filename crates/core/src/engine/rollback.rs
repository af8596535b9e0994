//! Rollbacks, halts and the operator's decisions on a release.
//!
//! A rollback is a job: the hosts of a scope that carry a release return, zone by zone and
//! never more of a zone at once than it may lose, to the last version older than it.

use super::state::{OpKind, Phase, RollbackJob, TestsState};
use super::{Engine, EventKind, EventScope, Place, ReleaseId, ReleaseStatus, Scope};
use crate::plan::{EnvId, HostId, RegionId, StageId, ZoneId};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    /// The releases deploying or baking in `scope`: those whose rollout holds the scope and
    /// that some host of the scope carries.
    pub(super) fn in_flight_in(&self, scope: Scope) -> Vec<(ReleaseId, StageId)> {
        let env = scope.env();
        let mut hit = Vec::new();
        for (s, stage) in self.plan.manifest.stages.iter().enumerate() {
            if stage.environment != env.idx() {
                continue;
            }
            for rollout in self.slots[s].iter().filter_map(|slot| slot.active.as_ref()) {
                let release = rollout.release;
                if !self.releases[release.idx()].is_open() {
                    continue;
                }
                let regions: Vec<RegionId> = rollout.regions.iter().map(|r| r.region).collect();
                if self.hosts_in(scope, &regions).any(|h| self.hosts[env.idx()][h.idx()].carries(release)) {
                    hit.push((release, StageId(s as u16)));
                }
            }
        }
        hit
    }

    /// Hosts of `scope` that lie in `regions`.
    pub(super) fn hosts_in<'a>(&'a self, scope: Scope, regions: &'a [RegionId]) -> impl Iterator<Item = HostId> + 'a {
        let env = scope.env();
        let plan = &self.plan;
        let ranges: Vec<Range<u32>> = match scope {
            Scope::Environment(_) => regions.iter().map(|&r| plan.env(env).regions[r.idx()].hosts.clone()).collect(),
            Scope::Region(_, r) if regions.contains(&r) => vec![plan.env(env).regions[r.idx()].hosts.clone()],
            Scope::Zone(_, z) if regions.contains(&plan.zone_region(env, z)) => vec![plan.zone_hosts(env, z)],
            Scope::Host(_, h) if regions.contains(&plan.zone_region(env, plan.host_zone(env, h))) => {
                vec![Range { start: h.0, end: h.0 + 1 }]
            }
            _ => Vec::new(),
        };
        ranges.into_iter().flatten().map(HostId)
    }

    /// Returns every host of `scope` that carries `release` to the version it had before.
    pub(super) fn roll_back_scope(&mut self, release: ReleaseId, stage: StageId, scope: Scope, why: &str) {
        let env = scope.env();
        let regions: Vec<RegionId> = (0..self.plan.env(env).regions.len() as u16).map(RegionId).collect();
        let hosts: Vec<HostId> =
            self.hosts_in(scope, &regions).filter(|&h| self.hosts[env.idx()][h.idx()].carries(release)).collect();
        let event_scope = scope.in_stage(stage);
        let rel = &mut self.releases[release.idx()];
        if !rel.rolled_back_scopes.contains(&event_scope) {
            rel.rolled_back_scopes.push(event_scope);
        }
        self.start_rollback_job(release, event_scope, env, hosts, why);
    }

    /// Hosts return to their last version older than `release`.
    fn start_rollback_job(&mut self, release: ReleaseId, scope: EventScope, env: EnvId, hosts: Vec<HostId>, why: &str) {
        let job = self.next_job;
        self.next_job += 1;
        self.emit(EventKind::RollbackStarted, Some(release), scope, Some(format!("{} host(s): {why}", hosts.len())));
        let remaining = hosts.len() as u32;
        self.rollback_jobs.insert(job, RollbackJob { release, below: release, scope, remaining });
        for h in hosts {
            let state = &mut self.hosts[env.idx()][h.idx()];
            match state.op.map(|op| op.kind) {
                // Let the deployment in flight end, then undo it.
                Some(OpKind::Rollout { .. }) => {
                    if let Some(previous) = state.rollback_after.replace(job) {
                        self.job_host_done(previous);
                    }
                }
                Some(OpKind::Rollback { .. }) => self.job_host_done(job),
                None => self.queue_rollback(env, h, job),
            }
        }
        self.finish_job_if_done(job);
    }

    pub(super) fn queue_rollback(&mut self, env: EnvId, host: HostId, job: u64) {
        let zone = self.plan.host_zone(env, host);
        self.rollback_queue.entry((env, zone)).or_default().push((host, job));
    }

    pub(super) fn job_host_done(&mut self, job: u64) {
        if let Some(j) = self.rollback_jobs.get_mut(&job) {
            j.remaining = j.remaining.saturating_sub(1);
        }
        self.finish_job_if_done(job);
    }

    fn finish_job_if_done(&mut self, job: u64) {
        if self.rollback_jobs.get(&job).is_some_and(|j| j.remaining == 0)
            && let Some(j) = self.rollback_jobs.remove(&job)
        {
            self.emit(EventKind::RollbackCompleted, Some(j.release), j.scope, None);
        }
    }

    /// Starts queued rollbacks, never taking more of a zone out of service than it may lose.
    pub(super) fn dispatch_rollbacks(&mut self) {
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
            self.dispatch_rollback_batch(env, batch);
        }
    }

    /// Deploys each host of `batch` with the version its job returns it to; one command
    /// per (version, job), so each command deploys one version.
    fn dispatch_rollback_batch(&mut self, env: EnvId, batch: Vec<(HostId, u64)>) {
        let mut groups: BTreeMap<(ReleaseId, u64), Vec<HostId>> = BTreeMap::new();
        for (host, job) in batch {
            let Some(below) = self.rollback_jobs.get(&job).map(|j| j.below) else { continue };
            match self.rollback_target(env, host, below) {
                Some(target) => groups.entry((target, job)).or_default().push(host),
                None => self.job_host_done(job),
            }
        }
        let timeout = self.deploy_timeout_for(env);
        for ((target, job), hosts) in groups {
            self.deploy(env, hosts, target, OpKind::Rollback { job }, timeout);
        }
    }

    /// The version a host returns to when releases from `below` on are undone, or `None`
    /// when it already runs an older one and was not left half changed.
    fn rollback_target(&self, env: EnvId, host: HostId, below: ReleaseId) -> Option<ReleaseId> {
        let state = &self.hosts[env.idx()][host.idx()];
        let half_changed = state.failed_deploy.is_some_and(|r| r >= below);
        if state.version < below {
            // Deploying the version it has puts a half-changed host back in a known state.
            return half_changed.then_some(state.version);
        }
        Some(state.history.iter().rev().find(|&&v| v < below).copied().unwrap_or(ReleaseId(0)))
    }

    /// A rollback outside any wave's strategy allows the slowest of the environment's.
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

    pub(super) fn halt(&mut self, release: ReleaseId, why: String) {
        let rel = &mut self.releases[release.idx()];
        if rel.status != ReleaseStatus::InProgress {
            return;
        }
        rel.status = ReleaseStatus::Halted;
        rel.reason = Some(why.clone());
        self.emit(EventKind::ReleaseHalted, Some(release), EventScope::Service, Some(why));
    }

    /// An alarm with no release in flight in its scope: the newest release that finished
    /// there within the watch period is suspected, and halted.
    pub(super) fn suspect_regression(&mut self, scope: Scope, why: &str) {
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

    /// Every host carrying `release` or a newer one goes back; newer releases still open
    /// are cancelled, since they contain it.
    pub(super) fn operator_rollback(&mut self, release: ReleaseId) {
        let why = format!("operator rolled back {}", self.releases[release.idx()].name);
        for e in 0..self.plan.envs.len() {
            let env = EnvId(e as u16);
            let hosts: Vec<HostId> = (0..self.plan.envs[e].hosts.len() as u32)
                .map(HostId)
                .filter(|&h| {
                    let s = &self.hosts[e][h.idx()];
                    s.version >= release || s.rolling_out().is_some_and(|t| t >= release)
                })
                .collect();
            if hosts.is_empty() {
                continue;
            }
            let scope = EventScope::Stage(self.plan.first_stage_of(env));
            self.start_rollback_job(release, scope, env, hosts, &why);
        }
        let newer: Vec<ReleaseId> = (release.0 + 1..self.releases.len() as u32)
            .map(ReleaseId)
            .filter(|r| self.releases[r.idx()].is_open())
            .collect();
        self.finish_release(release, ReleaseStatus::RolledBack, why);
        let name = self.releases[release.idx()].name.clone();
        for r in newer {
            let why = format!("cancelled: it contains {name}, which was rolled back");
            self.finish_release(r, ReleaseStatus::RolledBack, why);
        }
    }

    /// Ends a release for good and frees the slot or gate it held.
    pub(super) fn finish_release(&mut self, release: ReleaseId, status: ReleaseStatus, why: String) {
        match self.place(release) {
            Some(Place::Waiting { stage, wave }) => {
                self.slots[stage.idx()][wave].waiting.retain(|&r| r != release);
            }
            Some(Place::Active { stage, wave }) => self.slots[stage.idx()][wave].active = None,
            None => {}
        }
        let rel = &mut self.releases[release.idx()];
        rel.status = status;
        rel.reason = Some(why.clone());
        let kind = match status {
            ReleaseStatus::Superseded => EventKind::ReleaseSuperseded,
            ReleaseStatus::RolledBack => EventKind::ReleaseRolledBack,
            _ => EventKind::ReleaseCompleted,
        };
        self.emit(kind, Some(release), EventScope::Service, Some(why));
    }

    /// Resumes a halted release where it stopped: each region restarts at the first step
    /// whose hosts do not all run the release.
    pub(super) fn retry(&mut self, release: ReleaseId) {
        let rel = &mut self.releases[release.idx()];
        rel.status = ReleaseStatus::InProgress;
        rel.reason = None;
        rel.gate_blocked = None;
        self.emit(EventKind::ReleaseResumed, Some(release), EventScope::Service, Some("retry".into()));
        let Some(Place::Active { stage, wave }) = self.place(release) else { return };
        let restarts: Vec<Option<Phase>> = match &self.slots[stage.idx()][wave].active {
            Some(rollout) => {
                rollout.regions.iter().map(|r| self.restart_phase(stage, wave, r.region, r.phase)).collect()
            }
            None => return,
        };
        let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() else { return };
        rollout.zone_failures.clear();
        rollout.failed_hosts.clear();
        if rollout.tests == TestsState::Failed {
            rollout.tests = TestsState::NotStarted;
            rollout.bake = None;
        }
        for (region, restart) in rollout.regions.iter_mut().zip(restarts) {
            if let Some(phase) = restart {
                region.phase = phase;
                region.blocked = None;
                rollout.bake = None;
            }
        }
    }

    /// Where a region in `phase` starts over on a retry, if it must.
    fn restart_phase(&self, stage: StageId, wave: usize, region: RegionId, phase: Phase) -> Option<Phase> {
        if matches!(phase, Phase::Pending) {
            return None;
        }
        let env = self.plan.stage_env(stage);
        let release = self.slots[stage.idx()][wave].active.as_ref()?.release;
        let plan = Arc::clone(&self.plan);
        let runs = |h: u32| self.hosts[env.idx()][h as usize].version == release;
        let one_box_done = plan.one_box_hosts(env, region, self.strategy(stage, wave)).is_none_or(|mut r| r.all(runs));
        // A one-box deployed but not yet baked is not done: the region starts over (its
        // one-box is not deployed again, but baked again in full).
        if !one_box_done || phase.before_zones() {
            return Some(Phase::Pending);
        }
        let zones = plan.region_zones(env, region);
        let first_gap = zones.clone().position(|z| !plan.zone_hosts(env, ZoneId(z)).all(runs));
        first_gap.map(|zone| Phase::ZoneEntering { zone: zone as u32 })
    }
}
