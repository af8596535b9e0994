//! Wire types of the HTTP/JSON API. Domain types never cross the wire: they are
//! converted to these at the edge, so the API can stay stable while the core changes.

use crate::metric::MetricRef;
use crate::vocab::{EventKind, Lane, Outcome, Purpose, Role, Track};
use serde::{Deserialize, Serialize};

/// Every error response: a stable `code`, a sentence for people, and details.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyService {
    /// The manifest's YAML text.
    pub manifest: String,
    /// The file name used in error locations.
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub stages: Vec<String>,
    pub hosts: usize,
    pub releases: usize,
    pub lead_time_s: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub service: String,
    pub stages: Vec<StageStatus>,
    pub environments: Vec<EnvironmentVersions>,
    pub releases: Vec<ReleaseView>,
    /// What waits and why, newest first per scope.
    pub blocked: Vec<BlockedView>,
    pub holds: Vec<String>,
    /// How delivery to each webhook has gone.
    #[serde(default)]
    pub notifications: Vec<NotificationStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NotificationStatus {
    /// What may be shown of the webhook: `scheme://host/…` of a literal URL, never its
    /// path or query; `env:NAME` or `file:PATH` for a reference read on the server.
    pub url: String,
    pub delivered: u64,
    pub failed_attempts: u64,
    /// Notifications given up on after every retry failed.
    pub given_up: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageStatus {
    pub name: String,
    pub environment: String,
    pub waves: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvironmentVersions {
    pub environment: String,
    /// (version, hosts running it)
    pub versions: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockedView {
    pub release: Option<String>,
    pub scope: String,
    pub reason: String,
    pub since: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateRelease {
    pub version: String,
    #[serde(default)]
    pub artifact: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    /// A flag release: the whole flagd document it ships (then no artifact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReleaseView {
    pub version: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_time_s: Option<i64>,
    pub reached: Vec<String>,
    pub rolled_back_scopes: Vec<String>,
    /// `stage/wave` it deploys in or waits at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `flags` for a flag release; left out for code.
    #[serde(default, skip_serializing_if = "Lane::is_code")]
    pub lane: Lane,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleaseDetail {
    #[serde(flatten)]
    pub release: ReleaseView,
    /// Hosts per version in every region, as `stage/region`.
    pub scopes: Vec<ScopeVersions>,
    pub events: Vec<EventView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScopeVersions {
    pub scope: String,
    pub versions: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ActionRequest {
    #[serde(default)]
    pub stage: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EventView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub t: String,
    pub service: String,
    pub kind: EventKind,
    pub release: Option<String>,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `hook` events: the tail of the hook's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page.
    pub next: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterHost {
    /// May be left out when exactly one service has this environment, region and zone.
    #[serde(default)]
    pub service: Option<String>,
    pub environment: String,
    pub host: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    /// Where the host's service answers (`host:port`), for routers.
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Desired {
    /// Increases with every deployment asked of the host; 0 when none was.
    pub command: u64,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `rollout` or `rollback`.
    pub purpose: Purpose,
    /// The flag set the host should serve, once a flag release has reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<DesiredFlags>,
    /// Whose signatures the artifact may carry, when the manifest names signing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<SignaturePolicy>,
}

/// The keys an artifact may be signed with (minisign, ed25519), and whether the
/// host's environment refuses an artifact without such a signature. The signature is
/// the minisign file beside the artifact: `ARTIFACT.minisig`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignaturePolicy {
    pub required: bool,
    pub keys: Vec<TrustedKey>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustedKey {
    /// The key's name in the manifest, for the reports.
    pub name: String,
    /// The minisign public key, in base64 (`RW…`, the second line of a `.pub` file).
    pub public_key: String,
}

/// The flag-set version a host should serve: fetched from
/// `GET /v1/services/{service}/flag-sets/{version}` and served on the host over OFREP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DesiredFlags {
    /// Increases with every flag deployment asked of the host; reported back with `lane: flags`.
    pub command: u64,
    pub version: String,
    pub purpose: Purpose,
}

/// The answer to a registration: which service and host slot the agent speaks for, and
/// what it should run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Registered {
    pub service: String,
    pub host: String,
    pub desired: Desired,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostReport {
    pub command: u64,
    pub ok: bool,
    #[serde(default)]
    pub reason: Option<String>,
    /// The lifecycle hooks that ran, in order.
    #[serde(default)]
    pub hooks: Vec<HookReport>,
    /// Which deployment `command` was: a flag set's, or (left out) code's.
    #[serde(default, skip_serializing_if = "Lane::is_code")]
    pub lane: Lane,
}

/// One lifecycle hook's run on a host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HookReport {
    /// A [`crate::HookStep`] from agents; `exec` for the server's own deploy command.
    /// Text, not the enum: reports are kept in the durable log, and every name a log
    /// holds must replay.
    pub name: String,
    /// None when it was killed (timeout) or never started.
    #[serde(default)]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The last 64 KiB of its output (stdout and stderr together).
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub timed_out: bool,
    pub ok: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CreateToken {
    /// A [`Role`]'s name. Text, so that an unknown one is refused with the list of roles.
    pub role: String,
    /// `[a-z0-9][a-z0-9._-]{0,63}`, unique; by default `ROLE-` and a few random letters.
    #[serde(default)]
    pub name: Option<String>,
    /// For `agent` tokens: `service/environment/host`.
    #[serde(default)]
    pub host: Option<String>,
    /// For `router` tokens: `service/environment/region`.
    #[serde(default)]
    pub region: Option<String>,
    /// Seconds until the token expires; never by default.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    pub role: Role,
    pub name: String,
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

/// A token as listed: never its secret nor its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    /// A [`Role`]'s name, as the store holds it.
    pub role: String,
    pub host: Option<String>,
    pub region: Option<String>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    /// Written in batches: it may lag a few seconds.
    pub last_used_ms: Option<i64>,
}

/// What `GET /v1/audit/verify` found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditVerdict {
    pub intact: bool,
    /// Rows checked, when intact.
    pub rows: usize,
    pub problem: Option<String>,
    /// Which database was read (without credentials).
    pub database: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Accepted {
    pub ok: bool,
}

/// This replica and the lease, for operators and failover tests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cluster {
    pub node: String,
    pub leader: bool,
    pub term: Option<i64>,
    pub lease_holder: Option<String>,
    pub lease_term: Option<i64>,
    pub applied_seq: i64,
}

/// The routing table of one service in one region, for `rollwave router`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Routes {
    /// Fixed for one release, so that a growing share never moves anyone back.
    pub salt: String,
    /// Share of requests for the canary track, in basis points (10000 = 100%).
    pub canary_share: u32,
    /// The release deploying in this region, if any: its hosts are the canary track.
    #[serde(default)]
    pub release: Option<String>,
    pub hosts: Vec<RouteHost>,
    /// Changes whenever the table may have: pass it as `after` to wait for the next one.
    pub generation: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RouteHost {
    pub host: String,
    pub address: String,
    pub version: String,
    pub track: Track,
    /// About to be (or being) deployed: no new requests.
    pub draining: bool,
}

/// Traffic seen since the last push, per host and version (from routers), and gauges
/// read on hosts (from agents).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricsPush {
    pub service: String,
    pub environment: String,
    #[serde(default)]
    pub samples: Vec<MetricSample>,
    /// Left out when empty, as routers' pushes (which carry no gauges) always did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gauges: Vec<GaugeSample>,
}

/// One reading of a [`crate::Gauge`] on one host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GaugeSample {
    /// The host's id.
    pub host: String,
    /// The version the host runs.
    pub version: String,
    /// A [`crate::Gauge`]'s name. Text, so that a push with an unknown gauge is refused
    /// with the index and name of the reading at fault.
    pub name: String,
    pub value: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricSample {
    /// The host's id, or the address the router knows it by.
    pub host: String,
    pub version: String,
    pub requests: u64,
    /// Responses with a 5xx status, or failed connections.
    pub errors: u64,
    /// Counts per bucket of [`crate::LATENCY_BOUNDS_MS`], plus one for slower.
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
}

/// A built-in metric over time, for `GET /v1/metrics`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricSeries {
    pub service: String,
    pub metric: MetricRef,
    /// `environment`, `environment/region`, `environment/region/zone` or a host.
    pub scope: String,
    pub version: Option<String>,
    /// (unix ms at the start of the 10 s bin, value); bins without traffic (or, for a
    /// gauge, without readings) are left out.
    pub points: Vec<(i64, f64)>,
}

/// The flag sets one region serves to what has no agent (functions, through
/// `rollwave relay`), for one service. While a flag release rolls out in the region, a
/// targeting key whose bucket (`murmur3_x86_32("{salt}:{key}") % 10000`, as the router's)
/// is below `canary_share` gets `canary`; every other key gets `stable`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RegionFlags {
    /// Fixed for one flag release, so that a growing share never moves a key back.
    pub salt: String,
    /// Share of targeting keys on `canary`, in basis points (10000 = 100%).
    pub canary_share: u32,
    /// The flag set the region has reached; absent until a flag release completes there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<FlagSetDocument>,
    /// The flag release rolling out in the region, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<FlagSetDocument>,
    /// Changes whenever the answer may have: pass it as `after` to wait for the next one.
    pub generation: i64,
}

/// One flag-set version with its flagd flag definition document (JSON).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlagSetDocument {
    pub version: String,
    /// The flagd document as released: `{"flags": {…}, "$evaluators": {…}}`.
    pub flags: serde_json::Value,
}

/// Flag evaluations counted since the last push, per flag, variant and flag-set version
/// (from relays and agents), like routers' traffic.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlagEvaluationsPush {
    pub service: String,
    pub environment: String,
    pub region: String,
    pub counts: Vec<FlagEvaluationCount>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlagEvaluationCount {
    pub flag: String,
    /// Absent for evaluations that ended in an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub version: String,
    pub count: u64,
}
