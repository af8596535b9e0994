//! Sticky users: each has a key it sends on every request (`x-rollwave-key`), so a
//! router keeps it on one track; what they see is counted per version.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the users saw, per version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub requests: u64,
    pub errors: u64,
    /// Requests answered by each version (from the answer's body).
    pub by_version: BTreeMap<String, u64>,
    /// Failed answers by version (`?` when the answer did not say).
    pub errors_by_version: BTreeMap<String, u64>,
    /// Users who saw more than one version.
    pub switched_users: u64,
}

/// Users sending requests to `targets` (base URLs, one per region) until `stop` is set.
pub struct Users {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Users {
    /// `users` users spread over the targets, each sending about `per_user_rps`.
    pub fn start(targets: Vec<String>, users: usize, per_user_rps: f64) -> Users {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let workers = users.clamp(1, 16);
        let mut threads = Vec::new();
        for w in 0..workers {
            let (stop, seen, targets) = (Arc::clone(&stop), Arc::clone(&seen), targets.clone());
            let mine: Vec<usize> = (w..users).step_by(workers).collect();
            threads.push(std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                let pause = Duration::from_secs_f64(1.0 / (per_user_rps * mine.len().max(1) as f64));
                let mut versions_of: BTreeMap<usize, String> = BTreeMap::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let user = mine[i % mine.len().max(1)];
                    i += 1;
                    let target = &targets[user % targets.len().max(1)];
                    let result =
                        agent.get(format!("{target}/")).header("x-rollwave-key", format!("user-{user}")).call();
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.requests += 1;
                    match result {
                        Ok(mut r) => {
                            let status = r.status().as_u16();
                            let body: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
                            let version = body["version"].as_str().unwrap_or("?").to_owned();
                            *seen.by_version.entry(version.clone()).or_default() += 1;
                            if status >= 500 {
                                seen.errors += 1;
                                *seen.errors_by_version.entry(version.clone()).or_default() += 1;
                            }
                            if versions_of.insert(user, version.clone()).is_some_and(|before| before != version) {
                                seen.switched_users += 1;
                            }
                        }
                        Err(_) => {
                            seen.errors += 1;
                            *seen.errors_by_version.entry("?".into()).or_default() += 1;
                        }
                    }
                    drop(seen);
                    if let Some(rest) = pause.checked_sub(started.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            }));
        }
        Users { stop, seen, threads }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.seen()
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
