//! Real processes, threads and tasks in tests: free ports, children killed when dropped,
//! and waiting for a condition they reach.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A port nothing listens on now. The kernel hands out ports from its ephemeral range
/// in turn, so one just released is not handed out again soon.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What a condition returns: done or not, or the value it was waiting for.
pub trait Condition {
    type Value;
    fn reached(self) -> Option<Self::Value>;
}

impl Condition for bool {
    type Value = ();
    fn reached(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Condition for Option<T> {
    type Value = T;
    fn reached(self) -> Option<T> {
        self
    }
}

/// Checks `condition` until it holds, and panics naming `what` after `limit`. Real
/// processes cannot tell the test when they are done, so it is asked again every 50 ms;
/// the limit is only how long to wait before calling it a failure.
pub fn wait_for<C: Condition>(what: &str, limit: Duration, mut condition: impl FnMut() -> C) -> C::Value {
    let start = Instant::now();
    loop {
        if let Some(value) = condition().reached() {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for`] inside a tokio runtime, for tasks of this process (a proxy, a backend):
/// between checks it sleeps on tokio's timer, so they run meanwhile, and a check may
/// itself await (send a request). In-process tasks get there in milliseconds, so it asks
/// again every 10 ms; the limit is only how long to wait before calling it a failure.
pub async fn wait_for_async<C: Condition>(
    what: &str,
    limit: Duration,
    mut condition: impl AsyncFnMut() -> C,
) -> C::Value {
    let start = Instant::now();
    loop {
        if let Some(value) = condition().await.reached() {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A child process, killed and reaped when dropped, so no test leaves one running.
pub struct Proc(pub Child);

impl Proc {
    /// Sends `signal` (`-KILL`, `-STOP`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.0.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
