//! The durable log's format: what each row of the store's `log` table holds, and how it
//! is read back. Every replica replays the log into its read model, and a database written
//! by any earlier release must keep replaying, so this is a format like a wire format:
//! fields are added (with a default when absent), never renamed, retyped or dropped.
//!
//! A row is a [`LogRecord`]: its `kind` column names the [`RecordKind`], its `body`
//! column holds the record as one JSON object:
//!
//! - `input`: a [`LogInput`], what an engine was given, tagged by `"type"` (the
//!   variant's name in snake_case, [`LogInput::type_name`]). Replaying the inputs in order
//!   rebuilds every engine; they name things (services, hosts, stages), never index them.
//! - `event`: an [`EventView`] without `seq` (the row's own `seq` is its place), one of the
//!   engine's decisions on the input before it. Told to watchers, never replayed.
//! - `command`: a [`CommandView`], a deployment the engine asked of hosts. Handed to the
//!   driver when appended, never replayed.
//!
//! A batch of inputs is appended in one transaction; each input is followed by its events,
//! then its commands, all with the input's `at_ms` (Unix milliseconds).
//!
//! [`FORMAT_VERSION`] names the format. Version 1 is the format as the first release wrote
//! it (`tests/data/log-v0`, a session that reached some kinds of input) and as the release
//! at commit cb1fc35 wrote it (`tests/data/log-v1`, every record kind and input type): the
//! records both hold have the same shape. Fields marked `#[serde(default)]` may be absent
//! and are read with their default; an event's `reason` and `output` and a command's
//! `targets` and `test` are left out when empty. A field may be added that way within a
//! version; a change an earlier reader could not read takes a new version and a golden log
//! of its own. `tests/it/upgrade.rs` replays every golden log and writes each of its records
//! back, which must give the very bytes it was read from.

use crate::api::{EventView, HookReport};
use crate::release::{ArtifactUrl, FlagDocument, Sha256, Version};
use crate::state::CommandView;
use rollwave_api::Lane;
use rollwave_store::NewRecord;
use serde::{Deserialize, Serialize};

/// The version of the format this release writes.
pub const FORMAT_VERSION: u32 = 1;

/// An input as the log keeps it: names, not indexes, so it reads on its own.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogInput {
    ApplyManifest {
        file: String,
        text: String,
        /// Hosts (outside `exec` environments) are absent until their agent registers.
        #[serde(default)]
        agents: bool,
    },
    /// Its parts are parsed when the record is read, so a replayed log passes the same
    /// checks as a request.
    CreateRelease {
        version: Version,
        artifact: Option<ArtifactUrl>,
        sha256: Option<Sha256>,
        /// A flag release's flagd document (it then has no artifact).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<FlagDocument>,
    },
    Operator {
        action: rollwave_api::OperatorAction,
        release: Option<String>,
        stage: Option<String>,
    },
    /// An agent registered as `host` in a zone; it takes the slot of that name, or the
    /// first free one in the zone.
    RegisterHost {
        environment: String,
        host: String,
        region: String,
        zone: String,
        #[serde(default)]
        address: Option<String>,
    },
    HostReport {
        environment: String,
        host: String,
        command: u64,
        ok: bool,
        reason: Option<String>,
        #[serde(default)]
        hooks: Vec<HookReport>,
        /// Which of the host's deployments `command` was.
        #[serde(default, skip_serializing_if = "Lane::is_code")]
        lane: Lane,
    },
    /// No heartbeat for too long.
    HostLost {
        environment: String,
        host: String,
    },
    /// An alarm instance changed state. `scope` is `environment`, `environment/region`,
    /// `environment/region/zone` or `environment/host`, as the alarm's scope says.
    Alarm {
        alarm: String,
        scope: String,
        state: rollwave_api::AlarmState,
        reason: String,
    },
    /// The one-box judge's verdict on a region's one-box, with its per-metric table.
    Verdict {
        environment: String,
        region: String,
        release: String,
        passed: bool,
        /// Passed, but not clearly: a judged one-box keeps baking.
        #[serde(default)]
        marginal: bool,
        reason: String,
        /// The report as the judge printed it.
        table: String,
        /// The same report as data. Records written before it was added have only
        /// `table`, which is then taken apart by its columns.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report: Option<crate::records::VerdictReport>,
    },
    /// Requests a version served in a zone: the data points bakes wait for.
    Served {
        environment: String,
        zone: String,
        version: String,
        requests: u64,
        /// `flags` when `version` is a flag set the zone's hosts served.
        #[serde(default, skip_serializing_if = "Lane::is_code")]
        lane: Lane,
    },
    /// A stage's test ran against a release.
    TestReport {
        command: u64,
        ok: bool,
        reason: Option<String>,
        #[serde(default)]
        output: String,
        /// Which lane's release the test ran against.
        #[serde(default, skip_serializing_if = "Lane::is_code")]
        lane: Lane,
    },
    Tick,
}

impl LogInput {
    /// What the audit log calls it.
    pub fn action_name(&self) -> &str {
        match self {
            LogInput::ApplyManifest { .. } => "apply_manifest",
            LogInput::CreateRelease { .. } => "create_release",
            LogInput::Operator { action, .. } => action.as_str(),
            LogInput::HostReport { .. } => "host_report",
            LogInput::RegisterHost { .. } => "register_host",
            LogInput::HostLost { .. } => "host_lost",
            LogInput::Alarm { .. } => "alarm",
            LogInput::Served { .. } => "served",
            LogInput::TestReport { .. } => "test_report",
            LogInput::Verdict { .. } => "verdict",
            LogInput::Tick => "tick",
        }
    }
}

/// What a row of the log is: the value of its `kind` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKind {
    Input,
    Event,
    Command,
}

impl RecordKind {
    pub const ALL: [RecordKind; 3] = [RecordKind::Input, RecordKind::Event, RecordKind::Command];

    /// As the `kind` column holds it.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordKind::Input => "input",
            RecordKind::Event => "event",
            RecordKind::Command => "command",
        }
    }

    pub fn parse(kind: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record of the log, read.
#[derive(Clone, Debug, PartialEq)]
pub enum LogRecord {
    Input(LogInput),
    Event(EventView),
    Command(CommandView),
}

/// A row of the log that does not read as a record of this format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A `kind` this release does not know (a newer release's, or a damaged row).
    #[error("unknown record kind {0:?}")]
    UnknownKind(String),
    #[error("unreadable {kind} record: {error}")]
    Body { kind: RecordKind, error: serde_json::Error },
}

impl LogRecord {
    pub fn kind(&self) -> RecordKind {
        match self {
            LogRecord::Input(_) => RecordKind::Input,
            LogRecord::Event(_) => RecordKind::Event,
            LogRecord::Command(_) => RecordKind::Command,
        }
    }

    /// Reads a row's `kind` and `body`.
    pub fn read(kind: &str, body: &str) -> Result<LogRecord, FormatError> {
        let kind = RecordKind::parse(kind).ok_or_else(|| FormatError::UnknownKind(kind.to_owned()))?;
        let error = |error| FormatError::Body { kind, error };
        Ok(match kind {
            RecordKind::Input => LogRecord::Input(serde_json::from_str(body).map_err(error)?),
            RecordKind::Event => LogRecord::Event(serde_json::from_str(body).map_err(error)?),
            RecordKind::Command => LogRecord::Command(serde_json::from_str(body).map_err(error)?),
        })
    }

    /// The row's `body`.
    pub fn body(&self) -> Result<String, serde_json::Error> {
        match self {
            LogRecord::Input(input) => serde_json::to_string(input),
            LogRecord::Event(event) => serde_json::to_string(&event_body(event)),
            LogRecord::Command(command) => serde_json::to_string(command),
        }
    }
}

/// An event as the log keeps it: without `seq`, which is the row's own.
fn event_body(event: &EventView) -> std::borrow::Cow<'_, EventView> {
    if event.seq.is_none() {
        return std::borrow::Cow::Borrowed(event);
    }
    std::borrow::Cow::Owned(EventView { seq: None, ..event.clone() })
}

/// What a record of the log may be: each type is written under its own kind.
pub trait Recorded: Serialize {
    const KIND: RecordKind;
}

impl Recorded for LogInput {
    const KIND: RecordKind = RecordKind::Input;
}

impl Recorded for EventView {
    const KIND: RecordKind = RecordKind::Event;
}

impl Recorded for CommandView {
    const KIND: RecordKind = RecordKind::Command;
}

/// A row to append: `body` under its kind. (An event's `seq` is left out by its own
/// serialisation when unset, as it is before the event is appended.)
pub fn record<T: Recorded>(at_ms: i64, service: &str, body: &T) -> Result<NewRecord, serde_json::Error> {
    Ok(NewRecord {
        at_ms,
        service: service.to_owned(),
        kind: T::KIND.as_str().to_owned(),
        body: serde_json::to_string(body)?,
    })
}

impl LogInput {
    /// Every input's `"type"` in the log, as [`LogInput::type_name`] gives it.
    pub const TYPE_NAMES: [&'static str; 11] = [
        "apply_manifest",
        "create_release",
        "operator",
        "register_host",
        "host_report",
        "host_lost",
        "alarm",
        "verdict",
        "served",
        "test_report",
        "tick",
    ];

    /// Its `"type"` in the log.
    pub fn type_name(&self) -> &'static str {
        match self {
            LogInput::ApplyManifest { .. } => "apply_manifest",
            LogInput::CreateRelease { .. } => "create_release",
            LogInput::Operator { .. } => "operator",
            LogInput::RegisterHost { .. } => "register_host",
            LogInput::HostReport { .. } => "host_report",
            LogInput::HostLost { .. } => "host_lost",
            LogInput::Alarm { .. } => "alarm",
            LogInput::Verdict { .. } => "verdict",
            LogInput::Served { .. } => "served",
            LogInput::TestReport { .. } => "test_report",
            LogInput::Tick => "tick",
        }
    }
}
