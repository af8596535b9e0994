//! The leader's decisions as a state machine: given the time and what happened, it says
//! what to do, and does none of it. It owns no clock, no store, no socket and no task;
//! the shell in [`crate::node`] performs its effects and feeds their results back in.
//!
//! Two things are decided here. *When*: which services are due a tick, when hosts are
//! scanned for silence, when checks, alarm queries, blocked-step notifications and
//! metric pruning run, and when the leader next wakes. *What a batch gives the log*:
//! requests applied to the read model at one reading of the clock become the records,
//! inbox answers and audit rows appended in one fenced transaction, with each request's
//! answer.

use crate::api::EventView;
use crate::auth::{Actor, MachineComponent};
use crate::error::ApiError;
use crate::log::record;
use crate::state::{Applied, CommandView, LogInput, ReadModel};
use jiff::Timestamp;
use rollwave_store::{Answer, NewAudit, NewRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How often the leader sweeps: checks, alarms, notifications, lost hosts.
pub const SWEEP: Duration = Duration::from_millis(500);

/// A service is ticked at least this often: deployment windows open without any other input.
pub const STALE_TICK: Duration = Duration::from_secs(30);

/// Metrics older than the longest watch window (and a minute) are pruned this often.
const PRUNE_EVERY_MS: i64 = 60_000;

/// What the leader hears.
#[derive(Debug)]
pub enum Input {
    /// This replica took the lead.
    Elected,
    /// Each service with agents' hosts or an engine, and the engine's next deadline: the
    /// shell's view of the read model when its inbox poll came round.
    Due(Vec<(String, Option<Timestamp>)>),
    /// The timer armed by [`Effect::ArmTimer`] went off. `longest_watch` is the longest
    /// watch window of any service, which bounds the metrics worth keeping.
    Timer { longest_watch: Duration },
}

/// What the leader asks the shell to do, in order.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Apply and append an input from the control plane itself.
    Submit { component: MachineComponent, service: String, input: LogInput },
    /// Write the hosts' signs of life heard by this replica, then judge which registered
    /// hosts have been silent for longer than the host timeout, counting from no earlier
    /// than `leading_since_ms` (a new leader gives every host a full timeout).
    FindLostHosts { leading_since_ms: i64 },
    /// Tell the webhooks of steps blocked for too long.
    NotifyBlocked,
    /// Start the synthetic checks that are due.
    Probe,
    /// Evaluate alarms and bakes on the data stored, and start the Prometheus queries due.
    Query,
    /// Drop metrics recorded before this time.
    PruneMetrics { before_ms: i64 },
    /// Feed [`Input::Timer`] back once the clock reads this.
    ArmTimer(Timestamp),
}

/// The leader's state between inputs: when it last did each periodic thing.
#[derive(Debug)]
pub struct Leader {
    host_timeout: Duration,
    leading_since: Option<Timestamp>,
    last_tick: BTreeMap<String, Timestamp>,
    last_scan: Option<Timestamp>,
    last_prune_ms: i64,
}

impl Leader {
    pub fn new(host_timeout: Duration) -> Leader {
        Leader { host_timeout, leading_since: None, last_tick: BTreeMap::new(), last_scan: None, last_prune_ms: 0 }
    }

    /// Losing a host is judged against a timeout of many seconds: reading every heartbeat
    /// at each sweep would be work for nothing.
    fn scan_every(&self) -> Duration {
        (self.host_timeout / 10).max(SWEEP)
    }

    pub fn handle(&mut self, now: Timestamp, input: Input) -> Vec<Effect> {
        match input {
            Input::Elected => {
                // Every host starts a term with a full timeout.
                self.leading_since = Some(now);
                self.last_scan = None;
                // The first sweep comes at once.
                vec![Effect::ArmTimer(now)]
            }
            Input::Due(services) => {
                let due: Vec<String> = services
                    .into_iter()
                    .filter(|(name, deadline)| {
                        let deadline = deadline.is_some_and(|d| d <= now);
                        let stale = self.last_tick.get(name).is_none_or(|t| crate::clock::later(*t, STALE_TICK) <= now);
                        deadline || stale
                    })
                    .map(|(name, _)| name)
                    .collect();
                due.into_iter()
                    .map(|service| {
                        self.last_tick.insert(service.clone(), now);
                        Effect::Submit { component: MachineComponent::Clock, service, input: LogInput::Tick }
                    })
                    .collect()
            }
            Input::Timer { longest_watch } => {
                let mut effects = Vec::new();
                let scan_due = self.last_scan.is_none_or(|t| crate::clock::later(t, self.scan_every()) <= now);
                if scan_due {
                    self.last_scan = Some(now);
                    let since = self.leading_since.unwrap_or(now);
                    effects.push(Effect::FindLostHosts { leading_since_ms: since.as_millisecond() });
                }
                effects.extend([Effect::NotifyBlocked, Effect::Probe, Effect::Query]);
                let now_ms = now.as_millisecond();
                if now_ms - self.last_prune_ms > PRUNE_EVERY_MS {
                    self.last_prune_ms = now_ms;
                    let keep = i64::try_from(longest_watch.as_millis()).unwrap_or(i64::MAX);
                    effects
                        .push(Effect::PruneMetrics { before_ms: now_ms.saturating_sub(keep).saturating_sub(60_000) });
                }
                effects.push(Effect::ArmTimer(crate::clock::later(now, SWEEP)));
                effects
            }
        }
    }
}

/// Whether a host last heard from at `seen_ms` (0: never) is lost at `now_ms`.
pub fn is_lost(now_ms: i64, seen_ms: i64, leading_since_ms: i64, timeout: Duration) -> bool {
    let timeout = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    now_ms - seen_ms.max(leading_since_ms) > timeout
}

/// A request to change something, on its way to the leader's applier.
pub struct Request {
    pub service: String,
    pub input: LogInput,
    pub actor: Actor,
    pub reply: Option<tokio::sync::oneshot::Sender<Result<(Applied, i64), ApiError>>>,
    pub inbox_id: Option<i64>,
}

impl Request {
    /// An input from a part of the control plane itself: nobody waits for its answer.
    pub fn from_machine(component: MachineComponent, service: String, input: LogInput) -> Request {
        Request { service, input, actor: Actor::Machine(component), reply: None, inbox_id: None }
    }
}

/// What travels through the inbox table from a follower to the leader, and back.
#[derive(Serialize, Deserialize)]
pub struct InboxRequest {
    pub service: String,
    pub input: LogInput,
    pub actor: Actor,
}

#[derive(Serialize, Deserialize)]
pub struct InboxAnswer {
    #[serde(default)]
    pub error: Option<(u16, crate::api::ErrorBody)>,
}

/// What a batch of requests gives the log, and what to tell their senders once it is durable.
pub struct Batch {
    pub records: Vec<NewRecord>,
    pub answers: Vec<Answer>,
    pub audits: Vec<NewAudit>,
    /// Each request applied or refused, with the index of its last record in `records`.
    pub outcomes: Vec<(Request, Result<Applied, ApiError>, Option<usize>)>,
    /// Requests not applied because one before them faulted.
    pub unapplied: Vec<Request>,
    /// Applying one request failed midway: the read model holds a change no log holds.
    pub faulted: bool,
}

/// Applies `requests` to `model` in order, each at one reading of the clock (`now_ms`,
/// which never goes backwards within a batch), and collects what the log must hold.
pub fn apply_batch(model: &mut ReadModel, now_ms: impl Fn() -> i64, requests: Vec<Request>) -> Batch {
    let mut batch = Batch {
        records: Vec::new(),
        answers: Vec::new(),
        audits: Vec::new(),
        outcomes: Vec::new(),
        unapplied: Vec::new(),
        faulted: false,
    };
    let mut last_at = 0;
    let mut pending = requests.into_iter();
    while let Some(r) = pending.next() {
        let at = now_ms().max(last_at);
        last_at = at;
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.apply(&r.service, at, &r.input)));
        let logged = match applied {
            Ok(result) => log_entries(at, &r, result),
            Err(panic) => Err(format!("applying it panicked: {}", panic_text(panic.as_ref()))),
        };
        match logged {
            Ok(Logged { result, records: new_records, answer }) => {
                batch.records.extend(new_records);
                let through = result.is_ok().then(|| batch.records.len() - 1);
                if let (Some(inbox_id), Some(body)) = (r.inbox_id, answer) {
                    batch.answers.push(Answer { inbox_id, body, through_record: batch.records.len().checked_sub(1) });
                }
                if result.is_ok() {
                    batch.audits.extend(audit_row(&r));
                }
                batch.outcomes.push((r, result, through));
            }
            Err(why) => {
                tracing::error!(
                    service = %r.service,
                    action = r.input.action_name(),
                    "an input could not be applied, {why}; the read model is rebuilt from the log"
                );
                let error = ApiError::internal("this change could not be applied and was not made");
                if let (Some(inbox_id), Ok(body)) = (r.inbox_id, inbox_answer(&Err(error.clone()))) {
                    batch.answers.push(Answer { inbox_id, body, through_record: batch.records.len().checked_sub(1) });
                }
                batch.outcomes.push((r, Err(error), None));
                batch.unapplied = pending.collect();
                batch.faulted = true;
                break;
            }
        }
    }
    batch
}

/// What appended records announce, in log order: events (numbered) and commands.
pub fn announced(records: &[NewRecord], seqs: &[i64]) -> (Vec<EventView>, Vec<CommandView>) {
    let (mut events, mut commands) = (Vec::new(), Vec::new());
    for (record, seq) in records.iter().zip(seqs) {
        match record.kind.as_str() {
            "event" => {
                if let Ok(mut e) = serde_json::from_str::<EventView>(&record.body) {
                    e.seq = Some(*seq);
                    events.push(e);
                }
            }
            "command" => {
                if let Ok(c) = serde_json::from_str::<CommandView>(&record.body) {
                    commands.push(c);
                }
            }
            _ => {}
        }
    }
    (events, commands)
}

/// What one request gives the log: its outcome, the records it adds (its input, then its
/// decisions) and the answer to its inbox entry, if it came through the inbox.
struct Logged {
    result: Result<Applied, ApiError>,
    records: Vec<NewRecord>,
    answer: Option<String>,
}

/// What an applied request gives the log; `Err` when a part of it cannot be written.
fn log_entries(at: i64, r: &Request, result: Result<Applied, ApiError>) -> Result<Logged, String> {
    let unwritable = |e: serde_json::Error| format!("its record could not be written: {e}");
    let mut records = Vec::new();
    if let Ok(applied) = &result {
        records.push(record(at, &r.service, &r.input).map_err(unwritable)?);
        for e in &applied.events {
            records.push(record(at, &r.service, e).map_err(unwritable)?);
        }
        for c in &applied.commands {
            records.push(record(at, &r.service, c).map_err(unwritable)?);
        }
    }
    let answer = match r.inbox_id {
        Some(_) => Some(inbox_answer(&result).map_err(unwritable)?),
        None => None,
    };
    Ok(Logged { result, records, answer })
}

pub fn inbox_answer(result: &Result<Applied, ApiError>) -> Result<String, serde_json::Error> {
    let error = result.as_ref().err().map(|e| (e.status.as_u16(), e.body.clone()));
    serde_json::to_string(&InboxAnswer { error })
}

pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

/// The audit row of an applied request: people's changes are audited; what machines and
/// hosts report is in the log already.
fn audit_row(r: &Request) -> Option<NewAudit> {
    let report = matches!(r.input, LogInput::HostReport { .. } | LogInput::RegisterHost { .. });
    match &r.actor {
        Actor::Machine(_) => None,
        Actor::Token(_) if report => None,
        Actor::Token(caller) => Some(NewAudit {
            actor: caller.name.clone(),
            token_id: Some(caller.id),
            action: r.input.action_name().to_owned(),
            detail: serde_json::json!({ "service": r.service, "input": r.input }).to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn ticks(effects: &[Effect]) -> Vec<&str> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Submit { service, input: LogInput::Tick, component: MachineComponent::Clock } => {
                    Some(service.as_str())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_service_is_ticked_when_its_deadline_passes_and_at_least_every_thirty_seconds() {
        let mut leader = Leader::new(Duration::from_secs(30));
        leader.handle(at(0), Input::Elected);
        let due = |deadline: Option<i64>| vec![("web".to_owned(), deadline.map(at)), ("api".to_owned(), None)];
        assert_eq!(ticks(&leader.handle(at(0), Input::Due(due(None)))), ["web", "api"], "never ticked: both due");
        assert!(ticks(&leader.handle(at(1), Input::Due(due(Some(5))))).is_empty(), "nothing due yet");
        assert_eq!(ticks(&leader.handle(at(5), Input::Due(due(Some(5))))), ["web"], "web's deadline came");
        assert!(ticks(&leader.handle(at(29), Input::Due(due(None)))).is_empty());
        assert_eq!(ticks(&leader.handle(at(30), Input::Due(due(None)))), ["api"], "api's last tick is 30 s old");
        assert_eq!(ticks(&leader.handle(at(35), Input::Due(due(None)))), ["web"]);
    }

    #[test]
    fn the_sweep_rearms_itself_and_scans_for_lost_hosts_every_tenth_of_the_timeout() {
        let mut leader = Leader::new(Duration::from_secs(30));
        assert_eq!(leader.handle(at(0), Input::Elected), [Effect::ArmTimer(at(0))], "the first sweep comes at once");
        let timer = Input::Timer { longest_watch: Duration::from_secs(600) };
        let first = leader.handle(at(1), timer);
        assert_eq!(
            first[0],
            Effect::FindLostHosts { leading_since_ms: at(0).as_millisecond() },
            "the first sweep scans"
        );
        assert!(
            first.contains(&Effect::Probe) && first.contains(&Effect::Query) && first.contains(&Effect::NotifyBlocked)
        );
        let prune = (at(1).as_millisecond() - 600_000 - 60_000, at(1));
        assert!(first.contains(&Effect::PruneMetrics { before_ms: prune.0 }), "{first:?}");
        assert_eq!(first.last(), Some(&Effect::ArmTimer(crate::clock::later(prune.1, SWEEP))));
        let timer = || Input::Timer { longest_watch: Duration::from_secs(600) };
        assert!(!leader.handle(at(3), timer()).iter().any(|e| matches!(e, Effect::FindLostHosts { .. })));
        let scan = leader.handle(at(4), timer());
        assert_eq!(
            scan.first(),
            Some(&Effect::FindLostHosts { leading_since_ms: at(0).as_millisecond() }),
            "3 s after the last scan: a tenth of the timeout"
        );
        assert!(!scan.iter().any(|e| matches!(e, Effect::PruneMetrics { .. })), "pruned a minute ago at most");
        assert!(leader.handle(at(62), timer()).iter().any(|e| matches!(e, Effect::PruneMetrics { .. })));
    }

    #[test]
    fn a_host_is_lost_once_silent_for_longer_than_the_timeout_counted_from_the_election_at_the_earliest() {
        let timeout = Duration::from_secs(30);
        assert!(!is_lost(40_000, 10_000, 0, timeout), "exactly the timeout");
        assert!(is_lost(40_001, 10_000, 0, timeout));
        assert!(!is_lost(40_001, 0, 20_000, timeout), "a new leader waits a whole timeout");
        assert!(is_lost(50_001, 0, 20_000, timeout));
    }
}
