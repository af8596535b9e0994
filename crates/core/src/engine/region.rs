//! A region's way through its phases: the one-box (deploy, then bake), then zone by zone
//! (start, deploy in batches, bake), each step behind its gate.
//!
//! Each phase has one function that either moves the region on, returning its next
//! phase, or leaves it where it is (`None`): waiting for a gate, a busy zone, hosts to
//! report or a bake to end.

use super::state::{BakeClock, OpKind, Phase};
use super::{Engine, EventKind, EventScope, ReleaseId};
use crate::plan::{EnvId, HostId, RegionId, StageId, ZoneId, describe_bake};
use std::sync::Arc;

/// The region a step is for: the `index`th region of a slot's rollout.
#[derive(Clone, Copy)]
struct RegionAt {
    stage: StageId,
    wave: usize,
    index: usize,
    release: ReleaseId,
    env: EnvId,
    region: RegionId,
}

impl RegionAt {
    fn scope(self) -> EventScope {
        EventScope::Region(self.stage, self.region)
    }
}

impl Engine {
    /// Takes one region of a wave as far as it can go now.
    pub(super) fn drive_region(&mut self, stage: StageId, wave: usize, index: usize) -> bool {
        let mut progressed = false;
        while let Some(phase) = self.region_step(stage, wave, index) {
            if let Some(rollout) = self.slots[stage.idx()][wave].active.as_mut() {
                let r = &mut rollout.regions[index];
                r.phase = phase;
                r.blocked = None;
            }
            progressed = true;
        }
        progressed
    }

    /// The region's next phase, if it can move now.
    fn region_step(&mut self, stage: StageId, wave: usize, index: usize) -> Option<Phase> {
        let rollout = self.slots[stage.idx()][wave].active.as_ref()?;
        let region = rollout.regions[index].region;
        let env = self.plan.stage_env(stage);
        let at = RegionAt { stage, wave, index, release: rollout.release, env, region };
        match rollout.regions[index].phase {
            Phase::Pending => self.start_region(at),
            Phase::OneBoxReady => self.deploy_one_box(at),
            Phase::OneBoxDeployed => Some(self.start_one_box_bake(at)),
            Phase::OneBoxBake(clock) => self.bake_one_box(at, clock),
            Phase::ZoneEntering { zone } => self.enter_zone(at, zone),
            Phase::ZoneReady { zone } => self.deploy_batch(at, zone),
            Phase::ZoneBatchDeployed { zone } => {
                self.emit(EventKind::BatchDeployed, Some(at.release), self.zone_scope(at, zone), None);
                Some(Phase::ZoneReady { zone })
            }
            Phase::ZoneBake { zone, bake } => self.bake_zone(at, zone, bake),
            Phase::OneBoxDeploying { .. } | Phase::ZoneDeploying { .. } | Phase::Done => None,
        }
    }

    fn start_region(&mut self, at: RegionAt) -> Option<Phase> {
        if let Err(why) = self.step_gate(at.stage, at.region, None, &[]) {
            self.report_blocked(at, at.scope(), why);
            return None;
        }
        self.emit(EventKind::RegionStarted, Some(at.release), at.scope(), None);
        let has_one_box = self.plan.one_box_hosts(at.env, at.region, self.strategy(at.stage, at.wave)).is_some();
        Some(if has_one_box { Phase::OneBoxReady } else { Phase::ZoneEntering { zone: 0 } })
    }

    /// Deploys the one-box hosts that do not run the release yet; with none left to
    /// deploy, the one-box counts as deployed at once.
    fn deploy_one_box(&mut self, at: RegionAt) -> Option<Phase> {
        let plan = Arc::clone(&self.plan);
        let strategy = &plan.manifest.stages[at.stage.idx()].waves[at.wave].strategy;
        let range = plan.one_box_hosts(at.env, at.region, strategy)?;
        let hosts: Vec<HostId> = range.map(HostId).filter(|&h| self.lacks(at.env, h, at.release)).collect();
        let zone = ZoneId(plan.region_zones(at.env, at.region).start);
        if let Err(why) = self.step_gate(at.stage, at.region, Some(zone), &hosts) {
            self.report_blocked(at, EventScope::Zone(at.stage, at.env, zone), why);
            return None;
        }
        if self.zone_busy[at.env.idx()][zone.idx()] > 0 {
            return None;
        }
        if hosts.is_empty() {
            return Some(Phase::OneBoxDeployed);
        }
        let remaining = hosts.len() as u32;
        let kind = OpKind::Rollout { stage: at.stage, wave: at.wave };
        self.deploy(at.env, hosts, at.release, kind, strategy.rolling.deploy_timeout);
        Some(Phase::OneBoxDeploying { remaining })
    }

    fn start_one_box_bake(&mut self, at: RegionAt) -> Phase {
        let plan = Arc::clone(&self.plan);
        let strategy = &plan.manifest.stages[at.stage.idx()].waves[at.wave].strategy;
        let names: Vec<&str> = plan
            .one_box_hosts(at.env, at.region, strategy)
            .into_iter()
            .flatten()
            .map(|h| plan.host_name(at.env, HostId(h)))
            .collect();
        self.emit(EventKind::OneBoxDeployed, Some(at.release), at.scope(), Some(names.join(", ")));
        let bake = strategy.one_box.as_ref().map_or(strategy.bake, |o| o.bake);
        let why = format!("one-box bake: {}", describe_bake(&bake));
        self.emit(EventKind::BakeStarted, Some(at.release), at.scope(), Some(why));
        let clock = BakeClock::start(self.now, &bake);
        let judged = strategy.one_box.as_ref().is_some_and(|o| o.judge);
        Phase::OneBoxBake(if judged { clock.judged() } else { clock })
    }

    /// A bake that is still waiting says what it waits for once, which is kept in the
    /// phase; that counts as a move.
    fn bake_one_box(&mut self, at: RegionAt, mut clock: BakeClock) -> Option<Phase> {
        if clock.done(self.now) {
            self.emit(EventKind::BakeCompleted, Some(at.release), at.scope(), None);
            return Some(Phase::ZoneEntering { zone: 0 });
        }
        let waiting = clock.newly_waiting(self.now)?;
        self.emit(EventKind::Blocked, Some(at.release), at.scope(), Some(format!("one-box bake {waiting}")));
        Some(Phase::OneBoxBake(clock))
    }

    fn enter_zone(&mut self, at: RegionAt, zone: u32) -> Option<Phase> {
        let scope = self.zone_scope(at, zone);
        if let Err(why) = self.step_gate(at.stage, at.region, Some(self.zone_id(at, zone)), &[]) {
            self.report_blocked(at, scope, why);
            return None;
        }
        self.emit(EventKind::ZoneStarted, Some(at.release), scope, None);
        Some(Phase::ZoneReady { zone })
    }

    /// Deploys the zone's next batch: hosts that still need the release and have not
    /// failed it, no more than the batch size and what the zone may lose. With none
    /// left, the zone is complete and bakes.
    fn deploy_batch(&mut self, at: RegionAt, zone: u32) -> Option<Phase> {
        let plan = Arc::clone(&self.plan);
        let strategy = &plan.manifest.stages[at.stage.idx()].waves[at.wave].strategy;
        let zone_id = self.zone_id(at, zone);
        let scope = self.zone_scope(at, zone);
        let zone_hosts = plan.zone_hosts(at.env, zone_id);
        let limit = strategy
            .rolling
            .batch
            .hosts_in(zone_hosts.len() as u32)
            .min(plan.env(at.env).zones[zone_id.idx()].max_out_of_service);
        let failed = &self.slots[at.stage.idx()][at.wave].active.as_ref()?.failed_hosts;
        let pending: Vec<HostId> =
            zone_hosts.map(HostId).filter(|&h| !failed.contains(&h) && self.lacks(at.env, h, at.release)).collect();
        if pending.is_empty() {
            self.emit(EventKind::ZoneCompleted, Some(at.release), scope, None);
            let bake = strategy.rolling.zone_bake;
            self.emit(EventKind::BakeStarted, Some(at.release), scope, Some(describe_bake(&bake)));
            return Some(Phase::ZoneBake { zone, bake: BakeClock::start(self.now, &bake) });
        }
        // A host still busy (a rollback of an earlier release, say) is waited for: the
        // zone is done only once every host runs the release.
        let batch: Vec<HostId> = pending.into_iter().filter(|&h| self.idle(at.env, h)).take(limit as usize).collect();
        if batch.is_empty() {
            return None;
        }
        if let Err(why) = self.step_gate(at.stage, at.region, Some(zone_id), &batch) {
            self.report_blocked(at, scope, why);
            return None;
        }
        if self.zone_busy[at.env.idx()][zone_id.idx()] > 0 {
            return None;
        }
        let remaining = batch.len() as u32;
        let kind = OpKind::Rollout { stage: at.stage, wave: at.wave };
        self.deploy(at.env, batch, at.release, kind, strategy.rolling.deploy_timeout);
        Some(Phase::ZoneDeploying { zone, remaining })
    }

    /// After its bake, the next zone of the region starts; after the last, the region is done.
    fn bake_zone(&mut self, at: RegionAt, zone: u32, mut clock: BakeClock) -> Option<Phase> {
        let scope = self.zone_scope(at, zone);
        if clock.done(self.now) {
            self.emit(EventKind::BakeCompleted, Some(at.release), scope, None);
            if zone + 1 < self.plan.region_zones(at.env, at.region).len() as u32 {
                return Some(Phase::ZoneEntering { zone: zone + 1 });
            }
            self.emit(EventKind::RegionCompleted, Some(at.release), at.scope(), None);
            return Some(Phase::Done);
        }
        let waiting = clock.newly_waiting(self.now)?;
        self.emit(EventKind::Blocked, Some(at.release), scope, Some(format!("zone bake {waiting}")));
        Some(Phase::ZoneBake { zone, bake: clock })
    }

    /// The `zone`th zone of the region.
    fn zone_id(&self, at: RegionAt, zone: u32) -> ZoneId {
        ZoneId(self.plan.region_zones(at.env, at.region).start + zone)
    }

    fn zone_scope(&self, at: RegionAt, zone: u32) -> EventScope {
        EventScope::Zone(at.stage, at.env, self.zone_id(at, zone))
    }

    /// Whether a host does not run `release` yet.
    fn lacks(&self, env: EnvId, host: HostId, release: ReleaseId) -> bool {
        self.hosts[env.idx()][host.idx()].version != release
    }

    /// Whether a host has no deployment in flight.
    fn idle(&self, env: EnvId, host: HostId) -> bool {
        self.hosts[env.idx()][host.idx()].op.is_none()
    }

    /// Says why a region waits, once for each reason.
    fn report_blocked(&mut self, at: RegionAt, scope: EventScope, why: String) {
        let Some(rollout) = self.slots[at.stage.idx()][at.wave].active.as_mut() else { return };
        let r = &mut rollout.regions[at.index];
        if r.blocked.as_ref() == Some(&why) {
            return;
        }
        r.blocked = Some(why.clone());
        self.emit(EventKind::Blocked, Some(at.release), scope, Some(why));
    }
}
