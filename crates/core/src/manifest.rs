//! A pipeline manifest after parsing: every reference resolved to an index, every
//! default and override applied. Code holding a [`Manifest`] never re-checks it.

use crate::alarm::{AlarmSpec, TrafficMetric};
use crate::judge::Direction;
use crate::share::{BasisPoints, BatchSize};
use crate::window::Windows;
use jiff::tz::TimeZone;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Manifest {
    pub service: String,
    pub environments: Vec<Environment>,
    pub stages: Vec<Stage>,
    pub alarms: Vec<AlarmSpec>,
    /// After a release finishes in a scope, alarms there are still attributed to it for this long.
    pub watch: Duration,
    /// Webhooks told about what people need to know.
    pub notifications: Vec<Notification>,
    /// Synthetic requests the server sends, day and night, so quiet places have data too.
    pub monitors: Vec<Monitor>,
    /// The keys artifacts may be signed with; agents check signatures against them.
    pub signing_keys: Vec<SigningKey>,
}

/// A minisign (ed25519) public key artifacts may be signed with, by its manifest name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub name: String,
    /// Base64, as the second line of minisign's `.pub` file (`RW…`); checked when decoded.
    pub public_key: String,
}

/// A synthetic monitor: a request and what its answer must be. Its results are the
/// metrics `monitor:NAME:success_rate` and `monitor:NAME:latency_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Monitor {
    pub name: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub expect_status: u16,
    pub body_contains: Option<String>,
    pub max_latency: Option<Duration>,
    pub every: Duration,
}

/// A webhook: which happenings it hears of, and in what form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub url: WebhookUrl,
    pub format: NotificationFormat,
    pub on: Vec<NotifyOn>,
    /// For [`NotifyOn::Blocked`]: how long a step must have been blocked.
    pub blocked_after: Duration,
    /// The key each POST is signed with (`x-rollwave-signature`), if any.
    pub signing_secret: Option<SecretSource>,
}

/// A secret read on the server when it is used: never written in a manifest, which anyone
/// who can read the repository reads. It holds only the reference, so it shows nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// This environment variable of the server.
    Env(String),
    /// This file on the server, surrounding whitespace trimmed.
    File(String),
}

impl SecretSource {
    /// What reads may show: the reference, `env:NAME` or `file:PATH`.
    pub fn shown(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("env:{name}"),
            SecretSource::File(path) => format!("file:{path}"),
        }
    }
}

/// Where PagerDuty's Events API v2 takes events: a `pagerduty` webhook's URL when its
/// `url` is left out.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Where a webhook's URL comes from. A webhook URL often is its own secret (Slack's
/// carry it in the path), so what is shown of it is only ever [`WebhookUrl::shown`], `Debug` included.
#[derive(Clone, PartialEq, Eq)]
pub enum WebhookUrl {
    /// Written in the manifest. `shown` is its `scheme://host[:port]/…`, without the
    /// path, query or user information.
    Literal { url: String, shown: String },
    /// Read from this environment variable of the server when a notification is sent.
    Env(String),
    /// Read from this file on the server when a notification is sent (surrounding
    /// whitespace trimmed).
    File(String),
}

impl WebhookUrl {
    /// What reads may show of the URL: never the secret part.
    pub fn shown(&self) -> String {
        match self {
            WebhookUrl::Literal { shown, .. } => shown.clone(),
            WebhookUrl::Env(name) => format!("env:{name}"),
            WebhookUrl::File(path) => format!("file:{path}"),
        }
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookUrl({})", self.shown())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotificationFormat {
    /// `{service, event, release, scope, reason, t}`
    Json,
    /// `{"text": …}`, as Slack's incoming webhooks take it.
    Slack,
    /// A message with an Adaptive Card, as Microsoft Teams' incoming webhooks and
    /// Workflows take it.
    Teams,
    /// An event of PagerDuty's Events API v2 for the integration `routing_key` names:
    /// trouble triggers an alert, a completed release resolves it.
    PagerDuty { routing_key: SecretSource },
}

impl NotificationFormat {
    /// The format's name in a manifest.
    pub fn name(&self) -> &'static str {
        match self {
            NotificationFormat::Json => "json",
            NotificationFormat::Slack => "slack",
            NotificationFormat::Teams => "teams",
            NotificationFormat::PagerDuty { .. } => "pagerduty",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyOn {
    Halted,
    RolledBack,
    Completed,
    Blocked,
    RegressionSuspected,
}

impl NotifyOn {
    pub const ALL: [(&'static str, NotifyOn); 5] = [
        ("halted", NotifyOn::Halted),
        ("rolled_back", NotifyOn::RolledBack),
        ("completed", NotifyOn::Completed),
        ("blocked", NotifyOn::Blocked),
        ("regression_suspected", NotifyOn::RegressionSuspected),
    ];
}

#[derive(Clone, Debug)]
pub struct Environment {
    pub name: String,
    pub regions: Vec<Region>,
    /// Targets without an agent: commands the server runs to deploy and roll back.
    pub exec: Option<ExecSpec>,
    /// Whether agents here refuse an artifact not signed by one of the signing keys.
    pub require_signatures: bool,
}

/// What `{{name}}` can stand for in an `exec` command: each names a value that reaches
/// the command as an environment variable, never as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecTemplate {
    Service,
    Environment,
    Region,
    Zone,
    Host,
    Version,
    Artifact,
    Share,
}

impl ExecTemplate {
    pub const ALL: [ExecTemplate; 8] = [
        ExecTemplate::Service,
        ExecTemplate::Environment,
        ExecTemplate::Region,
        ExecTemplate::Zone,
        ExecTemplate::Host,
        ExecTemplate::Version,
        ExecTemplate::Artifact,
        ExecTemplate::Share,
    ];

    /// Its name between the braces.
    pub fn name(self) -> &'static str {
        match self {
            ExecTemplate::Service => "service",
            ExecTemplate::Environment => "environment",
            ExecTemplate::Region => "region",
            ExecTemplate::Zone => "zone",
            ExecTemplate::Host => "host",
            ExecTemplate::Version => "version",
            ExecTemplate::Artifact => "artifact",
            ExecTemplate::Share => "share",
        }
    }

    /// The environment variable that carries its value.
    pub fn variable(self) -> &'static str {
        match self {
            ExecTemplate::Service => "ROLLWAVE_SERVICE",
            ExecTemplate::Environment => "ROLLWAVE_ENVIRONMENT",
            ExecTemplate::Region => "ROLLWAVE_REGION",
            ExecTemplate::Zone => "ROLLWAVE_ZONE",
            ExecTemplate::Host => "ROLLWAVE_HOST",
            ExecTemplate::Version => "ROLLWAVE_VERSION",
            ExecTemplate::Artifact => "ROLLWAVE_ARTIFACT",
            ExecTemplate::Share => "ROLLWAVE_SHARE",
        }
    }

    pub fn parse(name: &str) -> Option<ExecTemplate> {
        ExecTemplate::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The template that `text` starts with, and its length.
    pub fn at_start(text: &str) -> Option<(ExecTemplate, usize)> {
        let rest = text.strip_prefix("{{")?;
        let (name, _) = rest.split_once("}}")?;
        Some((ExecTemplate::parse(name)?, name.len() + 4))
    }
}

/// Command templates for targets that have no agent (a function alias, a cluster
/// deployment, a fleet another tool manages). `{{service}}`, `{{environment}}`,
/// `{{region}}`, `{{zone}}`, `{{host}}`, `{{version}}`, `{{artifact}}` and `{{share}}`
/// (the percentage of the region on the new version once this step is done) stand for
/// environment variables (`ROLLWAVE_ARTIFACT`…) that carry the values: the text run is
/// the manifest's, never a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    pub deploy: String,
    /// Defaults to `deploy` with the older version.
    pub rollback: Option<String>,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Region {
    pub name: String,
    /// Windows are read in this zone's local time; UTC when the manifest names none.
    pub timezone: TimeZone,
    /// For a region of functions, its invocations cut into [`FUNCTION_SLICES`] slices of
    /// 1 %, one zone per step of the rollout (`{region}-share-{percent}`, holding the slices
    /// that step adds): the engine rolls slices out as it rolls out hosts, and the share of
    /// invocations the new version gets is the share of slices it has.
    pub zones: Vec<Zone>,
    /// The region's functions (empty for a region of hosts): each step of a rollout shifts
    /// every one of them.
    pub functions: Vec<Function>,
}

/// How many slices a region of functions is cut into: each is 1 % of its invocations.
pub const FUNCTION_SLICES: u32 = 100;

/// A function of the service, reached through one alias: what a step of a rollout changes
/// is the alias's routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub alias: String,
    /// The SQS queue (ARN) that triggers it: its messages on the canary track go to the
    /// canary alias, the rest to `alias`, through two filtered event source mappings.
    pub queue: Option<String>,
    /// With a queue or a router: the alias kept on the version in flight (default `canary`).
    pub canary_alias: String,
    /// Where `rollwave router` sends each track of this function's HTTP callers. With it
    /// the alias is not weighted: the router splits callers between the alias and the
    /// canary alias by the step's share, sticky per user.
    pub router: Option<TrackAddresses>,
}

/// The addresses (`host:port`, plain HTTP) that reach a function's alias and its canary
/// alias: e.g. a load balancer's listener per alias, or a proxy to each function URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackAddresses {
    pub stable: String,
    pub canary: String,
}

impl Region {
    pub fn is_functions(&self) -> bool {
        !self.functions.is_empty()
    }
}

impl Environment {
    /// Whether its regions are functions (a manifest never mixes functions and hosts in
    /// one environment).
    pub fn is_functions(&self) -> bool {
        self.regions.iter().any(Region::is_functions)
    }
}

#[derive(Clone, Debug)]
pub struct Zone {
    pub name: String,
    /// Hosts expected in the zone, named `{zone}-{n}` from 1.
    pub hosts: u32,
}

#[derive(Clone, Debug)]
pub struct Stage {
    pub name: String,
    /// Index into [`Manifest::environments`].
    pub environment: usize,
    /// A release enters the stage only after an `approve` command.
    pub approval: bool,
    pub tests: Vec<TestSpec>,
    /// Never empty: a stage without `waves` is one wave of all its regions.
    pub waves: Vec<Wave>,
    pub windows: Windows,
}

#[derive(Clone, Debug)]
pub struct Wave {
    pub name: String,
    /// Indexes into the stage environment's regions; rolled out in parallel.
    pub regions: Vec<usize>,
    pub strategy: Strategy,
}

/// How one wave rolls out in each of its regions, with all defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Strategy {
    pub one_box: Option<OneBox>,
    pub rolling: Rolling,
    /// The bake after every region of the wave has finished.
    pub bake: Bake,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OneBox {
    pub hosts: u32,
    /// The one-box never takes more than this share of its region.
    pub max_share: BasisPoints,
    pub bake: Bake,
    /// The bake ends only once the one-box judge has passed the one-box (fail closed:
    /// no verdict, no promotion). Without it only a failing verdict acts.
    pub judge: bool,
    /// How the one-box is judged.
    pub judging: JudgeSettings,
}

/// The one-box judge's method, its error bound, the metrics it compares and how much it
/// needs to see. [`JudgeSettings::defaults`] gives each method's settings when the manifest
/// names none.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeSettings {
    pub method: JudgeMethod,
    /// For [`JudgeMethod::Sequential`]: the bound on the chance that a release no worse
    /// than its baseline is ever judged failing during the bake.
    pub alpha: f64,
    /// The metrics compared, each at most once, in the manifest's order.
    pub metrics: Vec<JudgedMetric>,
    /// How much each side needs before the judge passes anything: requests for
    /// [`JudgeMethod::Sequential`] (a verdict with fewer is marginal), per-host data bins for
    /// [`JudgeMethod::MannWhitney`] (with fewer it gives no verdict).
    pub min_samples: u64,
}

/// The metrics the one-box judge can compare: both are measured per host from the traffic
/// routers push, so the one-box and its baseline can be told apart. (Gauges, monitors and
/// Prometheus queries are alarms' business: a monitor checks a scope, not a host.)
pub const JUDGED_METRICS: [TrafficMetric; 2] = [TrafficMetric::ErrorRate, TrafficMetric::LatencyP99Ms];

/// One metric the judge compares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JudgedMetric {
    /// One of [`JUDGED_METRICS`]. For the sequential judge `latency_p99_ms` is tested as
    /// the share of requests slower than each latency bound, the whole histogram.
    pub metric: TrafficMetric,
    /// The bad direction: the sequential judge tests a rise only.
    pub direction: Direction,
    /// A critical metric that fails fails the one-box (it is rolled back); a failing
    /// metric that is not critical lowers Kayenta's score, and holds the sequential
    /// judge's verdict at marginal (a judged one-box keeps baking until an operator acts).
    pub critical: bool,
    /// The ratio of canary to baseline that still counts as good: Kayenta's least effect
    /// size for a High; the sequential tests' allowed rate ratio.
    pub allowed_increase: f64,
}

impl JudgedMetric {
    /// How `method` judges `metric` unless the manifest says otherwise: the values every
    /// release was judged with before the manifest could say.
    pub fn default_for(method: JudgeMethod, metric: TrafficMetric) -> JudgedMetric {
        let (critical, allowed_increase) = match (method, metric) {
            (JudgeMethod::MannWhitney, TrafficMetric::ErrorRate) => (true, 1.5),
            (JudgeMethod::MannWhitney, _) => (false, 1.2),
            (_, TrafficMetric::ErrorRate) => (true, 1.0),
            (_, _) => (true, 1.25),
        };
        JudgedMetric { metric, direction: Direction::Increase, critical, allowed_increase }
    }
}

impl JudgeSettings {
    /// `method`'s settings with every default.
    pub fn defaults(method: JudgeMethod) -> JudgeSettings {
        JudgeSettings {
            method,
            alpha: 0.01,
            metrics: JUDGED_METRICS.map(|m| JudgedMetric::default_for(method, m)).to_vec(),
            min_samples: match method {
                JudgeMethod::MannWhitney => 3,
                JudgeMethod::Sequential | JudgeMethod::Off => 50,
            },
        }
    }
}

impl Default for JudgeSettings {
    fn default() -> Self {
        JudgeSettings::defaults(JudgeMethod::default())
    }
}

/// How the one-box judge decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JudgeMethod {
    /// Kayenta's fixed-sample Mann–Whitney test of per-bin values ([`crate::judge`]).
    MannWhitney,
    /// Anytime-valid sequential tests of error and slow-request rates
    /// ([`crate::sequential`]): the default, which `bench/judge/run.sh` measures as
    /// catching more, sooner, with no more false rollbacks.
    #[default]
    Sequential,
    /// No verdict at all: only alarms and monitors act on the one-box, and its bake never
    /// waits for a judge.
    Off,
}

impl JudgeMethod {
    pub const ALL: [JudgeMethod; 3] = [JudgeMethod::MannWhitney, JudgeMethod::Sequential, JudgeMethod::Off];

    /// The name the manifest gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeMethod::MannWhitney => "mann_whitney",
            JudgeMethod::Sequential => "sequential",
            JudgeMethod::Off => "off",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rolling {
    pub batch: BatchSize,
    /// Bake after each zone.
    pub zone_bake: Bake,
    /// Failed hosts a zone tolerates before it is rolled back; the default tolerates none.
    pub max_failures: u32,
    /// A host deployment that has not reported by then counts as failed.
    pub deploy_timeout: Duration,
    /// For regions of functions: the cumulative shares of invocations after each step,
    /// rising, the last 100 %. Each step is one zone of slices, rolled in one batch and
    /// baked with `zone_bake`. Regions of hosts roll zone by zone instead.
    pub steps: Vec<BasisPoints>,
}

impl Rolling {
    /// The steps of a functions rollout unless the manifest says otherwise: 25 %, 50 %, 100 %.
    pub fn default_steps() -> Vec<BasisPoints> {
        [2_500, 5_000, 10_000].into_iter().filter_map(BasisPoints::new).collect()
    }
}

/// A bake ends only when its time has passed **and** the new version has served
/// `min_datapoints` requests in the bake's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bake {
    pub time: Duration,
    pub min_datapoints: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSpec {
    pub name: String,
    pub run: String,
    pub timeout: Duration,
}

impl Manifest {
    pub fn stage_named(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    pub fn alarm_named(&self, name: &str) -> Option<usize> {
        self.alarms.iter().position(|a| a.name == name)
    }
}
