//! The one clock the control plane reads: every decision that depends on the time (when
//! an input is stamped, when a bake ends, when a host is lost, when an alarm's period
//! closes, when a check is due) reads it here, so that tests can run the leader in
//! virtual time and get the same decisions on every run.

use jiff::Timestamp;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A future the clock resolves once it reads a given time.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The time as the control plane sees it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;

    /// Resolves once [`Clock::now`] reads `deadline` or later.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_>;

    /// Milliseconds since the Unix epoch, as the log and the store count time.
    fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        self.sleep_until(later(self.now(), duration))
    }
}

/// `at` plus `duration`, saturating at the end of time.
pub fn later(at: Timestamp, duration: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(duration).ok().and_then(|d| at.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

/// The wall clock: production's.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_> {
        let wait = Timestamp::now().duration_until(deadline);
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// The production clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that stands still until told to move: tests advance it, and everything
/// waiting on it wakes in order of its deadline.
#[derive(Debug)]
pub struct VirtualClock {
    now: Mutex<Timestamp>,
    moved: watch::Sender<Timestamp>,
}

impl VirtualClock {
    pub fn new(start: Timestamp) -> Arc<Self> {
        Arc::new(VirtualClock { now: Mutex::new(start), moved: watch::channel(start).0 })
    }

    /// Starts at a fixed instant, so runs of a test see the same times.
    pub fn at_fixed_start() -> Arc<Self> {
        Self::new(Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = later(*now, by);
        self.moved.send_replace(*now);
    }

    /// Moves the clock to `to`, unless it reads later already.
    pub fn advance_to(&self, to: Timestamp) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        if to > *now {
            *now = to;
            self.moved.send_replace(to);
        }
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_> {
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives this borrow.
            let _ = moved.wait_for(|now| *now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_virtual_sleep_ends_when_the_clock_is_advanced_past_its_deadline() {
        let clock = VirtualClock::at_fixed_start();
        let start = clock.now();
        let sleeper = Arc::clone(&clock);
        let done = tokio::spawn(async move { sleeper.sleep(Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!done.is_finished(), "woke a second early");
        clock.advance(Duration::from_secs(1));
        done.await.unwrap();
        assert_eq!(clock.now().duration_since(start), jiff::SignedDuration::from_secs(60));
        clock.advance_to(start);
        assert_eq!(clock.now().duration_since(start).as_secs(), 60, "never goes back");
    }
}
