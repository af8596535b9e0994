//! Host health and the choice of a host within a track.
//!
//! No I/O and no clock: time comes in as `now` (milliseconds on any monotonic clock
//! that starts above zero) and randomness as `random`, so every rule below is tested
//! by calling functions.
//!
//! - A host is **ejected** after `eject_after` consecutive failures (connect errors,
//!   timeouts or 5xx responses); any success resets the count.
//! - An ejected host gets no requests for `cooldown`; then exactly one request is let
//!   through as a **probe**. If it succeeds the host is back; if it fails, the host
//!   stays out for another `cooldown` and the next probe waits for it.
//! - Among the hosts of a track the choice is **power of two choices**: two distinct
//!   hosts at random, the one with fewer requests in flight wins. A host whose probe
//!   is due wins outright. When neither of the two may take the request, every host is
//!   scanned and the least loaded one that may is taken.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// When a host is taken out of service and let back in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures that eject a host; at least 1.
    pub eject_after: u32,
    pub cooldown: Duration,
}

impl HealthPolicy {
    fn cooldown_ms(&self) -> u64 {
        u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

/// The live state of one host, shared by every routing table that lists it, so that a
/// table reload keeps its health and the count of its requests in flight.
#[derive(Debug, Default)]
pub struct HostState {
    in_flight: AtomicU32,
    failures: AtomicU32,
    /// 0 while the host is in service; else the time from which one probe may go.
    ejected_until: AtomicU64,
}

/// Whether a host may take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Healthy,
    /// The host is ejected and this request is its probe (only one caller gets this).
    Probe,
    Refused,
}

/// What [`HostState::record_failure`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureOutcome {
    Counted,
    /// This failure took the host out of service.
    Ejected,
}

impl HostState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until [`HostState::end_request`].
    pub fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    /// True when the last request failed or the host is out: its next request should
    /// be ready to be retried elsewhere.
    pub fn is_suspect(&self) -> bool {
        self.failures() > 0 || self.is_ejected()
    }

    pub fn admit(&self, now: u64, policy: &HealthPolicy) -> Admission {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return Admission::Healthy;
        }
        if now < until {
            return Admission::Refused;
        }
        // Claim the probe: whoever moves the deadline gets it, everyone else waits for
        // the probe's outcome (or the next cooldown if it never reports).
        match self.ejected_until.compare_exchange(
            until,
            now + policy.cooldown_ms(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Refused,
        }
    }

    /// A response below 500: the host is healthy (back in service if it was out).
    pub fn record_success(&self) {
        // Reads first, so that the common case writes nothing shared.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            self.ejected_until.store(0, Ordering::Release);
        }
    }

    /// A connect error, a timeout or a 5xx response.
    pub fn record_failure(&self, now: u64, policy: &HealthPolicy) -> FailureOutcome {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if failures >= policy.eject_after
            && self
                .ejected_until
                .compare_exchange(0, now + policy.cooldown_ms(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return FailureOutcome::Ejected;
        }
        FailureOutcome::Counted
    }
}

/// Chooses a host among `hosts` (see the [module docs](self)); `exclude` is a host that
/// just failed this request. `None` when no host may take it.
pub fn pick<'a, H: AsRef<HostState>>(
    hosts: &'a [H],
    now: u64,
    random: u64,
    policy: &HealthPolicy,
    exclude: Option<&HostState>,
) -> Option<&'a H> {
    let admit = |host: &H| {
        let state = host.as_ref();
        if exclude.is_some_and(|excluded| std::ptr::eq(excluded, state)) {
            Admission::Refused
        } else {
            state.admit(now, policy)
        }
    };
    let n = hosts.len();
    if n == 0 {
        return None;
    }
    // Both indexes are below n, which is a usize.
    let i = (random % n as u64) as usize;
    if n > 1 {
        let mut j = ((random >> 32) % (n as u64 - 1)) as usize;
        if j >= i {
            j += 1;
        }
        let (a, b) = (&hosts[i], &hosts[j]);
        let admit_a = admit(a);
        if admit_a == Admission::Probe {
            return Some(a);
        }
        let admit_b = admit(b);
        match (admit_a, admit_b) {
            (_, Admission::Probe) => return Some(b),
            (Admission::Healthy, Admission::Healthy) => {
                return Some(if b.as_ref().in_flight() < a.as_ref().in_flight() { b } else { a });
            }
            (Admission::Healthy, _) => return Some(a),
            (_, Admission::Healthy) => return Some(b),
            _ => {}
        }
    }
    let mut best: Option<&H> = None;
    for k in 0..n {
        let host = &hosts[(i + k) % n];
        match admit(host) {
            Admission::Probe => return Some(host),
            Admission::Healthy if best.is_none_or(|b| host.as_ref().in_flight() < b.as_ref().in_flight()) => {
                best = Some(host);
            }
            _ => {}
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const POLICY: HealthPolicy = HealthPolicy { eject_after: 3, cooldown: Duration::from_secs(10) };

    fn hosts(n: usize) -> Vec<Arc<HostState>> {
        (0..n).map(|_| Arc::new(HostState::new())).collect()
    }

    fn index_of(hosts: &[Arc<HostState>], chosen: Option<&Arc<HostState>>) -> Option<usize> {
        chosen.map(|c| hosts.iter().position(|h| Arc::ptr_eq(h, c)).unwrap())
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_them() {
        let host = HostState::new();
        assert_eq!(host.record_failure(1, &POLICY), FailureOutcome::Counted);
        assert_eq!(host.record_failure(1, &POLICY), FailureOutcome::Counted);
        host.record_success();
        assert!(!host.is_suspect());
        for _ in 0..2 {
            host.record_failure(2, &POLICY);
        }
        assert_eq!(host.record_failure(2, &POLICY), FailureOutcome::Ejected);
        assert_eq!(host.record_failure(2, &POLICY), FailureOutcome::Counted);
        assert_eq!(host.admit(2, &POLICY), Admission::Refused);
        assert_eq!(host.admit(10_001, &POLICY), Admission::Refused);
    }

    #[test]
    fn after_the_cooldown_exactly_one_probe_goes_and_its_outcome_decides() {
        let host = HostState::new();
        for _ in 0..3 {
            host.record_failure(1_000, &POLICY);
        }
        assert_eq!(host.admit(11_000, &POLICY), Admission::Probe);
        assert_eq!(host.admit(11_000, &POLICY), Admission::Refused);
        // The probe fails: out for another cooldown from the probe.
        host.record_failure(11_005, &POLICY);
        assert_eq!(host.admit(20_999, &POLICY), Admission::Refused);
        assert_eq!(host.admit(21_000, &POLICY), Admission::Probe);
        // This one succeeds: back in service.
        host.record_success();
        assert_eq!(host.admit(21_001, &POLICY), Admission::Healthy);
        assert!(!host.is_suspect());
    }

    #[test]
    fn two_choices_prefer_the_less_loaded_host() {
        let hosts = hosts(2);
        for _ in 0..5 {
            hosts[0].begin_request();
        }
        for random in 0..50u64 {
            assert_eq!(index_of(&hosts, pick(&hosts, 1, random * 7_919, &POLICY, None)), Some(1));
        }
    }

    #[test]
    fn choices_spread_over_equally_loaded_hosts() {
        let hosts = hosts(4);
        let mut seen = [0; 4];
        let mut random = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4_000 {
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            seen[index_of(&hosts, pick(&hosts, 1, random, &POLICY, None)).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&count| count > 700), "{seen:?}");
    }

    #[test]
    fn ejected_and_excluded_hosts_are_skipped_and_none_is_reported() {
        let hosts = hosts(3);
        for _ in 0..3 {
            hosts[0].record_failure(1, &POLICY);
            hosts[1].record_failure(1, &POLICY);
        }
        for random in 0..20u64 {
            assert_eq!(index_of(&hosts, pick(&hosts, 2, random << 29, &POLICY, None)), Some(2));
        }
        assert_eq!(index_of(&hosts, pick(&hosts, 2, 0, &POLICY, Some(&hosts[2]))), None);
        let none: [Arc<HostState>; 0] = [];
        assert!(pick(&none, 2, 0, &POLICY, None).is_none());
    }

    #[test]
    fn a_due_probe_is_sent_even_when_a_healthy_host_is_drawn() {
        let hosts = hosts(2);
        for _ in 0..3 {
            hosts[0].record_failure(1, &POLICY);
        }
        assert_eq!(index_of(&hosts, pick(&hosts, 10_001, 0, &POLICY, None)), Some(0));
        assert_eq!(index_of(&hosts, pick(&hosts, 10_001, 0, &POLICY, None)), Some(1));
    }
}
