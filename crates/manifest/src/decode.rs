//! Decodes the manifest document into resolved [`Manifest`] values.
//!
//! Overridable settings (`one_box`, `rolling`, `bake`) are first read as *layers* whose
//! fields are all optional, one layer per level (wave, stage, `strategy`). A wave's
//! [`Strategy`] is then resolved field by field from the most specific layer that sets
//! each field, falling back to the defaults. Every resolved bake takes its
//! `min_datapoints` from the nearest layer that sets it for that bake, else from
//! `strategy.bake.min_datapoints`, else 0.

use crate::Location;
use crate::grammar;
use crate::keys;
use crate::yaml::{Decoder, Located, Mapping, Node, check_name, hint, is_null, suggest};
use jiff::tz::TimeZone;
use rollwave_core::alarm::{
    AlarmScope, AlarmSpec, CLOUDWATCH_TEMPLATES, CloudWatchMetric, Gauge, MetricRef, MonitorField, Threshold,
    TrafficMetric, TreatMissing,
};
use rollwave_core::judge::Direction;
use rollwave_core::manifest::{
    Bake, Environment, ExecSpec, ExecTemplate, FUNCTION_SLICES, Function, JUDGED_METRICS, JudgeMethod, JudgeSettings,
    JudgedMetric, Manifest, Monitor, Notification, NotificationFormat, NotifyOn, OneBox, PAGERDUTY_EVENTS_URL, Region,
    Rolling, SecretSource, SigningKey, Stage, Strategy, TestSpec, TrackAddresses, Wave, WebhookUrl, Zone,
};
use rollwave_core::share::{BasisPoints, BatchSize};
use rollwave_core::window::{BlockedDates, WeeklyWindow, Windows};
use std::collections::HashMap;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

const DEFAULT_WATCH: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_TEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_ALARM_PERIOD: Duration = MINUTE;
const DEFAULT_ONE_BOX_HOSTS: u32 = 1;
const DEFAULT_ONE_BOX_MAX_SHARE_BP: u32 = 1000;
const DEFAULT_ONE_BOX_BAKE: Duration = HOUR;
const DEFAULT_BATCH_BP: u32 = 3300;
const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The plan and the simulator hold a record per host, so a typo such as an extra few
/// zeros must not turn into billions of them.
const MAX_HOSTS_PER_ENVIRONMENT: u64 = 1_000_000;

/// A `bake` as written at one level: a duration sets only the time.
#[derive(Clone, Copy, Debug, Default)]
struct BakeLayer {
    time: Option<Duration>,
    min_datapoints: Option<u64>,
}

#[derive(Clone, Debug, Default)]
struct OneBoxLayer {
    hosts: Option<u32>,
    max_share: Option<BasisPoints>,
    bake: BakeLayer,
    judge: Option<bool>,
    judging: Option<JudgeSettings>,
}

#[derive(Clone, Debug)]
enum OneBoxSetting {
    /// `one_box: false`: no one-box here, whatever the levels above say.
    Off,
    /// `one_box: true` or a mapping: fields not set here come from the levels above,
    /// up to the nearest `false`.
    On(OneBoxLayer),
}

#[derive(Clone, Debug, Default)]
struct RollingLayer {
    batch: Option<BatchSize>,
    zone_bake: BakeLayer,
    max_failures: Option<u32>,
    /// Where `max_failures` is written, to report a tolerance no zone can reach.
    max_failures_at: Option<Location>,
    deploy_timeout: Option<Duration>,
    steps: Option<Vec<BasisPoints>>,
}

/// The overridable part of `strategy`, a stage or a wave.
#[derive(Clone, Debug, Default)]
struct StrategyLayer {
    one_box: Option<OneBoxSetting>,
    rolling: RollingLayer,
    bake: BakeLayer,
}

/// `windows` as written at one level: a list that is given replaces the one above.
#[derive(Clone, Debug, Default)]
struct WindowsLayer {
    allow: Option<Vec<WeeklyWindow>>,
    block: Option<Vec<BlockedDates>>,
}

impl WindowsLayer {
    fn over(self, top: &WindowsLayer) -> Windows {
        Windows {
            allow: self.allow.or_else(|| top.allow.clone()).unwrap_or_default(),
            block: self.block.or_else(|| top.block.clone()).unwrap_or_default(),
        }
    }
}

/// An environment with whether its region list could be read: when it could not,
/// references to its regions are not checked, to avoid reporting the same mistake twice.
struct DecodedEnvironment {
    environment: Environment,
    regions_known: bool,
    /// Where `require_signatures: true` is written, when it is.
    signatures_required_at: Option<Location>,
}

/// HTTP methods a monitor may send: those with a meaning for a health check.
pub const MONITOR_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A reference to a secret in the manifest, which only the server can resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretRef<'a> {
    /// `{ env: NAME }`
    Env(&'a str),
    /// `{ file: PATH }`
    File(&'a str),
}

/// What a secret reference stands for, and so what it must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretUse {
    /// A webhook's `url`: an `http(s)` URL.
    WebhookUrl,
    /// A `pagerduty` webhook's `routing_key`: the integration key of PagerDuty's Events API v2.
    RoutingKey,
    /// A webhook's `secret`: the key its POSTs are signed with.
    SigningKey,
}

/// Checks that a secret reference resolves where the manifest is applied; the error is
/// reported at the reference. [`no_secret_check`] accepts every reference.
pub type SecretCheck<'c> = &'c dyn Fn(SecretRef<'_>, SecretUse) -> Result<(), String>;

pub fn no_secret_check(_: SecretRef<'_>, _: SecretUse) -> Result<(), String> {
    Ok(())
}

/// What stages refer to.
struct Context<'a> {
    /// `None` when `environments` itself is missing or unreadable.
    environments: Option<&'a [DecodedEnvironment]>,
    strategy: &'a StrategyLayer,
    windows: &'a WindowsLayer,
}

pub fn manifest(d: &mut Decoder, root: &Node, secrets: SecretCheck<'_>) -> Option<Manifest> {
    let map = d.mapping(root, keys::MANIFEST)?;
    let service = d.required(&map, "service", Decoder::name);
    let environments = d.required(&map, "environments", environments);
    let strategy = d.optional(&map, "strategy", strategy).unwrap_or_default();
    let windows = d.optional(&map, "windows", windows).unwrap_or_default();
    let context = Context { environments: environments.as_deref(), strategy: &strategy, windows: &windows };
    let stages = d.required(&map, "stages", |d, node| stages(d, node, &context));
    let watch = d.optional(&map, "watch", Decoder::duration).unwrap_or(DEFAULT_WATCH);
    let notifications =
        d.optional(&map, "notifications", |d, n| d.list(n, |d, n| notification(d, n, secrets))).unwrap_or_default();
    let monitors = d.optional(&map, "monitors", monitors);
    let monitors_known = monitors.is_some() || map.get("monitors").is_none();
    let monitors = monitors.unwrap_or_default();
    // Whether any environment is functions; `None` when the environments could not be read.
    let functions = environments.as_ref().map(|envs| envs.iter().any(|e| e.environment.is_functions()));
    let alarms = d
        .optional(&map, "alarms", |d, n| alarms(d, n, monitors_known.then_some(monitors.as_slice()), functions))
        .unwrap_or_default();
    let signing_keys = d.optional(&map, "signing_keys", signing_keys).unwrap_or_default();
    if let Some(envs) = &environments {
        check_signature_requirements(d, &map, envs, &signing_keys);
    }
    let mut environments = environments?;
    if let (Some(stages), Some(at)) = (&stages, map.get("stages")) {
        lay_out_functions(d, at, &mut environments, stages);
    }
    Some(Manifest {
        service: service?,
        environments: environments.into_iter().map(|e| e.environment).collect(),
        stages: stages?,
        alarms,
        watch,
        notifications,
        monitors,
        signing_keys,
    })
}

/// `signing_keys: { NAME: RW… }`: minisign public keys, each checked to be one.
fn signing_keys(d: &mut Decoder, node: &Node) -> Option<Vec<SigningKey>> {
    let map = d.open_mapping(node)?;
    if map.is_empty() {
        d.error(map, "signing_keys names no key; name at least one (NAME: its minisign public key) or leave it out");
    }
    let mut keys: Vec<SigningKey> = Vec::new();
    for (name, value) in named_entries(d, &map, "signing key") {
        let Some(value) = value else { continue };
        let public_key = d.parsed(value, "a minisign public key", |text| {
            let text = text.trim();
            minisign_verify::PublicKey::from_base64(text).map(|_| text.to_owned()).map_err(|_| {
                "expected a minisign public key: the base64 line of its .pub file, RW followed by 54 characters \
                 (minisign -G writes one)"
                    .to_owned()
            })
        });
        let Some(public_key) = public_key else { continue };
        if let Some(same) = keys.iter().find(|k| k.public_key == public_key) {
            d.error(value, format!("signing key {name:?} is the same key as {:?}; name each key once", same.name));
            continue;
        }
        keys.push(SigningKey { name: name.to_owned(), public_key });
    }
    Some(keys)
}

/// An environment that requires signatures needs keys to check them against and agents
/// to check them: otherwise the requirement could not take effect.
fn check_signature_requirements(
    d: &mut Decoder,
    map: &Mapping<'_>,
    environments: &[DecodedEnvironment],
    keys: &[SigningKey],
) {
    for e in environments {
        let Some(at) = e.signatures_required_at else { continue };
        let name = &e.environment.name;
        let agentless = if e.environment.is_functions() {
            Some("is functions, which rollwave deploys itself")
        } else if e.environment.exec.is_some() {
            Some("deploys with exec commands, which run no agent")
        } else {
            None
        };
        if let Some(why) = agentless {
            d.error(
                at,
                format!("environment {name:?} {why}; agents check signatures, so nothing would check them here"),
            );
        } else if keys.is_empty() && map.get("signing_keys").is_none() {
            d.error(
                at,
                format!(
                    "environment {name:?} requires signatures but the manifest names no key to check them with; \
                     add signing_keys: {{ NAME: RW… }}"
                ),
            );
        }
    }
}

fn monitors(d: &mut Decoder, node: &Node) -> Option<Vec<Monitor>> {
    let mut names = HashMap::new();
    d.list(node, |d, item| monitor(d, item, &mut names))
}

fn monitor(d: &mut Decoder, node: &Node, names: &mut HashMap<String, Location>) -> Option<Monitor> {
    let map = d.mapping(node, keys::MONITOR)?;
    let name = unique_name(d, &map, names, "monitor name");
    let request = d.required(&map, "request", |d, n| {
        let r = d.mapping(n, keys::MONITOR_REQUEST)?;
        let method = d.optional(&r, "method", monitor_method).unwrap_or_else(|| "GET".to_owned());
        let path = d.required(&r, "path", |d, n| {
            d.parsed(n, "a path", |s| {
                if s.starts_with('/') { Ok(s.to_owned()) } else { Err(format!("a path starts with /, found {s:?}")) }
            })
        });
        let headers = d
            .optional(&r, "headers", |d, n| {
                let m = d.open_mapping(n)?;
                let entries = d.entries(&m);
                Some(entries.into_iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), d.string(v)?))).collect())
            })
            .unwrap_or_default();
        let body = d.optional(&r, "body", Decoder::string);
        Some((method, path?, headers, body))
    });
    let (status, body_contains, max_latency) = d
        .optional(&map, "expect", |d, n| {
            let e = d.mapping(n, keys::MONITOR_EXPECT)?;
            let status = d.optional(&e, "status", |d, n| {
                d.parsed(n, "an HTTP status", |s| match s.trim().parse::<u16>() {
                    Ok(v) if (100..=599).contains(&v) => Ok(v),
                    _ => Err(format!("expected an HTTP status from 100 to 599, found {s:?}")),
                })
            });
            Some((
                status.unwrap_or(200),
                d.optional(&e, "body_contains", Decoder::string),
                d.optional(&e, "max_latency", Decoder::positive_duration),
            ))
        })
        .unwrap_or((200, None, None));
    let every = d.optional(&map, "every", Decoder::positive_duration).unwrap_or(Duration::from_secs(60));
    let (method, path, headers, body) = request?;
    Some(Monitor { name: name?, method, path, headers, body, expect_status: status, body_contains, max_latency, every })
}

fn monitor_method(d: &mut Decoder, node: &Node) -> Option<String> {
    d.parsed(node, "an HTTP method such as GET", |s| {
        let upper = s.trim().to_ascii_uppercase();
        match MONITOR_METHODS.iter().find(|m| **m == upper) {
            Some(method) => Ok((*method).to_owned()),
            None => Err(format!("unknown HTTP method {s:?}{}", hint(&upper, MONITOR_METHODS.iter().copied()))),
        }
    })
}

/// The formats a webhook may take, by name; which fields go with which is checked in
/// [`notification`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum FormatName {
    Json,
    Slack,
    Teams,
    PagerDuty,
}

const FORMATS: &[(&str, FormatName)] = &[
    ("json", FormatName::Json),
    ("slack", FormatName::Slack),
    ("teams", FormatName::Teams),
    ("pagerduty", FormatName::PagerDuty),
];

fn notification(d: &mut Decoder, node: &Node, secrets: SecretCheck<'_>) -> Option<Notification> {
    let map = d.mapping(node, keys::NOTIFICATION)?;
    let format_name = d.optional(&map, "format", |d, n| d.one_of(n, "notification format", FORMATS));
    // A misspelt format is reported once, not again as fields that do not go with it.
    let format_known = format_name.is_some() || map.get("format").is_none();
    let format_name = format_name.unwrap_or(FormatName::Json);
    let read_url = |d: &mut Decoder, n: &Node| webhook_url(d, n, secrets);
    let url = if format_name == FormatName::PagerDuty || !format_known {
        let written = d.optional(&map, "url", read_url);
        written.or_else(|| map.get("url").is_none().then(pagerduty_events_url))
    } else {
        d.required(&map, "url", read_url)
    };
    let routing_key = if format_name == FormatName::PagerDuty {
        if map.key("routing_key").is_none() {
            d.error(
                map,
                "missing required key \"routing_key\" (the integration key of PagerDuty's Events API v2, \
                 { env: NAME } or { file: PATH }, required with `format: pagerduty`)",
            );
            None
        } else {
            d.required(&map, "routing_key", |d, n| secret_source(d, n, secrets, SecretUse::RoutingKey))
        }
    } else {
        if let Some(key) = map.key("routing_key").filter(|_| format_known) {
            let name = FORMATS.iter().find(|(_, f)| *f == format_name).map_or("json", |(n, _)| n);
            d.error(key, format!("`routing_key` goes with `format: pagerduty` only; this webhook's format is {name}"));
        }
        None
    };
    let signing_secret = d.optional(&map, "secret", |d, n| secret_source(d, n, secrets, SecretUse::SigningKey));
    let on = d
        .optional(&map, "on", |d, n| {
            let on = d.list(n, |d, item| d.one_of(item, "notification event", &NotifyOn::ALL))?;
            if on.is_empty() && d.sequence(n).is_some_and(<[Node]>::is_empty) {
                d.error(n, "a webhook that hears of nothing is never called; list events or leave out `on` for all");
            }
            Some(on)
        })
        .unwrap_or_else(|| NotifyOn::ALL.iter().map(|(_, v)| *v).collect());
    let blocked_after = d.optional(&map, "blocked_after", Decoder::duration).unwrap_or(Duration::from_secs(1800));
    if let Some(key) = map.key("blocked_after").filter(|_| !on.contains(&NotifyOn::Blocked) && !on.is_empty()) {
        d.error(key, "`blocked_after` has no effect: this webhook does not hear of `blocked`; add it to `on`");
    }
    let format = match format_name {
        FormatName::Json => NotificationFormat::Json,
        FormatName::Slack => NotificationFormat::Slack,
        FormatName::Teams => NotificationFormat::Teams,
        FormatName::PagerDuty => NotificationFormat::PagerDuty { routing_key: routing_key? },
    };
    Some(Notification { url: url?, format, on, blocked_after, signing_secret })
}

/// A `pagerduty` webhook's URL when none is written.
fn pagerduty_events_url() -> WebhookUrl {
    let url = PAGERDUTY_EVENTS_URL;
    // The constant is an https URL with a host, which `redacted_url` always accepts.
    let shown = redacted_url(url).unwrap_or_else(|_| url.to_owned());
    WebhookUrl::Literal { url: url.to_owned(), shown }
}

/// A literal `http(s)://` URL, or `{ env: NAME }` or `{ file: PATH }` resolved on the server.
fn webhook_url(d: &mut Decoder, node: &Node, secrets: SecretCheck<'_>) -> Option<WebhookUrl> {
    let Node::Mapping(_) = node else {
        return d.parsed(node, "a URL, { env: NAME } or { file: PATH }", literal_url);
    };
    Some(match secret_reference(d, node, secrets, SecretUse::WebhookUrl)? {
        SecretSource::Env(name) => WebhookUrl::Env(name),
        SecretSource::File(path) => WebhookUrl::File(path),
    })
}

/// A secret that is only ever read on the server: `{ env: NAME }` or `{ file: PATH }`.
/// A secret written out is refused without being quoted, since the error is shown too.
fn secret_source(d: &mut Decoder, node: &Node, secrets: SecretCheck<'_>, use_: SecretUse) -> Option<SecretSource> {
    if !matches!(node, Node::Mapping(_)) {
        d.error(
            node,
            "a secret is never written in the manifest, which anyone who can read the repository reads: \
             write { env: NAME } or { file: PATH }, read on the server",
        );
        return None;
    }
    secret_reference(d, node, secrets, use_)
}

/// `{ env: NAME }` or `{ file: PATH }`, checked by `secrets` as a reference for `use_`.
fn secret_reference(d: &mut Decoder, node: &Node, secrets: SecretCheck<'_>, use_: SecretUse) -> Option<SecretSource> {
    let map = d.mapping(node, keys::SECRET_REF)?;
    let (env, file) = (map.get("env"), map.get("file"));
    let (reference, at) = match (env, file) {
        (Some(at), None) => (SecretSource::Env(d.parsed(at, "a variable name", env_name)?), at),
        (None, Some(at)) => (SecretSource::File(d.parsed(at, "a file path", file_path)?), at),
        (None, None) if !map.is_empty() => return None, // Its keys are unknown: reported as such.
        _ => {
            d.error(map, "write exactly one of `{ env: NAME }` or `{ file: PATH }`");
            return None;
        }
    };
    let checked = match &reference {
        SecretSource::Env(name) => secrets(SecretRef::Env(name), use_),
        SecretSource::File(path) => secrets(SecretRef::File(path), use_),
    };
    if let Err(message) = checked {
        d.error(at, message);
        return None;
    }
    Some(reference)
}

/// A literal webhook URL and what reads may show of it.
fn literal_url(s: &str) -> Result<WebhookUrl, String> {
    let shown = redacted_url(s)?;
    Ok(WebhookUrl::Literal { url: s.to_owned(), shown })
}

/// `scheme://host[:port]/…` of an `http(s)` URL: the path, query and user information,
/// where webhook secrets live, left out. The error never quotes the URL past its host.
pub fn redacted_url(s: &str) -> Result<String, String> {
    const FORM: &str = "expected an http:// or https:// URL, or { env: NAME } or { file: PATH } read on the server";
    let uri: http::Uri = s.trim().parse().map_err(|_| format!("invalid URL: {FORM}"))?;
    let scheme = uri.scheme_str().filter(|s| matches!(*s, "http" | "https")).ok_or_else(|| FORM.to_owned())?;
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("the URL has no host: {FORM}"))?;
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{scheme}://{host}{port}/…"))
}

/// An environment variable's name: what a shell would accept.
fn env_name(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if well_formed && s.len() <= 256 {
        Ok(s.to_owned())
    } else {
        Err(format!("invalid environment variable name {s:?}: use letters, digits and _, not starting with a digit"))
    }
}

/// An absolute path on the server.
fn file_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains('\0') {
        Ok(s.to_owned())
    } else {
        Err(format!("expected an absolute path on the server, such as /run/secrets/slack-webhook, found {s:?}"))
    }
}

/// Records `name` as seen at `at`, or reports it as a duplicate of an earlier one.
fn check_unique(d: &mut Decoder, seen: &mut HashMap<String, Location>, what: &str, name: &str, at: &Node) {
    match seen.get(name) {
        Some(first) => d.error(at, format!("duplicate {what} {name:?}; the first is at {first}")),
        None => {
            seen.insert(name.to_owned(), at.location());
        }
    }
}

/// Reads the `name` key and checks it against the names already seen at this level.
fn unique_name(d: &mut Decoder, map: &Mapping<'_>, seen: &mut HashMap<String, Location>, what: &str) -> Option<String> {
    let name = d.required(map, "name", Decoder::name)?;
    if let Some(node) = map.get("name") {
        check_unique(d, seen, what, &name, node);
    }
    Some(name)
}

fn positive_u32(d: &mut Decoder, node: &Node) -> Option<u32> {
    match d.u32(node)? {
        0 => {
            d.error(node, "expected at least 1, found 0");
            None
        }
        n => Some(n),
    }
}

// ---------------------------------------------------------------------------------------
// Environments

fn environments(d: &mut Decoder, node: &Node) -> Option<Vec<DecodedEnvironment>> {
    let map = d.open_mapping(node)?;
    if map.is_empty() {
        d.error(
            map,
            "define at least one environment, e.g. `prod: { regions: { us-east-2: { zones: { use2-az1: 3 } } } }`",
        );
        return None;
    }
    let decoded =
        named_entries(d, &map, "environment").into_iter().map(|(name, value)| environment(d, name, value)).collect();
    Some(decoded)
}

/// The entries of a mapping from names to things, each name checked. A name without a
/// value is reported at the name but still listed, with `None`, so that references to it
/// resolve instead of being reported as well.
fn named_entries<'n>(d: &mut Decoder, map: &Mapping<'n>, what: &str) -> Vec<(&'n str, Option<&'n Node>)> {
    map.entries()
        .map(|(key, value)| {
            if let Err(message) = check_name(key.as_str()) {
                d.error(key, message);
            }
            if is_null(value) {
                d.error(key, format!("{what} {:?} has no value", key.as_str()));
                return (key.as_str(), None);
            }
            (key.as_str(), Some(value))
        })
        .collect()
}

fn map_has(node: Option<&Node>, key: &str) -> bool {
    matches!(node, Some(Node::Mapping(m)) if m.get(key).is_some())
}

fn environment(d: &mut Decoder, name: &str, node: Option<&Node>) -> DecodedEnvironment {
    let mut environment =
        Environment { name: name.to_owned(), regions: Vec::new(), exec: None, require_signatures: false };
    let Some(map) = node.and_then(|node| d.mapping(node, keys::ENVIRONMENT)) else {
        return DecodedEnvironment { environment, regions_known: false, signatures_required_at: None };
    };
    environment.require_signatures = d.optional(&map, "require_signatures", Decoder::bool).unwrap_or(false);
    let signatures_required_at =
        map.get("require_signatures").filter(|_| environment.require_signatures).map(Located::location);
    environment.exec = d.optional(&map, "exec", |d, n| {
        let m = d.mapping(n, keys::EXEC)?;
        let deploy = d.required(&m, "deploy", exec_command);
        let rollback = d.optional(&m, "rollback", exec_command);
        let timeout = d.optional(&m, "timeout", Decoder::positive_duration).unwrap_or(Duration::from_secs(600));
        Some(ExecSpec { deploy: deploy?, rollback, timeout })
    });
    let Some(regions) = d.required(&map, "regions", Decoder::open_mapping) else {
        return DecodedEnvironment { environment, regions_known: false, signatures_required_at };
    };
    if regions.is_empty() {
        d.error(regions, format!("environment {name:?} needs at least one region"));
    }
    // Hosts are named `{zone}-{n}` across the whole environment, so zone names are
    // unique per environment, not just per region.
    let mut zones_seen = HashMap::new();
    let mut hosts_total: u64 = 0;
    let mut kinds: Option<(bool, &str)> = None;
    for (region_name, value) in named_entries(d, &regions, "region") {
        let region = region(d, region_name, value, &mut zones_seen, &mut hosts_total);
        let is_functions = map_has(value, "functions");
        match kinds {
            None => kinds = Some((is_functions, region_name)),
            Some((first, first_name)) if first != is_functions => {
                let (kind, other) = if first { ("functions", "hosts") } else { ("hosts", "functions") };
                d.error(
                    value.map_or_else(|| regions.location(), Located::location),
                    format!(
                        "region {region_name:?} is {other} but region {first_name:?} of environment {name:?} is \
                         {kind}; an environment is all hosts or all functions"
                    ),
                );
            }
            Some(_) => {}
        }
        environment.regions.push(region);
    }
    if let (Some((true, _)), Some(exec)) = (kinds, map.get("exec")) {
        d.error(exec, format!("environment {name:?} is functions, which rollwave deploys itself; `exec` is for hosts"));
    }
    DecodedEnvironment { environment, regions_known: true, signatures_required_at }
}

fn region(
    d: &mut Decoder,
    name: &str,
    node: Option<&Node>,
    zones_seen: &mut HashMap<String, Location>,
    hosts_total: &mut u64,
) -> Region {
    let mut region =
        Region { name: name.to_owned(), timezone: TimeZone::UTC, zones: Vec::new(), functions: Vec::new() };
    let Some(map) = node.and_then(|node| d.mapping(node, keys::REGION)) else {
        return region;
    };
    region.timezone = d.optional(&map, "timezone", timezone).unwrap_or(TimeZone::UTC);
    if let Some(functions_node) = map.get("functions") {
        if map.get("zones").is_some() {
            d.error(
                functions_node,
                format!("region {name:?} has both `zones` and `functions`; a region is hosts or functions, not both"),
            );
            return region;
        }
        region.functions = functions(d, functions_node).unwrap_or_default();
        // The zones of slices follow the steps of the wave that rolls the region out
        // (`function_zones`, once stages are read); until then, the default steps.
        region.zones = function_zones(name, &Rolling::default_steps());
        return region;
    }
    let Some(zones) = map.get("zones").and_then(|z| d.open_mapping(z)) else {
        if map.get("zones").is_none() {
            d.error(
                map,
                format!(
                    "region {name:?} needs `zones` (hosts), e.g. `zones: {{ {name}-az1: 3 }}`, or `functions`, \
                     e.g. `functions: [{{ name: checkout, alias: live }}]`"
                ),
            );
        }
        return region;
    };
    if zones.is_empty() {
        d.error(zones, format!("region {name:?} needs at least one zone, e.g. `zones: {{ {name}-az1: 3 }}`"));
    }
    for (key, value) in d.entries(&zones) {
        let zone_name = key.as_str();
        match check_name(zone_name) {
            Err(message) => d.error(key, message),
            Ok(()) => match zones_seen.get(zone_name) {
                Some(first) => d.error(
                    key,
                    format!(
                        "zone {zone_name:?} is already defined in this environment at {first}; \
                         hosts are named {{zone}}-{{n}}, so zone names must be unique in an environment"
                    ),
                ),
                None => {
                    zones_seen.insert(zone_name.to_owned(), key.location());
                }
            },
        }
        let Some(hosts) = d.u32(value) else { continue };
        if hosts == 0 {
            d.error(
                value,
                format!(
                    "zone {zone_name:?} has 0 hosts and would never be deployed; give it at least 1 or leave it out"
                ),
            );
            continue;
        }
        let before = *hosts_total;
        *hosts_total = before.saturating_add(u64::from(hosts));
        // Only the zone that crosses the limit is reported, once per environment.
        if before <= MAX_HOSTS_PER_ENVIRONMENT && *hosts_total > MAX_HOSTS_PER_ENVIRONMENT {
            d.error(
                value,
                format!("too many hosts: an environment may have at most {MAX_HOSTS_PER_ENVIRONMENT} in all its zones"),
            );
        }
        region.zones.push(Zone { name: zone_name.to_owned(), hosts });
    }
    region
}

/// A region's functions: each named once, with the alias its callers invoke.
fn functions(d: &mut Decoder, node: &Node) -> Option<Vec<Function>> {
    let items = d.sequence(node)?;
    if items.is_empty() {
        d.error(node, "list at least one function, e.g. `functions: [{ name: checkout, alias: live }]`");
        return None;
    }
    let mut seen: HashMap<String, Location> = HashMap::new();
    let mut functions = Vec::new();
    // The function that has `router`, if one has.
    let mut routed: Option<String> = None;
    for item in items {
        let Some(map) = d.mapping(item, keys::FUNCTION) else { continue };
        let name = d.required(&map, "name", |d, n| d.parsed(n, "a function name", lambda_function_name));
        let alias = d.required(&map, "alias", |d, n| d.parsed(n, "an alias name", lambda_alias_name));
        let queue = d.optional(&map, "queue", |d, n| d.parsed(n, "an SQS queue's ARN", sqs_queue_arn));
        let canary_alias = d
            .optional(&map, "canary_alias", |d, n| d.parsed(n, "an alias name", lambda_alias_name))
            .unwrap_or_else(|| "canary".to_owned());
        let router = d.optional(&map, "router", |d, n| {
            let m = d.mapping(n, keys::FUNCTION_ROUTER)?;
            let stable = d.required(&m, "stable", |d, n| d.parsed(n, "an address host:port", host_port));
            let canary = d.required(&m, "canary", |d, n| d.parsed(n, "an address host:port", host_port));
            Some(TrackAddresses { stable: stable?, canary: canary? })
        });
        if let (Some(_), Some(at)) = (&router, map.get("router")) {
            match &routed {
                Some(first) => d.error(
                    at,
                    format!("function {first:?} of this region already takes the router's traffic; a region's router fronts one function"),
                ),
                None => routed = name.clone(),
            }
        }
        let (Some(name), Some(alias)) = (name, alias) else { continue };
        if canary_alias == alias {
            let at = map.get("canary_alias").map_or_else(|| item.location(), Located::location);
            d.error(at, format!("the canary alias must differ from the alias {alias:?}; name it with `canary_alias`"));
            continue;
        }
        if let Some(first) = seen.get(&name) {
            d.error(item, format!("function {name:?} is already listed at {first}"));
            continue;
        }
        seen.insert(name.clone(), item.location());
        functions.push(Function { name, alias, queue, canary_alias, router });
    }
    Some(functions)
}

/// A Lambda function's name as its API takes it in a path: 1 to 64 letters, digits,
/// `-` and `_` (an ARN belongs in a release's artifact, not here).
fn lambda_function_name(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(s.to_owned()) } else { Err(format!("function name {s:?} must be 1 to 64 letters, digits, `-` or `_`")) }
}

/// `host:port`: a host name or IP address, and a port.
fn host_port(s: &str) -> Result<String, String> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    let ok = s.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok_and(|p| p > 0)
            && !host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    });
    if ok { Ok(s.to_owned()) } else { Err(format!("{s:?} is not an address host:port")) }
}

/// An SQS queue's ARN: `arn:PARTITION:sqs:REGION:ACCOUNT:NAME`.
fn sqs_queue_arn(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let name_ok = |n: &str| {
        (1..=80).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "sqs"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && name_ok(parts[5]);
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not an SQS queue's ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)"))
    }
}

/// A Lambda alias name: 1 to 128 letters, digits, `-` and `_`, not all digits (those
/// name versions).
fn lambda_alias_name(s: &str) -> Result<String, String> {
    let chars = (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !chars {
        return Err(format!("alias name {s:?} must be 1 to 128 letters, digits, `-` or `_`"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("alias name {s:?} is a version number; name the alias callers invoke, e.g. `live`"));
    }
    Ok(s.to_owned())
}

/// A region of functions as zones of slices: one zone per step, holding the slices that
/// step adds, named `{region}-share-{percent}`.
pub(crate) fn function_zones(region: &str, steps: &[BasisPoints]) -> Vec<Zone> {
    let mut before = 0;
    steps
        .iter()
        .map(|step| {
            let upto = step.of(FUNCTION_SLICES);
            let zone = Zone { name: format!("{region}-share-{}", upto), hosts: upto - before };
            before = upto;
            zone
        })
        .collect()
}

fn timezone(d: &mut Decoder, node: &Node) -> Option<TimeZone> {
    d.parsed(node, "a time zone name such as Europe/Dublin", |name| {
        TimeZone::get(name).map_err(|_| {
            let known: Vec<String> = jiff::tz::db().available().map(|n| n.as_str().to_owned()).collect();
            // `Dublin` for `Europe/Dublin` is a likelier slip than a typo in the whole name.
            let by_city =
                known.iter().find(|k| k.rsplit_once('/').is_some_and(|(_, city)| city.eq_ignore_ascii_case(name)));
            match by_city.map(String::as_str).or_else(|| suggest(name, known.iter().map(String::as_str))) {
                Some(near) => format!("unknown time zone {name:?}; did you mean {near:?}?"),
                None => {
                    format!("unknown time zone {name:?}; use an IANA name such as America/Chicago or Europe/Dublin")
                }
            }
        })
    })
}

// ---------------------------------------------------------------------------------------
// Strategy layers

fn strategy(d: &mut Decoder, node: &Node) -> Option<StrategyLayer> {
    let map = d.mapping(node, keys::STRATEGY)?;
    Some(strategy_layer(d, &map))
}

/// The `one_box`, `rolling` and `bake` keys of `strategy`, a stage or a wave.
fn strategy_layer(d: &mut Decoder, map: &Mapping<'_>) -> StrategyLayer {
    StrategyLayer {
        one_box: d.optional(map, "one_box", one_box),
        rolling: d.optional(map, "rolling", rolling).unwrap_or_default(),
        bake: d.optional(map, "bake", bake).unwrap_or_default(),
    }
}

fn bake(d: &mut Decoder, node: &Node) -> Option<BakeLayer> {
    if let Node::Mapping(_) = node {
        let map = d.mapping(node, keys::BAKE)?;
        return Some(BakeLayer {
            time: d.optional(&map, "time", Decoder::duration),
            min_datapoints: d.optional(&map, "min_datapoints", Decoder::u64),
        });
    }
    let time =
        d.parsed(node, "a duration such as 30m, or a mapping { time, min_datapoints }", crate::yaml::parse_duration)?;
    Some(BakeLayer { time: Some(time), min_datapoints: None })
}

fn one_box(d: &mut Decoder, node: &Node) -> Option<OneBoxSetting> {
    if let Node::Mapping(_) = node {
        let map = d.mapping(node, keys::ONE_BOX)?;
        let judged = d.optional(&map, "judge", judge);
        return Some(OneBoxSetting::On(OneBoxLayer {
            hosts: d.optional(&map, "hosts", positive_u32),
            max_share: d.optional(&map, "max_share", |d, n| {
                let share = d.share(n)?;
                if share.get() == 0 {
                    d.error(
                        n,
                        "a one-box of 0% of its region can never take a host; write more than 0%, or one_box: false",
                    );
                    return None;
                }
                Some(share)
            }),
            bake: d.optional(&map, "bake", bake).unwrap_or_default(),
            // `method: off` gives no verdict to wait for.
            judge: judged.as_ref().map(|j| j.as_ref().is_some_and(|s| s.method != JudgeMethod::Off)),
            judging: judged.flatten(),
        }));
    }
    d.parsed(node, "false, true or a mapping { hosts, max_share, bake }", |s| match s {
        "false" | "False" | "FALSE" => Ok(OneBoxSetting::Off),
        "true" | "True" | "TRUE" => Ok(OneBoxSetting::On(OneBoxLayer::default())),
        _ => Err(format!("expected false, true or a mapping {{ hosts, max_share, bake }}, found {s:?}")),
    })
}

/// `judge: true | false | { method, alpha, metrics, min_samples }`: whether the bake awaits
/// a pass, and (for a mapping, which awaits one unless its method is `off`) how the one-box
/// is judged. `Some(None)` is `false`.
fn judge(d: &mut Decoder, node: &Node) -> Option<Option<JudgeSettings>> {
    if let Node::Mapping(_) = node {
        let map = d.mapping(node, keys::JUDGE)?;
        let method = d
            .optional(&map, "method", |d, n| {
                d.parsed(n, "mann_whitney, sequential or off", |s| {
                    JudgeMethod::ALL
                        .into_iter()
                        .find(|m| m.as_str() == s)
                        .ok_or_else(|| format!("expected a judge method, mann_whitney, sequential or off, found {s:?}"))
                })
            })
            .unwrap_or_default();
        let defaults = JudgeSettings::defaults(method);
        let alpha = d.optional(&map, "alpha", |d, n| {
            let alpha = d.f64(n)?;
            if !(alpha > 0.0 && alpha <= 0.5) {
                d.error(n, format!("alpha {alpha} is outside (0, 0.5]: write a level such as 0.01"));
                return None;
            }
            Some(alpha)
        });
        let min_samples = d.optional(&map, "min_samples", |d, n| {
            let least = d.u64(n)?;
            if least == 0 {
                d.error(n, "min_samples 0 would pass a one-box that served nothing; write 1 or more");
                return None;
            }
            Some(least)
        });
        let metrics = d.optional(&map, "metrics", |d, n| judged_metrics(d, n, method));
        return Some(Some(JudgeSettings {
            method,
            alpha: alpha.unwrap_or(defaults.alpha),
            metrics: metrics.unwrap_or(defaults.metrics),
            min_samples: min_samples.unwrap_or(defaults.min_samples),
        }));
    }
    let on = d.bool(node)?;
    Some(on.then(JudgeSettings::default))
}

/// `metrics: [{ metric, direction, critical, allowed_increase }]`: at least one, each
/// metric at most once, each one the judge can compare per host.
fn judged_metrics(d: &mut Decoder, node: &Node, method: JudgeMethod) -> Option<Vec<JudgedMetric>> {
    let items = d.sequence(node)?;
    if items.is_empty() {
        d.error(node, "a judge with no metrics could never fail a one-box; list at least one, or write method: off");
        return None;
    }
    let mut seen: Vec<TrafficMetric> = Vec::new();
    let mut out = Vec::new();
    let mut failed = false;
    for item in items {
        match judged_metric(d, item, method) {
            Some(m) if seen.contains(&m.metric) => {
                d.error(item, format!("metric {} is listed twice; give each metric once", m.metric.as_str()));
                failed = true;
            }
            Some(m) => {
                seen.push(m.metric);
                out.push(m);
            }
            None => failed = true,
        }
    }
    (!failed).then_some(out)
}

fn judged_metric(d: &mut Decoder, node: &Node, method: JudgeMethod) -> Option<JudgedMetric> {
    let map = d.mapping(node, keys::JUDGE_METRIC)?;
    let metric = d.required(&map, "metric", |d, n| {
        let name = d.string(n)?;
        if let Some(m) = JUDGED_METRICS.into_iter().find(|m| m.as_str() == name) {
            return Some(m);
        }
        let names = JUDGED_METRICS.map(TrafficMetric::as_str);
        let why = if TrafficMetric::named(&name).is_some() || Gauge::named(&name).is_some() || name.contains(':') {
            format!("{name} is not measured per host from traffic, so the judge cannot tell the one-box from its baseline on it; watch it with an alarm")
        } else {
            format!("unknown metric {name:?}{}", hint(&name, names))
        };
        d.error(n, format!("{why}; the one-box judge compares {}", names.join(" and ")));
        None
    })?;
    let defaults = JudgedMetric::default_for(method, metric);
    let direction = d.optional(&map, "direction", |d, n| {
        let direction = d.one_of(
            n,
            "direction",
            &[("increase", Direction::Increase), ("decrease", Direction::Decrease), ("either", Direction::Either)],
        )?;
        if method != JudgeMethod::MannWhitney && direction != Direction::Increase {
            d.error(
                n,
                format!(
                    "the sequential judge tests for a rise only; a {} in {} is never what rolls a release back \
                     (method: mann_whitney compares both ways)",
                    direction.as_str(),
                    metric.as_str()
                ),
            );
            return None;
        }
        Some(direction)
    });
    let critical = d.optional(&map, "critical", Decoder::bool);
    let allowed_increase = d.optional(&map, "allowed_increase", |d, n| {
        let ratio = d.f64(n)?;
        if !(ratio.is_finite() && ratio >= 1.0) {
            d.error(
                n,
                format!("allowed_increase {ratio} is below 1: it is the canary-to-baseline ratio still counted as good, such as 1.25"),
            );
            return None;
        }
        Some(ratio)
    });
    let direction = match map.get("direction") {
        Some(_) => direction?,
        None => defaults.direction,
    };
    Some(JudgedMetric {
        metric,
        direction,
        critical: critical.unwrap_or(defaults.critical),
        allowed_increase: allowed_increase.unwrap_or(defaults.allowed_increase),
    })
}

fn rolling(d: &mut Decoder, node: &Node) -> Option<RollingLayer> {
    let map = d.mapping(node, keys::ROLLING)?;
    Some(RollingLayer {
        batch: d.optional(&map, "batch", |d, n| d.parsed(n, "a batch size such as 33% or 2", grammar::batch)),
        zone_bake: d.optional(&map, "zone_bake", bake).unwrap_or_default(),
        max_failures: d.optional(&map, "max_failures", Decoder::u32),
        max_failures_at: map.get("max_failures").map(Located::location),
        deploy_timeout: d.optional(&map, "deploy_timeout", Decoder::positive_duration),
        steps: d.optional(&map, "steps", steps),
    })
}

/// A functions rollout's steps: whole percentages, rising, the last 100 %.
fn steps(d: &mut Decoder, node: &Node) -> Option<Vec<BasisPoints>> {
    let items = d.sequence(node)?;
    if items.is_empty() {
        d.error(node, "list at least one step, e.g. `steps: [25%, 50%, 100%]`");
        return None;
    }
    let errors_before = d.errors().len();
    let mut steps: Vec<BasisPoints> = Vec::new();
    for item in items {
        let Some(step) = d.share(item) else { continue };
        if step == BasisPoints::ZERO || step.get() % 100 != 0 {
            d.error(
                item,
                format!("a step is a whole percentage above 0 (invocations move in 1 % slices), found {step}"),
            );
            continue;
        }
        if let Some(&last) = steps.last().filter(|&&last| step <= last) {
            d.error(item, format!("steps rise: {step} does not come after {last}"));
            continue;
        }
        steps.push(step);
    }
    if d.errors().len() != errors_before {
        return None;
    }
    if steps.last() != Some(&BasisPoints::FULL) {
        d.error(
            items.last().unwrap_or(node),
            "the last step is 100%: a rollout ends with every invocation on the new version",
        );
        return None;
    }
    Some(steps)
}

/// Where the `max_failures` that applies to a wave with these layers is written.
fn max_failures_at(layers: &[&StrategyLayer]) -> Option<Location> {
    layers.iter().find_map(|l| l.rolling.max_failures.and(l.rolling.max_failures_at))
}

/// A zone that never has more failed hosts than `max_failures` is never rolled back for
/// failed deployments: the tolerance would switch that safety off without saying so.
fn check_max_failures(d: &mut Decoder, env: &Environment, wave: &Wave, at: Option<Location>) {
    let tolerated = wave.strategy.rolling.max_failures;
    let Some(at) = at.filter(|_| tolerated > 0) else { return };
    let zones: Vec<String> = wave
        .regions
        .iter()
        .filter_map(|&r| env.regions.get(r))
        .flat_map(|r| &r.zones)
        .filter(|z| z.hosts <= tolerated)
        .map(|z| format!("{} ({} host(s))", z.name, z.hosts))
        .collect();
    if zones.is_empty() {
        return;
    }
    let message = format!(
        "max_failures: {tolerated} tolerates every host of zone(s) {} of wave {:?}, so a failed deployment \
         there would never roll the zone back; tolerate fewer failures than the zone has hosts",
        zones.join(", "),
        wave.name
    );
    d.error(at, message);
}

/// Resolves a wave's strategy from its layers, most specific first; the last layer is
/// the manifest's `strategy`.
fn resolve(layers: &[&StrategyLayer]) -> Strategy {
    fn nearest<T>(layers: &[&StrategyLayer], field: impl Fn(&StrategyLayer) -> Option<T>) -> Option<T> {
        layers.iter().find_map(|layer| field(layer))
    }
    let inherited_datapoints = layers.last().and_then(|s| s.bake.min_datapoints).unwrap_or(0);

    let bake = Bake {
        time: nearest(layers, |l| l.bake.time).unwrap_or(Duration::ZERO),
        min_datapoints: nearest(layers, |l| l.bake.min_datapoints).unwrap_or(inherited_datapoints),
    };
    let rolling = Rolling {
        batch: nearest(layers, |l| l.rolling.batch)
            .unwrap_or(BatchSize::Share(BasisPoints::new(DEFAULT_BATCH_BP).unwrap_or(BasisPoints::FULL))),
        zone_bake: Bake {
            time: nearest(layers, |l| l.rolling.zone_bake.time).unwrap_or(Duration::ZERO),
            min_datapoints: nearest(layers, |l| l.rolling.zone_bake.min_datapoints).unwrap_or(inherited_datapoints),
        },
        max_failures: nearest(layers, |l| l.rolling.max_failures).unwrap_or(0),
        deploy_timeout: nearest(layers, |l| l.rolling.deploy_timeout).unwrap_or(DEFAULT_DEPLOY_TIMEOUT),
        steps: nearest(layers, |l| l.rolling.steps.clone()).unwrap_or_else(Rolling::default_steps),
    };

    // The nearest `one_box` setting decides whether there is a one-box; its fields come
    // from the `On` layers down to the first `false` (what lies above a `false` is cut off).
    let one_box = match layers.iter().find_map(|l| l.one_box.as_ref()) {
        Some(OneBoxSetting::Off) => None,
        _ => {
            let on: Vec<&OneBoxLayer> = layers
                .iter()
                .map_while(|l| match &l.one_box {
                    Some(OneBoxSetting::Off) => None,
                    Some(OneBoxSetting::On(layer)) => Some(Some(layer)),
                    None => Some(None),
                })
                .flatten()
                .collect();
            Some(OneBox {
                hosts: on.iter().find_map(|o| o.hosts).unwrap_or(DEFAULT_ONE_BOX_HOSTS),
                max_share: on
                    .iter()
                    .find_map(|o| o.max_share)
                    .unwrap_or(BasisPoints::new(DEFAULT_ONE_BOX_MAX_SHARE_BP).unwrap_or(BasisPoints::FULL)),
                bake: Bake {
                    time: on.iter().find_map(|o| o.bake.time).unwrap_or(DEFAULT_ONE_BOX_BAKE),
                    min_datapoints: on.iter().find_map(|o| o.bake.min_datapoints).unwrap_or(inherited_datapoints),
                },
                judge: on.iter().find_map(|o| o.judge).unwrap_or(false),
                judging: on.iter().find_map(|o| o.judging.clone()).unwrap_or_default(),
            })
        }
    };
    Strategy { one_box, rolling, bake }
}

// ---------------------------------------------------------------------------------------
// Windows

fn windows(d: &mut Decoder, node: &Node) -> Option<WindowsLayer> {
    let map = d.mapping(node, keys::WINDOWS)?;
    Some(WindowsLayer {
        allow: d.optional(&map, "allow", |d, n| {
            d.list(n, |d, item| d.parsed(item, "a window such as \"Mon-Fri 09:00-17:00\"", grammar::weekly_window))
        }),
        block: d.optional(&map, "block", |d, n| {
            d.list(n, |d, item| {
                d.parsed(
                    item,
                    "a date such as 2026-12-24 or a period such as 2026-12-24/2026-12-26",
                    grammar::blocked_dates,
                )
            })
        }),
    })
}

// ---------------------------------------------------------------------------------------
// Stages and waves

fn stages(d: &mut Decoder, node: &Node, context: &Context<'_>) -> Option<Vec<Stage>> {
    let items = d.sequence(node)?;
    if items.is_empty() {
        d.error(node, "define at least one stage, e.g. `- { name: prod, environment: prod }`");
        return None;
    }
    let mut names = HashMap::new();
    Some(items.iter().filter_map(|item| stage(d, item, context, &mut names)).collect())
}

fn stage(d: &mut Decoder, node: &Node, context: &Context<'_>, names: &mut HashMap<String, Location>) -> Option<Stage> {
    let map = d.mapping(node, keys::STAGE)?;
    let name = unique_name(d, &map, names, "stage name");
    let environment = d.required(&map, "environment", |d, n| environment_ref(d, n, context.environments));
    let approval = d.optional(&map, "approval", Decoder::bool).unwrap_or(false);
    let tests = d.optional(&map, "tests", tests).unwrap_or_default();
    let layer = strategy_layer(d, &map);
    let windows = d.optional(&map, "windows", windows).unwrap_or_default().over(context.windows);

    let env = environment.and_then(|i| context.environments?.get(i)).filter(|e| e.regions_known);
    let waves = match map.get("waves") {
        Some(node) => waves(d, node, env.map(|e| &e.environment), &layer, context.strategy),
        None => {
            let wave = Wave {
                name: "wave-1".to_owned(),
                regions: env.map(|e| (0..e.environment.regions.len()).collect()).unwrap_or_default(),
                strategy: resolve(&[&layer, context.strategy]),
            };
            if let Some(env) = env {
                check_max_failures(d, &env.environment, &wave, max_failures_at(&[&layer, context.strategy]));
            }
            Some(vec![wave])
        }
    };
    let mut waves = waves?;
    if env.is_some_and(|e| e.environment.is_functions()) {
        for wave in &mut waves {
            functions_wave(d, node, wave);
        }
    }
    Some(Stage { name: name?, environment: environment?, approval, tests, waves, windows })
}

/// A wave over regions of functions: each step is one batch of slices, and the one-box is
/// its share of slices (`one_box.hosts` counts hosts, which functions have none of).
fn functions_wave(d: &mut Decoder, stage: &Node, wave: &mut Wave) {
    let strategy = &mut wave.strategy;
    strategy.rolling.batch = BatchSize::Share(BasisPoints::FULL);
    // A step shifts every function's alias at once: it succeeds or fails as a whole.
    strategy.rolling.max_failures = 0;
    let first_step = strategy.rolling.steps.first().copied().unwrap_or(BasisPoints::FULL);
    if let Some(one_box) = &mut strategy.one_box {
        one_box.hosts = FUNCTION_SLICES;
        if one_box.max_share.of(FUNCTION_SLICES) == 0 || one_box.max_share.get() % 100 != 0 {
            d.error(
                stage,
                format!(
                    "wave {:?}: a functions one-box is a whole percentage of invocations (1 % slices), found \
                     one_box.max_share {}",
                    wave.name, one_box.max_share
                ),
            );
        } else if one_box.max_share >= first_step {
            d.error(
                stage,
                format!(
                    "wave {:?}: the one-box's share ({}) must be below the first step ({}), or the one-box \
                     would be the whole first step",
                    wave.name, one_box.max_share, first_step
                ),
            );
        }
    }
}

/// Cuts each region of functions into the zones of slices its wave's steps make. A region
/// two stages roll out with different steps is reported: its zones are one layout.
fn lay_out_functions(d: &mut Decoder, at: &Node, environments: &mut [DecodedEnvironment], stages: &[Stage]) {
    let mut laid_out: HashMap<(usize, usize), (&str, &[BasisPoints])> = HashMap::new();
    for stage in stages {
        let Some(env) = environments.get_mut(stage.environment) else { continue };
        if !env.environment.is_functions() {
            continue;
        }
        for wave in &stage.waves {
            let steps = wave.strategy.rolling.steps.as_slice();
            for &r in &wave.regions {
                let Some(region) = env.environment.regions.get_mut(r) else { continue };
                match laid_out.get(&(stage.environment, r)) {
                    Some((other, theirs)) if *theirs != steps => d.error(
                        at,
                        format!(
                            "stages {other:?} and {:?} roll out region {:?} with different steps; give them \
                             the same `rolling.steps`",
                            stage.name, region.name
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        region.zones = function_zones(&region.name, steps);
                        laid_out.insert((stage.environment, r), (stage.name.as_str(), steps));
                    }
                }
            }
        }
    }
}

/// An environment named by a stage, as an index. Unchecked (`None`, no error) when the
/// environments could not be read: that error is already reported.
fn environment_ref(d: &mut Decoder, node: &Node, environments: Option<&[DecodedEnvironment]>) -> Option<usize> {
    let name = d.name(node)?;
    let environments = environments?;
    let found = environments.iter().position(|e| e.environment.name == name);
    if found.is_none() {
        let hint = hint(&name, environments.iter().map(|e| e.environment.name.as_str()));
        d.error(node, format!("environment {name:?} is not defined in `environments`{hint}"));
    }
    found
}

fn tests(d: &mut Decoder, node: &Node) -> Option<Vec<TestSpec>> {
    let mut names = HashMap::new();
    d.list(node, |d, item| {
        let map = d.mapping(item, keys::TEST)?;
        let name = unique_name(d, &map, &mut names, "test name");
        let run = d.required(&map, "run", Decoder::string);
        let timeout = d.optional(&map, "timeout", Decoder::positive_duration).unwrap_or(DEFAULT_TEST_TIMEOUT);
        Some(TestSpec { name: name?, run: run?, timeout })
    })
}

/// `environment` is `None` when the stage's environment is unknown; region names are
/// then read but not resolved.
fn waves(
    d: &mut Decoder,
    node: &Node,
    environment: Option<&Environment>,
    stage: &StrategyLayer,
    strategy: &StrategyLayer,
) -> Option<Vec<Wave>> {
    let items = d.sequence(node)?;
    if items.is_empty() {
        d.error(node, "define at least one wave, or leave out `waves` to deploy to every region in one wave");
        return None;
    }
    let mut names = HashMap::new();
    // Region index -> the wave that already deploys it.
    let mut taken: HashMap<usize, String> = HashMap::new();
    let mut waves = Vec::new();
    let errors_before = d.errors().len();
    for item in items {
        let Some(map) = d.mapping(item, keys::WAVE) else { continue };
        let name = unique_name(d, &map, &mut names, "wave name");
        let wave_label = name.clone().unwrap_or_else(|| "another wave".to_owned());
        let regions = d.required(&map, "regions", |d, n| region_refs(d, n, environment, &mut taken, &wave_label));
        let layer = strategy_layer(d, &map);
        let (Some(name), Some(regions)) = (name, regions) else { continue };
        let wave = Wave { name, regions, strategy: resolve(&[&layer, stage, strategy]) };
        if let Some(env) = environment {
            check_max_failures(d, env, &wave, max_failures_at(&[&layer, stage, strategy]));
        }
        waves.push(wave);
    }
    // A mistake in a region's name already explains why a region seems left out.
    if let Some(env) = environment.filter(|_| d.errors().len() == errors_before) {
        let left_out: Vec<&str> = env
            .regions
            .iter()
            .enumerate()
            .filter(|(i, _)| !taken.contains_key(i))
            .map(|(_, r)| r.name.as_str())
            .collect();
        if !left_out.is_empty() {
            d.error(
                node,
                format!(
                    "region(s) {} of environment {:?} are in no wave, so this stage would never deploy them; \
                     add them to a wave",
                    left_out.join(", "),
                    env.name
                ),
            );
        }
    }
    Some(waves)
}

fn region_refs(
    d: &mut Decoder,
    node: &Node,
    environment: Option<&Environment>,
    taken: &mut HashMap<usize, String>,
    wave: &str,
) -> Option<Vec<usize>> {
    let items = d.sequence(node)?;
    if items.is_empty() {
        d.error(node, "a wave needs at least one region");
        return None;
    }
    let mut regions = Vec::new();
    for item in items {
        let Some(name) = d.name(item) else { continue };
        let Some(env) = environment else { continue };
        let Some(index) = env.regions.iter().position(|r| r.name == name) else {
            let hint = hint(&name, env.regions.iter().map(|r| r.name.as_str()));
            d.error(item, format!("region {name:?} is not in environment {:?}{hint}", env.name));
            continue;
        };
        if let Some(other) = taken.get(&index) {
            let message = if other == wave {
                format!("region {name:?} is listed twice in this wave")
            } else {
                format!("region {name:?} is already in wave {other:?}; a region belongs to one wave of a stage")
            };
            d.error(item, message);
            continue;
        }
        taken.insert(index, wave.to_owned());
        regions.push(index);
    }
    Some(regions)
}

// ---------------------------------------------------------------------------------------
// Alarms

/// `monitors` is `None` when the manifest's monitors could not be read: references to
/// them are then not checked, that mistake is already reported.
fn alarms(
    d: &mut Decoder,
    node: &Node,
    monitors: Option<&[Monitor]>,
    functions: Option<bool>,
) -> Option<Vec<AlarmSpec>> {
    let mut names = HashMap::new();
    d.list(node, |d, item| alarm(d, item, &mut names, monitors, functions))
}

/// A metric rollwave measures itself, by its manifest spelling.
fn builtin_metric(d: &mut Decoder, node: &Node, monitors: Option<&[Monitor]>) -> Option<MetricRef> {
    let name = d.string(node)?;
    if let Some(m) = TrafficMetric::named(&name) {
        return Some(MetricRef::Traffic(m));
    }
    if let Some(g) = Gauge::named(&name) {
        return Some(MetricRef::Gauge(g));
    }
    if let Some(rest) = name.strip_prefix("monitor:") {
        return monitor_metric(d, node, rest, monitors?);
    }
    let mut known: Vec<String> = TrafficMetric::ALL.iter().map(|(n, _)| (*n).to_owned()).collect();
    known.extend(Gauge::ALL.iter().map(|(n, _)| (*n).to_owned()));
    for m in monitors.unwrap_or_default() {
        known.extend(MonitorField::ALL.iter().map(|(f, _)| format!("monitor:{}:{f}", m.name)));
    }
    let hint = hint(&name, known.iter().map(String::as_str));
    let own =
        if hint.starts_with("; did you mean") { "" } else { "; for a metric of your own, use source: prometheus" };
    d.error(node, format!("unknown metric {name:?}{hint}{own}"));
    None
}

/// `NAME:success_rate` or `NAME:latency_ms` of `monitor:NAME:FIELD`.
fn monitor_metric(d: &mut Decoder, node: &Node, rest: &str, monitors: &[Monitor]) -> Option<MetricRef> {
    let Some((name, field)) = rest.rsplit_once(':') else {
        d.error(node, format!("write monitor:NAME:success_rate or monitor:NAME:latency_ms, found \"monitor:{rest}\""));
        return None;
    };
    let Some(index) = monitors.iter().position(|m| m.name == name) else {
        let hint = hint(name, monitors.iter().map(|m| m.name.as_str()));
        d.error(node, format!("no monitor named {name:?} in `monitors`{hint}"));
        return None;
    };
    let Some(field) = MonitorField::named(field) else {
        let hint = hint(field, MonitorField::ALL.iter().map(|(f, _)| *f));
        d.error(node, format!("unknown monitor metric {field:?}{hint}"));
        return None;
    };
    Some(MetricRef::Monitor { index, name: name.to_owned(), field })
}

fn alarm(
    d: &mut Decoder,
    node: &Node,
    names: &mut HashMap<String, Location>,
    monitors: Option<&[Monitor]>,
    functions: Option<bool>,
) -> Option<AlarmSpec> {
    let map = d.mapping(node, keys::ALARM)?;
    let name = unique_name(d, &map, names, "alarm name");
    let scope = d
        .optional(&map, "scope", |d, n| {
            let choices = AlarmScope::ALL.map(|s| (s.as_str(), s));
            d.one_of(n, "scope", &choices)
        })
        .unwrap_or(AlarmScope::Region);
    let threshold: Option<Threshold> =
        d.required(&map, "threshold", |d, n| d.parsed(n, "a threshold such as \"> 0.02\"", grammar::threshold));
    let period = d.optional(&map, "period", Decoder::positive_duration).unwrap_or(DEFAULT_ALARM_PERIOD);
    let (datapoints_to_alarm, evaluation_periods) = d
        .optional(&map, "datapoints", |d, n| d.parsed(n, "data points such as \"3 of 5\"", grammar::datapoints))
        .unwrap_or((1, 1));
    let missing = d
        .optional(&map, "missing", |d, n| {
            d.one_of(
                n,
                "missing-data treatment",
                &[
                    ("missing", TreatMissing::Missing),
                    ("notBreaching", TreatMissing::NotBreaching),
                    ("not_breaching", TreatMissing::NotBreaching),
                    ("breaching", TreatMissing::Breaching),
                    ("ignore", TreatMissing::Ignore),
                ],
            )
        })
        .unwrap_or_default();
    let source = d
        .optional(&map, "source", |d, n| {
            d.one_of(
                n,
                "metric source",
                &[("builtin", Source::Builtin), ("prometheus", Source::Prometheus), ("cloudwatch", Source::CloudWatch)],
            )
        })
        .unwrap_or(Source::Builtin);
    if source != Source::CloudWatch {
        for key in ["namespace", "dimensions", "statistic"] {
            if let Some(at) = map.key(key) {
                d.error(at, format!("{key:?} is only used with `source: cloudwatch`; set the source or remove it"));
            }
        }
    }
    let query = d.optional(&map, "query", Decoder::string);
    let metric = match (source, query) {
        (Source::Prometheus, Some(query)) => {
            d.required(&map, "metric", Decoder::string).map(|name| MetricRef::Prometheus { name, query })
        }
        (Source::Prometheus, None) => {
            d.error(map, "missing required key \"query\" (a PromQL query, required with `source: prometheus`)");
            None
        }
        (Source::CloudWatch, query) => {
            if let (Some(_), Some(key)) = (query, map.key("query")) {
                d.error(key, "\"query\" is only used with `source: prometheus`; CloudWatch takes metric, namespace, dimensions and statistic");
            }
            if let (Some(at), AlarmScope::Zone | AlarmScope::Host) = (map.get("scope"), scope) {
                d.error(
                    at,
                    "a CloudWatch alarm watches a region's functions: CloudWatch tells their versions apart, \
                     not the shares of a rollout's steps; use scope: region",
                );
            }
            if functions == Some(false)
                && let Some(at) = map.get("source")
            {
                d.error(
                    at,
                    "a CloudWatch alarm watches regions of functions, and no environment has functions; \
                     it could never fire",
                );
            }
            cloudwatch_metric(d, &map).map(MetricRef::CloudWatch)
        }
        (Source::Builtin, query) => {
            if let (Some(_), Some(key)) = (query, map.key("query")) {
                d.error(key, "\"query\" is only used with `source: prometheus`; set the source or remove the query");
            }
            d.required(&map, "metric", |d, n| builtin_metric(d, n, monitors))
        }
    };
    if let (Some(range), Some(threshold), Some(at)) =
        (metric.as_ref().and_then(MetricRef::range), threshold, map.get("threshold"))
        && let Err(message) = range.check(&threshold)
    {
        d.error(at, format!("{message}; this alarm could never do what it says"));
        return None;
    }
    Some(AlarmSpec {
        name: name?,
        metric: metric?,
        scope,
        threshold: threshold?,
        period,
        datapoints_to_alarm,
        evaluation_periods,
        missing,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Builtin,
    Prometheus,
    CloudWatch,
}

const CLOUDWATCH_STATISTICS: [&str; 5] = ["Sum", "Average", "Minimum", "Maximum", "SampleCount"];

/// `source: cloudwatch`: the metric's name, its namespace (default `AWS/Lambda`), its
/// dimensions (for `AWS/Lambda` by default the function, its alias and the version in
/// flight, so the alarm sees the new version alone) and the statistic (default `Sum`).
fn cloudwatch_metric(d: &mut Decoder, map: &Mapping<'_>) -> Option<CloudWatchMetric> {
    let name = d.required(map, "metric", |d, n| {
        d.parsed(n, "a CloudWatch metric name", |s| {
            if s.is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
                Err(format!("a CloudWatch metric name is 1 to 255 printable characters, found {s:?}"))
            } else {
                Ok(s.to_owned())
            }
        })
    });
    let namespace = d
        .optional(map, "namespace", |d, n| {
            d.parsed(n, "a CloudWatch namespace such as AWS/Lambda", |s| {
                let ok = !s.is_empty()
                    && s.len() <= 255
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_/#:".contains(&b));
                if ok { Ok(s.to_owned()) } else { Err(format!("{s:?} is not a CloudWatch namespace")) }
            })
        })
        .unwrap_or_else(|| "AWS/Lambda".to_owned());
    let dimensions = match map.get("dimensions") {
        Some(node) => cloudwatch_dimensions(d, node)?,
        None if namespace == "AWS/Lambda" => vec![
            ("FunctionName".to_owned(), "{{function}}".to_owned()),
            ("Resource".to_owned(), "{{function}}:{{alias}}".to_owned()),
            ("ExecutedVersion".to_owned(), "{{function_version}}".to_owned()),
        ],
        None => {
            d.error(map, "missing required key \"dimensions\" (required with a namespace other than AWS/Lambda)");
            return None;
        }
    };
    let statistic = d
        .optional(map, "statistic", |d, n| {
            d.parsed(n, "a statistic such as Sum or p99", |s| {
                let percentile =
                    s.strip_prefix('p').and_then(|p| p.parse::<f64>().ok()).is_some_and(|p| p > 0.0 && p < 100.0);
                if CLOUDWATCH_STATISTICS.contains(&s) || percentile {
                    Ok(s.to_owned())
                } else {
                    Err(format!(
                        "{s:?} is not a statistic; use one of {} or a percentile such as p99",
                        CLOUDWATCH_STATISTICS.join(", ")
                    ))
                }
            })
        })
        .unwrap_or_else(|| "Sum".to_owned());
    Some(CloudWatchMetric { namespace, name: name?, dimensions, statistic })
}

/// A CloudWatch metric's dimensions: at most 30, each value text whose every `{{name}}`
/// is one the server fills in.
fn cloudwatch_dimensions(d: &mut Decoder, node: &Node) -> Option<Vec<(String, String)>> {
    let map = d.open_mapping(node)?;
    let mut dimensions = Vec::new();
    let errors_before = d.errors().len();
    for (key, value) in d.entries(&map) {
        let Some(text) = d.string(value) else { continue };
        for template in templates(&text) {
            match template {
                Err(Unclosed) => d.error(value, "an unclosed `{{` in a dimension's value"),
                Ok(name) if !CLOUDWATCH_TEMPLATES.contains(&name) => d.error(
                    value,
                    format!(
                        "{{{{{name}}}}} is not filled in; a dimension may use {}",
                        CLOUDWATCH_TEMPLATES.map(|t| format!("{{{{{t}}}}}")).join(", ")
                    ),
                ),
                Ok(_) => {}
            }
        }
        dimensions.push((key.as_str().to_owned(), text));
    }
    if dimensions.len() > 30 {
        d.error(map, "CloudWatch takes at most 30 dimensions");
    }
    (d.errors().len() == errors_before).then_some(dimensions)
}

/// An `exec` command, whose every `{{name}}` must be a template the driver fills in: an
/// unknown one would reach the shell as literal text and do nothing it says.
fn exec_command(d: &mut Decoder, node: &Node) -> Option<String> {
    let command = d.string(node)?;
    let mut known = true;
    // An unclosed `{{` is the command's own text.
    for name in templates(&command).map_while(Result::ok) {
        if ExecTemplate::parse(name).is_none() {
            let names = ExecTemplate::ALL.map(ExecTemplate::name);
            let hint = suggest(name.trim(), names).map(|n| format!(" (did you mean {{{{{n}}}}}?)")).unwrap_or_default();
            d.error(
                node,
                format!(
                    "unknown template {{{{{name}}}}}{hint}; a command may use {}",
                    names.map(|n| format!("{{{{{n}}}}}")).join(", ")
                ),
            );
            known = false;
        }
    }
    known.then_some(command)
}

/// A `{{` with no `}}` after it.
struct Unclosed;

/// The names between `{{` and `}}` in `text`, in order; an unclosed `{{` ends the scan.
fn templates(text: &str) -> impl Iterator<Item = Result<&str, Unclosed>> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let after = &rest?[rest?.find("{{")? + 2..];
        match after.find("}}") {
            Some(end) => {
                rest = Some(&after[end + 2..]);
                Some(Ok(&after[..end]))
            }
            None => {
                rest = None;
                Some(Err(Unclosed))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_read_in_order_and_an_unclosed_one_ends_the_scan() {
        let names = |text| templates(text).map(|t| t.map_err(|Unclosed| "unclosed")).collect::<Vec<_>>();
        assert_eq!(names("./ship {{zone}} {{ host }}x{{}}"), [Ok("zone"), Ok(" host "), Ok("")]);
        assert_eq!(names("a {{zone}} {{oops"), [Ok("zone"), Err("unclosed")]);
        assert_eq!(names("no templates }} here"), Vec::<Result<&str, &str>>::new());
    }
}
