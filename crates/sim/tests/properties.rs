//! Rules 1–8 of the rollout engine, checked as invariants over random manifests and
//! scenarios run through the simulator, and determinism: the same inputs always give
//! the same output, byte for byte.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use proptest::prelude::*;
use rollwave_core::alarm::{AlarmScope, AlarmSpec, Comparison, MetricRef, Threshold, TrafficMetric, TreatMissing};
use rollwave_core::manifest::{
    Bake, Environment, Manifest, OneBox, Region, Rolling, Stage, Strategy as Rollout, TestSpec, Wave, Zone,
};
use rollwave_core::plan::Plan;
use rollwave_core::share::{BasisPoints, BatchSize};
use rollwave_core::window::{BlockedDates, WeeklyWindow, Windows};
use rollwave_sim::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const MIN: u64 = 60;
const HOUR: u64 = 3600;

fn mins(m: u64) -> Duration {
    Duration::from_secs(m * MIN)
}

fn bake() -> impl Strategy<Value = Bake> {
    (0u64..=90, prop_oneof![Just(0u64), Just(100), Just(5_000)])
        .prop_map(|(m, dp)| Bake { time: mins(m), min_datapoints: dp })
}

fn rollout() -> impl Strategy<Value = Rollout> {
    (
        prop::option::of((1u32..=2, 1_000u32..=5_000, bake())),
        prop_oneof![
            (2_000u32..=10_000).prop_map(|bp| BatchSize::Share(BasisPoints::new(bp).unwrap())),
            (1u32..=3).prop_map(BatchSize::Hosts)
        ],
        bake(),
        0u32..=1,
        bake(),
    )
        .prop_map(|(one_box, batch, zone_bake, max_failures, wave_bake)| Rollout {
            one_box: one_box.map(|(hosts, share, bake)| OneBox {
                hosts,
                max_share: BasisPoints::new(share).unwrap(),
                bake,
                judge: false,
                judging: Default::default(),
            }),
            rolling: Rolling {
                batch,
                zone_bake,
                max_failures,
                deploy_timeout: mins(10),
                steps: Rolling::default_steps(),
            },
            bake: wave_bake,
        })
}

fn windows() -> impl Strategy<Value = Windows> {
    prop_oneof![
        Just(Windows::default()),
        (6u16..=10, 14u16..=20, any::<bool>()).prop_map(|(from, to, weekends)| Windows {
            allow: vec![WeeklyWindow {
                days: [true, true, true, true, true, weekends, weekends],
                start_minute: from * 60,
                end_minute: to * 60,
            }],
            block: vec![BlockedDates { first: jiff::civil::date(2026, 12, 2), last: jiff::civil::date(2026, 12, 2) }],
        }),
    ]
}

const TIMEZONES: [&str; 3] = ["UTC", "America/Chicago", "Asia/Tokyo"];

fn environment(index: usize) -> impl Strategy<Value = Environment> {
    prop::collection::vec((0usize..3, prop::collection::vec(1u32..=6, 1..=3)), 1..=3).prop_map(move |regions| {
        Environment {
            exec: None,
            require_signatures: false,
            name: format!("env{index}"),
            regions: regions
                .into_iter()
                .enumerate()
                .map(|(r, (tz, zones))| Region {
                    name: format!("r{r}"),
                    timezone: TimeZone::get(TIMEZONES[tz]).unwrap(),
                    zones: zones
                        .into_iter()
                        .enumerate()
                        .map(|(z, hosts)| Zone { name: format!("e{index}r{r}z{z}"), hosts })
                        .collect(),
                    functions: Vec::new(),
                })
                .collect(),
        }
    })
}

fn alarm() -> impl Strategy<Value = AlarmSpec> {
    (0usize..4, 0usize..3, 1u32..=3, 0u32..=2).prop_map(|(scope, metric, n, extra)| {
        let (metric, threshold) =
            [(TrafficMetric::ErrorRate, 0.02), (TrafficMetric::ErrorRate, 0.05), (TrafficMetric::LatencyP99Ms, 800.0)]
                [metric];
        AlarmSpec {
            name: String::new(),
            metric: MetricRef::Traffic(metric),
            scope: AlarmScope::ALL[scope],
            threshold: Threshold { comparison: Comparison::Greater, value: threshold },
            period: mins(1),
            datapoints_to_alarm: n,
            evaluation_periods: n + extra,
            missing: TreatMissing::Missing,
        }
    })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (1usize..=3)
        .prop_flat_map(|stages| {
            let envs: Vec<_> = (0..stages).map(environment).collect();
            let per_stage = prop::collection::vec(
                (any::<bool>(), any::<bool>(), windows(), prop::collection::vec((rollout(), any::<bool>()), 3)),
                stages,
            );
            (envs, per_stage, prop::collection::vec(alarm(), 0..=3), 1u64..=24)
        })
        .prop_map(|(environments, per_stage, mut alarms, watch_h)| {
            let stages = per_stage
                .into_iter()
                .enumerate()
                .map(|(i, (approval, test, windows, wave_params))| {
                    // Regions split into consecutive waves where a region's flag says "new wave".
                    let mut waves: Vec<Wave> = Vec::new();
                    let regions = environments[i].regions.len();
                    for (r, (strategy, new_wave)) in wave_params.into_iter().take(regions).enumerate() {
                        if waves.is_empty() || new_wave {
                            waves.push(Wave { name: format!("w{}", waves.len()), regions: vec![], strategy });
                        }
                        waves.last_mut().unwrap().regions.push(r);
                    }
                    Stage {
                        name: format!("s{i}"),
                        environment: i,
                        approval: approval && i > 0,
                        tests: if test {
                            vec![TestSpec { name: "smoke".into(), run: "./smoke.sh".into(), timeout: mins(15) }]
                        } else {
                            vec![]
                        },
                        waves,
                        windows,
                    }
                })
                .collect();
            for (i, a) in alarms.iter_mut().enumerate() {
                a.name = format!("a{i}");
            }
            Manifest {
                service: "svc".into(),
                environments,
                stages,
                alarms,
                watch: Duration::from_secs(watch_h * HOUR),
                notifications: vec![],
                monitors: vec![],
                signing_keys: vec![],
            }
        })
}

fn scenario(manifest: &Manifest) -> impl Strategy<Value = Scenario> + use<> {
    let hosts: Vec<String> = manifest
        .environments
        .iter()
        .flat_map(|e| &e.regions)
        .flat_map(|r| &r.zones)
        .map(|z| format!("{}-1", z.name))
        .collect();
    let regions: Vec<(String, String)> = manifest
        .environments
        .iter()
        .flat_map(|e| e.regions.iter().map(move |r| (e.name.clone(), r.name.clone())))
        .collect();
    let release = (0u64..48, prop::option::of((0usize..3, 0u64..40)));
    let op = (0u64..72, 0usize..5, 0usize..4);
    (
        prop::collection::vec(release, 1..=4),
        prop::collection::vec(op, 0..=4),
        prop::collection::vec((0u64..60, 0usize..hosts.len()), 0..=2),
        prop::collection::vec((0u64..60, 0usize..regions.len(), 10u64..120), 0..=2),
        0u64..24,
        1u64..=20,
        (0u32..=5, 0u32..=9),
    )
        .prop_map(move |(releases, ops, failures, incidents, start_h, rps, (spread, swing))| {
            let mut releases: Vec<ScenarioRelease> = releases
                .into_iter()
                .enumerate()
                .map(|(i, (at, defect))| ScenarioRelease {
                    version: format!("v{}", i + 2),
                    at: Duration::from_secs(at * HOUR),
                    defect: defect.map(|(kind, after)| Defect {
                        error_rate: (kind == 0).then_some(0.2),
                        latency_p99_ms: (kind == 1).then_some(2_000.0),
                        appears_after: Duration::from_secs(after * HOUR),
                        fails_tests: kind == 2,
                    }),
                })
                .collect();
            releases.sort_by_key(|r| r.at);
            for (i, r) in releases.iter_mut().enumerate() {
                r.version = format!("v{}", i + 2);
            }
            let mut operators: Vec<OperatorAction> = releases
                .iter()
                .map(|r| OperatorAction {
                    at: r.at,
                    action: OperatorVerb::Approve,
                    release: Some(r.version.clone()),
                    stage: None,
                })
                .collect();
            for (at, verb, r) in ops {
                let action = [
                    OperatorVerb::Rollback,
                    OperatorVerb::Retry,
                    OperatorVerb::RollForward,
                    OperatorVerb::Hold,
                    OperatorVerb::Resume,
                ][verb];
                operators.push(OperatorAction {
                    at: Duration::from_secs(at * HOUR),
                    action,
                    release: Some(releases[r % releases.len()].version.clone()),
                    stage: None,
                });
            }
            // Every hold is eventually lifted, so scenarios end.
            operators.push(OperatorAction {
                at: Duration::from_secs(80 * HOUR),
                action: OperatorVerb::Resume,
                release: None,
                stage: None,
            });
            Scenario {
                start: "2026-11-30T00:00:00Z".parse::<Timestamp>().unwrap() + Duration::from_secs(start_h * HOUR),
                initial_version: "v1".into(),
                // Hosts that differ by nature and a daily swing change what the judge and the
                // bakes see, never the rules.
                traffic: Traffic {
                    requests_per_host_per_s: rps as f64,
                    error_rate: 0.001,
                    latency_p99_ms: 120.0,
                    host_spread: f64::from(spread) / 10.0,
                    daily_swing: f64::from(swing) / 10.0,
                },
                deploy_time: mins(2),
                test_time: mins(5),
                releases,
                incidents: incidents
                    .into_iter()
                    .map(|(at, r, m)| Incident {
                        at: Duration::from_secs(at * HOUR),
                        duration: mins(m),
                        environment: Some(regions[r].0.clone()),
                        region: regions[r].1.clone(),
                        zone: None,
                        error_rate: Some(0.5),
                        latency_p99_ms: None,
                    })
                    .collect(),
                operators,
                host_failures: failures
                    .into_iter()
                    .map(|(at, h)| HostFailure {
                        at: Duration::from_secs(at * HOUR),
                        environment: None,
                        host: hosts[h].clone(),
                    })
                    .collect(),
            }
        })
}

fn case() -> impl Strategy<Value = (Manifest, Scenario, u64)> {
    manifest().prop_flat_map(|m| {
        let s = scenario(&m);
        (Just(m), s, any::<u64>())
    })
}

fn options(seed: u64) -> Options {
    Options { seed, until: Duration::from_secs(12 * 86_400) }
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// What the checks need to know about the manifest, by scope string.
struct Layout<'a> {
    manifest: &'a Manifest,
}

impl Layout<'_> {
    fn stage(&self, name: &str) -> (usize, &Stage) {
        let i = self.manifest.stage_named(name).unwrap();
        (i, &self.manifest.stages[i])
    }

    fn wave(&self, scope: &str) -> (usize, usize, &Wave) {
        let (stage, wave) = scope.split_once('/').unwrap();
        let (s, st) = self.stage(stage);
        let w = st.waves.iter().position(|w| w.name == wave).unwrap();
        (s, w, &st.waves[w])
    }

    fn region(&self, stage: &str, region: &str) -> &Region {
        let (_, st) = self.stage(stage);
        self.manifest.environments[st.environment].regions.iter().find(|r| r.name == region).unwrap()
    }

    /// The wave strategy that governs a `stage/region...` scope.
    fn strategy(&self, scope: &str) -> &Rollout {
        let parts: Vec<&str> = scope.split('/').collect();
        let (_, st) = self.stage(parts[0]);
        let env = &self.manifest.environments[st.environment];
        let r = env.regions.iter().position(|r| r.name == parts[1]).unwrap();
        &st.waves.iter().find(|w| w.regions.contains(&r)).unwrap().strategy
    }
}

/// Whether `outer` contains `inner` as scope paths.
fn within(outer: &str, inner: &str) -> bool {
    inner == outer || inner.starts_with(&format!("{outer}/")) || outer.is_empty()
}

fn check(manifest: &Manifest, scenario: &Scenario, report: &Report) -> Result<(), String> {
    let layout = Layout { manifest };
    let order: BTreeMap<&str, usize> =
        scenario.releases.iter().enumerate().map(|(i, r)| (r.version.as_str(), i)).collect();
    let ev = &report.events;
    let halting_kinds = [
        "stage_entered",
        "wave_started",
        "region_started",
        "zone_started",
        "one_box_deployed",
        "bake_started",
        "bake_completed",
        "zone_completed",
        "region_completed",
        "wave_completed",
        "stage_completed",
        "release_completed",
    ];

    // 7: the world never saw more of a zone deploying at once than its batch.
    if let Some(v) = report.violations.first() {
        return Err(v.clone());
    }

    let mut halted: BTreeSet<&str> = BTreeSet::new();
    let mut approved: BTreeSet<(&str, String)> = BTreeSet::new();
    let mut last_stage: BTreeMap<&str, usize> = BTreeMap::new();
    let mut last_wave: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut firing: BTreeMap<String, usize> = BTreeMap::new();
    let mut held: BTreeSet<String> = BTreeSet::new();
    let mut occupant: BTreeMap<String, String> = BTreeMap::new();
    let mut bake_started: BTreeMap<(String, String), Timestamp> = BTreeMap::new();
    let mut wave_done: Vec<(&str, String, Timestamp)> = Vec::new();

    for (i, e) in ev.iter().enumerate() {
        let at = t(&e.t);
        let release = e.release.as_deref().unwrap_or("");
        let fail = |what: String| Err(format!("event #{i} {} {release} {} at {}: {what}", e.kind, e.scope, e.t));

        // 5, 6: a halted release promotes no further until it is retried.
        if halted.contains(release) && halting_kinds.contains(&e.kind) {
            return fail("a halted release moved on".into());
        }
        match e.kind {
            "release_halted" => {
                halted.insert(release);
            }
            "release_resumed" | "release_superseded" | "release_rolled_back" => {
                halted.remove(release);
            }
            "approved" => {
                let stages: Vec<String> = if e.scope.is_empty() {
                    manifest.stages.iter().map(|s| s.name.clone()).collect()
                } else {
                    vec![e.scope.clone()]
                };
                for s in stages {
                    approved.insert((release, s));
                }
            }
            "held" => {
                held.insert(e.scope.clone());
            }
            "resumed" => {
                held.remove(&e.scope);
            }
            "alarm_fired" => {
                *firing.entry(e.scope.clone()).or_default() += 1;
            }
            "alarm_cleared" => {
                if let Some(n) = firing.get_mut(&e.scope) {
                    *n -= 1;
                    if *n == 0 {
                        firing.remove(&e.scope);
                    }
                }
            }
            _ => {}
        }

        // 1: stages in order, waves in order, approval before an approval stage.
        if e.kind == "stage_entered" {
            let (s, st) = layout.stage(&e.scope);
            if last_stage.get(release).is_some_and(|&prev| prev >= s) {
                return fail("stages out of order".into());
            }
            last_stage.insert(release, s);
            if st.approval && !approved.contains(&(release, st.name.clone())) {
                return fail("entered an approval stage without approval".into());
            }
        }
        if e.kind == "wave_started" {
            let (s, w, _) = layout.wave(&e.scope);
            if last_wave.get(release).is_some_and(|&prev| prev >= (s, w)) {
                return fail("waves out of order".into());
            }
            last_wave.insert(release, (s, w));
            // 3: one release per stage/wave at a time; older ones waiting are superseded.
            if let Some(other) = occupant.get(&e.scope) {
                return fail(format!("{other} still holds the wave"));
            }
            occupant.insert(e.scope.clone(), release.to_owned());
        }
        let leaves = match e.kind {
            "wave_completed" => vec![e.scope.clone()],
            "release_superseded" | "release_rolled_back" => {
                occupant.iter().filter(|(_, r)| r.as_str() == release).map(|(w, _)| w.clone()).collect()
            }
            _ => vec![],
        };
        for w in leaves {
            if occupant.get(&w).is_some_and(|r| r == release) {
                occupant.remove(&w);
            }
        }
        if e.kind == "release_superseded"
            && let Some(by) = e.reason.as_deref().and_then(|r| r.strip_prefix("superseded by "))
            && order[by] <= order[release]
        {
            return fail(format!("superseded by an older release {by}"));
        }

        // 4: a step never starts under an alarm of its scope, on hold, or outside a window.
        if matches!(e.kind, "region_started" | "zone_started") {
            if let Some(alarm) = firing.keys().find(|a| within(a, &e.scope)) {
                return fail(format!("started while alarm in {alarm} fires"));
            }
            let stage = e.scope.split('/').next().unwrap();
            if held.contains("") || held.contains(stage) {
                return fail("started while on hold".into());
            }
            let region = e.scope.split('/').nth(1).unwrap();
            let (_, st) = layout.stage(stage);
            if let Err(closed) = st.windows.check(at, &layout.region(stage, region).timezone) {
                return fail(format!("started {closed}"));
            }
        }

        // 2: every bake lasts at least its time; one-box before zones.
        if e.kind == "bake_started" {
            bake_started.insert((release.to_owned(), e.scope.clone()), at);
        }
        if e.kind == "bake_completed" {
            let Some(&from) = bake_started.get(&(release.to_owned(), e.scope.clone())) else {
                return fail("a bake completed that never started".into());
            };
            let depth = e.scope.split('/').count();
            let wave_scope = layout
                .manifest
                .stages
                .iter()
                .any(|s| s.waves.iter().any(|w| e.scope == format!("{}/{}", s.name, w.name)));
            let needed = if wave_scope {
                layout.wave(&e.scope).2.strategy.bake.time
            } else if depth == 2 {
                layout.strategy(&e.scope).one_box.as_ref().map(|o| o.bake.time).unwrap_or_default()
            } else {
                layout.strategy(&e.scope).rolling.zone_bake.time
            };
            if at.duration_since(from).as_secs() < needed.as_secs() as i64 {
                return fail(format!("baked {}s, needs {}s", at.duration_since(from).as_secs(), needed.as_secs()));
            }
        }
        if e.kind == "zone_started" && layout.strategy(&e.scope).one_box.is_some() {
            let region_scope: String = e.scope.split('/').take(2).collect::<Vec<_>>().join("/");
            let one_box_baked = ev[..i].iter().any(|p| {
                p.kind == "bake_completed" && p.scope == region_scope && p.release.as_deref() == Some(release)
            });
            if !one_box_baked {
                return fail("a zone started before the region's one-box baked".into());
            }
        }

        // 5: an alarm attributed to a release rolls back that scope and halts it, at once.
        if e.kind == "alarm_fired" && !release.is_empty() {
            let same_time = ev[i + 1..].iter().take_while(|n| n.t == e.t);
            let mut rolled = false;
            let mut halt = halted.contains(release);
            for n in same_time {
                rolled |= n.kind == "rollback_started" && n.release.as_deref() == Some(release) && n.scope == e.scope;
                halt |= n.kind == "release_halted" && n.release.as_deref() == Some(release);
            }
            if !(rolled && halt) {
                return fail("an attributed alarm did not roll back and halt".into());
            }
        }

        // 8: a suspected regression names a release that finished there within `watch`,
        // and rolls nothing back by itself.
        if e.kind == "wave_completed" {
            let (_, _, wave) = layout.wave(&e.scope);
            let stage = e.scope.split('/').next().unwrap().to_owned();
            let (_, st) = layout.stage(&stage);
            for &r in &wave.regions {
                let name = &manifest.environments[st.environment].regions[r].name;
                wave_done.push((release, format!("{stage}/{name}"), at));
            }
        }
        if e.kind == "regression_suspected" {
            let ok = wave_done.iter().any(|(r, region, done)| {
                *r == release
                    && (within(region, &e.scope) || within(&e.scope, region))
                    && at.duration_since(*done).as_secs() <= manifest.watch.as_secs() as i64
            });
            if !ok {
                return fail("no recent finish of this release there".into());
            }
            let rolls_back = ev[i + 1..]
                .iter()
                .take_while(|n| n.t == e.t && n.kind != "alarm_fired")
                .any(|n| n.kind == "rollback_started" && n.release.as_deref() == Some(release));
            if rolls_back {
                return Err(format!("event #{i}: a suspected regression rolled back by itself"));
            }
        }
    }

    // 6: after an operator rollback, no host runs that release or a newer one created
    // before it, once the dust has settled.
    for r in &report.releases {
        if r.outcome == "rolled_back" && r.reason.as_deref().is_some_and(|w| w.starts_with("operator rolled back")) {
            let when = ev
                .iter()
                .find(|e| e.kind == "release_rolled_back" && e.release.as_deref() == Some(&r.version))
                .map(|e| t(&e.t))
                .unwrap();
            let tainted: BTreeSet<&str> = scenario
                .releases
                .iter()
                .filter(|s| order[s.version.as_str()] >= order[r.version.as_str()])
                .filter(|s| scenario.start + s.at <= when)
                .map(|s| s.version.as_str())
                .collect();
            let later_rollout = ev.iter().any(|e| {
                t(&e.t) > when && e.kind == "wave_started" && e.release.as_deref().is_some_and(|v| !tainted.contains(v))
            });
            // Hosts that broke cannot be rolled back; they say so.
            let unreachable = ev
                .iter()
                .filter(|e| t(&e.t) >= when && e.kind == "host_failed")
                .filter(|e| e.reason.as_deref().is_some_and(|r| r.starts_with("rollback failed")))
                .count() as u64;
            let still: u64 = report
                .fleet
                .iter()
                .flat_map(|env| &env.versions)
                .filter(|(v, _)| tainted.contains(v.as_str()))
                .map(|(_, n)| n)
                .sum();
            for env in &report.fleet {
                for (v, n) in &env.versions {
                    if tainted.contains(v.as_str()) && !later_rollout && still > unreachable {
                        return Err(format!(
                            "{n} host(s) of {} still run {v} after {} was rolled back",
                            env.environment, r.version
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rollouts_keep_the_rules((manifest, scenario, seed) in case()) {
        let plan = Arc::new(Plan::new(manifest.clone()));
        let report = simulate(plan, &scenario, options(seed)).unwrap();
        if let Err(why) = check(&manifest, &scenario, &report) {
            prop_assert!(false, "{why}\n\n{}", report.to_text());
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_output((manifest, scenario, seed) in case()) {
        let a = simulate(Arc::new(Plan::new(manifest.clone())), &scenario, options(seed)).unwrap().to_json();
        let b = simulate(Arc::new(Plan::new(manifest)), &scenario, options(seed)).unwrap().to_json();
        prop_assert_eq!(a, b);
    }
}
