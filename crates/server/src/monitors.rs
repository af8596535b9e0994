//! Synthetic monitors: the leader sends each monitor's request through every router of a
//! region (the routers say where they are when they ask for the region's table) and to
//! every host whose service address it knows and that is not being deployed, day and night, so that a quiet place still has data. Each
//! check is stored as one request of the host's version, under `monitor:NAME`; checks
//! count as data points for bakes, and alarms can use `monitor:NAME:success_rate` and
//! `monitor:NAME:latency_ms`.

use crate::api::LATENCY_BOUNDS_MS;
use crate::state::ReadModel;
use rollwave_core::manifest::Monitor;
use rollwave_store::{MetricRow, Store};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Routers per (service, environment, region): their address → when last heard (ms).
pub type Routers = HashMap<(String, String, String), HashMap<String, i64>>;

/// Routers remembered per region, at most.
pub const MAX_ROUTERS_PER_REGION: usize = 64;

/// A router not heard from for this long is no longer probed.
const ROUTER_GONE_MS: i64 = 120_000;

/// Checks under way at once, at most: each holds a blocking thread for up to its timeout.
const MAX_IN_FLIGHT: usize = 32;

/// A check's target: (service, monitor, address).
type Target = (String, String, String);

/// When each monitor of each service runs next (unix ms), and the checks under way. Checks
/// run on tasks of their own, so that the leader never waits on a host or a router.
pub struct Monitors {
    next: HashMap<(String, String), i64>,
    /// Targets with a check under way: a target that does not answer is not checked again
    /// until its check has timed out.
    in_flight: Arc<Mutex<HashSet<Target>>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// Stamps each check's result.
    clock: Arc<dyn crate::clock::Clock>,
}

impl Monitors {
    pub fn new(clock: Arc<dyn crate::clock::Clock>) -> Self {
        Monitors {
            next: HashMap::new(),
            in_flight: Arc::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            clock,
        }
    }
}

struct Check {
    service: String,
    environment: String,
    host: String,
    version: String,
    address: String,
    monitor: Monitor,
    /// Through a router: the answering host's address → (host, version), to credit the
    /// check to the host that answered; `host`/`version` are used when none did.
    via_router: Option<HashMap<String, (String, String)>>,
}

impl Monitors {
    /// Starts the checks that are due; each stores its result when it has one. Returns at
    /// once: nothing here waits on the network.
    pub fn start_due(&mut self, store: &Store, model: &std::sync::RwLock<ReadModel>, routers: &Routers, now_ms: i64) {
        let checks: Vec<Check> = {
            let m = model.read().unwrap_or_else(|p| p.into_inner());
            let mut checks = Vec::new();
            for s in m.services.values() {
                for monitor in &s.plan.manifest.monitors {
                    let key = (s.name.clone(), monitor.name.clone());
                    let due = self.next.get(&key).is_none_or(|&t| t <= now_ms);
                    if !due {
                        continue;
                    }
                    self.next.insert(key, now_ms + monitor.every.as_millis() as i64);
                    for ((service, environment, region), seen) in routers {
                        if *service != s.name {
                            continue;
                        }
                        let Ok(env) = s.env(environment) else { continue };
                        let Ok(region) = s.region(env, region) else { continue };
                        // The region's hosts by address; failures no host answered go
                        // to its first host.
                        let mut by_address = HashMap::new();
                        let mut first = None;
                        for h in s.plan.env(env).regions[region.idx()].hosts.clone() {
                            let h = rollwave_core::plan::HostId(h);
                            let entry = (
                                s.plan.host_name(env, h).to_owned(),
                                s.engine.version_name(s.engine.host_version(env, h)).to_owned(),
                            );
                            first.get_or_insert_with(|| entry.clone());
                            if let Some(a) = s.addresses.get(&(env, h)) {
                                by_address.insert(a.clone(), entry);
                            }
                        }
                        let Some((host, version)) = first else { continue };
                        for (address, &at) in seen {
                            if now_ms - at > ROUTER_GONE_MS {
                                continue;
                            }
                            checks.push(Check {
                                service: s.name.clone(),
                                environment: environment.clone(),
                                host: host.clone(),
                                version: version.clone(),
                                address: address.clone(),
                                monitor: monitor.clone(),
                                via_router: Some(by_address.clone()),
                            });
                        }
                    }
                    for (&(env, host), address) in &s.addresses {
                        // A host being deployed is down on purpose (routers drain it too);
                        // its validate hook is what checks it comes back.
                        if !s.engine.host_present(env, host) || s.engine.host_op(env, host).is_some() {
                            continue;
                        }
                        checks.push(Check {
                            service: s.name.clone(),
                            environment: s.plan.manifest.environments[env.idx()].name.clone(),
                            host: s.plan.host_name(env, host).to_owned(),
                            version: s.engine.version_name(s.engine.host_version(env, host)).to_owned(),
                            address: address.clone(),
                            monitor: monitor.clone(),
                            via_router: None,
                        });
                    }
                }
            }
            checks
        };
        for check in checks {
            self.start(store, check);
        }
    }

    /// Runs one check on a task of its own, unless its target has one under way.
    fn start(&self, store: &Store, check: Check) {
        let target = (check.service.clone(), check.monitor.name.clone(), check.address.clone());
        if !self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(target.clone()) {
            return;
        }
        let (store, in_flight, permits) = (store.clone(), Arc::clone(&self.in_flight), Arc::clone(&self.permits));
        let clock = Arc::clone(&self.clock);
        tokio::spawn(async move {
            let row = match permits.acquire_owned().await {
                Ok(permit) => tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    check_row(check, clock.as_ref())
                })
                .await
                .ok(),
                Err(_) => None,
            };
            in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&target);
            if let Some(row) = row
                && let Err(e) = store.insert_metrics(&[row]).await
            {
                tracing::warn!("storing a monitor result failed: {e}");
            }
        });
    }
}

/// Runs one check (blocking, bounded by the monitor's timeout) and makes its metric row.
fn check_row(check: Check, clock: &dyn crate::clock::Clock) -> MetricRow {
    let (ok, latency, backend) = probe(&check.address, &check.monitor, check.via_router.is_some());
    let (host, version) = match (backend, &check.via_router) {
        (Some(b), Some(hosts)) => hosts.get(&b).cloned().unwrap_or((check.host, check.version)),
        _ => (check.host, check.version),
    };
    let mut buckets = vec![0u64; LATENCY_BOUNDS_MS.len() + 1];
    let ms = latency.as_secs_f64() * 1000.0;
    let i = LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len());
    buckets[i] = 1;
    MetricRow {
        service: check.service,
        environment: check.environment,
        host,
        version,
        at_ms: clock.now_ms(),
        requests: 1,
        errors: i64::from(!ok),
        buckets: buckets.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        source: format!("monitor:{}", check.monitor.name),
    }
}

/// One check: whether the answer met the monitor's expectations, how long it took, and
/// (through a router) which host answered.
fn probe(address: &str, monitor: &Monitor, via_router: bool) -> (bool, Duration, Option<String>) {
    let timeout = monitor.max_latency.map_or(Duration::from_secs(10), |l| l.max(Duration::from_millis(100)) * 2);
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into();
    let url = format!("http://{address}{}", monitor.path);
    let started = Instant::now();
    let mut request = ureq::http::Request::builder().method(monitor.method.as_str()).uri(&url);
    for (k, v) in &monitor.headers {
        request = request.header(k, v);
    }
    if via_router {
        // A fresh key each time: checks fall on both tracks in the canary's proportion.
        let key = format!("rollwave-monitor-{}", PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        request = request.header("x-rollwave-monitor", "1").header("x-rollwave-key", key);
    }
    let Ok(request) = request.body(monitor.body.clone().unwrap_or_default()) else {
        return (false, started.elapsed(), None);
    };
    let response = agent.run(request);
    let took = started.elapsed();
    let Ok(mut response) = response else { return (false, took, None) };
    let backend = response.headers().get("x-rollwave-backend").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let status_ok = response.status().as_u16() == monitor.expect_status;
    let body_ok = match &monitor.body_contains {
        Some(needle) => response.body_mut().read_to_string().is_ok_and(|b| b.contains(needle.as_str())),
        None => true,
    };
    let fast_enough = monitor.max_latency.is_none_or(|l| took <= l);
    (status_ok && body_ok && fast_enough, took, backend)
}

/// Numbers the checks sent through routers.
static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
