//! What the engine remembers between inputs: releases, the slots they wait at or roll
//! out in, every region's phase, hosts and the jobs running on them.
//!
//! Each fact is kept in one place. A release's place is where its id is in the slots
//! (in one slot's queue, or as its rollout), never in a field of the release as well.

use super::{CommandId, EventScope, ReleaseId, ReleaseStatus};
use crate::manifest::Bake;
use crate::plan::{HostId, RegionId, StageId, ZoneId};
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// How many earlier versions a host remembers for rollbacks.
pub(super) const HOST_HISTORY: usize = 8;

pub(super) struct Release {
    pub(super) name: String,
    pub(super) created_at: Timestamp,
    pub(super) status: ReleaseStatus,
    pub(super) reason: Option<String>,
    pub(super) approvals: Vec<bool>,
    pub(super) reached: Vec<String>,
    pub(super) rolled_back_scopes: Vec<EventScope>,
    pub(super) completed_at: Option<Timestamp>,
    /// The last `blocked` reason reported at a gate, so it is reported once.
    pub(super) gate_blocked: Option<String>,
}

impl Release {
    pub(super) fn new(name: String, created_at: Timestamp, status: ReleaseStatus, approvals: Vec<bool>) -> Self {
        Release {
            name,
            created_at,
            status,
            reason: None,
            approvals,
            reached: Vec::new(),
            rolled_back_scopes: Vec::new(),
            completed_at: None,
            gate_blocked: None,
        }
    }

    /// Whether the release still has a rollout to finish, now or after an operator's word.
    pub(super) fn is_open(&self) -> bool {
        matches!(self.status, ReleaseStatus::InProgress | ReleaseStatus::Halted)
    }
}

/// One wave of one stage: the releases queued at its gate and the one rolling out in it.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) waiting: Vec<ReleaseId>,
    pub(super) active: Option<WaveRollout>,
}

pub(super) struct WaveRollout {
    pub(super) release: ReleaseId,
    pub(super) regions: Vec<RegionRollout>,
    /// The wave's own bake, once every region is done.
    pub(super) bake: Option<BakeClock>,
    pub(super) tests: TestsState,
    pub(super) zone_failures: BTreeMap<ZoneId, u32>,
    pub(super) failed_hosts: BTreeSet<HostId>,
}

impl WaveRollout {
    pub(super) fn new(release: ReleaseId, regions: impl IntoIterator<Item = RegionId>) -> Self {
        WaveRollout {
            release,
            regions: regions.into_iter().map(RegionRollout::new).collect(),
            bake: None,
            tests: TestsState::NotStarted,
            zone_failures: BTreeMap::new(),
            failed_hosts: BTreeSet::new(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TestsState {
    NotStarted,
    Running { pending: u32 },
    Passed,
    Failed,
}

pub(super) struct RegionRollout {
    pub(super) region: RegionId,
    pub(super) phase: Phase,
    /// The last `blocked` reason reported for the region, so it is reported once.
    pub(super) blocked: Option<String>,
}

impl RegionRollout {
    fn new(region: RegionId) -> Self {
        RegionRollout { region, phase: Phase::Pending, blocked: None }
    }
}

/// Where a region's rollout stands. `zone` counts the region's zones from 0, in the
/// order the manifest lists them.
#[derive(Clone, Copy)]
pub(super) enum Phase {
    /// Waits for the region's first gate.
    Pending,
    /// Waits to deploy the one-box: for its gate, or for a rollback in its zone to end.
    OneBoxReady,
    /// The one-box deployment runs on `remaining` hosts (at least one).
    OneBoxDeploying {
        remaining: u32,
    },
    /// Every one-box host has reported; the bake is next.
    OneBoxDeployed,
    OneBoxBake(BakeClock),
    /// Waits for the gate that starts zone `zone`.
    ZoneEntering {
        zone: u32,
    },
    /// Zone `zone` has started: its next batch goes out once the gate lets it.
    ZoneReady {
        zone: u32,
    },
    /// A batch runs on `remaining` hosts of zone `zone` (at least one).
    ZoneDeploying {
        zone: u32,
        remaining: u32,
    },
    /// Every host of the batch has reported.
    ZoneBatchDeployed {
        zone: u32,
    },
    ZoneBake {
        zone: u32,
        bake: BakeClock,
    },
    Done,
}

impl Phase {
    /// The phase after one host of the deployment in flight has reported.
    pub(super) fn host_reported(self) -> Phase {
        match self {
            Phase::OneBoxDeploying { remaining } if remaining > 1 => {
                Phase::OneBoxDeploying { remaining: remaining - 1 }
            }
            Phase::OneBoxDeploying { .. } => Phase::OneBoxDeployed,
            Phase::ZoneDeploying { zone, remaining } if remaining > 1 => {
                Phase::ZoneDeploying { zone, remaining: remaining - 1 }
            }
            Phase::ZoneDeploying { zone, .. } => Phase::ZoneBatchDeployed { zone },
            other => other,
        }
    }

    /// Whether the region has not yet baked its one-box to the end.
    pub(super) fn before_zones(self) -> bool {
        matches!(
            self,
            Phase::Pending
                | Phase::OneBoxReady
                | Phase::OneBoxDeploying { .. }
                | Phase::OneBoxDeployed
                | Phase::OneBoxBake(_)
        )
    }

    pub(super) fn is_done(self) -> bool {
        matches!(self, Phase::Done)
    }

    pub(super) fn bake(self) -> Option<BakeClock> {
        match self {
            Phase::OneBoxBake(b) | Phase::ZoneBake { bake: b, .. } => Some(b),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct BakeClock {
    pub(super) started: Timestamp,
    pub(super) until: Timestamp,
    pub(super) need: u64,
    pub(super) seen: u64,
    /// What the bake was last said to wait for, so each wait is said once.
    reported_waiting: Option<Waiting>,
    pub(super) judge: JudgeWait,
}

/// Whether a bake ends only on the one-box judge's word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum JudgeWait {
    NotJudged,
    AwaitingPass,
    Passed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    DataPoints,
    Judge,
}

impl BakeClock {
    pub(super) fn start(now: Timestamp, bake: &Bake) -> Self {
        let until = now.checked_add(bake.time).unwrap_or(Timestamp::MAX);
        BakeClock {
            started: now,
            until,
            need: bake.min_datapoints,
            seen: 0,
            reported_waiting: None,
            judge: JudgeWait::NotJudged,
        }
    }

    /// A one-box bake that also waits for a passing verdict.
    pub(super) fn judged(mut self) -> Self {
        self.judge = JudgeWait::AwaitingPass;
        self
    }

    pub(super) fn done(&self, now: Timestamp) -> bool {
        now >= self.until && self.seen >= self.need && self.judge != JudgeWait::AwaitingPass
    }

    /// What the bake still waits for once its time is up, said once per kind of wait.
    pub(super) fn newly_waiting(&mut self, now: Timestamp) -> Option<String> {
        if now < self.until {
            return None;
        }
        let (waiting, why) = if self.seen < self.need {
            (Waiting::DataPoints, format!("waiting for data points: {} of {}", self.seen, self.need))
        } else if self.judge == JudgeWait::AwaitingPass {
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
pub(super) struct HostState {
    pub(super) version: ReleaseId,
    /// Earlier versions, most recent last.
    pub(super) history: Vec<ReleaseId>,
    pub(super) op: Option<HostOp>,
    /// A rollback to run once the deployment in flight ends.
    pub(super) rollback_after: Option<u64>,
    /// Whether the host is there to deploy to: always, for fleets the engine is told
    /// about up front; once its agent registered (and until it is lost), otherwise.
    pub(super) present: bool,
    /// A deployment of this release failed on the host, which may have been left half
    /// changed: a rollback of the release includes it, to put it back in a known state.
    pub(super) failed_deploy: Option<ReleaseId>,
    /// When a rollback of the host last ended: an alarm on data from before then is that
    /// rolled-back release's, not the one that finished before it.
    pub(super) rolled_back_at: Option<Timestamp>,
}

impl HostState {
    pub(super) fn running(version: ReleaseId) -> Self {
        HostState {
            version,
            history: Vec::new(),
            op: None,
            rollback_after: None,
            present: true,
            failed_deploy: None,
            rolled_back_at: None,
        }
    }

    /// Whether the host runs `release`, is being deployed with it, or was left half
    /// changed by it: what a rollback of `release` must undo.
    pub(super) fn carries(&self, release: ReleaseId) -> bool {
        self.version == release
            || self.failed_deploy == Some(release)
            || self.rolling_out().is_some_and(|t| t == release)
    }

    /// The version a rollout in flight deploys to the host.
    pub(super) fn rolling_out(&self) -> Option<ReleaseId> {
        self.op.filter(|op| matches!(op.kind, OpKind::Rollout { .. })).map(|op| op.target)
    }

    /// Records a finished deployment of `op`.
    pub(super) fn record(&mut self, op: HostOp, succeeded: bool) {
        self.op = None;
        if !succeeded {
            if matches!(op.kind, OpKind::Rollout { .. }) {
                self.failed_deploy = Some(op.target);
            }
            return;
        }
        self.failed_deploy = None;
        match op.kind {
            OpKind::Rollout { .. } => {
                let old = std::mem::replace(&mut self.version, op.target);
                self.history.push(old);
                if self.history.len() > HOST_HISTORY {
                    self.history.remove(0);
                }
            }
            // Putting a failed host back on the version it has changes no history.
            OpKind::Rollback { .. } if op.target == self.version => {}
            OpKind::Rollback { .. } => {
                let keep = self.history.iter().rposition(|&v| v == op.target).unwrap_or(0);
                self.history.truncate(keep);
                self.version = op.target;
            }
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct HostOp {
    pub(super) command: CommandId,
    pub(super) target: ReleaseId,
    pub(super) deadline: Timestamp,
    pub(super) kind: OpKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Rollout { stage: StageId, wave: usize },
    Rollback { job: u64 },
}

pub(super) struct RollbackJob {
    pub(super) release: ReleaseId,
    /// Hosts return to their most recent version older than this one.
    pub(super) below: ReleaseId,
    pub(super) scope: EventScope,
    pub(super) remaining: u32,
}

pub(super) struct TestRun {
    pub(super) release: ReleaseId,
    pub(super) stage: StageId,
    pub(super) wave: usize,
    pub(super) test: usize,
    pub(super) deadline: Timestamp,
}
