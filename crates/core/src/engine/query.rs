//! What callers may ask the engine without changing it.

use super::state::Slot;
use super::{CommandId, Engine, EventScope, OneBoxBake, Place, ReleaseId, ReleaseSummary, Scope};
use crate::plan::{EnvId, HostId, Plan, StageId};
use jiff::Timestamp;
use std::sync::Arc;

impl Engine {
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Whether a host is there to deploy to (see [`Engine::expect_hosts_to_join`]).
    pub fn host_present(&self, env: EnvId, host: HostId) -> bool {
        self.hosts[env.idx()][host.idx()].present
    }

    pub fn release_named(&self, version: &str) -> Option<ReleaseId> {
        self.releases.iter().skip(1).position(|r| r.name == version).map(|i| ReleaseId(i as u32 + 1))
    }

    /// Every release (not the initial version) with its outcome so far.
    pub fn releases(&self) -> Vec<ReleaseSummary> {
        let places = self.places();
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
                place: places.get(i).copied().flatten(),
            })
            .collect()
    }

    /// Where a release is in the slots.
    pub(super) fn place(&self, release: ReleaseId) -> Option<Place> {
        self.slots_with_place().find_map(|((stage, wave), slot)| {
            if slot.active.as_ref().is_some_and(|a| a.release == release) {
                Some(Place::Active { stage, wave })
            } else if slot.waiting.contains(&release) {
                Some(Place::Waiting { stage, wave })
            } else {
                None
            }
        })
    }

    /// Every release's place, by release index, read from the slots in one pass.
    fn places(&self) -> Vec<Option<Place>> {
        let mut places = vec![None; self.releases.len()];
        for ((stage, wave), slot) in self.slots_with_place() {
            for r in &slot.waiting {
                places[r.idx()] = Some(Place::Waiting { stage, wave });
            }
            if let Some(active) = &slot.active {
                places[active.release.idx()] = Some(Place::Active { stage, wave });
            }
        }
        places
    }

    fn slots_with_place(&self) -> impl Iterator<Item = ((StageId, usize), &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .flat_map(|(s, waves)| waves.iter().enumerate().map(move |(w, slot)| ((StageId(s as u16), w), slot)))
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

    /// The next time at which the engine has something to do without any other input:
    /// a bake ending or a deployment timing out. Window openings are not included: a
    /// driver ticks at least every minute.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let bakes = self.slots.iter().flatten().filter_map(|slot| slot.active.as_ref()).flat_map(|rollout| {
            rollout
                .bake
                .iter()
                .map(|b| b.until)
                .chain(rollout.regions.iter().filter_map(|r| r.phase.bake()).map(|b| b.until))
        });
        let later = self.tests.values().map(|t| t.deadline).chain(bakes).filter(|&t| t > self.now).min();
        let host = self.deadlines.first().map(|d| d.0);
        match (host, later) {
            (Some(h), Some(l)) => Some(h.min(l)),
            (h, l) => h.or(l),
        }
    }

    /// Whether a release of this engine is deploying or baking in `scope`, on some host of
    /// it: what an alarm there would roll back.
    pub fn is_changing(&self, scope: Scope) -> bool {
        !self.in_flight_in(scope).is_empty()
    }

    /// Whether a host of `scope` was rolled back within the data alarm `alarm` looks at
    /// (its evaluation periods): that alarm then speaks of the rolled-back release.
    pub fn rolled_back_within(&self, scope: Scope, alarm: usize) -> bool {
        let Some(spec) = self.plan.manifest.alarms.get(alarm) else { return false };
        let window = spec.period.saturating_mul(spec.evaluation_periods.max(1));
        let since = self.now.checked_sub(window).unwrap_or(Timestamp::MIN);
        let env = scope.env();
        let regions: Vec<crate::plan::RegionId> =
            (0..self.plan.env(env).regions.len() as u16).map(crate::plan::RegionId).collect();
        self.hosts_in(scope, &regions)
            .any(|h| self.hosts[env.idx()][h.idx()].rolled_back_at.is_some_and(|at| at >= since))
    }

    /// What, in this engine, explains an alarm of `alarm` in `scope` other than a release
    /// that finished there: a release changing hosts there, or a rollback within the
    /// alarm's window.
    pub fn explains_alarm(&self, scope: Scope, alarm: usize) -> bool {
        self.is_changing(scope) || self.rolled_back_within(scope, alarm)
    }

    /// Every one-box baking now.
    pub fn one_box_bakes(&self) -> Vec<OneBoxBake> {
        let mut out = Vec::new();
        for ((stage, wave), slot) in self.slots_with_place() {
            let Some(rollout) = &slot.active else { continue };
            let env = self.plan.stage_env(stage);
            let strategy = &self.plan.manifest.stages[stage.idx()].waves[wave].strategy;
            for r in &rollout.regions {
                let super::state::Phase::OneBoxBake(clock) = r.phase else { continue };
                let Some(hosts) = self.plan.one_box_hosts(env, r.region, strategy) else { continue };
                out.push(OneBoxBake {
                    stage,
                    env,
                    region: r.region,
                    release: rollout.release,
                    hosts,
                    since: clock.started,
                    until: clock.until,
                    awaiting_pass: clock.judge == super::state::JudgeWait::AwaitingPass,
                    judging: strategy.one_box.as_ref().map(|o| o.judging.clone()).unwrap_or_default(),
                });
            }
        }
        out
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
