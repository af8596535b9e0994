//! The host's gauges, read every `--metrics-every` and pushed to the server
//! (`POST /v1/metrics`, `gauges`) with the version the host runs, on a thread of its own:
//!
//! - `cpu_percent`: the share of time every CPU was busy since the reading before, from
//!   the first line of `/proc/stat` (idle and iowait count as not busy);
//! - `memory_percent`: `100 × (MemTotal − MemAvailable) / MemTotal` from `/proc/meminfo`;
//! - `restarts`: how many times the agent has started again on this host, counted in its
//!   state file, so that a crash loop shows as a rising count.
//!
//! A push that fails is logged and dropped: gauges are never held back for later, and
//! never hold up a long-poll or a deployment.

use rollwave_api::client::Client;
use rollwave_api::{Gauge, GaugeSample, MetricsPush};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time spent by all CPUs since boot, in the kernel's ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Reads the aggregate `cpu` line of `/proc/stat`: user, nice, system, idle, iowait, irq,
/// softirq and steal (guest time is already in user and nice).
pub fn parse_cpu(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes { busy: total - idle, total })
}

/// The busy share (0 to 100) between two readings; none when no time passed.
pub fn cpu_percent(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total).filter(|&t| t > 0)?;
    let busy = after.busy.saturating_sub(before.busy);
    Some((100.0 * busy as f64 / total as f64).clamp(0.0, 100.0))
}

/// Memory in use (0 to 100) from `/proc/meminfo`. Without `MemAvailable` (kernels before
/// 3.14), free, buffers and page cache count as available.
pub fn memory_percent(meminfo: &str) -> Option<f64> {
    let field = |name: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
    };
    let total = field("MemTotal").filter(|&t| t > 0)?;
    let available = match field("MemAvailable") {
        Some(a) => a,
        None => field("MemFree")? + field("Buffers").unwrap_or(0) + field("Cached").unwrap_or(0),
    };
    Some((100.0 * total.saturating_sub(available) as f64 / total as f64).clamp(0.0, 100.0))
}

/// Reads the gauges from a `/proc` directory, remembering the last CPU reading.
#[derive(Debug)]
pub struct Sampler {
    proc_dir: PathBuf,
    last_cpu: Option<CpuTimes>,
}

impl Sampler {
    pub fn new(proc_dir: impl Into<PathBuf>) -> Self {
        Sampler { proc_dir: proc_dir.into(), last_cpu: None }
    }

    /// `cpu_percent` (from the second reading on) and `memory_percent`, as far as they
    /// can be read.
    pub fn read(&mut self) -> Vec<(Gauge, f64)> {
        let mut out = Vec::new();
        let read = |name: &str| std::fs::read_to_string(self.proc_dir.join(name)).ok();
        let cpu = read("stat").as_deref().and_then(parse_cpu);
        if let (Some(before), Some(now)) = (self.last_cpu, cpu) {
            out.extend(cpu_percent(before, now).map(|v| (Gauge::CpuPercent, v)));
        }
        if cpu.is_some() {
            self.last_cpu = cpu;
        }
        out.extend(read("meminfo").as_deref().and_then(memory_percent).map(|v| (Gauge::MemoryPercent, v)));
        out
    }
}

/// Whom the gauges are for, as the agent last learned it: the slot the server gave it
/// and the version the host runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub host: String,
    pub version: String,
}

/// What the push thread needs.
#[derive(Clone, Debug)]
pub struct GaugeConfig {
    pub server: String,
    pub token: String,
    pub environment: String,
    pub every: Duration,
    /// How many times the agent started again on this host before this run.
    pub restarts: u64,
    pub roots: rollwave_api::tls::Roots,
}

/// Reads and pushes the gauges every `config.every` until `stop` is set. Nothing is
/// pushed until `target` is known (the agent registered).
pub fn run(config: &GaugeConfig, target: &Arc<Mutex<Option<Target>>>, stop: &AtomicBool) {
    let client = Client::new(&config.server, Some(config.token.clone())).trusting(&config.roots);
    let mut sampler = Sampler::new("/proc");
    // The first CPU reading, for the first push's delta.
    sampler.read();
    let mut failing = false;
    loop {
        crate::agent::sleep_unless(stop, config.every);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(to) = target.lock().unwrap_or_else(|p| p.into_inner()).clone() else { continue };
        let mut readings = sampler.read();
        readings.push((Gauge::Restarts, config.restarts as f64));
        let gauge = |(name, value): (Gauge, f64)| GaugeSample {
            host: to.host.clone(),
            version: to.version.clone(),
            name: name.as_str().to_owned(),
            value,
        };
        let push = MetricsPush {
            service: to.service.clone(),
            environment: config.environment.clone(),
            samples: Vec::new(),
            gauges: readings.into_iter().map(gauge).collect(),
        };
        match client.push_metrics(&push) {
            Ok(_) => failing = false,
            // Said once per run of failures, not at every interval.
            Err(e) if !failing => {
                failing = true;
                crate::agent::log(&format!("pushing the host's gauges failed: {e}; they are dropped until it works"));
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_BEFORE: &str = "\
cpu  4705 356 584 3699 23 0 23 0 0 0
cpu0 1393 280 283 1805 9 0 17 0 0 0
cpu1 3312 76 301 1894 14 0 6 0 0 0
intr 114930548 113199788 3 0 5 263 0 4 [... 50 more ...]
ctxt 1990473
btime 1062191376
";

    const STAT_AFTER: &str = "\
cpu  4805 356 634 3799 73 0 23 0 0 0
cpu0 1443 280 308 1855 34 0 17 0 0 0
cpu1 3362 76 326 1944 39 0 6 0 0 0
ctxt 1990999
";

    #[test]
    fn cpu_is_the_busy_share_of_the_time_between_two_readings() {
        let before = parse_cpu(STAT_BEFORE).unwrap();
        assert_eq!(before, CpuTimes { busy: 4705 + 356 + 584 + 23, total: 4705 + 356 + 584 + 3699 + 23 + 23 });
        let after = parse_cpu(STAT_AFTER).unwrap();
        // 150 busy ticks (user 100, system 50) of 300 (idle 100, iowait 50).
        assert_eq!(cpu_percent(before, after), Some(50.0));
        assert_eq!(cpu_percent(after, after), None, "no time passed");
        assert_eq!(cpu_percent(after, before), None, "a counter that went back");
    }

    #[test]
    fn old_kernels_and_garbage_in_proc_stat() {
        // Before 2.6.11 the line stops at iowait or earlier.
        assert_eq!(parse_cpu("cpu 10 0 10 80\n"), Some(CpuTimes { busy: 20, total: 100 }));
        assert_eq!(parse_cpu("cpu0 1 2 3 4\n"), None, "no aggregate line");
        assert_eq!(parse_cpu("cpu 1 2 x 4\n"), None);
        assert_eq!(parse_cpu("cpu 1 2\n"), None);
        assert_eq!(parse_cpu(""), None);
    }

    const MEMINFO: &str = "\
MemTotal:       16318480 kB
MemFree:          747996 kB
MemAvailable:    4079620 kB
Buffers:          368412 kB
Cached:          3352160 kB
SwapCached:            0 kB
";

    #[test]
    fn memory_is_what_is_not_available_of_the_total() {
        let used = memory_percent(MEMINFO).unwrap();
        assert!((used - 100.0 * (16318480.0 - 4079620.0) / 16318480.0).abs() < 1e-9, "{used}");
        assert!((used - 75.0).abs() < 0.01, "{used}");
        // Without MemAvailable: free, buffers and cache are available.
        let old = MEMINFO.replace("MemAvailable:    4079620 kB\n", "");
        let expected = 100.0 * (16318480.0 - (747996.0 + 368412.0 + 3352160.0)) / 16318480.0;
        assert!((memory_percent(&old).unwrap() - expected).abs() < 1e-9);
        // "SwapCached" is not "Cached", and nothing is read without a total.
        assert_eq!(memory_percent("MemFree: 10 kB\nMemAvailable: 5 kB\n"), None);
        assert_eq!(memory_percent("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), None);
    }

    #[test]
    fn a_sampler_reads_cpu_from_its_second_reading_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stat"), STAT_BEFORE).unwrap();
        std::fs::write(dir.path().join("meminfo"), MEMINFO).unwrap();
        let mut sampler = Sampler::new(dir.path());
        let first = sampler.read();
        assert_eq!(first.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [Gauge::MemoryPercent]);
        std::fs::write(dir.path().join("stat"), STAT_AFTER).unwrap();
        assert_eq!(sampler.read()[0], (Gauge::CpuPercent, 50.0));
        std::fs::remove_file(dir.path().join("meminfo")).unwrap();
        // No time passed since, and no meminfo: nothing to say.
        assert!(sampler.read().is_empty());
    }

    #[test]
    fn this_machines_proc_reads() {
        let mut sampler = Sampler::new("/proc");
        sampler.read();
        std::thread::sleep(Duration::from_millis(50));
        let readings = sampler.read();
        let names: Vec<Gauge> = readings.iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&Gauge::MemoryPercent), "{readings:?}");
        assert!(readings.iter().all(|(_, v)| (0.0..=100.0).contains(v)), "{readings:?}");
    }
}
