//! Queries on the bakes under way: where each stands and whose traffic counts towards
//! it, so that views report the engine's own progress instead of re-deriving its rules.

use super::Engine;
use super::state::{BakeClock, Phase};
use crate::engine::{EventScope, ReleaseId};
use crate::plan::ZoneId;
use jiff::Timestamp;

/// A bake under way, at the scope its `bake_started` event named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BakeProgress {
    pub release: ReleaseId,
    pub scope: EventScope,
    pub started: Timestamp,
    pub until: Timestamp,
    /// Data points it waits for (0: none), and those seen so far.
    pub need: u64,
    pub seen: u64,
}

impl Engine {
    /// Every bake under way: waves', one-boxes' and zones'.
    pub fn bakes(&self) -> Vec<BakeProgress> {
        let mut out = Vec::new();
        for (s, slots) in self.slots.iter().enumerate() {
            let stage = crate::plan::StageId(s as u16);
            let env = self.plan.stage_env(stage);
            for (w, slot) in slots.iter().enumerate() {
                let Some(rollout) = &slot.active else { continue };
                let progress = |scope, b: &BakeClock| BakeProgress {
                    release: rollout.release,
                    scope,
                    started: b.started,
                    until: b.until,
                    need: b.need,
                    seen: b.seen,
                };
                if let Some(b) = &rollout.bake {
                    out.push(progress(EventScope::Wave(stage, w), b));
                }
                for r in &rollout.regions {
                    match &r.phase {
                        Phase::OneBoxBake(b) => out.push(progress(EventScope::Region(stage, r.region), b)),
                        Phase::ZoneBake { zone, bake } => {
                            let zone = ZoneId(self.plan.region_zones(env, r.region).start + zone);
                            out.push(progress(EventScope::Zone(stage, env, zone), bake));
                        }
                        _ => {}
                    }
                }
            }
        }
        out
    }
}
