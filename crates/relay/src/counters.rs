//! Evaluation counts per flag, variant and flag-set version, and what `/metrics` shows.
//!
//! Each flag-set version gets its cells when it starts being served: one atomic counter
//! per variant met so far and one for evaluations that ended in an error, under a map
//! fixed at that moment, so counting an evaluation takes no lock but a shared read and
//! allocates nothing. The counts only grow; a push to the control plane sends the
//! difference from the totals its last successful push sent ([`Counters::totals`]).
//! Evaluations of flags a set does not have are counted together, not per key: their
//! keys come from clients.

use crate::served::{Served, Set};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many flag-set versions keep their counts; an older one's are dropped (the
/// control plane rolls out one release at a time, so two or three are in use).
const KEPT_VERSIONS: usize = 16;

/// The counts of one evaluation outcome: a flag, its variant (`None`: no variant was
/// chosen, because the evaluation ended in an error or the flag is disabled) and the
/// version of the set that answered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountKey {
    pub flag: String,
    pub variant: Option<String>,
    pub version: String,
}

/// Every count of a relay or an agent, and the follower's state when there is one.
#[derive(Debug, Default)]
pub struct Counters {
    versions: Mutex<Vec<Arc<VersionCells>>>,
    not_found: AtomicU64,
    current: Mutex<Option<CurrentSets>>,
    follower: OnceLock<Arc<FollowerStatus>>,
}

#[derive(Debug, Clone)]
struct CurrentSets {
    stable: String,
    canary: Option<(String, u32)>,
}

/// The counters of one flag-set version.
#[derive(Debug)]
pub(crate) struct VersionCells {
    version: String,
    /// In the order of `FlagSet::keys` (key order), so the n-th flag's cells are found
    /// by index.
    flags: Vec<(String, FlagCells)>,
}

#[derive(Debug, Default)]
struct FlagCells {
    /// Few (a flag's variants), so a scan beats hashing.
    variants: RwLock<Vec<(Box<str>, AtomicU64)>>,
    errors: AtomicU64,
}

impl Counters {
    pub fn new() -> Arc<Counters> {
        Arc::new(Counters::default())
    }

    /// The cells of `set`'s version, made when a set of that version with these flags
    /// is first served.
    pub(crate) fn cells_for(&self, set: &Set) -> Arc<VersionCells> {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let fits = |cells: &VersionCells| {
            cells.version == set.version() && set.flags().keys().eq(cells.flags.iter().map(|(k, _)| k.as_str()))
        };
        if let Some(found) = versions.iter().rev().find(|c| fits(c)) {
            return found.clone();
        }
        let flags = set.flags().keys().map(|k| (k.to_owned(), FlagCells::default())).collect();
        let cells = Arc::new(VersionCells { version: set.version().to_owned(), flags });
        versions.push(cells.clone());
        if versions.len() > KEPT_VERSIONS {
            versions.remove(0);
        }
        cells
    }

    /// An evaluation of a flag the selected set does not have.
    pub(crate) fn record_not_found(&self) {
        self.not_found.fetch_add(1, Ordering::Relaxed);
    }

    /// Remembers which sets are served, for `/metrics`.
    pub(crate) fn set_current(&self, served: &Served) {
        let current = CurrentSets {
            stable: served.stable().version().to_owned(),
            canary: served.canary().map(|c| (c.set.version().to_owned(), c.share.get())),
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(current);
    }

    /// Shows `status` in `/metrics` (a relay following a control plane); the first one
    /// attached stays.
    pub fn attach_follower(&self, status: Arc<FollowerStatus>) {
        let _ = self.follower.set(status);
    }

    /// Every count so far, by flag, variant and version (zero counts left out).
    pub fn totals(&self) -> BTreeMap<CountKey, u64> {
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut totals = BTreeMap::new();
        for cells in &versions {
            for (flag, counts) in &cells.flags {
                let key = |variant: Option<&str>| CountKey {
                    flag: flag.clone(),
                    variant: variant.map(str::to_owned),
                    version: cells.version.clone(),
                };
                for (variant, n) in counts.variants.read().unwrap_or_else(|p| p.into_inner()).iter() {
                    add(&mut totals, key(Some(variant)), n.load(Ordering::Relaxed));
                }
                add(&mut totals, key(None), counts.errors.load(Ordering::Relaxed));
            }
        }
        totals
    }

    /// Evaluations of flags that were not in the selected set.
    pub fn not_found(&self) -> u64 {
        self.not_found.load(Ordering::Relaxed)
    }

    /// `/metrics`, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let snapshot = Snapshot {
            totals: self.totals(),
            not_found: self.not_found(),
            current: self.current.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            follower: self.follower.get().map(|f| f.read()),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        rollwave_exposition::encode(&registry)
    }
}

fn add(totals: &mut BTreeMap<CountKey, u64>, key: CountKey, n: u64) {
    if n > 0 {
        *totals.entry(key).or_insert(0) += n;
    }
}

impl VersionCells {
    /// Counts one evaluation of `flag` (one of this set's) that chose `variant`, or
    /// ended in an error (`None`).
    pub(crate) fn record(&self, flag: &str, variant: Option<&str>) {
        let Ok(i) = self.flags.binary_search_by(|(k, _)| k.as_str().cmp(flag)) else { return };
        self.record_at(i, variant);
    }

    /// [`VersionCells::record`] of the `index`-th flag in key order.
    pub(crate) fn record_at(&self, index: usize, variant: Option<&str>) {
        let Some((_, cells)) = self.flags.get(index) else { return };
        let Some(variant) = variant else {
            cells.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        {
            let variants = cells.variants.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, n)) = variants.iter().find(|(v, _)| &**v == variant) {
                n.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut variants = cells.variants.write().unwrap_or_else(|p| p.into_inner());
        match variants.iter().find(|(v, _)| &**v == variant) {
            Some((_, n)) => {
                n.fetch_add(1, Ordering::Relaxed);
            }
            None => variants.push((variant.into(), AtomicU64::new(1))),
        }
    }
}

/// Where a relay following a control plane stands; shared between the follower thread,
/// which writes it, and `/metrics`.
#[derive(Debug, Default)]
pub struct FollowerStatus {
    generation: AtomicI64,
    /// Milliseconds since the Unix epoch of the last answer; 0 before the first.
    last_sync_ms: AtomicU64,
    from_disk: AtomicBool,
    failures: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct FollowerReading {
    generation: i64,
    sync_age_s: Option<f64>,
    from_disk: bool,
    failures: u64,
}

impl FollowerStatus {
    /// The sets came from the state directory, written by an earlier run.
    pub fn loaded_from_disk(&self, generation: i64) {
        self.generation.store(generation, Ordering::Relaxed);
        self.from_disk.store(true, Ordering::Relaxed);
    }

    /// The control plane answered with `generation`.
    pub fn synced(&self, generation: i64) {
        self.generation.store(generation, Ordering::Relaxed);
        self.last_sync_ms.store(now_ms(), Ordering::Relaxed);
        self.from_disk.store(false, Ordering::Relaxed);
    }

    /// A poll failed; the sets served stay.
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn generation(&self) -> i64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Whether what is served was read from disk and not yet confirmed by the control plane.
    pub fn from_disk(&self) -> bool {
        self.from_disk.load(Ordering::Relaxed)
    }

    fn read(&self) -> FollowerReading {
        let last = self.last_sync_ms.load(Ordering::Relaxed);
        FollowerReading {
            generation: self.generation(),
            sync_age_s: (last > 0).then(|| now_ms().saturating_sub(last) as f64 / 1000.0),
            from_disk: self.from_disk(),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What one scrape shows, read once.
#[derive(Debug)]
struct Snapshot {
    totals: BTreeMap<CountKey, u64>,
    not_found: u64,
    current: Option<CurrentSets>,
    follower: Option<FollowerReading>,
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "rollwave_relay_flag_evaluations",
            "Flag evaluations by flag, variant (empty: the evaluation ended in an error) and flag-set version",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (key, n) in &self.totals {
            let labels = [
                ("flag", key.flag.as_str()),
                ("variant", key.variant.as_deref().unwrap_or("")),
                ("version", key.version.as_str()),
            ];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let not_found = ConstCounter::new(self.not_found);
        not_found.encode(encoder.encode_descriptor(
            "rollwave_relay_flag_not_found",
            "Evaluations of flags the selected flag set does not have",
            None,
            not_found.metric_type(),
        )?)?;
        if let Some(current) = &self.current {
            let mut sets = encoder.encode_descriptor(
                "rollwave_relay_flag_set",
                "The flag sets served, by track and version (1 while served)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            ConstGauge::new(1i64).encode(sets.encode_family(&[("track", "stable"), ("version", &current.stable)])?)?;
            if let Some((version, _)) = &current.canary {
                ConstGauge::new(1i64).encode(sets.encode_family(&[("track", "canary"), ("version", version)])?)?;
            }
            let share = ConstGauge::new(current.canary.as_ref().map_or(0, |(_, s)| i64::from(*s)));
            share.encode(encoder.encode_descriptor(
                "rollwave_relay_canary_share_basis_points",
                "Share of targeting keys on the canary flag set, in basis points",
                None,
                share.metric_type(),
            )?)?;
        }
        if let Some(f) = &self.follower {
            encode_follower(&mut encoder, f)?;
        }
        Ok(())
    }
}

fn encode_follower(encoder: &mut DescriptorEncoder, f: &FollowerReading) -> Result<(), std::fmt::Error> {
    let generation = ConstGauge::new(f.generation);
    generation.encode(encoder.encode_descriptor(
        "rollwave_relay_sync_generation",
        "Generation of the region's flag sets last learnt",
        None,
        generation.metric_type(),
    )?)?;
    if let Some(age) = f.sync_age_s {
        let age = ConstGauge::new(age);
        age.encode(encoder.encode_descriptor(
            "rollwave_relay_sync_age_seconds",
            "Seconds since the control plane last answered",
            None,
            age.metric_type(),
        )?)?;
    }
    let disk = ConstGauge::new(i64::from(f.from_disk));
    disk.encode(encoder.encode_descriptor(
        "rollwave_relay_served_from_disk",
        "1 while the flag sets served were read from the state directory and not yet confirmed by the control plane",
        None,
        disk.metric_type(),
    )?)?;
    let failures = ConstCounter::new(f.failures);
    failures.encode(encoder.encode_descriptor(
        "rollwave_relay_sync_failures",
        "Polls of the control plane that failed",
        None,
        failures.metric_type(),
    )?)
}
