//! Synthetic monitors: the leader sends each monitor's request to every host whose
//! service address it knows and that is not being deployed, day and night, so that a quiet place still has data. Each
//! check is stored as one request of the host's version, under `monitor:NAME`; checks
//! count as data points for bakes, and alarms can use `monitor:NAME:success_rate` and
//! `monitor:NAME:latency_ms`.

use crate::api::LATENCY_BOUNDS_MS;
use crate::state::ReadModel;
use rollwave_core::manifest::Monitor;
use rollwave_store::{MetricRow, Store};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When each monitor of each service runs next (unix ms).
#[derive(Default)]
pub struct Monitors {
    next: HashMap<(String, String), i64>,
}

struct Check {
    service: String,
    environment: String,
    host: String,
    version: String,
    address: String,
    monitor: Monitor,
}

impl Monitors {
    /// Runs the checks that are due and stores their results.
    pub async fn run_due(&mut self, store: &Store, model: &std::sync::RwLock<ReadModel>, now_ms: i64) {
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
                        });
                    }
                }
            }
            checks
        };
        if checks.is_empty() {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for check in checks {
            tasks.spawn_blocking(move || {
                let (ok, latency) = probe(&check.address, &check.monitor);
                let mut buckets = vec![0u64; LATENCY_BOUNDS_MS.len() + 1];
                let ms = latency.as_secs_f64() * 1000.0;
                let i = LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len());
                buckets[i] = 1;
                MetricRow {
                    service: check.service,
                    environment: check.environment,
                    host: check.host,
                    version: check.version,
                    at_ms: rollwave_store::now_ms(),
                    requests: 1,
                    errors: i64::from(!ok),
                    buckets: buckets.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
                    source: format!("monitor:{}", check.monitor.name),
                }
            });
        }
        let mut rows = Vec::new();
        while let Some(row) = tasks.join_next().await {
            if let Ok(row) = row {
                rows.push(row);
            }
        }
        if let Err(e) = store.insert_metrics(&rows).await {
            tracing::warn!("storing monitor results failed: {e}");
        }
    }
}

/// One check: whether the answer met the monitor's expectations, and how long it took.
fn probe(address: &str, monitor: &Monitor) -> (bool, Duration) {
    let timeout = monitor.max_latency.map_or(Duration::from_secs(10), |l| l.max(Duration::from_millis(100)) * 2);
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into();
    let url = format!("http://{address}{}", monitor.path);
    let started = Instant::now();
    let mut request = ureq::http::Request::builder().method(monitor.method.as_str()).uri(&url);
    for (k, v) in &monitor.headers {
        request = request.header(k, v);
    }
    let Ok(request) = request.body(monitor.body.clone().unwrap_or_default()) else { return (false, started.elapsed()) };
    let response = agent.run(request);
    let took = started.elapsed();
    let Ok(mut response) = response else { return (false, took) };
    let status_ok = response.status().as_u16() == monitor.expect_status;
    let body_ok = match &monitor.body_contains {
        Some(needle) => response.body_mut().read_to_string().is_ok_and(|b| b.contains(needle.as_str())),
        None => true,
    };
    let fast_enough = monitor.max_latency.is_none_or(|l| took <= l);
    (status_ok && body_ok && fast_enough, took)
}
