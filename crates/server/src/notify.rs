//! Webhook notifications: a release halted, rolled back, completed, blocked too long, or
//! suspected of a regression. Sent by the leader, retried with backoff; how delivery goes
//! is part of the service's status.

use crate::api::{EventView, NotificationStatus};
use rollwave_core::manifest::{Notification, NotificationFormat, NotifyOn};
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
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            status: Mutex::default(),
            blocked_sent: Mutex::default(),
            posts: Arc::new(tokio::sync::Semaphore::new(MAX_POSTS_IN_FLIGHT)),
        }
    }
}

/// What an engine event means to people, if anything.
pub fn notify_on(kind: &str) -> Option<NotifyOn> {
    Some(match kind {
        "release_halted" => NotifyOn::Halted,
        "release_rolled_back" | "rollback_completed" => NotifyOn::RolledBack,
        "release_completed" => NotifyOn::Completed,
        "regression_suspected" => NotifyOn::RegressionSuspected,
        "blocked" => NotifyOn::Blocked,
        _ => return None,
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
        let Some(on) = notify_on(&event.kind) else { return };
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
                let key = (service.to_owned(), b.release.clone(), b.scope.clone(), format!("{}|{}", b.since, hook.url));
                if !self.blocked_sent.lock().unwrap_or_else(|p| p.into_inner()).insert(key) {
                    continue;
                }
                let event = EventView {
                    seq: None,
                    t: now.to_string(),
                    service: service.to_owned(),
                    kind: "blocked".into(),
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

    fn record(&self, service: &str, url: &str, result: Result<(), String>) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let entry = status.entry((service.to_owned(), url.to_owned())).or_insert_with(|| NotificationStatus {
            url: url.to_owned(),
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
    }

    fn send(self: &Arc<Self>, service: &str, url: &str, body: String) {
        let (notifier, service, url) = (Arc::clone(self), service.to_owned(), url.to_owned());
        tokio::spawn(async move {
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                }
                let (u, b) = (url.clone(), body.clone());
                let result = match Arc::clone(&notifier.posts).acquire_owned().await {
                    Ok(permit) => tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        post(&u, &b)
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string())),
                    Err(e) => Err(e.to_string()),
                };
                let ok = result.is_ok();
                notifier.record(&service, &url, result);
                if ok {
                    return;
                }
            }
            let mut status = notifier.status.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = status.get_mut(&(service.clone(), url.clone())) {
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
