//! The words the processes exchange, each a closed set: event kinds, release outcomes,
//! alarm states, tracks, purposes, operator actions, roles, hook steps and the machine
//! parts of the control plane. Each serializes to the exact string the wire has always
//! carried (pinned by `tests/golden`), so code matches on variants and never on text.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Declares a closed vocabulary: the enum, its wire spelling per variant (for serde and
/// for [`as_str`](EventKind::as_str)), `ALL` in declaration order, `named` and `Display`.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($text),*].len()] = [$($name::$variant,)*];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The variant spelled `text` on the wire.
            pub fn named(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use vocabulary;

vocabulary! {
    /// What an event in a release's timeline says happened: the engine's event kinds,
    /// and `hook` for a lifecycle hook's run on a host.
    EventKind {
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
        /// A lifecycle hook ran on a host (the server's, not the engine's).
        Hook => "hook",
    }
}

impl From<rollwave_core::engine::EventKind> for EventKind {
    fn from(kind: rollwave_core::engine::EventKind) -> Self {
        use rollwave_core::engine::EventKind as Core;
        match kind {
            Core::ReleaseCreated => EventKind::ReleaseCreated,
            Core::Approved => EventKind::Approved,
            Core::StageEntered => EventKind::StageEntered,
            Core::WaveStarted => EventKind::WaveStarted,
            Core::RegionStarted => EventKind::RegionStarted,
            Core::OneBoxDeployed => EventKind::OneBoxDeployed,
            Core::BakeStarted => EventKind::BakeStarted,
            Core::BakeCompleted => EventKind::BakeCompleted,
            Core::ZoneStarted => EventKind::ZoneStarted,
            Core::BatchDeployed => EventKind::BatchDeployed,
            Core::ZoneCompleted => EventKind::ZoneCompleted,
            Core::RegionCompleted => EventKind::RegionCompleted,
            Core::WaveCompleted => EventKind::WaveCompleted,
            Core::StageCompleted => EventKind::StageCompleted,
            Core::ReleaseCompleted => EventKind::ReleaseCompleted,
            Core::TestStarted => EventKind::TestStarted,
            Core::TestPassed => EventKind::TestPassed,
            Core::TestFailed => EventKind::TestFailed,
            Core::Blocked => EventKind::Blocked,
            Core::AlarmFired => EventKind::AlarmFired,
            Core::AlarmCleared => EventKind::AlarmCleared,
            Core::RollbackStarted => EventKind::RollbackStarted,
            Core::RollbackCompleted => EventKind::RollbackCompleted,
            Core::ReleaseHalted => EventKind::ReleaseHalted,
            Core::ReleaseResumed => EventKind::ReleaseResumed,
            Core::ReleaseSuperseded => EventKind::ReleaseSuperseded,
            Core::ReleaseRolledBack => EventKind::ReleaseRolledBack,
            Core::HostFailed => EventKind::HostFailed,
            Core::RegressionSuspected => EventKind::RegressionSuspected,
            Core::JudgeVerdict => EventKind::JudgeVerdict,
            Core::Held => EventKind::Held,
            Core::Resumed => EventKind::Resumed,
        }
    }
}

impl EventKind {
    /// The engine's kind, for every kind but [`EventKind::Hook`] (which only the server
    /// records).
    pub fn to_core(self) -> Option<rollwave_core::engine::EventKind> {
        rollwave_core::engine::EventKind::ALL.iter().copied().find(|&k| EventKind::from(k) == self)
    }

    /// The kinds that end a release's run (until an operator acts).
    pub fn ends_release(self) -> bool {
        match self {
            EventKind::ReleaseCompleted
            | EventKind::ReleaseRolledBack
            | EventKind::ReleaseSuperseded
            | EventKind::ReleaseHalted => true,
            EventKind::ReleaseCreated
            | EventKind::Approved
            | EventKind::StageEntered
            | EventKind::WaveStarted
            | EventKind::RegionStarted
            | EventKind::OneBoxDeployed
            | EventKind::BakeStarted
            | EventKind::BakeCompleted
            | EventKind::ZoneStarted
            | EventKind::BatchDeployed
            | EventKind::ZoneCompleted
            | EventKind::RegionCompleted
            | EventKind::WaveCompleted
            | EventKind::StageCompleted
            | EventKind::TestStarted
            | EventKind::TestPassed
            | EventKind::TestFailed
            | EventKind::Blocked
            | EventKind::AlarmFired
            | EventKind::AlarmCleared
            | EventKind::RollbackStarted
            | EventKind::RollbackCompleted
            | EventKind::ReleaseResumed
            | EventKind::HostFailed
            | EventKind::RegressionSuspected
            | EventKind::JudgeVerdict
            | EventKind::Held
            | EventKind::Resumed
            | EventKind::Hook => false,
        }
    }
}

vocabulary! {
    /// Where a release stands.
    Outcome {
        InProgress => "in_progress",
        Halted => "halted",
        Completed => "completed",
        RolledBack => "rolled_back",
        Superseded => "superseded",
    }
}

impl Outcome {
    /// Nothing more happens to the release without an operator.
    pub fn is_settled(self) -> bool {
        match self {
            Outcome::InProgress => false,
            Outcome::Halted | Outcome::Completed | Outcome::RolledBack | Outcome::Superseded => true,
        }
    }
}

impl From<rollwave_core::engine::ReleaseStatus> for Outcome {
    fn from(status: rollwave_core::engine::ReleaseStatus) -> Self {
        use rollwave_core::engine::ReleaseStatus as Core;
        match status {
            Core::InProgress => Outcome::InProgress,
            Core::Halted => Outcome::Halted,
            Core::Completed => Outcome::Completed,
            Core::RolledBack => Outcome::RolledBack,
            Core::Superseded => Outcome::Superseded,
        }
    }
}

vocabulary! {
    /// An alarm's state, spelled as CloudWatch does.
    AlarmState {
        Ok => "OK",
        Alarm => "ALARM",
        InsufficientData => "INSUFFICIENT_DATA",
    }
}

impl From<rollwave_core::alarm::AlarmState> for AlarmState {
    fn from(state: rollwave_core::alarm::AlarmState) -> Self {
        use rollwave_core::alarm::AlarmState as Core;
        match state {
            Core::Ok => AlarmState::Ok,
            Core::Alarm => AlarmState::Alarm,
            Core::InsufficientData => AlarmState::InsufficientData,
        }
    }
}

impl From<AlarmState> for rollwave_core::alarm::AlarmState {
    fn from(state: AlarmState) -> Self {
        use rollwave_core::alarm::AlarmState as Core;
        match state {
            AlarmState::Ok => Core::Ok,
            AlarmState::Alarm => Core::Alarm,
            AlarmState::InsufficientData => Core::InsufficientData,
        }
    }
}

vocabulary! {
    /// Which side of a region's split a host serves: the release deploying there is the
    /// canary, the version before it the stable track.
    Track {
        Stable => "stable",
        Canary => "canary",
    }
}

impl Track {
    /// The other track: where a request goes when its own has no host to take it.
    pub fn other(self) -> Track {
        match self {
            Track::Stable => Track::Canary,
            Track::Canary => Track::Stable,
        }
    }
}

vocabulary! {
    /// What a release carries: code (an artifact hosts install) or a whole flag set (a
    /// flagd document hosts and relays serve). Each stage's wave holds at most one release
    /// of each lane, so a flag fix never waits behind a baking code release.
    Lane {
        Code => "code",
        Flags => "flags",
    }
}

impl Lane {
    /// Code is what every record meant before flag releases: it is left out of the wire.
    pub fn is_code(&self) -> bool {
        *self == Lane::Code
    }
}

// Written out: the enum's derives are the `vocabulary!` macro's, shared by every term.
#[allow(clippy::derivable_impls)]
impl Default for Lane {
    fn default() -> Self {
        Lane::Code
    }
}

vocabulary! {
    /// Why a deployment command runs.
    Purpose {
        /// Forward, to a newer version.
        Rollout => "rollout",
        /// Back, to the version a host ran before.
        Rollback => "rollback",
        /// A stage's test run (no hosts).
        Test => "test",
    }
}

impl From<rollwave_core::engine::Purpose> for Purpose {
    fn from(purpose: rollwave_core::engine::Purpose) -> Self {
        use rollwave_core::engine::Purpose as Core;
        match purpose {
            Core::Rollout => Purpose::Rollout,
            Core::Rollback => Purpose::Rollback,
        }
    }
}

vocabulary! {
    /// What an operator may ask of a release (the first four) or of a service's stages
    /// (`hold`, `resume`).
    OperatorAction {
        Approve => "approve",
        Rollback => "rollback",
        Retry => "retry",
        RollForward => "roll_forward",
        Hold => "hold",
        Resume => "resume",
    }
}

impl OperatorAction {
    /// The least role that may take the action.
    pub fn required_role(self) -> Role {
        match self {
            OperatorAction::Approve => Role::Approver,
            OperatorAction::Rollback
            | OperatorAction::Retry
            | OperatorAction::RollForward
            | OperatorAction::Hold
            | OperatorAction::Resume => Role::Deployer,
        }
    }

    /// Taken on one release (`POST …/releases/{version}/{action}`), rather than on a
    /// service's stages.
    pub fn is_release_action(self) -> bool {
        match self {
            OperatorAction::Approve
            | OperatorAction::Rollback
            | OperatorAction::Retry
            | OperatorAction::RollForward => true,
            OperatorAction::Hold | OperatorAction::Resume => false,
        }
    }

    /// The action a URL path segment names: `roll-forward` or `roll_forward`.
    pub fn from_path(segment: &str) -> Option<OperatorAction> {
        OperatorAction::named(&segment.replace('-', "_"))
    }
}

/// What a token may do. People's roles are ordered (each has the rights of the ones
/// before it); `agent` and `router` are machines with rights of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A host's agent: registers and reports for its host, pushes its gauges.
    Agent,
    /// A region's router: follows its region's table and pushes its traffic.
    Router,
    Viewer,
    Deployer,
    Approver,
    Admin,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::Viewer, Role::Deployer, Role::Approver, Role::Admin, Role::Agent, Role::Router];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Router => "router",
        }
    }

    /// Roles of people (ordered); the machine roles have none of their rights.
    pub fn is_person(self) -> bool {
        match self {
            Role::Viewer | Role::Deployer | Role::Approver | Role::Admin => true,
            Role::Agent | Role::Router => false,
        }
    }

    pub fn names() -> String {
        Role::ALL.map(Role::as_str).join(", ")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

vocabulary! {
    /// The steps of a deployment on a host that may run a lifecycle hook, in the order
    /// they run.
    HookStep {
        /// The previous release's `stop`, run from its own directory.
        Stop => "stop",
        BeforeInstall => "before_install",
        AfterInstall => "after_install",
        Start => "start",
        Validate => "validate",
    }
}

vocabulary! {
    /// The parts of the control plane that feed it inputs of their own.
    MachineComponent {
        /// Ticks, and hosts found lost.
        Clock => "clock",
        /// The deployment drivers' reports (exec, noop, stage tests).
        Driver => "driver",
        /// Alarm states and bake data from traffic, monitors and Prometheus.
        Signals => "signals",
        /// A host agent's report, where no token stands behind it.
        Agent => "agent",
    }
}

/// Who made an input, as the audit trail and logs name it: a machine part of the
/// control plane, or a token (by its id and name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    Machine(MachineComponent),
    Token { id: i64, name: String },
}

impl Actor {
    /// The audit's `actor` text: the component's name or the token's name.
    pub fn name(&self) -> &str {
        match self {
            Actor::Machine(m) => m.as_str(),
            Actor::Token { name, .. } => name,
        }
    }

    /// The audit's `token_id`.
    pub fn token_id(&self) -> Option<i64> {
        match self {
            Actor::Machine(_) => None,
            Actor::Token { id, .. } => Some(*id),
        }
    }
}
