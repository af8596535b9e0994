//! Webhook notifications: a release halted, rolled back, completed, blocked too long, or
//! suspected of a regression. Sent by the leader, retried with backoff; how delivery goes
//! is part of the service's status.
//!
//! A webhook URL often is a secret. A manifest names it by reference (`{ env: NAME }`,
//! `{ file: PATH }`), resolved here each time a notification is sent, so that the URL is
//! never in the log and a rotated secret takes effect without applying the manifest
//! again; the reference is also checked when the manifest is applied. Reads only ever
//! show a webhook's [`WebhookUrl::shown`] form, errors included.

use crate::api::{EventKind, EventView, NotificationStatus};
use rollwave_core::manifest::{Notification, NotificationFormat, NotifyOn, WebhookUrl};
use rollwave_manifest::SecretRef;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts per notification: the first and four retries, 1 s, 2 s, 4 s and 8 s apart.
const ATTEMPTS: u32 = 5;

/// A blocked step told of: (service, release, scope, since and webhook).
type BlockedKey = (String, Option<String>, String, String);

/// Webhook posts under way at once, at most; the others wait their turn on their task.
const MAX_POSTS_IN_FLIGHT: usize = 16;

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

/// A secret file holds a URL: anything longer is not one.
const MAX_URL_FILE: u64 = 64 * 1024;

/// The URL a reference stands for on this server, checked to be `http(s)`. Errors name
/// the reference, never what it holds.
pub fn resolve(url: &WebhookUrl) -> Result<String, String> {
    match url {
        WebhookUrl::Literal { url, .. } => Ok(url.clone()),
        WebhookUrl::Env(name) => resolve_reference(SecretRef::Env(name)),
        WebhookUrl::File(path) => resolve_reference(SecretRef::File(path)),
    }
}

fn resolve_reference(reference: SecretRef<'_>) -> Result<String, String> {
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
        SecretRef::File(path) => (read_url_file(path)?, format!("file {path}")),
    };
    let value = value.trim().to_owned();
    match rollwave_manifest::redacted_url(&value) {
        Ok(_) => Ok(value),
        Err(_) => Err(format!("{what} on the server does not hold an http:// or https:// URL")),
    }
}

fn read_url_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read file {path} on the server: {}", e.kind()))?;
    let mut text = String::new();
    file.take(MAX_URL_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read file {path} on the server: {}", e.kind()))?;
    Ok(text)
}

/// For [`rollwave_manifest::parse_manifest_checking_secrets`]: a reference that does not
/// resolve on this server is refused when the manifest is applied.
pub fn check_reference(reference: SecretRef<'_>) -> Result<(), String> {
    resolve_reference(reference).map(|_| ())
}

/// Tells webhooks apart in the notifier's own records; never shown.
fn key(url: &WebhookUrl) -> String {
    match url {
        WebhookUrl::Literal { url, .. } => format!("url {url}"),
        WebhookUrl::Env(name) => format!("env {name}"),
        WebhookUrl::File(path) => format!("file {path}"),
    }
}

/// An error message with the URL, and its path and query, replaced by `shown`.
fn scrubbed(message: &str, url: &str, shown: &str) -> String {
    let mut out = message.replace(url, shown);
    if let Some(secret) =
        url.parse::<axum::http::Uri>().ok().and_then(|u| u.path_and_query().map(|p| p.as_str().to_owned()))
        && secret.len() > 1
    {
        out = out.replace(&secret, "/…");
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

fn name(on: NotifyOn) -> &'static str {
    NotifyOn::ALL.iter().find(|(_, v)| *v == on).map_or("event", |(n, _)| n)
}

fn body(format: NotificationFormat, on: NotifyOn, e: &EventView) -> String {
    let release = e.release.as_deref().unwrap_or("-");
    let place = if e.scope.is_empty() { String::new() } else { format!(" in {}", e.scope) };
    let why = e.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    let text = format!("rollwave: {} {release} {}{place}{why}", e.service, name(on).replace('_', " "));
    let value = match format {
        NotificationFormat::Slack => serde_json::json!({ "text": text }),
        NotificationFormat::Json => serde_json::json!({
            "service": e.service, "event": name(on), "release": e.release, "scope": e.scope,
            "reason": e.reason, "t": e.t, "text": text,
        }),
    };
    value.to_string()
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
            self.send(&event.service, &hook.url, body(hook.format, on, event));
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
                    (service.to_owned(), b.release.clone(), b.scope.clone(), format!("{}|{}", b.since, key(&hook.url)));
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
                self.send(service, &hook.url, body(hook.format, NotifyOn::Blocked, &event));
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

    fn send(self: &Arc<Self>, service: &str, url: &WebhookUrl, body: String) {
        let (notifier, service, url) = (Arc::clone(self), service.to_owned(), url.clone());
        let (key, shown) = (key(&url), url.shown());
        tokio::spawn(async move {
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    notifier.clock.sleep(Duration::from_secs(1 << (attempt - 1))).await;
                }
                let (u, b) = (url.clone(), body.clone());
                let result = match Arc::clone(&notifier.posts).acquire_owned().await {
                    Ok(permit) => tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        let target = resolve(&u)?;
                        post(&target, &b).map_err(|e| scrubbed(&e, &target, &u.shown()))
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string())),
                    Err(e) => Err(e.to_string()),
                };
                let ok = result.is_ok();
                notifier.record(&service, &key, &shown, result);
                if ok {
                    return;
                }
            }
            let mut status = notifier.status.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = status.get_mut(&(service.clone(), key.clone())) {
                s.given_up += 1;
            }
        });
    }
}

fn post(url: &str, body: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let response =
        agent.post(url).header("Content-Type", "application/json").send(body.as_bytes()).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) { Ok(()) } else { Err(format!("the webhook answered {status}")) }
}
