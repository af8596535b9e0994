//! Queries on the alarm instances the engine holds a rollout back for.

use super::Engine;
use crate::alarm::AlarmState;
use crate::engine::Scope;
use crate::plan::{EnvId, RegionId};

/// An alarm instance that is not OK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmInstance {
    /// The alarm's index in the manifest.
    pub alarm: usize,
    pub scope: Scope,
    pub state: AlarmState,
}

impl Engine {
    /// The alarm instances not OK that bear on a region: its environment's, its own, and
    /// those of its zones and hosts; the ones a step there can be gated on.
    pub fn alarms_in_region(&self, env: EnvId, region: RegionId) -> Vec<AlarmInstance> {
        let plan = &self.plan;
        let bears = |scope: Scope| match scope {
            Scope::Environment(e) => e == env,
            Scope::Region(e, r) => e == env && r == region,
            Scope::Zone(e, z) => e == env && plan.zone_region(e, z) == region,
            Scope::Host(e, h) => e == env && plan.zone_region(e, plan.host_zone(e, h)) == region,
        };
        self.not_ok
            .iter()
            .filter(|(scope, _)| bears(**scope))
            .flat_map(|(&scope, alarms)| {
                alarms.iter().map(move |(&alarm, &state)| AlarmInstance { alarm, scope, state })
            })
            .collect()
    }
}
