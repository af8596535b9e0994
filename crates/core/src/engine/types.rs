//! What goes into the engine and what comes out of it.

use crate::alarm::AlarmState;
use crate::judge::Outcome;
use crate::plan::{EnvId, HostId, Plan, RegionId, StageId, ZoneId};
use jiff::Timestamp;
use std::fmt;
use std::time::Duration;

/// A release, and the version it carries. `ReleaseId(0)` is the version the fleet ran
/// before any release; later ids follow creation order, which is version order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseId(pub u32);

impl ReleaseId {
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

/// Every command carries one, so a driver that delivers a command twice, or a host that
/// reports twice, does no harm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(pub u64);

/// Where an alarm instance lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Environment(EnvId),
    Region(EnvId, RegionId),
    Zone(EnvId, ZoneId),
    Host(EnvId, HostId),
}

impl Scope {
    pub fn env(self) -> EnvId {
        match self {
            Scope::Environment(e) | Scope::Region(e, _) | Scope::Zone(e, _) | Scope::Host(e, _) => e,
        }
    }

    pub(crate) fn is_valid(self, plan: &Plan) -> bool {
        let Some(env) = plan.envs.get(self.env().idx()) else { return false };
        match self {
            Scope::Environment(_) => true,
            Scope::Region(_, r) => r.idx() < env.regions.len(),
            Scope::Zone(_, z) => z.idx() < env.zones.len(),
            Scope::Host(_, h) => h.idx() < env.hosts.len(),
        }
    }

    /// The same place, named through a stage deploying to its environment.
    pub fn in_stage(self, stage: StageId) -> EventScope {
        match self {
            Scope::Environment(e) => EventScope::Environment(stage, e),
            Scope::Region(_, r) => EventScope::Region(stage, r),
            Scope::Zone(e, z) => EventScope::Zone(stage, e, z),
            Scope::Host(e, h) => EventScope::Host(stage, e, h),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Time has passed: bakes may end, deployments may time out, windows may open.
    Tick,
    CreateRelease {
        version: String,
    },
    Operator(OperatorCommand),
    /// A host finished (or failed) the deployment `command` asked of it.
    HostReport {
        env: EnvId,
        host: HostId,
        command: CommandId,
        result: Result<(), String>,
    },
    TestReport {
        command: CommandId,
        result: Result<(), String>,
    },
    /// An alarm instance changed state. Instances never reported count as OK, so an
    /// observer reports INSUFFICIENT_DATA explicitly.
    Alarm {
        alarm: usize,
        scope: Scope,
        state: AlarmState,
        reason: String,
        /// Something this engine does not drive (another lane's release) is changing
        /// hosts where the alarm fired, or was just rolled back there: with nothing of
        /// this engine's in flight there, no release that finished there is suspected,
        /// since that change explains the alarm.
        explained_elsewhere: bool,
    },
    /// `requests` served by `version` in a zone since the last report: the data points bakes wait for.
    Served {
        env: EnvId,
        zone: ZoneId,
        version: ReleaseId,
        requests: u64,
    },
    /// A host's agent registered (see [`super::Engine::expect_hosts_to_join`]).
    HostJoined {
        env: EnvId,
        host: HostId,
    },
    /// A host stopped sending heartbeats: a deployment it was running fails.
    HostLost {
        env: EnvId,
        host: HostId,
    },
    /// The one-box judge's verdict on a region's one-box: a failing one rolls the
    /// one-box back exactly as an alarm would; a pass lets a judged one-box bake end; a
    /// marginal one keeps it baking.
    Verdict {
        env: EnvId,
        region: RegionId,
        release: ReleaseId,
        outcome: Outcome,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorCommand {
    /// Without a stage, approves every stage that needs it.
    Approve {
        release: ReleaseId,
        stage: Option<StageId>,
    },
    /// Every host running this release or a newer one returns to the last version before it;
    /// newer releases still in flight are cancelled.
    Rollback {
        release: ReleaseId,
    },
    /// Resumes a halted release, redeploying what was rolled back once its alarms are OK.
    Retry {
        release: ReleaseId,
    },
    /// Gives up on a halted release: the next newer one proceeds and fills its place.
    RollForward {
        release: ReleaseId,
    },
    /// Without a stage, holds the whole service.
    Hold {
        stage: Option<StageId>,
    },
    Resume {
        stage: Option<StageId>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError {
    EmptyVersion,
    DuplicateVersion(String),
    UnknownRelease(String),
    UnknownStage,
    UnknownHost,
    UnknownScope,
    UnknownAlarm(usize),
    NotAllowed(String),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::EmptyVersion => f.write_str("a release needs a version"),
            InputError::DuplicateVersion(v) => write!(f, "release {v} already exists"),
            InputError::UnknownRelease(v) => write!(f, "no release {v}"),
            InputError::UnknownStage => f.write_str("no such stage"),
            InputError::UnknownHost => f.write_str("no such host"),
            InputError::UnknownScope => f.write_str("no such scope"),
            InputError::UnknownAlarm(a) => write!(f, "no alarm #{a}"),
            InputError::NotAllowed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for InputError {}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Command(Command),
    Event(Event),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub id: CommandId,
    pub action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Rollout,
    Rollback,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Deploy `version` to each host; each host reports back with this command's id.
    Deploy { env: EnvId, hosts: Vec<HostId>, version: ReleaseId, purpose: Purpose, timeout: Duration },
    /// Run a stage's test against a release; report with this command's id.
    RunTest { release: ReleaseId, stage: StageId, test: usize, run: String, timeout: Duration },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub at: Timestamp,
    pub kind: EventKind,
    pub release: Option<ReleaseId>,
    pub scope: EventScope,
    pub reason: Option<String>,
}

/// Where an event happened, named through the stage it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventScope {
    Service,
    Stage(StageId),
    Wave(StageId, usize),
    Environment(StageId, EnvId),
    Region(StageId, RegionId),
    Zone(StageId, EnvId, ZoneId),
    Host(StageId, EnvId, HostId),
}

macro_rules! event_kinds {
    ($($variant:ident => $name:literal,)*) => {
        // Exhaustive on purpose: the wire's `EventKind` in `rollwave-api` maps every
        // variant, so a new kind fails to compile there until it has a wire spelling.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum EventKind {
            $($variant,)*
        }

        impl EventKind {
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }
        }
    };
}

event_kinds! {
    ReleaseCreated => "release_created",
    Approved => "approved",
    StageEntered => "stage_entered",
    WaveStarted => "wave_started",
    RegionStarted => "region_started",
    OneBoxDeployed => "one_box_deployed",
    BakeStarted => "bake_started",
    BakeCompleted => "bake_completed",
    ZoneStarted => "zone_started",
    BatchDeployed => "batch_deployed",
    ZoneCompleted => "zone_completed",
    RegionCompleted => "region_completed",
    WaveCompleted => "wave_completed",
    StageCompleted => "stage_completed",
    ReleaseCompleted => "release_completed",
    TestStarted => "test_started",
    TestPassed => "test_passed",
    TestFailed => "test_failed",
    Blocked => "blocked",
    AlarmFired => "alarm_fired",
    AlarmCleared => "alarm_cleared",
    RollbackStarted => "rollback_started",
    RollbackCompleted => "rollback_completed",
    ReleaseHalted => "release_halted",
    ReleaseResumed => "release_resumed",
    ReleaseSuperseded => "release_superseded",
    ReleaseRolledBack => "release_rolled_back",
    HostFailed => "host_failed",
    RegressionSuspected => "regression_suspected",
    JudgeVerdict => "judge_verdict",
    Held => "held",
    Resumed => "resumed",
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseStatus {
    InProgress,
    Halted,
    Completed,
    RolledBack,
    Superseded,
}

impl ReleaseStatus {
    /// The outcome names of `rollwave simulate --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::InProgress => "in_progress",
            ReleaseStatus::Halted => "halted",
            ReleaseStatus::Completed => "completed",
            ReleaseStatus::RolledBack => "rolled_back",
            ReleaseStatus::Superseded => "superseded",
        }
    }

    /// True when nothing more happens to the release without an operator.
    pub fn is_settled(self) -> bool {
        self != ReleaseStatus::InProgress
    }
}

#[derive(Clone, Debug)]
pub struct ReleaseSummary {
    pub id: ReleaseId,
    pub version: String,
    pub status: ReleaseStatus,
    /// Why it halted, was superseded or rolled back.
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// `stage/wave` for every wave finished, and `stage` for every stage finished.
    pub reached: Vec<String>,
    pub rolled_back_scopes: Vec<EventScope>,
    /// The slot it waits at or rolls out in; `None` once it is settled for good.
    pub place: Option<Place>,
}

/// Where an unfinished release is: queued at a wave's gate, or rolling out in the wave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Waiting {
        stage: StageId,
        wave: usize,
    },
    /// Deploying or baking; also while halted in the wave.
    Active {
        stage: StageId,
        wave: usize,
    },
}

impl Place {
    pub fn stage(self) -> StageId {
        match self {
            Place::Waiting { stage, .. } | Place::Active { stage, .. } => stage,
        }
    }

    pub fn wave(self) -> usize {
        match self {
            Place::Waiting { wave, .. } | Place::Active { wave, .. } => wave,
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Place::Active { .. })
    }
}

/// A one-box baking in a region now, for the judge.
#[derive(Clone, Debug, PartialEq)]
pub struct OneBoxBake {
    pub stage: StageId,
    pub env: EnvId,
    pub region: RegionId,
    pub release: ReleaseId,
    pub hosts: std::ops::Range<u32>,
    pub since: Timestamp,
    pub until: Timestamp,
    /// The bake waits for a passing verdict (its one-box is judged) and has none yet.
    pub awaiting_pass: bool,
    /// How its one-box is judged.
    pub judging: crate::manifest::JudgeSettings,
}
