//! Webhook notifications: a release halted, rolled back, completed, blocked too long, or
//! suspected of a regression. Sent by the leader, retried with backoff; how delivery goes
//! is part of the service's status.
//!
//! A webhook URL often is a secret. A manifest names it by reference (`{ env: NAME }`,
//! `{ file: PATH }`), resolved here each time a notification is sent, so that the URL is
//! never in the log and a rotated secret takes effect without applying the manifest
//! again; the reference is also checked when the manifest is applied. Reads only ever
//! show a webhook's [`WebhookUrl::shown`] form, errors included.
//!
//! Formats: rollwave's own JSON, Slack's `{"text"}`, a Microsoft Teams message with an
//! Adaptive Card, and PagerDuty's Events API v2 (trouble triggers an alert whose
//! `dedup_key` is `rollwave/SERVICE/RELEASE`, the release's completion resolves it). A
//! PagerDuty routing key and a webhook's signing key are secrets by reference too, read
//! at each delivery and never shown: not in reads, errors or log lines.
//!
//! Every POST carries `x-rollwave-delivery` (one id per notification, the same on each of
//! its retries, so that a receiver can tell a retry from a new notification) and
//! `x-rollwave-event` (what `on` calls the happening); with a `secret`, also
//! `x-rollwave-signature: sha256=HEX`, the HMAC-SHA256 of the exact body bytes under the
//! key, as GitHub signs its webhooks (`X-Hub-Signature-256`).

use crate::api::{EventKind, EventView, NotificationStatus};
use hmac::{KeyInit, Mac};
use rollwave_core::manifest::{Notification, NotificationFormat, NotifyOn, SecretSource, WebhookUrl};
use rollwave_manifest::{SecretRef, SecretUse};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts per notification: the first and four retries, 1 s, 2 s, 4 s and 8 s apart.
const ATTEMPTS: u32 = 5;

/// A blocked step told of: (service, release, scope, since and webhook).
type BlockedKey = (String, Option<String>, String, String);

/// Webhook posts under way at once, at most; the others wait their turn on their task.
const MAX_POSTS_IN_FLIGHT: usize = 16;

/// `sha256=` and the lowercase hex HMAC-SHA256 of the body, with a webhook's `secret`.
pub const SIGNATURE_HEADER: &str = "x-rollwave-signature";
/// One id per notification, the same on each of its retries.
pub const DELIVERY_HEADER: &str = "x-rollwave-delivery";
/// What the manifest's `on` calls the happening: `halted`, `completed`…
pub const EVENT_HEADER: &str = "x-rollwave-event";

/// Sends webhooks on tasks of their own: nothing here makes the caller wait.
pub struct Notifier {
    status: Mutex<BTreeMap<(String, String), NotificationStatus>>,
    /// `blocked` notifications already sent: (service, release, scope, since).
    blocked_sent: Mutex<BTreeSet<BlockedKey>>,
    posts: Arc<tokio::sync::Semaphore>,
    /// Paces the retries.
    clock: Arc<dyn crate::clock::Clock>,
    /// Bumped after every attempt, delivered or not: what waits on deliveries wakes on it.
    pub attempted: tokio::sync::watch::Sender<u64>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self::with_clock(crate::clock::system())
    }
}

impl Notifier {
    pub fn with_clock(clock: Arc<dyn crate::clock::Clock>) -> Self {
        Notifier {
            status: Mutex::default(),
            blocked_sent: Mutex::default(),
            posts: Arc::new(tokio::sync::Semaphore::new(MAX_POSTS_IN_FLIGHT)),
            clock,
            attempted: tokio::sync::watch::channel(0).0,
        }
    }
}

/// A secret file holds a URL or a key: anything longer is neither.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The URL a reference stands for on this server, checked to be `http(s)`. Errors name
/// the reference, never what it holds.
pub fn resolve(url: &WebhookUrl) -> Result<String, String> {
    match url {
        WebhookUrl::Literal { url, .. } => Ok(url.clone()),
        WebhookUrl::Env(name) => resolve_url(SecretRef::Env(name)),
        WebhookUrl::File(path) => resolve_url(SecretRef::File(path)),
    }
}

/// The key a routing key's or a signing key's reference stands for on this server.
/// Errors name the reference, never what it holds.
pub fn resolve_secret(source: &SecretSource) -> Result<String, String> {
    match source {
        SecretSource::Env(name) => resolve_key(SecretRef::Env(name)),
        SecretSource::File(path) => resolve_key(SecretRef::File(path)),
    }
}

fn resolve_url(reference: SecretRef<'_>) -> Result<String, String> {
    let (value, what) = read_secret(reference)?;
    match rollwave_manifest::redacted_url(&value) {
        Ok(_) => Ok(value),
        Err(_) => Err(format!("{what} on the server does not hold an http:// or https:// URL")),
    }
}

fn resolve_key(reference: SecretRef<'_>) -> Result<String, String> {
    let (value, what) = read_secret(reference)?;
    if value.is_empty() { Err(format!("{what} on the server is empty")) } else { Ok(value) }
}

/// What a reference holds, surrounding whitespace trimmed, and how to name it in errors.
fn read_secret(reference: SecretRef<'_>) -> Result<(String, String), String> {
    let (value, what) = match reference {
        SecretRef::Env(name) => match std::env::var(name) {
            Ok(value) => (value, format!("environment variable {name}")),
            Err(std::env::VarError::NotPresent) => {
                return Err(format!("environment variable {name} is not set on the server"));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("environment variable {name} on the server is not text"));
            }
        },
        SecretRef::File(path) => (read_secret_file(path)?, format!("file {path}")),
    };
    Ok((value.trim().to_owned(), what))
}

fn read_secret_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read file {path} on the server: {}", e.kind()))?;
    let mut text = String::new();
    file.take(MAX_SECRET_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read file {path} on the server: {}", e.kind()))?;
    Ok(text)
}

/// For [`rollwave_manifest::parse_manifest_checking_secrets`]: a reference that does not
/// resolve on this server to what it stands for is refused when the manifest is applied.
pub fn check_reference(reference: SecretRef<'_>, used: SecretUse) -> Result<(), String> {
    match used {
        SecretUse::WebhookUrl => resolve_url(reference).map(|_| ()),
        SecretUse::RoutingKey | SecretUse::SigningKey => resolve_key(reference).map(|_| ()),
    }
}

/// Tells webhooks apart in the notifier's own records (a URL, and for PagerDuty the
/// routing key's reference, since many integrations share the Events API's URL); never shown.
fn key(hook: &Notification) -> String {
    let url = match &hook.url {
        WebhookUrl::Literal { url, .. } => format!("url {url}"),
        WebhookUrl::Env(name) => format!("env {name}"),
        WebhookUrl::File(path) => format!("file {path}"),
    };
    match &hook.format {
        NotificationFormat::PagerDuty { routing_key } => format!("{url} pagerduty {}", routing_key.shown()),
        format => format!("{url} {}", format.name()),
    }
}

/// An error message with the URL, and its path and query, replaced by `shown`, and
/// every secret of the delivery blotted out, should a message ever quote one.
fn scrubbed(message: &str, url: &str, shown: &str, secrets: &[&str]) -> String {
    let mut out = message.replace(url, shown);
    if let Some(secret) =
        url.parse::<axum::http::Uri>().ok().and_then(|u| u.path_and_query().map(|p| p.as_str().to_owned()))
        && secret.len() > 1
    {
        out = out.replace(&secret, "/…");
    }
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "…");
    }
    out
}

/// What an engine event means to people, if anything.
pub fn notify_on(kind: EventKind) -> Option<NotifyOn> {
    Some(match kind {
        EventKind::ReleaseHalted => NotifyOn::Halted,
        EventKind::ReleaseRolledBack | EventKind::RollbackCompleted => NotifyOn::RolledBack,
        EventKind::ReleaseCompleted => NotifyOn::Completed,
        EventKind::RegressionSuspected => NotifyOn::RegressionSuspected,
        EventKind::Blocked => NotifyOn::Blocked,
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
        | EventKind::AlarmFired
        | EventKind::AlarmCleared
        | EventKind::RollbackStarted
        | EventKind::ReleaseResumed
        | EventKind::ReleaseSuperseded
        | EventKind::HostFailed
        | EventKind::JudgeVerdict
        | EventKind::Held
        | EventKind::Resumed
        | EventKind::Hook => return None,
    })
}

/// What the manifest's `on` calls a happening.
pub fn name(on: NotifyOn) -> &'static str {
    NotifyOn::ALL.iter().find(|(_, v)| *v == on).map_or("event", |(n, _)| n)
}

/// One line for people: `rollwave: web v2 completed in prod: why`.
fn text(on: NotifyOn, e: &EventView) -> String {
    let release = e.release.as_deref().unwrap_or("-");
    let place = if e.scope.is_empty() { String::new() } else { format!(" in {}", e.scope) };
    let why = e.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    format!("rollwave: {} {release} {}{place}{why}", e.service, name(on).replace('_', " "))
}

/// The body of a notification in `format`; `routing_key` is the PagerDuty webhook's,
/// resolved.
fn body(format: &NotificationFormat, routing_key: Option<&str>, on: NotifyOn, e: &EventView) -> String {
    let value = match format {
        NotificationFormat::Slack => serde_json::json!({ "text": text(on, e) }),
        NotificationFormat::Json => serde_json::json!({
            "service": e.service, "event": name(on), "release": e.release, "scope": e.scope,
            "reason": e.reason, "t": e.t, "text": text(on, e),
        }),
        NotificationFormat::Teams => teams_message(on, e),
        NotificationFormat::PagerDuty { .. } => pagerduty_event(routing_key.unwrap_or_default(), on, e),
    };
    value.to_string()
}

/// A Teams message: one Adaptive Card (schema 1.4, which Teams renders) with the line for
/// people as its title, coloured by how bad the news is, and the event's fields as facts.
fn teams_message(on: NotifyOn, e: &EventView) -> serde_json::Value {
    let color = match on {
        NotifyOn::Completed => "Good",
        NotifyOn::Blocked => "Warning",
        NotifyOn::Halted | NotifyOn::RolledBack | NotifyOn::RegressionSuspected => "Attention",
    };
    let mut facts = vec![
        serde_json::json!({ "title": "Service", "value": e.service }),
        serde_json::json!({ "title": "Release", "value": e.release.as_deref().unwrap_or("-") }),
        serde_json::json!({ "title": "Event", "value": name(on) }),
    ];
    if !e.scope.is_empty() {
        facts.push(serde_json::json!({ "title": "Scope", "value": e.scope }));
    }
    if let Some(reason) = &e.reason {
        facts.push(serde_json::json!({ "title": "Reason", "value": reason }));
    }
    facts.push(serde_json::json!({ "title": "Time", "value": e.t }));
    serde_json::json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    { "type": "TextBlock", "text": text(on, e), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true },
                    { "type": "FactSet", "facts": facts },
                ],
            },
        }],
    })
}

/// PagerDuty caps a summary at 1024 characters and a `dedup_key` at 255.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;
const PAGERDUTY_DEDUP_KEY_MAX: usize = 255;

/// The alert a release's trouble opens and its completion resolves: one per release.
pub fn pagerduty_dedup_key(service: &str, release: Option<&str>) -> String {
    let key = match release {
        Some(release) => format!("rollwave/{service}/{release}"),
        None => format!("rollwave/{service}"),
    };
    truncated(&key, PAGERDUTY_DEDUP_KEY_MAX).to_owned()
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let end = (0..=max.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..end]
}

/// An Events API v2 event: a release rolled back or suspected of a regression pages
/// (`critical`), a halt is an `error`, a step blocked too long a `warning`; a completed
/// release resolves the alert its trouble opened.
fn pagerduty_event(routing_key: &str, on: NotifyOn, e: &EventView) -> serde_json::Value {
    let (action, severity) = match on {
        NotifyOn::RolledBack | NotifyOn::RegressionSuspected => ("trigger", "critical"),
        NotifyOn::Halted => ("trigger", "error"),
        NotifyOn::Blocked => ("trigger", "warning"),
        NotifyOn::Completed => ("resolve", "info"),
    };
    let summary = text(on, e);
    serde_json::json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": pagerduty_dedup_key(&e.service, e.release.as_deref()),
        "payload": {
            "summary": truncated(&summary, PAGERDUTY_SUMMARY_MAX),
            "source": if e.scope.is_empty() { e.service.as_str() } else { e.scope.as_str() },
            "severity": severity,
            "timestamp": e.t,
            "component": e.service,
            "group": e.scope.split('/').next().filter(|s| !s.is_empty()).unwrap_or(&e.service),
            "class": name(on),
            "custom_details": {
                "service": e.service, "release": e.release, "scope": e.scope, "reason": e.reason, "t": e.t,
            },
        },
    })
}

/// What a POST carries besides its body: the delivery's id, the happening and, with a
/// signing key, the body's signature.
fn headers(delivery: &str, on: NotifyOn, signing_key: Option<&str>, body: &[u8]) -> Vec<(&'static str, String)> {
    let mut headers = vec![(DELIVERY_HEADER, delivery.to_owned()), (EVENT_HEADER, name(on).to_owned())];
    if let Some(key) = signing_key {
        headers.push((SIGNATURE_HEADER, signature(key.as_bytes(), body)));
    }
    headers
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length (a long one is hashed first), so this never fails.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A fresh id for a notification, in the form of a random UUID (version 4); should the
/// system have no randomness to give, the clock's nanoseconds and a counter, which
/// still differ from one notification to the next.
fn delivery_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_be_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

impl Notifier {
    /// Sends `event` to every webhook of `hooks` that wants it.
    pub fn event(self: &Arc<Self>, hooks: &[Notification], event: &EventView) {
        let Some(on) = notify_on(event.kind) else { return };
        if on == NotifyOn::Blocked {
            // Blocked steps are told of only once they have waited long enough: see `blocked`.
            return;
        }
        for hook in hooks.iter().filter(|h| h.on.contains(&on)) {
            self.send(hook, on, event.clone());
        }
    }

    /// Tells of steps blocked longer than each webhook's `blocked_after`, once each.
    pub fn blocked(
        self: &Arc<Self>,
        hooks: &[Notification],
        service: &str,
        blocked: &[crate::api::BlockedView],
        now: jiff::Timestamp,
    ) {
        for b in blocked {
            let Ok(since) = b.since.parse::<jiff::Timestamp>() else { continue };
            for hook in hooks.iter().filter(|h| h.on.contains(&NotifyOn::Blocked)) {
                let waited = now.duration_since(since).as_secs();
                if waited < hook.blocked_after.as_secs() as i64 {
                    continue;
                }
                let key =
                    (service.to_owned(), b.release.clone(), b.scope.clone(), format!("{}|{}", b.since, key(hook)));
                if !self.blocked_sent.lock().unwrap_or_else(|p| p.into_inner()).insert(key) {
                    continue;
                }
                let event = EventView {
                    seq: None,
                    t: now.to_string(),
                    service: service.to_owned(),
                    kind: EventKind::Blocked,
                    release: b.release.clone(),
                    scope: b.scope.clone(),
                    reason: Some(format!("blocked for {} s: {}", waited, b.reason)),
                    output: None,
                };
                self.send(hook, NotifyOn::Blocked, event);
            }
        }
    }

    /// How delivery to each webhook of a service has gone.
    pub fn status(&self, service: &str) -> Vec<NotificationStatus> {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.iter().filter(|((s, _), _)| s == service).map(|(_, v)| v.clone()).collect()
    }

    /// `key` tells webhooks apart and is never shown; `shown` is what reads see.
    fn record(&self, service: &str, key: &str, shown: &str, result: Result<(), String>) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let entry = status.entry((service.to_owned(), key.to_owned())).or_insert_with(|| NotificationStatus {
            url: shown.to_owned(),
            delivered: 0,
            failed_attempts: 0,
            given_up: 0,
            last_error: None,
        });
        match result {
            Ok(()) => entry.delivered += 1,
            Err(e) => {
                entry.failed_attempts += 1;
                entry.last_error = Some(e);
            }
        }
        drop(status);
        self.attempted.send_modify(|n| *n += 1);
    }

    /// Sends one notification to `hook` on a task of its own, retrying with backoff.
    fn send(self: &Arc<Self>, hook: &Notification, on: NotifyOn, event: EventView) {
        let (notifier, hook) = (Arc::clone(self), hook.clone());
        let (key, shown, delivery) = (key(&hook), hook.url.shown(), delivery_id());
        let service = event.service.clone();
        let event = Arc::new(event);
        tokio::spawn(async move {
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    notifier.clock.sleep(Duration::from_secs(1 << (attempt - 1))).await;
                }
                let (h, e, d) = (hook.clone(), Arc::clone(&event), delivery.clone());
                let result = match Arc::clone(&notifier.posts).acquire_owned().await {
                    Ok(permit) => tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        deliver(&h, on, &e, &d)
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string())),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = &result {
                    tracing::warn!(
                        service = %service, webhook = %shown, format = hook.format.name(), event = name(on),
                        delivery = %delivery, attempt = attempt + 1, error = %error, "webhook delivery failed"
                    );
                }
                let ok = result.is_ok();
                notifier.record(&service, &key, &shown, result);
                if ok {
                    return;
                }
            }
            tracing::error!(
                service = %service, webhook = %shown, format = hook.format.name(), event = name(on),
                delivery = %delivery, "webhook notification given up after {ATTEMPTS} attempts"
            );
            let mut status = notifier.status.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = status.get_mut(&(service.clone(), key.clone())) {
                s.given_up += 1;
            }
        });
    }
}

/// One attempt: every secret resolved afresh (a rotated one takes effect at once), the
/// body rendered, signed and posted. The error names references, never what they hold.
fn deliver(hook: &Notification, on: NotifyOn, event: &EventView, delivery: &str) -> Result<(), String> {
    let target = resolve(&hook.url)?;
    let routing_key = match &hook.format {
        NotificationFormat::PagerDuty { routing_key } => Some(resolve_secret(routing_key)?),
        _ => None,
    };
    let signing_key = hook.signing_secret.as_ref().map(resolve_secret).transpose()?;
    let body = body(&hook.format, routing_key.as_deref(), on, event);
    let headers = headers(delivery, on, signing_key.as_deref(), body.as_bytes());
    post(&target, &body, &headers).map_err(|e| {
        let secrets = [routing_key.as_deref().unwrap_or_default(), signing_key.as_deref().unwrap_or_default()];
        scrubbed(&e, &target, &hook.url.shown(), &secrets)
    })
}

fn post(url: &str, body: &str, headers: &[(&'static str, String)]) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut request = agent.post(url).header("Content-Type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send(body.as_bytes()).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) { Ok(()) } else { Err(format!("the webhook answered {status}")) }
}
