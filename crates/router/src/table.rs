//! The routing table the proxy reads on every request: the parsed routes, with each
//! host's live state and metric handles attached.
//!
//! A table is immutable; a reload builds a new one and swaps it in. Hosts listed in
//! both keep their [`HostState`] (health and requests in flight), so a reload changes
//! nothing for them (nor for their idle connections). A host marked `draining` stays in the table (for `/routes`) but
//! not among the candidates of its track; its requests in flight hold their own
//! reference and finish.

use crate::balance::{self, HealthPolicy, HostState};
use crate::metrics::{HostMetrics, Metrics};
use crate::pool::HostPool;
use crate::routes::{HostSpec, KeySource, Routes};
use crate::track::Track;
use http::HeaderValue;
use http::uri::Authority;
use rollwave_core::share::BasisPoints;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// One host as the proxy sees it.
#[derive(Debug)]
pub struct Upstream {
    pub spec: HostSpec,
    pub state: Arc<HostState>,
    pub metrics: HostMetrics,
    /// Its idle connections, kept across reloads like its state.
    pub pool: Arc<HostPool>,
    /// `Host` for requests that came without one: the address.
    pub host_header: Option<HeaderValue>,
}

impl AsRef<HostState> for Arc<Upstream> {
    fn as_ref(&self) -> &HostState {
        &self.state
    }
}

#[derive(Debug)]
pub struct Table {
    pub salt: String,
    pub canary_share: BasisPoints,
    pub key: KeySource,
    /// Every host, in file order.
    pub hosts: Vec<Arc<Upstream>>,
    /// The hosts that may get new requests, per [`Track::index`].
    candidates: [Vec<Arc<Upstream>>; 2],
}

/// The host chosen for a request.
#[derive(Debug)]
pub struct Routed {
    pub upstream: Arc<Upstream>,
    /// The request's own track had no host able to take it.
    pub fell_back: bool,
}

impl Table {
    /// Chooses a host of `wanted`, else of the other track.
    pub fn route(
        &self,
        wanted: Track,
        now: u64,
        random: u64,
        policy: &HealthPolicy,
        exclude: Option<&HostState>,
    ) -> Option<Routed> {
        let pick = |track: Track| balance::pick(&self.candidates[track.index()], now, random, policy, exclude);
        if let Some(upstream) = pick(wanted) {
            return Some(Routed { upstream: upstream.clone(), fell_back: false });
        }
        pick(wanted.other()).map(|upstream| Routed { upstream: upstream.clone(), fell_back: true })
    }

    /// A human-readable summary: one line for the split, one per host.
    pub fn describe(&self) -> String {
        let mut out = format!("salt {} canary_share {}\n", self.salt, self.canary_share);
        for host in &self.hosts {
            let state = &host.state;
            let status = if host.spec.draining {
                "draining"
            } else if state.is_ejected() {
                "ejected"
            } else {
                "in-service"
            };
            let _ = writeln!(
                out,
                "{} {} {} {} in_flight={} failures={}",
                host.spec.track,
                host.spec.address,
                host.spec.version,
                status,
                state.in_flight(),
                state.failures()
            );
        }
        out
    }
}

/// Builds tables, carrying host states from one to the next.
#[derive(Debug)]
pub struct TableBuilder {
    metrics: Arc<Metrics>,
    states: HashMap<Authority, (Arc<HostState>, Arc<HostPool>)>,
}

impl TableBuilder {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        TableBuilder { metrics, states: HashMap::new() }
    }

    pub fn build(&mut self, routes: Routes) -> Table {
        let mut states = HashMap::with_capacity(routes.hosts.len());
        let mut hosts = Vec::with_capacity(routes.hosts.len());
        let mut candidates: [Vec<Arc<Upstream>>; 2] = [Vec::new(), Vec::new()];
        for spec in routes.hosts {
            let (state, pool) = self.states.get(&spec.address).cloned().unwrap_or_default();
            states.insert(spec.address.clone(), (state.clone(), pool.clone()));
            let host_header = HeaderValue::from_str(spec.address.as_str()).ok();
            let upstream = Arc::new(Upstream { metrics: self.metrics.host(&spec), state, pool, host_header, spec });
            if !upstream.spec.draining {
                candidates[upstream.spec.track.index()].push(upstream.clone());
            }
            hosts.push(upstream);
        }
        // Hosts no longer listed are forgotten (their idle connections close with the
        // last table that lists them); requests in flight keep their own reference.
        self.states = states;
        Table { salt: routes.salt, canary_share: routes.canary_share, key: routes.key, hosts, candidates }
    }
}
