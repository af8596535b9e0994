//! The demo's live view in the terminal: a line per stage, wave and region with a bar of
//! its hosts on the release going through it, what it is doing (deploying, baking and
//! for how long, rolling back) and the alarms firing there. Notable events are printed
//! above the bars as they happen; without a terminal only those lines are printed.

use crate::world::World;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rollwave_api::EventKind;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

struct Line {
    /// `stage/region`, the prefix of the event scopes that concern it.
    key: String,
    stage: String,
    /// `stage/wave`, for the wave's bake.
    wave_key: String,
    bar: ProgressBar,
    release: Option<String>,
    doing: String,
    baking_since: Option<(Instant, String)>,
    alarms: BTreeSet<String>,
}

struct State {
    lines: Vec<Line>,
    after: i64,
    started: Instant,
}

pub struct Progress {
    multi: MultiProgress,
    state: Mutex<State>,
}

impl Progress {
    /// A line per region of each stage of `manifest` (the demo's own, known valid).
    pub fn new(manifest: &str) -> Progress {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let style = ProgressStyle::with_template("{prefix:32} [{bar:18.green/blue}] {pos:>2}/{len:<2} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let mut lines = Vec::new();
        if let Ok(m) = rollwave_manifest::parse_manifest("demo.yaml", manifest) {
            for stage in &m.stages {
                let env = &m.environments[stage.environment];
                for wave in &stage.waves {
                    for &r in &wave.regions {
                        let region = &env.regions[r];
                        let hosts: u64 = region.zones.iter().map(|z| u64::from(z.hosts)).sum();
                        let bar = multi.add(ProgressBar::new(hosts));
                        bar.set_style(style.clone());
                        let label = if stage.waves.len() > 1 {
                            format!("{} · {} · {}", stage.name, wave.name, region.name)
                        } else {
                            format!("{} · {}", stage.name, region.name)
                        };
                        bar.set_prefix(label);
                        bar.set_message("waiting");
                        lines.push(Line {
                            key: format!("{}/{}", stage.name, region.name),
                            stage: stage.name.clone(),
                            wave_key: format!("{}/{}", stage.name, wave.name),
                            bar,
                            release: None,
                            doing: "waiting".into(),
                            baking_since: None,
                            alarms: BTreeSet::new(),
                        });
                    }
                }
            }
        }
        Progress { multi, state: Mutex::new(State { lines, after: 0, started: Instant::now() }) }
    }

    /// A line above the bars (or on its own without a terminal).
    pub fn say(&self, text: &str) {
        let elapsed = self.state.lock().map(|s| s.started.elapsed().as_secs()).unwrap_or(0);
        let line = format!("[{:>3}s] {text}", elapsed);
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// Reads what changed from the server and redraws.
    pub fn update(&self, world: &World) {
        let client = world.client();
        let mut notes = Vec::new();
        {
            let Ok(mut state) = self.state.lock() else { return };
            while let Ok(page) = client.events(state.after, 500) {
                for e in &page.events {
                    if e.service != world.service {
                        continue;
                    }
                    let release = e.release.clone().unwrap_or_default();
                    let reason = e.reason.clone().unwrap_or_default();
                    use EventKind::*;
                    let note = match e.kind {
                        AlarmFired => Some(format!("ALARM {reason} in {}", e.scope)),
                        RollbackStarted => Some(format!("{release}: rolling back {} ({reason})", e.scope)),
                        RollbackCompleted => Some(format!("{release}: rolled back {}", e.scope)),
                        ReleaseHalted => Some(format!("{release} halted: {reason}")),
                        ReleaseCompleted => Some(format!("{release} completed")),
                        ReleaseRolledBack => Some(format!("{release} rolled back everywhere")),
                        JudgeVerdict => Some(format!("{release}: one-box verdict in {}: {reason}", e.scope)),
                        StageCompleted | WaveCompleted => Some(format!("{release} passed {}", e.scope)),
                        RegressionSuspected => Some(format!("{release}: regression suspected in {}", e.scope)),
                        ReleaseCreated | Approved | StageEntered | WaveStarted | RegionStarted | OneBoxDeployed
                        | BakeStarted | BakeCompleted | ZoneStarted | BatchDeployed | ZoneCompleted
                        | RegionCompleted | TestStarted | TestPassed | TestFailed | Blocked | AlarmCleared
                        | ReleaseResumed | ReleaseSuperseded | HostFailed | Held | Resumed | Hook => None,
                    };
                    notes.extend(note);
                    for line in &mut state.lines {
                        let concerns = e.scope == line.key
                            || e.scope.starts_with(&format!("{}/", line.key))
                            || e.scope == line.wave_key
                            || e.scope == line.stage;
                        if concerns {
                            line.apply(e.kind, &release, &reason, &e.scope);
                        }
                    }
                }
                let more = page.events.len() == 500;
                state.after = page.next.max(state.after);
                if !more {
                    break;
                }
            }
            // Hosts per version in each region, from the newest release's view.
            let status = client.status(&world.service).ok();
            let newest = status.as_ref().and_then(|s| s.releases.iter().map(|r| r.version.clone()).max());
            let scopes = newest.and_then(|v| client.release(&world.service, &v).ok()).map(|d| d.scopes);
            for line in &mut state.lines {
                let Some(scopes) = &scopes else { break };
                let Some(s) = scopes.iter().find(|s| s.scope == line.key) else { continue };
                let on = |v: &str| s.versions.iter().find(|(name, _)| name == v).map_or(0, |(_, n)| *n);
                if let Some(r) = &line.release {
                    line.bar.set_position(on(r));
                }
                let versions: Vec<String> = s.versions.iter().map(|(v, n)| format!("{v}×{n}")).collect();
                let mut msg = format!("{:<14} {}", versions.join(" "), line.doing);
                if let Some((since, what)) = &line.baking_since {
                    msg.push_str(&bake_countdown(since.elapsed(), what));
                }
                if !line.alarms.is_empty() {
                    let alarms: Vec<&str> = line.alarms.iter().map(String::as_str).collect();
                    msg.push_str(&format!("  ⚠ {}", alarms.join(", ")));
                }
                line.bar.set_message(msg);
            }
        }
        for n in notes {
            self.say(&n);
        }
    }

    pub fn finish(&self) {
        if let Ok(state) = self.state.lock() {
            for line in &state.lines {
                line.bar.abandon();
            }
        }
    }
}

/// ` 7s left (10s and 8 data points)`, or ` waiting for data points (…)` once the time
/// is up: `what` is how the engine describes the bake.
fn bake_countdown(elapsed: std::time::Duration, what: &str) -> String {
    let what = what.rsplit(": ").next().unwrap_or(what);
    let time = what.split_whitespace().next().and_then(|t| rollwave_manifest::yaml::parse_duration(t).ok());
    match time {
        Some(t) if t > elapsed => format!(" {}s left ({what})", (t - elapsed).as_secs_f64().ceil() as u64),
        Some(_) if what.contains("data points") => format!(" waiting for data points ({what})"),
        _ => format!(" {}s ({what})", elapsed.as_secs()),
    }
}

impl Line {
    fn apply(&mut self, kind: EventKind, release: &str, reason: &str, scope: &str) {
        use EventKind::*;
        let part = scope.strip_prefix(&format!("{}/", self.key)).unwrap_or("");
        if !release.is_empty() && !matches!(kind, AlarmFired | AlarmCleared) {
            self.release = Some(release.to_owned());
        }
        let rel = release;
        let mut bake = None;
        self.doing = match kind {
            RegionStarted => format!("{rel}: starting"),
            OneBoxDeployed => format!("{rel}: one-box deployed"),
            BakeStarted => {
                bake = Some((Instant::now(), reason.to_owned()));
                if scope == self.wave_key || scope == self.stage {
                    format!("{rel}: wave bake")
                } else if part.is_empty() {
                    format!("{rel}: one-box bake")
                } else {
                    format!("{rel}: {part} bake")
                }
            }
            ZoneStarted => format!("{rel}: deploying {part}"),
            BatchDeployed => format!("{rel}: deployed {part}"),
            ZoneCompleted => format!("{rel}: {part} done"),
            RegionCompleted => format!("{rel}: done"),
            WaveCompleted | StageCompleted => format!("{rel}: done"),
            RollbackStarted => format!("{rel}: ROLLING BACK {part}"),
            RollbackCompleted => format!("{rel}: rolled back {part}"),
            ReleaseHalted => format!("{rel}: HALTED"),
            Blocked => format!("{rel}: blocked: {reason}"),
            JudgeVerdict => format!("{rel}: verdict {reason}"),
            AlarmFired => {
                self.alarms.insert(reason.split_whitespace().next().unwrap_or(reason).to_owned());
                return;
            }
            AlarmCleared => {
                let name = reason.split_whitespace().next().unwrap_or(reason).to_owned();
                self.alarms.remove(&name);
                return;
            }
            ReleaseCreated | Approved | StageEntered | WaveStarted | BakeCompleted | ReleaseCompleted | TestStarted
            | TestPassed | TestFailed | ReleaseResumed | ReleaseSuperseded | ReleaseRolledBack | HostFailed
            | RegressionSuspected | Held | Resumed | Hook => return,
        };
        self.baking_since = bake;
    }
}

#[cfg(test)]
mod tests {
    use super::bake_countdown;
    use std::time::Duration;

    #[test]
    fn a_bake_counts_down_then_waits_for_its_data_points() {
        let what = "one-box bake: 10s and 8 data points";
        assert_eq!(bake_countdown(Duration::from_millis(2500), what), " 8s left (10s and 8 data points)");
        assert_eq!(bake_countdown(Duration::from_secs(12), what), " waiting for data points (10s and 8 data points)");
        assert_eq!(bake_countdown(Duration::from_secs(1), "3s"), " 2s left (3s)");
        assert_eq!(bake_countdown(Duration::from_secs(4), "3s"), " 4s (3s)");
    }
}
