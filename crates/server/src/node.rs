//! One replica of the control plane. Every replica keeps a read model by replaying the
//! log; the one holding the lease also applies new inputs, appends them (with their
//! decisions) in fenced transactions, ticks the engines and drives deployments.

use crate::api::EventView;
use crate::auth::{Actor, MachineComponent};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::leader::{AppendFailed, Effect, InboxAnswer, InboxRequest, Input, Leader, Request, Ticket, panic_text};
use crate::log::LogRecord;
use crate::metrics::Metrics;
use crate::state::{Applied, CommandView, LogInput, ReadModel};
use rollwave_api::Lane;
use rollwave_store::{Lease, Store};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// How deployments reach hosts.
#[derive(Clone, Debug, PartialEq)]
pub enum Driver {
    /// Hosts run `rollwave agent`, which long-polls for its desired version and reports.
    Agent,
    /// Every host deployment succeeds after `delay`: for tests and trials.
    Noop { delay: Duration },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub db: String,
    pub listen: std::net::SocketAddr,
    /// Names this replica in the lease.
    pub node_id: String,
    pub driver: Driver,
    pub lease_ttl: Duration,
    /// The first admin token, instead of a random one (it is still stored only as a hash).
    pub bootstrap_token: Option<String>,
    /// Reads (API and dashboard) need no token. Off by default: reads need a viewer token.
    pub anonymous_read: bool,
    /// A registered host not heard from for this long is lost.
    pub host_timeout: Duration,
    /// The Prometheus HTTP API for `source: prometheus` alarms.
    pub prometheus: Option<String>,
    /// Requests served are counted as bake data points in bins of this length (shorter
    /// bins: bakes see data sooner, and the log holds more `served` entries).
    pub datapoint_bin: Duration,
    /// How often regions of functions' invocations and errors are read from CloudWatch:
    /// Lambda's metrics are per minute.
    pub function_traffic_every: Duration,
    /// CloudWatch publishes a period's metrics this long after it ends (Lambda's about a
    /// minute later): its alarms and the functions' traffic read each period this late.
    pub cloudwatch_delay: Duration,
}

/// The default of [`Config::datapoint_bin`].
pub const DATAPOINT_BIN: Duration = Duration::from_secs(10);

pub struct Node {
    pub store: Store,
    /// What every decision of this replica reads the time from.
    pub clock: Arc<dyn Clock>,
    pub config: Config,
    pub model: RwLock<ReadModel>,
    pub metrics: Metrics,
    pub notifier: Arc<crate::notify::Notifier>,
    /// The lease while this replica leads.
    pub lease: watch::Sender<Option<Lease>>,
    /// Persisted events, with their sequence numbers, as they are appended or replayed.
    pub events: broadcast::Sender<EventView>,
    /// Bumped whenever the read model changes, for long-polls.
    pub changed: watch::Sender<i64>,
    /// Bumped when the whole read model may have changed (step-down, replay): wakes every long-poll.
    pub reset: watch::Sender<i64>,
    /// Per host slot: woken when a command for it is committed.
    wakers: std::sync::Mutex<std::collections::HashMap<(String, String, String), Arc<tokio::sync::Notify>>>,
    /// True once the replica has replayed the log at start.
    pub ready: watch::Sender<bool>,
    /// The clock's reading (ms) at the leader's last sweep, once what it decided is
    /// applied: a test in virtual time advances the clock and waits on this.
    pub swept: watch::Sender<i64>,
    requests: mpsc::Sender<Asked>,
    requests_rx: std::sync::Mutex<Option<mpsc::Receiver<Asked>>>,
    /// Hosts heard from since the last flush to the store: (service, environment, host) → ms.
    heard: std::sync::Mutex<std::collections::HashMap<(String, String, String), i64>>,
    /// Routers that asked for a region's table: (service, environment, region) → their
    /// address → when last heard (ms). Monitors probe each region through them.
    routers: std::sync::Mutex<crate::monitors::Routers>,
    /// Sets the aliases of regions of functions.
    functions: Arc<crate::functions::FunctionsDriver>,
}

/// The way back to a caller waiting on this replica for a request's outcome.
type Reply = oneshot::Sender<Result<(Applied, i64), ApiError>>;
/// A request for the leader, and where its answer goes when someone waits for one.
type Asked = (Request, Option<Reply>);

/// What the shell keeps while it leads: the lease it writes under, the callers waiting, the
/// timer, the tasks that probe and query, and whether the leader stepped down.
struct Shell {
    lease: Lease,
    replies: HashMap<Ticket, Reply>,
    next_ticket: u64,
    wake_at: jiff::Timestamp,
    monitors: crate::monitors::Monitors,
    signals: crate::signals::Signals,
    /// Set by [`Effect::StepDown`]: whether to give the lease up.
    stepped_down: Option<bool>,
}

impl Shell {
    /// The request, with a ticket naming its caller if one waits.
    fn ticketed(&mut self, (mut request, reply): Asked) -> Request {
        if let Some(reply) = reply {
            self.next_ticket += 1;
            let ticket = Ticket(self.next_ticket);
            self.replies.insert(ticket, reply);
            request.ticket = Some(ticket);
        }
        request
    }
}

/// A router not heard from for this long is no longer probed through: three of its
/// long-polls (30 s each).
pub const ROUTER_EXPIRY_MS: i64 = 90_000;

impl Node {
    pub fn new(store: Store, config: Config) -> Arc<Self> {
        Self::with_clock(store, config, crate::clock::system())
    }

    /// A replica that reads the time from `clock`.
    pub fn with_clock(store: Store, config: Config, clock: Arc<dyn Clock>) -> Arc<Self> {
        let (requests, rx) = mpsc::channel(4096);
        Arc::new(Node {
            store,
            config,
            notifier: Arc::new(crate::notify::Notifier::with_clock(Arc::clone(&clock))),
            clock,
            model: RwLock::new(ReadModel::default()),
            metrics: Metrics::new(),
            lease: watch::channel(None).0,
            events: broadcast::channel(4096).0,
            changed: watch::channel(0).0,
            reset: watch::channel(0).0,
            wakers: std::sync::Mutex::new(std::collections::HashMap::new()),
            ready: watch::channel(false).0,
            swept: watch::channel(0).0,
            requests,
            requests_rx: std::sync::Mutex::new(Some(rx)),
            heard: std::sync::Mutex::new(std::collections::HashMap::new()),
            routers: std::sync::Mutex::default(),
            functions: Arc::default(),
        })
    }

    /// Notes a router fronting a region, from an authenticated router's table long-poll.
    pub fn heard_from_router(&self, service: &str, environment: &str, region: &str, address: &str) {
        let mut routers = self.routers.lock().unwrap_or_else(|p| p.into_inner());
        forget_silent_routers(&mut routers, self.clock.now_ms());
        let at = routers.entry((service.to_owned(), environment.to_owned(), region.to_owned())).or_default();
        // A bounded number per region, so a caller cannot grow this without end.
        if at.len() < crate::monitors::MAX_ROUTERS_PER_REGION || at.contains_key(address) {
            at.insert(address.to_owned(), self.clock.now_ms());
        }
    }

    /// The routers heard from lately, per region.
    pub fn routers_heard(&self) -> crate::monitors::Routers {
        let mut routers = self.routers.lock().unwrap_or_else(|p| p.into_inner());
        forget_silent_routers(&mut routers, self.clock.now_ms());
        routers.clone()
    }

    /// Notes a sign of life from a host (a poll, a report, a registration).
    pub fn heard_from(&self, service: &str, environment: &str, host: &str) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.insert((service.to_owned(), environment.to_owned(), host.to_owned()), self.clock.now_ms());
    }

    /// Writes the signs of life heard since the last flush, so the leader sees them
    /// whichever replica the hosts talk to.
    async fn flush_heartbeats(&self) {
        let batch: Vec<(String, String, String, i64)> = {
            let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
            heard.drain().map(|((s, e, h), t)| (s, e, h, t)).collect()
        };
        if !batch.is_empty()
            && let Err(e) = self.store.heartbeat(&batch).await
        {
            tracing::warn!("recording heartbeats failed: {e}");
        }
    }

    /// Registered hosts not heard from within the timeout, as `HostLost` requests.
    async fn lost_hosts(&self, leading_since: i64) -> Vec<Request> {
        let services: Vec<String> =
            self.read(|m| m.services.values().filter(|s| s.agents).map(|s| s.name.clone()).collect());
        let timeout = self.config.host_timeout;
        let now = self.clock.now_ms();
        let mut lost = Vec::new();
        for service in services {
            let beats = match self.store.heartbeats(&service).await {
                Ok(beats) => beats,
                Err(e) => {
                    tracing::warn!(service = %service, "reading heartbeats failed; no host is judged lost: {e}");
                    continue;
                }
            };
            let silent: Vec<(String, String)> = self.read(|m| {
                let Ok(s) = m.service(&service) else { return Vec::new() };
                let mut last: BTreeMap<(rollwave_core::plan::EnvId, rollwave_core::plan::HostId), i64> =
                    BTreeMap::new();
                for (env, host, at) in &beats {
                    if let Ok(key) = s.host(env, host) {
                        let entry = last.entry(key).or_insert(0);
                        *entry = (*entry).max(*at);
                    }
                }
                s.aliases
                    .iter()
                    .filter(|((env, _), slot)| s.engine.host_present(*env, **slot))
                    .filter(|((env, _), slot)| {
                        let seen = last.get(&(*env, **slot)).copied().unwrap_or(0);
                        crate::leader::is_lost(now, seen, leading_since, timeout)
                    })
                    .map(|((env, alias), _)| (s.plan.manifest.environments[env.idx()].name.clone(), alias.clone()))
                    .collect()
            });
            for (environment, host) in silent {
                lost.push(Request::from_machine(
                    MachineComponent::Clock,
                    service.clone(),
                    LogInput::HostLost { environment, host },
                ));
            }
        }
        lost
    }

    pub fn waker(&self, service: &str, environment: &str, host: &str) -> Arc<tokio::sync::Notify> {
        let mut w = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(w.entry((service.to_owned(), environment.to_owned(), host.to_owned())).or_default())
    }

    fn wake_hosts(&self, commands: &[CommandView]) {
        let w = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        for c in commands {
            for h in &c.hosts {
                if let Some(n) = w.get(&(c.service.clone(), c.environment.clone(), h.clone())) {
                    n.notify_waiters();
                }
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.lease.borrow().is_some()
    }

    pub fn read<T>(&self, f: impl FnOnce(&ReadModel) -> T) -> T {
        // No update panics while holding the lock: applying an input is caught, and the
        // model rebuilt from the log (see `apply_batch` and `follow`).
        let guard = self.model.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Applies a change through the leader, wherever it runs; returns once this replica's
    /// read model reflects it.
    pub async fn submit(&self, service: &str, input: LogInput, actor: Actor) -> Result<Applied, ApiError> {
        if self.is_leader() {
            let (tx, rx) = oneshot::channel();
            let request = Request {
                service: service.to_owned(),
                input: input.clone(),
                actor: actor.clone(),
                ticket: None,
                inbox_id: None,
            };
            if self.requests.send((request, Some(tx))).await.is_ok() {
                // No deadline here: once the applier has the request, only its answer can
                // say whether it is in the log. The applier waits on nothing but the store,
                // and answers every request it drops when it steps down.
                match rx.await {
                    Ok(Ok((applied, _))) => return Ok(applied),
                    Ok(Err(e)) if e.status != axum::http::StatusCode::SERVICE_UNAVAILABLE => return Err(e),
                    // Not applied, and this replica lost the lease: hand it over through the inbox.
                    Ok(Err(_)) | Err(_) => {}
                }
            }
        }
        self.submit_through_inbox(service, input, actor).await
    }

    async fn submit_through_inbox(&self, service: &str, input: LogInput, actor: Actor) -> Result<Applied, ApiError> {
        let body = serde_json::to_string(&InboxRequest { service: service.to_owned(), input, actor })
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let id = self.store.submit(&body).await?;
        // No deadline either: the entry stays in the inbox until a leader answers it, so
        // giving up here could tell the client "failed" of a change applied later.
        loop {
            if let Some((answer, seq)) = self.store.answer_of(id).await? {
                let answer: InboxAnswer =
                    serde_json::from_str(&answer).map_err(|e| ApiError::internal(format!("bad inbox answer: {e}")))?;
                if let Some((status, body)) = answer.error {
                    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::CONFLICT);
                    return Err(ApiError { status, body });
                }
                self.wait_applied(seq).await;
                return Ok(Applied::default());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_applied(&self, seq: i64) {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.read(|m| m.applied_seq) < seq {
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                break;
            }
        }
    }

    /// Runs the replica: replays the log, then follows or leads until the process ends.
    pub async fn run(self: Arc<Self>) {
        let Some(mut rx) = self.requests_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let flusher = Arc::clone(&self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            loop {
                every.tick().await;
                flusher.flush_heartbeats().await;
            }
        });
        let mut last_inbox = 0;
        let mut leader = Leader::new(self.config.host_timeout);
        loop {
            if let Err(e) = self.follow().await {
                tracing::warn!("reading the log failed: {e}");
            }
            self.ready.send_replace(true);
            // The lease is shared with other processes, whose only common clock is the
            // wall: it is read from the wall, never from the replica's clock.
            let lease = self
                .store
                .acquire_lease_at(&self.config.node_id, None, self.config.lease_ttl, rollwave_store::now_ms())
                .await;
            match lease {
                Ok(Some(lease)) => {
                    // A term after the first is a takeover from the replica that held the last.
                    tracing::info!(term = lease.term, node = %self.config.node_id, "this replica takes the lead");
                    self.lead(lease, &mut rx, &mut last_inbox, &mut leader).await;
                    tracing::info!("this replica no longer leads");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("the lease could not be read: {e}"),
            }
            // Followers answer nothing themselves: refuse what reached the channel.
            while let Ok((_, reply)) = rx.try_recv() {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(ApiError::unavailable("this replica is not the leader")));
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Replays whatever the log holds beyond the read model.
    async fn follow(&self) -> Result<(), rollwave_store::StoreError> {
        loop {
            let after = self.read(|m| m.applied_seq);
            let records = self.store.read_log(after, 1000, None).await?;
            if records.is_empty() {
                return Ok(());
            }
            let mut events = Vec::new();
            {
                let mut model = self.model.write().unwrap_or_else(|p| p.into_inner());
                for r in &records {
                    match LogRecord::read(&r.kind, &r.body) {
                        Ok(LogRecord::Input(input)) => {
                            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                model.apply(&r.service, r.at_ms, &input)
                            }));
                            match applied {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => tracing::error!(seq = r.seq, "a logged input no longer applies: {e}"),
                                Err(panic) => replay_failed(r.seq, panic_text(panic.as_ref())),
                            }
                        }
                        Ok(LogRecord::Event(mut e)) => {
                            e.seq = Some(r.seq);
                            events.push(e);
                        }
                        // Commands are the leader's to send; a follower only keeps its place.
                        Ok(LogRecord::Command(_)) => {}
                        Err(e) => tracing::error!(seq = r.seq, "{e}"),
                    }
                    model.applied_seq = r.seq;
                }
            }
            for e in events {
                let _ = self.events.send(e);
            }
            self.changed.send_modify(|n| *n += 1);
            self.reset.send_modify(|n| *n += 1);
        }
    }

    /// Leads while the lease holds: hears requests, the inbox, the clock and the lease, hands
    /// each to `leader` and performs what it decides, until it steps down.
    async fn lead(&self, lease: Lease, rx: &mut mpsc::Receiver<Asked>, last_inbox: &mut i64, leader: &mut Leader) {
        // Catch up with anything the previous leader wrote before its lease ran out.
        if let Err(e) = self.follow().await {
            tracing::warn!("catching up failed: {e}");
            return;
        }
        self.lease.send_replace(Some(lease.clone()));
        self.metrics.leader.set(1);
        // Entries a previous term read but never answered are still unanswered: read them again.
        *last_inbox = 0;

        // Renewing runs on a task of its own, so that nothing the loop does can let the
        // lease run out; the loop only hears when it is lost. The lease is shared with
        // other processes, whose only common clock is the wall: it keeps real time.
        let (lost_tx, mut lost) = oneshot::channel();
        let _renewer = AbortOnDrop(tokio::spawn(renew_lease(
            self.store.clone(),
            self.config.node_id.clone(),
            lease.clone(),
            self.config.lease_ttl,
            self.metrics.lease_renewed.clone(),
            lost_tx,
        )));
        let (alarms_tx, mut alarms) = mpsc::channel(1024);
        let mut shell = Shell {
            lease: lease.clone(),
            replies: HashMap::new(),
            next_ticket: 0,
            wake_at: jiff::Timestamp::MAX,
            monitors: crate::monitors::Monitors::new(Arc::clone(&self.clock)),
            signals: crate::signals::Signals::new(
                self.config.prometheus.clone(),
                self.config.datapoint_bin,
                self.config.function_traffic_every,
                self.config.cloudwatch_delay,
                alarms_tx,
            ),
            stepped_down: None,
        };
        // Deployments in flight when the previous leader stopped are delivered again.
        let in_flight: Vec<CommandView> = self.read(|m| m.services.values().flat_map(|s| s.in_flight()).collect());
        let mut turn = VecDeque::from([Input::Elected { in_flight }]);
        // The inbox is read every 100 ms of real time: it is a poll of the store, not a
        // decision, and followers' requests must arrive whatever the clock says.
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        loop {
            let (now, swept) = self.take_turn(leader, &mut shell, &mut turn).await;
            if let Some(release_lease) = shell.stepped_down {
                // Any replica, this one included, may take over at once with a model
                // replayed from the log.
                if release_lease && let Err(e) = self.store.release_lease(&lease).await {
                    tracing::warn!(term = lease.term, "giving up the lease failed: {e}");
                }
                for (_, reply) in shell.replies.drain() {
                    let _ = reply.send(Err(ApiError::unavailable("this replica lost the lead")));
                }
                return;
            }
            if swept {
                // The sweep of this turn is done, and what it decided is applied.
                self.swept.send_replace(now.as_millisecond());
            }
            let timer = self.clock.sleep_until(shell.wake_at);
            tokio::select! {
                Some(first) = rx.recv() => {
                    let mut requests = vec![shell.ticketed(first)];
                    while requests.len() < 512 {
                        match rx.try_recv() {
                            Ok(r) => requests.push(shell.ticketed(r)),
                            Err(_) => break,
                        }
                    }
                    turn.push_back(Input::Requests(requests));
                }
                Some((service, input)) = alarms.recv() => {
                    turn.push_back(Input::Requests(vec![Request::from_machine(MachineComponent::Signals, service, input)]));
                }
                _ = &mut lost => {
                    tracing::info!(term = lease.term, "the lease was lost: stepping down");
                    turn.push_back(Input::LeaseLost);
                }
                _ = poll.tick() => {
                    let mut requests = Vec::new();
                    match self.store.pending(*last_inbox, 512).await {
                        Ok(rows) => for (id, body) in rows {
                            *last_inbox = id;
                            match serde_json::from_str::<InboxRequest>(&body) {
                                Ok(r) => requests.push(Request { service: r.service, input: r.input, actor: r.actor, ticket: None, inbox_id: Some(id) }),
                                Err(e) => tracing::warn!(id, "unreadable inbox entry: {e}"),
                            }
                        },
                        Err(e) => tracing::warn!("reading the inbox failed: {e}"),
                    }
                    turn.push_back(Input::Requests(requests));
                    turn.push_back(Input::Due(self.due()));
                }
                _ = timer => {
                    // What is due is decided at every sweep too, so that once a sweep
                    // at a time is done, so are the ticks due by then.
                    turn.push_back(Input::Due(self.due()));
                    let longest_watch = self.read(|m| m.services.values().map(|s| s.plan.manifest.watch).max()).unwrap_or_default();
                    turn.push_back(Input::Timer { longest_watch });
                }
            }
            turn.push_back(Input::Flush);
        }
    }

    /// Each service and its engine's next deadline, for [`Input::Due`].
    fn due(&self) -> Vec<(String, Option<jiff::Timestamp>)> {
        self.read(|m| m.services.values().map(|s| (s.name.clone(), s.engine.next_deadline())).collect())
    }

    /// Hands the turn's inputs to the leader at one reading of the clock, performing its
    /// effects as they come; what an effect gives back (an append's outcome, lost hosts,
    /// alarm states) goes in next, before the rest of the turn. Returns the time it read,
    /// and whether the turn swept.
    async fn take_turn(
        &self,
        leader: &mut Leader,
        shell: &mut Shell,
        turn: &mut VecDeque<Input>,
    ) -> (jiff::Timestamp, bool) {
        let now = self.clock.now();
        let mut swept = false;
        while let Some(input) = turn.pop_front() {
            swept |= matches!(input, Input::Timer { .. });
            let effects = {
                let mut model = self.model.write().unwrap_or_else(|p| p.into_inner());
                leader.handle(now, &mut model, input)
            };
            let mut back = Vec::new();
            for effect in effects {
                back.extend(self.perform(effect, shell).await);
            }
            for input in back.into_iter().rev() {
                turn.push_front(input);
            }
            if shell.stepped_down.is_some() {
                turn.clear();
                break;
            }
        }
        (now, swept)
    }

    /// Performs one effect; returns what it gives back to the leader.
    async fn perform(&self, effect: Effect, shell: &mut Shell) -> Option<Input> {
        match effect {
            Effect::Append { records, answers, audits } => {
                let started = std::time::Instant::now();
                let appended = self.store.append(&shell.lease, &records, &answers, &audits).await;
                // Real time: how long the database took is what an operator watches.
                self.metrics.log_append_seconds.observe(started.elapsed().as_secs_f64());
                let result = match appended {
                    Ok(seqs) => Ok(seqs),
                    Err(rollwave_store::StoreError::Fenced { .. }) => Err(AppendFailed::Fenced),
                    Err(e) => Err(AppendFailed::Store(e.to_string())),
                };
                if let Err(e) = &result {
                    tracing::warn!(term = shell.lease.term, "appending to the log failed: {e:?}");
                }
                return Some(Input::Appended(result));
            }
            Effect::Announce { seqs, events, commands } => self.announce(shell.lease.term, &seqs, events, &commands),
            Effect::Answer { ticket, result } => {
                if let Some(reply) = shell.replies.remove(&ticket) {
                    let _ = reply.send(result);
                }
            }
            Effect::Send(commands) => self.drive(commands),
            Effect::StepDown { release_lease } => {
                self.stop_leading();
                shell.stepped_down = Some(release_lease);
            }
            Effect::FindLostHosts { leading_since_ms } => {
                // Every replica's heartbeats are in the store; the lost hosts already
                // reported stay absent until they register again.
                self.flush_heartbeats().await;
                return Some(Input::Requests(self.lost_hosts(leading_since_ms).await));
            }
            Effect::NotifyBlocked => self.notify_blocked(),
            Effect::Probe => {
                let routers = self.routers_heard();
                shell.monitors.start_due(&self.store, &self.model, &routers, self.clock.now_ms());
            }
            Effect::Query => {
                let found = shell.signals.due(&self.store, &self.model, self.clock.now_ms()).await;
                let requests = found
                    .into_iter()
                    .map(|(service, input)| Request::from_machine(MachineComponent::Signals, service, input))
                    .collect();
                return Some(Input::Requests(requests));
            }
            Effect::PruneMetrics { before_ms } => {
                let _ = self.store.prune_metrics(before_ms).await;
            }
            Effect::ArmTimer(at) => shell.wake_at = at,
        }
        None
    }

    /// A durable append: the read model is the log's through its last record; its events
    /// go to the log, the webhooks and the event stream in log order; long-polls and the
    /// hosts its commands are for wake.
    fn announce(&self, term: i64, seqs: &[i64], events: Vec<EventView>, commands: &[CommandView]) {
        if let Some(last) = seqs.last().copied() {
            self.model.write().unwrap_or_else(|p| p.into_inner()).applied_seq = last;
        }
        self.metrics.events_appended.inc_by(seqs.len() as u64);
        for e in events {
            log_decision(&e, term);
            let hooks = self.read(|m| m.services.get(&e.service).map(|s| s.plan.manifest.notifications.clone()));
            if let Some(hooks) = hooks.filter(|h| !h.is_empty()) {
                self.notifier.event(&hooks, &e);
            }
            let _ = self.events.send(e);
        }
        self.changed.send_modify(|n| *n += 1);
        self.wake_hosts(commands);
    }

    /// Tells the webhooks of steps blocked for too long, each once.
    fn notify_blocked(&self) {
        let waiting: Vec<_> = self.read(|m| {
            m.services
                .values()
                .filter(|s| !s.plan.manifest.notifications.is_empty())
                .map(|s| {
                    let blocked = s.blocked.values().cloned().collect::<Vec<_>>();
                    (s.name.clone(), s.plan.manifest.notifications.clone(), blocked)
                })
                .collect()
        });
        for (service, hooks, blocked) in waiting {
            self.notifier.blocked(&hooks, &service, &blocked, self.clock.now());
        }
    }

    /// Gives up the lead and the read model with it.
    fn stop_leading(&self) {
        if let Some(lease) = self.lease.send_replace(None) {
            tracing::info!(term = lease.term, node = %self.config.node_id, "stepping down");
        }
        self.metrics.leader.set(0);
        // The read model may hold changes that never reached the log: rebuild it from the
        // log (`run` replays it next); not ready until then.
        self.ready.send_replace(false);
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = ReadModel::default();
        self.changed.send_modify(|n| *n += 1);
        self.reset.send_modify(|n| *n += 1);
    }

    /// Hands commands to the driver: stages' tests and `exec` environments' commands run
    /// here; the noop driver reports success after its delay; agents poll for theirs.
    fn drive(&self, commands: Vec<CommandView>) {
        for c in commands {
            let lane = c.lane;
            if let Some(test) = c.test {
                let requests = self.requests.clone();
                let env = [
                    ("ROLLWAVE_SERVICE", c.service.clone()),
                    ("ROLLWAVE_ENVIRONMENT", c.environment.clone()),
                    ("ROLLWAVE_STAGE", test.stage.clone()),
                    ("ROLLWAVE_TEST", test.name.clone()),
                    ("ROLLWAVE_VERSION", c.version.clone()),
                    ("ROLLWAVE_ARTIFACT", test.artifact.clone().unwrap_or_default()),
                ];
                let (service, command) = (c.service, c.id);
                tokio::spawn(async move {
                    let run = crate::exec::run_with(&test.run, Duration::from_secs(test.timeout_s), &env).await;
                    let input = LogInput::TestReport {
                        command,
                        ok: run.ok,
                        reason: (!run.ok).then(|| format!("test {} failed: {}", test.name, hook_outcome(&run))),
                        output: run.output,
                        lane,
                    };
                    let _ =
                        requests.send((Request::from_machine(MachineComponent::Driver, service, input), None)).await;
                });
                continue;
            }
            if let Some(step) = c.functions {
                let requests = self.requests.clone();
                let driver = Arc::clone(&self.functions);
                let (service, environment, command, hosts) = (c.service, c.environment, c.id, c.hosts);
                tokio::spawn(async move {
                    let hook = match tokio::task::spawn_blocking(move || driver.step(&step)).await {
                        Ok(hook) => hook,
                        Err(e) => crate::api::HookReport {
                            name: "lambda".into(),
                            exit_code: None,
                            duration_ms: 0,
                            output: format!("the Lambda driver failed: {e}"),
                            timed_out: false,
                            ok: false,
                        },
                    };
                    let reason =
                        (!hook.ok).then(|| format!("lambda: {}", hook.output.lines().last().unwrap_or("failed")));
                    // Every slice of the step went together: one report each, the same.
                    for host in hosts {
                        let input = LogInput::HostReport {
                            environment: environment.clone(),
                            host,
                            command,
                            ok: hook.ok,
                            reason: reason.clone(),
                            hooks: vec![hook.clone()],
                            lane: Lane::Code,
                        };
                        let request = Request::from_machine(MachineComponent::Driver, service.clone(), input);
                        let _ = requests.send((request, None)).await;
                    }
                });
                continue;
            }
            if !c.targets.is_empty() {
                for target in c.targets {
                    let requests = self.requests.clone();
                    let (service, environment, command) = (c.service.clone(), c.environment.clone(), c.id);
                    tokio::spawn(async move {
                        let hook = crate::exec::run_target(&target).await;
                        let input = LogInput::HostReport {
                            environment,
                            host: target.host,
                            command,
                            ok: hook.ok,
                            reason: (!hook.ok).then(|| format!("exec command failed: {}", hook_outcome(&hook))),
                            hooks: vec![hook],
                            lane: Lane::Code,
                        };
                        let _ = requests
                            .send((Request::from_machine(MachineComponent::Driver, service, input), None))
                            .await;
                    });
                }
                continue;
            }
            // A flag set needs nothing run where no agent serves it (`exec` environments):
            // the region's relays serve it from the control plane, so it is in place now.
            let agentless = lane == Lane::Flags && self.agentless(&c.service, &c.environment);
            let delay = match self.config.driver {
                _ if agentless => Duration::ZERO,
                Driver::Noop { delay } => delay,
                Driver::Agent => continue,
            };
            for host in c.hosts {
                let requests = self.requests.clone();
                let input = LogInput::HostReport {
                    environment: c.environment.clone(),
                    host,
                    command: c.id,
                    ok: true,
                    reason: None,
                    hooks: Vec::new(),
                    lane,
                };
                let service = c.service.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ =
                        requests.send((Request::from_machine(MachineComponent::Driver, service, input), None)).await;
                });
            }
        }
    }
}

impl Node {
    /// Whether an environment's hosts have no agent (its deployments run `exec` commands).
    fn agentless(&self, service: &str, environment: &str) -> bool {
        self.read(|m| {
            let s = m.service(service)?;
            let env = s.env(environment)?;
            let environment = &s.plan.manifest.environments[env.idx()];
            Ok::<_, ApiError>(environment.exec.is_some() || environment.is_functions())
        })
        .unwrap_or(false)
    }
}

/// Whether an event changes where a rollout goes: each such event is logged at info once
/// it is durable, with its service, release and scope.
fn is_decision(kind: rollwave_api::EventKind) -> bool {
    use rollwave_api::EventKind as K;
    match kind {
        K::ReleaseHalted
        | K::ReleaseResumed
        | K::RollbackStarted
        | K::RollbackCompleted
        | K::ReleaseRolledBack
        | K::ReleaseSuperseded
        | K::RegressionSuspected => true,
        K::ReleaseCreated
        | K::Approved
        | K::StageEntered
        | K::WaveStarted
        | K::RegionStarted
        | K::OneBoxDeployed
        | K::BakeStarted
        | K::BakeCompleted
        | K::ZoneStarted
        | K::BatchDeployed
        | K::ZoneCompleted
        | K::RegionCompleted
        | K::WaveCompleted
        | K::StageCompleted
        | K::TestStarted
        | K::TestPassed
        | K::TestFailed
        | K::AlarmFired
        | K::AlarmCleared
        | K::Blocked
        | K::ReleaseCompleted
        | K::HostFailed
        | K::JudgeVerdict
        | K::Held
        | K::Resumed
        | K::Hook => false,
    }
}

fn log_decision(e: &EventView, term: i64) {
    if is_decision(e.kind) {
        tracing::info!(
            service = %e.service,
            release = e.release.as_deref().unwrap_or("-"),
            scope = %e.scope,
            seq = e.seq,
            term,
            reason = e.reason.as_deref().unwrap_or(""),
            "{}",
            e.kind
        );
    }
}

fn hook_outcome(hook: &crate::api::HookReport) -> String {
    match (hook.timed_out, hook.exit_code) {
        (true, _) => format!("timed out after {} ms", hook.duration_ms),
        (_, Some(code)) => format!("exit status {code}"),
        _ => "killed".to_owned(),
    }
}

/// A logged input panics when replayed: the same log gives the same panic on every try,
/// so no state equal to the log can be served. The process exits for its supervisor to
/// see, rather than serve a half-changed model.
fn replay_failed(seq: i64, why: &str) -> ! {
    tracing::error!(seq, "replaying the log panicked: {why}; exiting");
    eprintln!("rollwave: replaying log record {seq} panicked: {why}");
    std::process::exit(70)
}

/// Aborts a task when the scope that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews `lease` every third of its time to live; tells `lost` once it is held by
/// another, or has not been renewed for a whole time to live (another replica may have
/// taken it meanwhile: appends would be refused anyway).
async fn renew_lease(
    store: Store,
    node_id: String,
    lease: Lease,
    ttl: Duration,
    renewed_at: prometheus_client::metrics::gauge::Gauge,
    lost: oneshot::Sender<()>,
) {
    let mut every = tokio::time::interval(ttl / 3);
    every.tick().await;
    let mut renewed = tokio::time::Instant::now();
    renewed_at.set(rollwave_store::now_ms() / 1000);
    loop {
        every.tick().await;
        match store.acquire_lease_at(&node_id, Some(&lease), ttl, rollwave_store::now_ms()).await {
            Ok(Some(l)) if l.term == lease.term => {
                renewed = tokio::time::Instant::now();
                renewed_at.set(rollwave_store::now_ms() / 1000);
            }
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(term = lease.term, "renewing the lease failed: {e}");
                if renewed.elapsed() >= ttl {
                    break;
                }
            }
        }
    }
    let _ = lost.send(());
}

fn forget_silent_routers(routers: &mut crate::monitors::Routers, now: i64) {
    for seen in routers.values_mut() {
        seen.retain(|_, at| now - *at <= ROUTER_EXPIRY_MS);
    }
    routers.retain(|_, seen| !seen.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routers_not_heard_from_for_three_polls_are_forgotten() {
        let place = ("web".to_owned(), "prod".to_owned(), "r1".to_owned());
        let mut routers = crate::monitors::Routers::new();
        routers.entry(place.clone()).or_default().insert("10.0.0.1:80".into(), 1_000);
        routers.entry(place.clone()).or_default().insert("10.0.0.2:80".into(), 50_000);
        forget_silent_routers(&mut routers, 1_000 + ROUTER_EXPIRY_MS);
        assert_eq!(routers[&place].len(), 2, "both still within the expiry");
        forget_silent_routers(&mut routers, 1_001 + ROUTER_EXPIRY_MS);
        assert_eq!(routers[&place].keys().collect::<Vec<_>>(), ["10.0.0.2:80"]);
        forget_silent_routers(&mut routers, 50_001 + ROUTER_EXPIRY_MS);
        assert!(routers.is_empty(), "a region with no router left is dropped");
    }
}
