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
use crate::log::{LogRecord, record};
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
    /// This replica took the lead; `in_flight` are the deployments the log shows under way,
    /// which the previous leader may not have delivered.
    Elected { in_flight: Vec<CommandView> },
    /// Changes asked for: by callers, through the inbox, by the control plane's own parts.
    /// They wait for the next [`Input::Flush`].
    Requests(Vec<Request>),
    /// Each service with agents' hosts or an engine, and the engine's next deadline: the
    /// shell's view of the read model when its inbox poll came round. Ticks due are queued
    /// like requests.
    Due(Vec<(String, Option<Timestamp>)>),
    /// The timer armed by [`Effect::ArmTimer`] went off. `longest_watch` is the longest
    /// watch window of any service, which bounds the metrics worth keeping.
    Timer { longest_watch: Duration },
    /// The shell has handed over everything it heard this turn (and what the effects it
    /// performed gave back): what is queued is applied as one batch.
    Flush,
    /// What became of the last [`Effect::Append`]: the sequence numbers of its records, or
    /// why none were written.
    Appended(Result<Vec<i64>, AppendFailed>),
    /// The lease is held by another replica, or could not be renewed in time.
    LeaseLost,
}

/// Why an append wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendFailed {
    /// Another replica holds the lease at a newer term.
    Fenced,
    /// The store could not be written (its connection, its disk); whether another replica
    /// took over is unknown.
    Store(String),
}

/// What the leader asks the shell to do, in order.
#[derive(Debug)]
pub enum Effect {
    /// Append these in one transaction fenced by the lease, and feed back
    /// [`Input::Appended`] before any other input.
    Append { records: Vec<NewRecord>, answers: Vec<Answer>, audits: Vec<NewAudit> },
    /// The last append is durable as the records numbered `seqs`: the read model is the
    /// log's through the last; tell the world of its events (numbered) and wake the hosts
    /// its commands are for.
    Announce { seqs: Vec<i64>, events: Vec<EventView>, commands: Vec<CommandView> },
    /// Answer the caller waiting under `ticket`: the request's outcome, with the sequence
    /// number of its last record once applied.
    Answer { ticket: Ticket, result: Result<(Applied, i64), ApiError> },
    /// Hand these commands (all in the log) to the drivers.
    Send(Vec<CommandView>),
    /// Stop leading: drop the read model (it may hold what no log holds) and replay the
    /// log; give the lease up at once if `release_lease`.
    StepDown { release_lease: bool },
    /// Write the hosts' signs of life heard by this replica, then judge which registered
    /// hosts have been silent for longer than the host timeout, counting from no earlier
    /// than `leading_since_ms` (a new leader gives every host a full timeout), and hand
    /// them back as [`Input::Requests`].
    FindLostHosts { leading_since_ms: i64 },
    /// Tell the webhooks of steps blocked for too long.
    NotifyBlocked,
    /// Start the synthetic checks that are due.
    Probe,
    /// Evaluate alarms and bakes on the data stored, start the Prometheus queries due, and
    /// hand back what they found as [`Input::Requests`].
    Query,
    /// Drop metrics recorded before this time.
    PruneMetrics { before_ms: i64 },
    /// Feed [`Input::Timer`] back once the clock reads this.
    ArmTimer(Timestamp),
}

/// Names a caller waiting on this replica for a request's answer; the shell keeps the
/// way back to it under this number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// A request's ticket, what applying it gave, and the index of its last record.
type RequestOutcome = (Option<Ticket>, Result<Applied, ApiError>, Option<usize>);

/// A batch handed to the store, waiting for its outcome.
#[derive(Debug)]
struct Appending {
    /// What the batch's records announce once durable: their kinds and bodies.
    records: Vec<NewRecord>,
    /// Each applied or refused request's ticket, outcome and index of its last record.
    outcomes: Vec<RequestOutcome>,
    /// Requests not applied because one before them faulted.
    unapplied: Vec<Request>,
    /// Applying one request failed midway: the read model holds a change no log holds.
    faulted: bool,
}

/// The leader's state between inputs: when it last did each periodic thing, what waits to
/// be applied and what waits for the store.
#[derive(Debug)]
pub struct Leader {
    host_timeout: Duration,
    leading_since: Option<Timestamp>,
    last_tick: BTreeMap<String, Timestamp>,
    last_scan: Option<Timestamp>,
    last_prune_ms: i64,
    queued: Vec<Request>,
    appending: Option<Appending>,
    /// The lease was lost while a batch was with the store: its outcome still decides the
    /// answers, then the leader steps down.
    lost: bool,
    /// The last time a batch was stamped with: the log's times never go backwards.
    last_at: i64,
}

/// The answer to requests this replica will not apply: the caller hands them over to the
/// leader through the inbox.
fn not_leading() -> ApiError {
    ApiError::unavailable("this replica lost the lead")
}

impl Leader {
    pub fn new(host_timeout: Duration) -> Leader {
        Leader {
            host_timeout,
            leading_since: None,
            last_tick: BTreeMap::new(),
            last_scan: None,
            last_prune_ms: 0,
            queued: Vec::new(),
            appending: None,
            lost: false,
            last_at: 0,
        }
    }

    /// Losing a host is judged against a timeout of many seconds: reading every heartbeat
    /// at each sweep would be work for nothing.
    fn scan_every(&self) -> Duration {
        (self.host_timeout / 10).max(SWEEP)
    }

    /// Whether this replica leads: from [`Input::Elected`] to [`Effect::StepDown`].
    pub fn is_leading(&self) -> bool {
        self.leading_since.is_some()
    }

    /// Decides what `input` calls for at `now`. Requests are applied to `model` (pure
    /// data: the engines and the views) when a batch is flushed; nothing else is touched.
    pub fn handle(&mut self, now: Timestamp, model: &mut ReadModel, input: Input) -> Vec<Effect> {
        match input {
            Input::Elected { in_flight } => {
                // Every host starts a term with a full timeout.
                self.leading_since = Some(now);
                self.last_scan = None;
                self.lost = false;
                // Deployments in flight are in the log already; the first sweep comes at once.
                vec![Effect::Send(in_flight), Effect::ArmTimer(now)]
            }
            Input::Requests(requests) if !self.is_leading() => requests
                .into_iter()
                .filter_map(|r| r.ticket)
                .map(|ticket| Effect::Answer { ticket, result: Err(not_leading()) })
                .collect(),
            Input::Requests(requests) => {
                self.queued.extend(requests);
                Vec::new()
            }
            Input::Due(services) => {
                let ticks = self.due_ticks(now, services);
                if self.is_leading() {
                    self.queued.extend(ticks);
                }
                Vec::new()
            }
            Input::Timer { longest_watch } => self.sweep(now, longest_watch),
            Input::Flush => self.flush(now, model),
            Input::Appended(result) => self.appended(now, model, result),
            Input::LeaseLost if self.appending.is_some() => {
                self.lost = true;
                Vec::new()
            }
            Input::LeaseLost => self.step_down(false, Vec::new()),
        }
    }

    /// The services due a tick at `now`, as the clock's requests.
    fn due_ticks(&mut self, now: Timestamp, services: Vec<(String, Option<Timestamp>)>) -> Vec<Request> {
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
                Request::from_machine(MachineComponent::Clock, service, LogInput::Tick)
            })
            .collect()
    }

    fn sweep(&mut self, now: Timestamp, longest_watch: Duration) -> Vec<Effect> {
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
            effects.push(Effect::PruneMetrics { before_ms: now_ms.saturating_sub(keep).saturating_sub(60_000) });
        }
        effects.push(Effect::ArmTimer(crate::clock::later(now, SWEEP)));
        effects
    }

    /// Applies what is queued, all stamped `now` (never earlier than the last batch), and
    /// hands it to the store. One batch is with the store at a time: what comes meanwhile
    /// waits for the next.
    fn flush(&mut self, now: Timestamp, model: &mut ReadModel) -> Vec<Effect> {
        if self.appending.is_some() || self.queued.is_empty() || !self.is_leading() {
            return Vec::new();
        }
        let at = now.as_millisecond().max(self.last_at);
        self.last_at = at;
        let Batch { records, answers, audits, outcomes, unapplied, faulted } =
            apply_batch(model, at, std::mem::take(&mut self.queued));
        let outcomes = outcomes.into_iter().map(|(r, result, through)| (r.ticket, result, through)).collect();
        self.appending = Some(Appending { records: records.clone(), outcomes, unapplied, faulted });
        vec![Effect::Append { records, answers, audits }]
    }

    /// The store said what became of the batch: only now is anyone answered, and only as
    /// the log says.
    fn appended(
        &mut self,
        now: Timestamp,
        model: &mut ReadModel,
        result: Result<Vec<i64>, AppendFailed>,
    ) -> Vec<Effect> {
        let Some(Appending { records, outcomes, unapplied, faulted }) = self.appending.take() else {
            return Vec::new();
        };
        let seqs = match result {
            Ok(seqs) => seqs,
            Err(why) => {
                tracing::warn!("appending to the log failed, stepping down: {why:?}");
                let refused = outcomes.into_iter().filter_map(|(ticket, _, _)| ticket).map(|ticket| Effect::Answer {
                    ticket,
                    result: Err(ApiError::unavailable("the write was refused; retry")),
                });
                let mut effects: Vec<Effect> = refused.collect();
                effects.extend(self.step_down(true, unapplied));
                return effects;
            }
        };
        let (events, mut commands) = announced(&records, &seqs);
        let mut effects = vec![Effect::Announce { seqs: seqs.clone(), events, commands: commands.clone() }];
        if faulted {
            // Before anyone hears of the fault, the half-changed model is gone; the next
            // term delivers the commands again.
            effects.push(Effect::StepDown { release_lease: true });
            commands.clear();
        }
        for (ticket, result, through) in outcomes {
            if let Some(ticket) = ticket {
                let seq = through.and_then(|i| seqs.get(i).copied()).unwrap_or(0);
                effects.push(Effect::Answer { ticket, result: result.map(|a| (a, seq)) });
            }
        }
        if faulted || self.lost {
            let release_lease = faulted;
            let mut rest = self.step_down(release_lease, unapplied);
            if faulted {
                rest.remove(0);
            }
            effects.extend(rest);
            return effects;
        }
        if !commands.is_empty() {
            effects.push(Effect::Send(commands));
        }
        // What came while the store was busy goes next.
        effects.extend(self.flush(now, model));
        effects
    }

    /// Gives up the lead: every request not applied, and every one queued, is answered
    /// "not leading" (its caller hands it to the next leader).
    fn step_down(&mut self, release_lease: bool, unapplied: Vec<Request>) -> Vec<Effect> {
        self.leading_since = None;
        self.lost = false;
        let mut effects = vec![Effect::StepDown { release_lease }];
        for r in unapplied.into_iter().chain(std::mem::take(&mut self.queued)) {
            if let Some(ticket) = r.ticket {
                effects.push(Effect::Answer { ticket, result: Err(not_leading()) });
            }
        }
        effects
    }
}

/// Whether a host last heard from at `seen_ms` (0: never) is lost at `now_ms`.
pub fn is_lost(now_ms: i64, seen_ms: i64, leading_since_ms: i64, timeout: Duration) -> bool {
    let timeout = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    now_ms - seen_ms.max(leading_since_ms) > timeout
}

/// A request to change something, on its way to the leader.
#[derive(Debug)]
pub struct Request {
    pub service: String,
    pub input: LogInput,
    pub actor: Actor,
    /// Who waits on this replica for the answer, if anyone.
    pub ticket: Option<Ticket>,
    /// The inbox entry it came through, answered in the append that logs it.
    pub inbox_id: Option<i64>,
}

impl Request {
    /// An input from a part of the control plane itself: nobody waits for its answer.
    pub fn from_machine(component: MachineComponent, service: String, input: LogInput) -> Request {
        Request { service, input, actor: Actor::Machine(component), ticket: None, inbox_id: None }
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
struct Batch {
    records: Vec<NewRecord>,
    answers: Vec<Answer>,
    audits: Vec<NewAudit>,
    /// Each request applied or refused, with the index of its last record in `records`.
    outcomes: Vec<(Request, Result<Applied, ApiError>, Option<usize>)>,
    /// Requests not applied because one before them faulted.
    unapplied: Vec<Request>,
    /// Applying one request failed midway: the read model holds a change no log holds.
    faulted: bool,
}

/// Applies `requests` to `model` in order, all stamped `at`, and collects what the log
/// must hold.
fn apply_batch(model: &mut ReadModel, at: i64, requests: Vec<Request>) -> Batch {
    let mut batch = Batch {
        records: Vec::new(),
        answers: Vec::new(),
        audits: Vec::new(),
        outcomes: Vec::new(),
        unapplied: Vec::new(),
        faulted: false,
    };
    let mut pending = requests.into_iter();
    while let Some(r) = pending.next() {
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
fn announced(records: &[NewRecord], seqs: &[i64]) -> (Vec<EventView>, Vec<CommandView>) {
    let (mut events, mut commands) = (Vec::new(), Vec::new());
    for (record, seq) in records.iter().zip(seqs) {
        // The records were written from these very types a moment ago, so each reads.
        match LogRecord::read(&record.kind, &record.body) {
            Ok(LogRecord::Event(mut e)) => {
                e.seq = Some(*seq);
                events.push(e);
            }
            Ok(LogRecord::Command(c)) => commands.push(c),
            Ok(LogRecord::Input(_)) => {}
            Err(e) => tracing::error!(seq, "{e}"),
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
    //! The leader alone, in virtual time: inputs in, effects out. A test plays the shell
    //! and the store; nothing waits and nothing runs.
    use super::*;
    use crate::auth::{Caller, Role, Scope};
    use axum::http::StatusCode;

    const MANIFEST: &str = "\
service: web
environments:
  prod: { regions: { r1: { zones: { z1: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 50%, bake: 0s }
  rolling: { batch: 50%, zone_bake: 0s }
stages:
  - { name: prod, environment: prod, bake: 0s }
";

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn admin() -> Actor {
        Actor::Token(Caller { id: 1, name: "admin".into(), role: Role::Admin, scope: Scope::Global })
    }

    fn manifest(service: &str) -> LogInput {
        LogInput::ApplyManifest {
            file: format!("{service}.yaml"),
            text: MANIFEST.replace("service: web", &format!("service: {service}")),
            agents: false,
        }
    }

    fn hold() -> LogInput {
        LogInput::Operator { action: rollwave_api::OperatorAction::Hold, release: None, stage: None }
    }

    /// A request whose caller waits under `ticket`.
    fn asked(ticket: u64, service: &str, input: LogInput) -> Request {
        Request { service: service.into(), input, actor: admin(), ticket: Some(Ticket(ticket)), inbox_id: None }
    }

    /// A leader just elected, with its read model.
    fn elected() -> (Leader, ReadModel) {
        let (mut leader, mut model) = (Leader::new(Duration::from_secs(30)), ReadModel::default());
        leader.handle(at(0), &mut model, Input::Elected { in_flight: Vec::new() });
        (leader, model)
    }

    /// The records of the append among `effects`, as (kind, service, the input's type).
    fn appended(effects: &[Effect]) -> Option<Vec<(String, String, String)>> {
        effects.iter().find_map(|e| match e {
            Effect::Append { records, .. } => Some(
                records
                    .iter()
                    .map(|r| {
                        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                        let what = body["type"].as_str().or(body["kind"].as_str()).unwrap_or("").to_owned();
                        (r.kind.clone(), r.service.clone(), what)
                    })
                    .collect(),
            ),
            _ => None,
        })
    }

    /// How many records the append among `effects` holds.
    fn appending(effects: &[Effect]) -> usize {
        appended(effects).map_or(0, |r| r.len())
    }

    /// The answers among `effects`: ticket, and the sequence number or the status.
    fn answers(effects: &[Effect]) -> Vec<(u64, Result<i64, StatusCode>)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Answer { ticket, result } => {
                    Some((ticket.0, result.as_ref().map(|(_, seq)| *seq).map_err(|e| e.status)))
                }
                _ => None,
            })
            .collect()
    }

    fn steps_down(effects: &[Effect]) -> Option<bool> {
        effects.iter().find_map(|e| match e {
            Effect::StepDown { release_lease } => Some(*release_lease),
            _ => None,
        })
    }

    /// The store's numbers for `n` records appended after `last`.
    fn seqs(last: i64, n: usize) -> Vec<i64> {
        (last + 1..=last + n as i64).collect()
    }

    /// The services ticked by the batch among `effects`.
    fn ticked(effects: &[Effect]) -> Vec<String> {
        appended(effects)
            .unwrap_or_default()
            .into_iter()
            .filter(|(kind, _, what)| kind == "input" && what == "tick")
            .map(|(_, service, _)| service)
            .collect()
    }

    /// Applies the manifests of `services` and says they are durable.
    fn with_services(leader: &mut Leader, model: &mut ReadModel, services: &[&str]) -> i64 {
        let requests =
            services.iter().map(|s| Request::from_machine(MachineComponent::Clock, (*s).into(), manifest(s)));
        leader.handle(at(0), model, Input::Requests(requests.collect()));
        let batch = leader.handle(at(0), model, Input::Flush);
        let n = appending(&batch);
        leader.handle(at(0), model, Input::Appended(Ok(seqs(0, n))));
        n as i64
    }

    #[test]
    fn a_request_is_answered_only_once_its_append_succeeded() {
        let (mut leader, mut model) = elected();
        assert!(leader.handle(at(1), &mut model, Input::Requests(vec![asked(1, "web", manifest("web"))])).is_empty());
        let flushed = leader.handle(at(1), &mut model, Input::Flush);
        assert_eq!(
            appended(&flushed).unwrap().first(),
            Some(&("input".to_owned(), "web".to_owned(), "apply_manifest".to_owned())),
            "the input first, then its decisions"
        );
        assert!(answers(&flushed).is_empty(), "nobody hears before the log holds it");
        let n = appending(&flushed);
        let durable = leader.handle(at(1), &mut model, Input::Appended(Ok(seqs(10, n))));
        assert!(matches!(&durable[0], Effect::Announce { seqs, .. } if seqs.len() == n), "{durable:?}");
        assert_eq!(answers(&durable), [(1, Ok(10 + n as i64))], "answered with the seq of its last record");
        assert_eq!(steps_down(&durable), None);
    }

    #[test]
    fn an_inbox_entry_is_answered_in_the_append_that_logs_it() {
        let (mut leader, mut model) = elected();
        let through_inbox =
            |input| Request { service: "web".into(), input, actor: admin(), ticket: None, inbox_id: Some(41) };
        leader.handle(at(1), &mut model, Input::Requests(vec![through_inbox(manifest("web"))]));
        let flushed = leader.handle(at(1), &mut model, Input::Flush);
        let Effect::Append { records, answers: inbox, .. } = &flushed[0] else { panic!("{flushed:?}") };
        assert_eq!(inbox.len(), 1, "{inbox:?}");
        assert_eq!((inbox[0].inbox_id, inbox[0].through_record), (41, Some(records.len() - 1)));
        assert_eq!(inbox[0].body, r#"{"error":null}"#, "the inbox's answer keeps its JSON");
        let durable = leader.handle(at(1), &mut model, Input::Appended(Ok(seqs(0, records.len()))));
        assert!(answers(&durable).is_empty(), "the entry's answer is in the log; nobody waits here");
    }

    #[test]
    fn a_refused_request_writes_nothing_and_is_answered_with_its_batch() {
        let (mut leader, mut model) = elected();
        let requests = vec![asked(1, "nowhere", hold()), asked(2, "web", manifest("web"))];
        leader.handle(at(1), &mut model, Input::Requests(requests));
        let flushed = leader.handle(at(1), &mut model, Input::Flush);
        assert!(appended(&flushed).unwrap().iter().all(|(_, service, _)| service == "web"), "{flushed:?}");
        assert!(answers(&flushed).is_empty());
        let durable = leader.handle(at(1), &mut model, Input::Appended(Ok(seqs(0, appending(&flushed)))));
        let answered = answers(&durable);
        assert!(matches!(answered[0], (1, Err(status)) if status != StatusCode::SERVICE_UNAVAILABLE), "{answered:?}");
        assert!(matches!(answered[1], (2, Ok(_))));
    }

    #[test]
    fn a_fenced_append_answers_every_waiting_request_with_an_error_and_steps_down() {
        let (mut leader, mut model) = elected();
        with_services(&mut leader, &mut model, &["web"]);
        leader.handle(at(1), &mut model, Input::Requests(vec![asked(1, "web", hold()), asked(2, "nowhere", hold())]));
        let flushed = leader.handle(at(1), &mut model, Input::Flush);
        assert!(appending(&flushed) > 0, "the hold is logged");
        leader.handle(at(1), &mut model, Input::Requests(vec![asked(3, "web", hold())]));
        assert!(leader.handle(at(1), &mut model, Input::Flush).is_empty(), "one batch with the store at a time");

        let fenced = leader.handle(at(1), &mut model, Input::Appended(Err(AppendFailed::Fenced)));
        let unavailable = Err(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answers(&fenced), [(1, unavailable), (2, unavailable), (3, unavailable)], "{fenced:?}");
        assert_eq!(steps_down(&fenced), Some(true), "and gives the lease up at once");
        assert!(!fenced.iter().any(|e| matches!(e, Effect::Announce { .. } | Effect::Send(_))));
        assert!(!leader.is_leading());

        let late = leader.handle(at(2), &mut model, Input::Requests(vec![asked(4, "web", hold())]));
        assert_eq!(answers(&late), [(4, unavailable)], "a replica that does not lead refuses at once");
        assert!(leader.handle(at(2), &mut model, Input::Flush).is_empty());
    }

    #[test]
    fn a_store_error_is_answered_like_a_fence() {
        let (mut leader, mut model) = elected();
        leader.handle(at(1), &mut model, Input::Requests(vec![asked(1, "web", manifest("web"))]));
        leader.handle(at(1), &mut model, Input::Flush);
        let failed = leader.handle(at(1), &mut model, Input::Appended(Err(AppendFailed::Store("disk full".into()))));
        assert_eq!(answers(&failed), [(1, Err(StatusCode::SERVICE_UNAVAILABLE))]);
        assert_eq!(steps_down(&failed), Some(true));
    }

    #[test]
    fn what_arrives_while_the_store_is_busy_is_the_next_batch() {
        let (mut leader, mut model) = elected();
        with_services(&mut leader, &mut model, &["web"]);
        leader.handle(at(1), &mut model, Input::Requests(vec![asked(1, "web", hold())]));
        let first = leader.handle(at(1), &mut model, Input::Flush);
        leader.handle(at(1), &mut model, Input::Requests(vec![asked(2, "web", hold())]));
        let n = appending(&first);
        let durable = leader.handle(at(1), &mut model, Input::Appended(Ok(seqs(100, n))));
        assert_eq!(answers(&durable), [(1, Ok(100 + n as i64))]);
        let next = appended(&durable).expect("the next batch goes to the store");
        assert_eq!(next[0], ("input".to_owned(), "web".to_owned(), "operator".to_owned()));
    }

    #[test]
    fn the_lease_lost_during_an_append_lets_the_store_decide_the_answers_then_steps_down() {
        let (mut leader, mut model) = elected();
        with_services(&mut leader, &mut model, &["web"]);
        leader.handle(at(1), &mut model, Input::Requests(vec![asked(1, "web", hold())]));
        let batch = leader.handle(at(1), &mut model, Input::Flush);
        leader.handle(at(1), &mut model, Input::Requests(vec![asked(2, "web", hold())]));
        assert!(leader.handle(at(1), &mut model, Input::LeaseLost).is_empty(), "the append may yet be durable");
        let n = appending(&batch);
        let durable = leader.handle(at(1), &mut model, Input::Appended(Ok(seqs(7, n))));
        assert_eq!(answers(&durable), [(1, Ok(7 + n as i64)), (2, Err(StatusCode::SERVICE_UNAVAILABLE))]);
        assert_eq!(steps_down(&durable), Some(false), "the lease is another's already");
        assert!(!durable.iter().any(|e| matches!(e, Effect::Send(_))), "the next leader delivers");
    }

    #[test]
    fn the_lease_lost_between_batches_refuses_what_is_queued() {
        let (mut leader, mut model) = elected();
        leader.handle(at(1), &mut model, Input::Requests(vec![asked(1, "web", manifest("web"))]));
        let lost = leader.handle(at(1), &mut model, Input::LeaseLost);
        assert_eq!(steps_down(&lost), Some(false));
        assert_eq!(answers(&lost), [(1, Err(StatusCode::SERVICE_UNAVAILABLE))]);
        assert!(model.services.is_empty(), "nothing was applied");
    }

    #[test]
    fn a_fault_while_applying_is_answered_once_the_batch_before_it_is_durable_and_the_leader_steps_down() {
        let (mut leader, mut model) = elected();
        with_services(&mut leader, &mut model, &["web-fault"]);
        crate::state::fault::PANIC_ON_NEXT_HOLD.lock().unwrap_or_else(|p| p.into_inner()).insert("web-fault".into());
        let requests = vec![asked(1, "web-fault", hold()), asked(2, "web-fault", hold())];
        leader.handle(at(1), &mut model, Input::Requests(requests));
        let flushed = leader.handle(at(1), &mut model, Input::Flush);
        assert_eq!(appending(&flushed), 0, "the faulted input is not logged");
        let durable = leader.handle(at(1), &mut model, Input::Appended(Ok(Vec::new())));
        assert_eq!(
            answers(&durable),
            [(1, Err(StatusCode::INTERNAL_SERVER_ERROR)), (2, Err(StatusCode::SERVICE_UNAVAILABLE))]
        );
        let position = |f: fn(&Effect) -> bool| durable.iter().position(f);
        assert!(
            position(|e| matches!(e, Effect::StepDown { release_lease: true }))
                < position(|e| matches!(e, Effect::Answer { .. })),
            "the half-changed model is dropped before anyone hears: {durable:?}"
        );
    }

    #[test]
    fn commands_are_sent_once_durable_and_in_flight_ones_again_on_election() {
        let (mut leader, mut model) = elected();
        let command = |durable: &[Effect]| durable.iter().any(|e| matches!(e, Effect::Send(c) if !c.is_empty()));
        with_services(&mut leader, &mut model, &["web"]);
        let release = LogInput::CreateRelease {
            version: crate::release::Version::parse("1.0.0").unwrap(),
            artifact: None,
            sha256: None,
            flags: None,
        };
        leader.handle(at(1), &mut model, Input::Requests(vec![asked(1, "web", release)]));
        let flushed = leader.handle(at(1), &mut model, Input::Flush);
        assert!(appended(&flushed).unwrap().iter().any(|(kind, _, _)| kind == "command"), "{flushed:?}");
        assert!(!command(&flushed), "not before the log holds it");
        let durable = leader.handle(at(1), &mut model, Input::Appended(Ok(seqs(2, appending(&flushed)))));
        assert!(command(&durable));

        let in_flight: Vec<CommandView> = model.services.values().flat_map(|s| s.in_flight()).collect();
        assert!(!in_flight.is_empty());
        let mut next = Leader::new(Duration::from_secs(30));
        let again = next.handle(at(5), &mut model, Input::Elected { in_flight: in_flight.clone() });
        assert!(matches!(&again[..], [Effect::Send(c), Effect::ArmTimer(t)] if *c == in_flight && *t == at(5)));
    }

    #[test]
    fn a_service_is_ticked_when_its_deadline_passes_and_at_least_every_thirty_seconds() {
        let (mut leader, mut model) = elected();
        let mut last = with_services(&mut leader, &mut model, &["web", "api"]);
        let mut turn = |leader: &mut Leader, model: &mut ReadModel, s: i64, web_deadline: Option<i64>| {
            let due = vec![("web".to_owned(), web_deadline.map(at)), ("api".to_owned(), None)];
            leader.handle(at(s), model, Input::Due(due));
            let flushed = leader.handle(at(s), model, Input::Flush);
            let n = appending(&flushed);
            leader.handle(at(s), model, Input::Appended(Ok(seqs(last, n))));
            last += n as i64;
            ticked(&flushed)
        };
        assert_eq!(turn(&mut leader, &mut model, 0, None), ["web", "api"], "never ticked: both due");
        assert!(turn(&mut leader, &mut model, 1, Some(5)).is_empty(), "nothing due yet");
        assert_eq!(turn(&mut leader, &mut model, 5, Some(5)), ["web"], "web's deadline came");
        assert!(turn(&mut leader, &mut model, 29, None).is_empty());
        assert_eq!(turn(&mut leader, &mut model, 30, None), ["api"], "api's last tick is 30 s old");
        assert_eq!(turn(&mut leader, &mut model, 35, None), ["web"]);
    }

    #[test]
    fn a_batch_is_stamped_with_the_time_it_is_applied_and_the_log_never_goes_back() {
        let (mut leader, mut model) = elected();
        leader.handle(at(9), &mut model, Input::Requests(vec![asked(1, "web", manifest("web"))]));
        let stamps = |effects: &[Effect]| match &effects[0] {
            Effect::Append { records, .. } => records.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let first = leader.handle(at(10), &mut model, Input::Flush);
        assert!(stamps(&first).iter().all(|t| *t == at(10).as_millisecond()));
        leader.handle(at(10), &mut model, Input::Appended(Ok(seqs(0, appending(&first)))));
        leader.handle(at(5), &mut model, Input::Requests(vec![asked(2, "web", hold())]));
        let second = leader.handle(at(5), &mut model, Input::Flush);
        assert!(stamps(&second).iter().all(|t| *t == at(10).as_millisecond()), "a clock set back stamps no earlier");
    }

    #[test]
    fn the_sweep_rearms_itself_and_scans_for_lost_hosts_every_tenth_of_the_timeout() {
        let mut leader = Leader::new(Duration::from_secs(30));
        let mut model = ReadModel::default();
        let elected = leader.handle(at(0), &mut model, Input::Elected { in_flight: Vec::new() });
        assert!(matches!(elected.last(), Some(Effect::ArmTimer(t)) if *t == at(0)), "the first sweep comes at once");
        let timer = || Input::Timer { longest_watch: Duration::from_secs(600) };
        let first = leader.handle(at(1), &mut model, timer());
        let since = at(0).as_millisecond();
        assert!(matches!(first[0], Effect::FindLostHosts { leading_since_ms } if leading_since_ms == since));
        let has = |effects: &[Effect], f: fn(&Effect) -> bool| effects.iter().any(f);
        assert!(has(&first, |e| matches!(e, Effect::Probe)));
        assert!(has(&first, |e| matches!(e, Effect::Query)));
        assert!(has(&first, |e| matches!(e, Effect::NotifyBlocked)));
        let prune = at(1).as_millisecond() - 600_000 - 60_000;
        assert!(first.iter().any(|e| matches!(e, Effect::PruneMetrics { before_ms } if *before_ms == prune)));
        assert!(matches!(first.last(), Some(Effect::ArmTimer(t)) if *t == crate::clock::later(at(1), SWEEP)));
        assert!(!has(&leader.handle(at(3), &mut model, timer()), |e| matches!(e, Effect::FindLostHosts { .. })));
        let scan = leader.handle(at(4), &mut model, timer());
        assert!(
            matches!(scan[0], Effect::FindLostHosts { leading_since_ms } if leading_since_ms == since),
            "3 s after the last scan: a tenth of the timeout"
        );
        assert!(!has(&scan, |e| matches!(e, Effect::PruneMetrics { .. })), "pruned a minute ago at most");
        assert!(has(&leader.handle(at(62), &mut model, timer()), |e| matches!(e, Effect::PruneMetrics { .. })));
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
