//! Server mode, the other way: evaluation counts per flag, variant and flag-set version,
//! pushed to the control plane (`POST /v1/flag-evaluations`) every interval, on a thread
//! of its own.
//!
//! A push carries the counts since the last push that was accepted: the pusher keeps the
//! totals that push sent, so a push that fails (no answer, or any error status) leaves
//! its counts to the next one. Nothing is buffered but those totals, one number per
//! flag, variant and version. Intervals without evaluations send nothing.

use crate::counters::{CountKey, Counters};
use rollwave_api::{Client, FlagEvaluationCount, FlagEvaluationsPush};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest time one push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how often to push.
#[derive(Clone, Debug)]
pub struct PushTarget {
    pub server: String,
    pub service: String,
    pub environment: String,
    pub region: String,
    pub token: Option<String>,
    pub every: Duration,
    /// Whom `https` to the server trusts.
    pub roots: rollwave_api::tls::Roots,
}

/// The counts a push sends: `totals` less what was sent already, zero counts left out.
pub fn counts_since(totals: &BTreeMap<CountKey, u64>, sent: &BTreeMap<CountKey, u64>) -> Vec<FlagEvaluationCount> {
    totals
        .iter()
        .filter_map(|(key, &total)| {
            let count = total.saturating_sub(sent.get(key).copied().unwrap_or(0));
            (count > 0).then(|| FlagEvaluationCount {
                flag: key.flag.clone(),
                variant: key.variant.clone(),
                version: key.version.clone(),
                count,
            })
        })
        .collect()
}

/// The pushing thread; [`Pusher::finish`] pushes what is left and waits for it.
#[derive(Debug)]
pub struct Pusher {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Pusher {
    pub fn finish(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Starts pushing `counters` to `target` every `target.every`.
pub fn start(target: PushTarget, counters: Arc<Counters>) -> Pusher {
    let (stop, stopped) = mpsc::channel();
    let thread = std::thread::spawn(move || run(&target, &counters, &stopped));
    Pusher { stop, thread }
}

fn run(target: &PushTarget, counters: &Counters, stopped: &mpsc::Receiver<()>) {
    let client = Client::with_timeout(&target.server, target.token.clone(), PUSH_TIMEOUT).trusting(&target.roots);
    let mut sent = BTreeMap::new();
    loop {
        let last = match stopped.recv_timeout(target.every.max(Duration::from_millis(50))) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        let totals = counters.totals();
        let counts = counts_since(&totals, &sent);
        if !counts.is_empty() {
            let push = FlagEvaluationsPush {
                service: target.service.clone(),
                environment: target.environment.clone(),
                region: target.region.clone(),
                counts,
            };
            match client.push_flag_evaluations(&push) {
                Ok(_) => sent = totals,
                Err(e) => tracing::warn!("flag evaluation counts kept for the next push: {e}"),
            }
        }
        if last {
            return;
        }
    }
}
