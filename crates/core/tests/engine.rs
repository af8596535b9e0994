//! The engine's rules as specifications: inputs in, commands and events out.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rollwave_core::alarm::{
    AlarmScope, AlarmSpec, AlarmState, Comparison, MetricRef, Threshold, TrafficMetric, TreatMissing,
};
use rollwave_core::engine::*;
use rollwave_core::judge::Outcome;
use rollwave_core::manifest::*;
use rollwave_core::plan::{EnvId, HostId, Plan, RegionId, StageId, ZoneId};
use rollwave_core::share::{BasisPoints, BatchSize};
use rollwave_core::window::{WeeklyWindow, Windows};
use std::sync::Arc;
use std::time::Duration;

const MIN: u64 = 60;

fn mins(m: u64) -> Duration {
    Duration::from_secs(m * MIN)
}

fn bake(m: u64, dp: u64) -> Bake {
    Bake { time: mins(m), min_datapoints: dp }
}

/// One environment `env0` with one region of the given zones; one stage per entry of
/// `approvals`, all deploying to it, one wave each.
fn manifest(zones: &[u32], approvals: &[bool]) -> Manifest {
    let strategy = Strategy {
        one_box: Some(OneBox {
            hosts: 1,
            max_share: BasisPoints::new(5_000).unwrap(),
            bake: bake(60, 100),
            judge: false,
            judging: Default::default(),
        }),
        rolling: Rolling {
            batch: BatchSize::Share(BasisPoints::new(5_000).unwrap()),
            zone_bake: bake(30, 0),
            max_failures: 0,
            deploy_timeout: mins(10),
            steps: Rolling::default_steps(),
        },
        bake: bake(120, 0),
    };
    Manifest {
        service: "svc".into(),
        environments: vec![Environment {
            exec: None,
            require_signatures: false,
            name: "env0".into(),
            regions: vec![Region {
                name: "r1".into(),
                timezone: TimeZone::UTC,
                zones: zones
                    .iter()
                    .enumerate()
                    .map(|(i, &hosts)| Zone { name: format!("z{}", i + 1), hosts })
                    .collect(),
                functions: Vec::new(),
            }],
        }],
        stages: approvals
            .iter()
            .enumerate()
            .map(|(i, &approval)| Stage {
                name: format!("s{}", i + 1),
                environment: 0,
                approval,
                tests: vec![],
                waves: vec![Wave { name: "w1".into(), regions: vec![0], strategy: strategy.clone() }],
                windows: Windows::default(),
            })
            .collect(),
        alarms: vec![AlarmSpec {
            name: "errors".into(),
            metric: MetricRef::Traffic(TrafficMetric::ErrorRate),
            scope: AlarmScope::Zone,
            threshold: Threshold { comparison: Comparison::Greater, value: 0.02 },
            period: mins(1),
            datapoints_to_alarm: 1,
            evaluation_periods: 1,
            missing: TreatMissing::Missing,
        }],
        watch: mins(24 * 60),
        notifications: vec![],
        monitors: vec![],
        signing_keys: vec![],
    }
}

struct Harness {
    engine: Engine,
    now: Timestamp,
    events: Vec<Event>,
    commands: Vec<Command>,
}

const ENV: EnvId = EnvId(0);

impl Harness {
    fn new(manifest: Manifest) -> Self {
        let now: Timestamp = "2026-11-30T10:00:00Z".parse().unwrap();
        let engine = Engine::new(Arc::new(Plan::new(manifest)), "v1", now);
        Harness { engine, now, events: vec![], commands: vec![] }
    }

    fn input(&mut self, input: Input) {
        self.engine.handle(self.now, input).expect("input accepted");
        for o in self.engine.drain() {
            match o {
                Output::Event(e) => self.events.push(e),
                Output::Command(c) => self.commands.push(c),
            }
        }
    }

    fn after(&mut self, minutes: u64) {
        self.now += mins(minutes);
        self.input(Input::Tick);
    }

    /// Ticks once a minute, as a driver does.
    fn run_for(&mut self, minutes: u64) {
        for _ in 0..minutes {
            self.after(1);
        }
    }

    fn create(&mut self, version: &str) -> ReleaseId {
        self.input(Input::CreateRelease { version: version.into() });
        self.engine.release_named(version).unwrap()
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.kind.as_str()).collect()
    }

    fn take_kinds(&mut self) -> Vec<&'static str> {
        let k = self.kinds();
        self.events.clear();
        k
    }

    /// The deploy commands issued since the last call: (hosts, version, purpose).
    fn take_deploys(&mut self) -> Vec<(CommandId, Vec<u32>, ReleaseId, Purpose)> {
        self.commands
            .drain(..)
            .filter_map(|c| match c.action {
                Action::Deploy { hosts, version, purpose, .. } => {
                    Some((c.id, hosts.iter().map(|h| h.0).collect(), version, purpose))
                }
                _ => None,
            })
            .collect()
    }

    fn succeed(&mut self, deploys: &[(CommandId, Vec<u32>, ReleaseId, Purpose)]) {
        for (id, hosts, _, _) in deploys {
            for &h in hosts {
                self.input(Input::HostReport { env: ENV, host: HostId(h), command: *id, result: Ok(()) });
            }
        }
    }

    fn serve(&mut self, zone: u32, version: ReleaseId, requests: u64) {
        self.input(Input::Served { env: ENV, zone: ZoneId(zone), version, requests });
    }

    fn alarm(&mut self, zone: u32, state: AlarmState) {
        self.input(Input::Alarm {
            alarm: 0,
            scope: Scope::Zone(ENV, ZoneId(zone)),
            state,
            reason: "test".into(),
            explained_elsewhere: false,
        });
    }

    fn status(&self, version: &str) -> ReleaseStatus {
        self.engine.releases().into_iter().find(|r| r.version == version).unwrap().status
    }
}

/// Drives a release through the one-box and the first zone of `s1`.
fn through_first_zone(h: &mut Harness, v: ReleaseId) {
    let one_box = h.take_deploys();
    h.succeed(&one_box);
    h.serve(0, v, 100);
    h.after(60);
    let batch = h.take_deploys();
    h.succeed(&batch);
    h.after(30);
}

#[test]
fn a_region_goes_one_box_first_then_zone_by_zone_in_batches() {
    let mut h = Harness::new(manifest(&[4, 4], &[false]));
    let v2 = h.create("v2");
    assert_eq!(
        h.take_kinds(),
        ["release_created", "stage_entered", "wave_started", "region_started"],
        "the one-box deployment starts at once"
    );
    let one_box = h.take_deploys();
    assert_eq!(one_box.iter().map(|d| (d.1.clone(), d.2)).collect::<Vec<_>>(), [(vec![0], v2)]);

    h.succeed(&one_box);
    assert_eq!(h.take_kinds(), ["one_box_deployed", "bake_started"]);

    // An hour passes, but the one-box has served too few requests: the bake waits.
    h.serve(0, v2, 40);
    h.after(60);
    assert_eq!(h.take_kinds(), ["blocked"]);
    assert!(h.take_deploys().is_empty());

    h.serve(0, v2, 60);
    h.input(Input::Tick);
    assert_eq!(h.take_kinds(), ["bake_completed", "zone_started"]);
    // Batches of at most half the zone; the one-box host is not deployed again.
    let batch = h.take_deploys();
    assert_eq!(batch.iter().map(|d| d.1.clone()).collect::<Vec<_>>(), [vec![1, 2]]);
    h.succeed(&batch);
    let batch = h.take_deploys();
    assert_eq!(batch.iter().map(|d| d.1.clone()).collect::<Vec<_>>(), [vec![3]]);
    h.succeed(&batch);
    assert_eq!(h.take_kinds(), ["batch_deployed", "batch_deployed", "zone_completed", "bake_started"]);

    h.after(29);
    assert!(h.take_deploys().is_empty(), "the zone bake lasts 30 minutes");
    h.after(1);
    let batch = h.take_deploys();
    assert_eq!(batch.iter().map(|d| d.1.clone()).collect::<Vec<_>>(), [vec![4, 5]]);
}

#[test]
fn a_judged_one_box_bake_ends_only_after_a_passing_verdict() {
    let mut m = manifest(&[4, 4], &[false]);
    m.stages[0].waves[0].strategy.one_box.as_mut().unwrap().judge = true;
    let mut h = Harness::new(m);
    let v2 = h.create("v2");
    let one_box = h.take_deploys();
    h.succeed(&one_box);
    h.take_kinds();
    let verdict =
        |outcome| Input::Verdict { env: ENV, region: RegionId(0), release: v2, outcome, reason: "test".into() };
    // A pass on the bake's first minutes is heard but does not count: the bake's time is
    // what the judge must have seen.
    h.serve(0, v2, 100);
    h.after(5);
    h.input(verdict(Outcome::Pass));
    assert_eq!(h.take_kinds(), ["judge_verdict"]);
    // Time and data points are met, but the judge has not spoken since: fail closed.
    h.after(55);
    let why = h.events.last().and_then(|e| e.reason.clone()).unwrap_or_default();
    assert_eq!(h.take_kinds(), ["blocked"]);
    assert!(why.contains("one-box judge"), "{why}");
    assert!(h.take_deploys().is_empty());
    h.run_for(30);
    assert!(h.take_deploys().is_empty(), "no verdict, no promotion");
    // A marginal verdict keeps the bake going.
    h.input(verdict(Outcome::Marginal));
    h.input(Input::Tick);
    assert_eq!(h.take_kinds(), ["judge_verdict"]);
    assert!(h.take_deploys().is_empty());
    h.input(verdict(Outcome::Pass));
    h.input(Input::Tick);
    assert_eq!(h.take_kinds(), ["judge_verdict", "bake_completed", "zone_started"]);
    assert_eq!(h.take_deploys().len(), 1, "the first zone's batch starts");
}

#[test]
fn an_alarm_rolls_back_only_its_zone_and_halts_the_release() {
    let mut h = Harness::new(manifest(&[2, 2], &[false]));
    let v2 = h.create("v2");
    through_first_zone(&mut h, v2);
    let zone2_batch = h.take_deploys();
    assert_eq!(zone2_batch[0].1, vec![2]);
    h.events.clear();

    h.alarm(0, AlarmState::Alarm);
    assert_eq!(h.take_kinds(), ["alarm_fired", "rollback_started", "release_halted"]);
    let rollback = h.take_deploys();
    assert_eq!(rollback.len(), 1);
    assert_eq!(rollback[0].1, vec![0], "only zone 1's hosts, one at a time (its batch)");
    assert_eq!((rollback[0].2, rollback[0].3), (ReleaseId(0), Purpose::Rollback));
    h.succeed(&rollback);
    let rollback = h.take_deploys();
    assert_eq!(rollback[0].1, vec![1]);
    h.succeed(&rollback);
    assert_eq!(h.take_kinds(), ["rollback_completed"]);

    // The batch in flight in zone 2 finishes, but nothing new starts.
    h.succeed(&zone2_batch);
    h.after(120);
    assert!(h.take_deploys().is_empty());
    assert_eq!(h.engine.host_version(ENV, HostId(2)), v2, "zone 2 keeps the new version");
    assert_eq!(h.engine.host_version(ENV, HostId(0)), ReleaseId(0));
    assert_eq!(h.status("v2"), ReleaseStatus::Halted);
}

#[test]
fn retry_redeploys_the_rolled_back_scope_once_its_alarm_is_ok() {
    let mut h = Harness::new(manifest(&[2, 2], &[false]));
    let v2 = h.create("v2");
    through_first_zone(&mut h, v2);
    let zone2 = h.take_deploys();
    h.alarm(0, AlarmState::Alarm);
    let rb = h.take_deploys();
    h.succeed(&rb);
    let rb = h.take_deploys();
    h.succeed(&rb);
    h.succeed(&zone2);
    h.events.clear();

    h.input(Input::Operator(OperatorCommand::Retry { release: v2 }));
    assert_eq!(h.take_kinds(), ["release_resumed", "region_started", "blocked"], "the alarm still fires");
    assert!(h.take_deploys().is_empty());

    h.alarm(0, AlarmState::Ok);
    let redeploy = h.take_deploys();
    assert_eq!(redeploy.iter().map(|d| (d.1.clone(), d.2)).collect::<Vec<_>>(), [(vec![0], v2)], "one-box first");
    assert_eq!(h.status("v2"), ReleaseStatus::InProgress);
}

#[test]
fn the_newest_waiting_release_goes_in_and_supersedes_older_ones() {
    let mut h = Harness::new(manifest(&[1], &[false]));
    let v2 = h.create("v2");
    h.create("v3");
    h.create("v4");
    let d = h.take_deploys();
    assert_eq!(d[0].2, v2, "v2 holds the wave; v3 and v4 wait");
    h.succeed(&d);
    h.serve(0, v2, 100);
    h.run_for(60 + 30 + 120);
    let kinds = h.kinds();
    let superseded: Vec<_> = h
        .events
        .iter()
        .filter(|e| e.kind == EventKind::ReleaseSuperseded)
        .map(|e| (h.engine.version_name(e.release.unwrap()).to_owned(), e.reason.clone().unwrap()))
        .collect();
    assert!(kinds.contains(&"release_completed"), "{kinds:?}");
    assert_eq!(superseded, [("v3".to_owned(), "superseded by v4".to_owned())]);
    assert_eq!(h.take_deploys()[0].2, h.engine.release_named("v4").unwrap());
}

#[test]
fn an_approval_stage_waits_for_approve() {
    let mut h = Harness::new(manifest(&[1], &[false, true]));
    let v2 = h.create("v2");
    let d = h.take_deploys();
    h.succeed(&d);
    h.serve(0, v2, 100);
    h.run_for(60 + 30 + 120);
    let blocked: Vec<_> =
        h.events.iter().filter(|e| e.kind == EventKind::Blocked).map(|e| e.reason.clone().unwrap()).collect();
    assert_eq!(blocked, ["waiting for approval to enter s2"]);
    h.events.clear();
    h.input(Input::Operator(OperatorCommand::Approve { release: v2, stage: Some(StageId(1)) }));
    assert_eq!(
        h.take_kinds(),
        ["approved", "stage_entered", "wave_started", "region_started", "one_box_deployed", "bake_started"]
    );
}

#[test]
fn a_report_delivered_twice_counts_once() {
    let mut h = Harness::new(manifest(&[2, 2], &[false]));
    let v2 = h.create("v2");
    let d = h.take_deploys();
    h.succeed(&d);
    h.succeed(&d);
    let kinds = h.take_kinds();
    assert_eq!(kinds.iter().filter(|k| **k == "one_box_deployed").count(), 1);
    assert_eq!(h.engine.host_version(ENV, HostId(0)), v2);
}

#[test]
fn a_deployment_that_times_out_fails_the_host_and_rolls_back_its_zone() {
    let mut h = Harness::new(manifest(&[4], &[false]));
    let v2 = h.create("v2");
    through_first_zone_partially(&mut h, v2);
    // Host 1 reports; host 2 never does.
    let batch = h.take_deploys();
    h.input(Input::HostReport { env: ENV, host: HostId(1), command: batch[0].0, result: Ok(()) });
    h.events.clear();
    h.after(10);
    assert_eq!(h.take_kinds(), ["host_failed", "rollback_started", "release_halted"]);
    let rb = h.take_deploys();
    let rolled: Vec<u32> = rb.iter().flat_map(|d| d.1.clone()).collect();
    assert_eq!(rolled, [0, 1], "hosts that run v2; the failed one never got it");
}

fn through_first_zone_partially(h: &mut Harness, v: ReleaseId) {
    let one_box = h.take_deploys();
    h.succeed(&one_box);
    h.serve(0, v, 100);
    h.after(60);
}

#[test]
fn an_operator_rollback_returns_every_host_and_cancels_newer_releases() {
    let mut h = Harness::new(manifest(&[1], &[false, false]));
    let v2 = h.create("v2");
    let d = h.take_deploys();
    h.succeed(&d);
    h.serve(0, v2, 100);
    h.run_for(60 + 30 + 120);
    // v2 now deploys in s2 (same hosts, already on v2); v3 enters s1.
    let v3 = h.create("v3");
    let d = h.take_deploys();
    h.succeed(&d);
    assert_eq!(h.engine.host_version(ENV, HostId(0)), v3);
    h.events.clear();

    h.input(Input::Operator(OperatorCommand::Rollback { release: v2 }));
    let rb = h.take_deploys();
    assert_eq!(rb.iter().map(|d| (d.1.clone(), d.2)).collect::<Vec<_>>(), [(vec![0], ReleaseId(0))]);
    h.succeed(&rb);
    assert_eq!(h.status("v2"), ReleaseStatus::RolledBack);
    assert_eq!(h.status("v3"), ReleaseStatus::RolledBack);
    assert_eq!(h.engine.host_version(ENV, HostId(0)), ReleaseId(0));
}

#[test]
fn steps_start_only_inside_windows_but_bakes_keep_counting() {
    let mut m = manifest(&[2], &[false]);
    m.stages[0].windows = Windows {
        allow: vec![WeeklyWindow { days: [true; 7], start_minute: 9 * 60, end_minute: 10 * 60 + 30 }],
        block: vec![],
    };
    let mut h = Harness::new(m);
    let v2 = h.create("v2"); // 10:00, inside the window: the one-box goes out.
    let one_box = h.take_deploys();
    h.succeed(&one_box);
    h.serve(0, v2, 100);
    h.events.clear();
    h.run_for(60); // The bake runs past 10:30 and completes at 11:00 all the same.
    let kinds = h.take_kinds();
    assert_eq!(kinds, ["bake_completed", "blocked"]);
    assert!(h.take_deploys().is_empty(), "the zone waits for the window");
    h.now = "2026-12-01T08:59:00Z".parse().unwrap();
    h.input(Input::Tick);
    assert!(h.take_deploys().is_empty());
    h.after(1);
    assert_eq!(h.take_kinds(), ["zone_started"]);
    assert_eq!(h.take_deploys().len(), 1);
}

#[test]
fn bad_operator_commands_are_refused_and_change_nothing() {
    let mut h = Harness::new(manifest(&[1], &[false]));
    let v2 = h.create("v2");
    let before = h.engine.releases().len();
    let err = h.engine.handle(h.now, Input::Operator(OperatorCommand::Retry { release: v2 })).unwrap_err();
    assert_eq!(err.to_string(), "v2 is in progress, not halted");
    assert!(h.engine.handle(h.now, Input::Operator(OperatorCommand::Rollback { release: ReleaseId(9) })).is_err());
    assert!(h.engine.handle(h.now, Input::CreateRelease { version: "v2".into() }).is_err());
    assert!(
        h.engine
            .handle(h.now, Input::HostReport { env: EnvId(3), host: HostId(0), command: CommandId(1), result: Ok(()) })
            .is_err()
    );
    assert_eq!(h.engine.releases().len(), before);
    assert_eq!(h.engine.drain().count(), 0);
    assert_eq!(h.status("v2"), ReleaseStatus::InProgress);
}

/// A wave of two regions, `r1` and `r2`, of one zone of two hosts each: r1's hosts are
/// 0 and 1, r2's are 2 and 3; each region's one-box is its first host.
fn two_regions() -> Manifest {
    let mut m = manifest(&[2], &[false]);
    let mut r2 = m.environments[0].regions[0].clone();
    r2.name = "r2".into();
    r2.zones[0].name = "z2".into();
    m.environments[0].regions.push(r2);
    m.stages[0].waves[0].regions = vec![0, 1];
    m
}

#[test]
fn a_retry_does_not_count_a_one_box_that_was_still_baking_as_baked() {
    let mut h = Harness::new(two_regions());
    let v2 = h.create("v2");
    let one_boxes = h.take_deploys();
    let hosts: Vec<u32> = one_boxes.iter().flat_map(|d| d.1.clone()).collect();
    assert_eq!(hosts, [0, 2], "each region's one-box first");
    // r1's one-box deploys and bakes; r2's fails, which halts the release.
    let (r1, r2): (Vec<_>, Vec<_>) = one_boxes.into_iter().partition(|d| d.1 == [0]);
    h.succeed(&r1);
    for (id, hosts, _, _) in &r2 {
        h.input(Input::HostReport {
            env: ENV,
            host: HostId(hosts[0]),
            command: *id,
            result: Err("unreachable".into()),
        });
    }
    assert_eq!(h.status("v2"), ReleaseStatus::Halted);
    h.after(10);
    let rollback = h.take_deploys();
    h.succeed(&rollback);

    h.input(Input::Operator(OperatorCommand::Retry { release: v2 }));
    // Every deployment from here on succeeds; r1's traffic gives its bakes data points.
    let mut deployed_at = Vec::new();
    for minute in 1..=70 {
        h.serve(0, v2, 100);
        h.after(1);
        let deploys = h.take_deploys();
        deployed_at.extend(deploys.iter().flat_map(|d| d.1.iter().map(move |&host| (minute, host))));
        h.succeed(&deploys);
    }
    let r1_zone = deployed_at.iter().find(|(_, host)| *host == 1).map(|(minute, _)| *minute);
    assert!(
        r1_zone.is_some_and(|m| m >= 60),
        "r1's zone waits for a full one-box bake (60m) after the retry, the one the halt interrupted: {deployed_at:?}"
    );
}

#[test]
fn reapplying_the_manifest_keeps_the_operators_stage_holds() {
    let mut h = Harness::new(manifest(&[1], &[false, false]));
    h.input(Input::Operator(OperatorCommand::Hold { stage: Some(StageId(1)) }));
    assert_eq!(h.engine.holds(), (false, vec![StageId(1)]));
    // The new manifest puts a stage before the held one: the hold follows the stage's name.
    let mut m = manifest(&[1], &[false, false, false]);
    m.stages[1].name = "s0".into();
    m.stages[2].name = "s2".into();
    h.engine.replace_plan(Arc::new(Plan::new(m))).expect("nothing is in flight");
    assert_eq!(h.engine.holds(), (false, vec![StageId(2)]), "s2 is still held");
    h.events.clear();
    let v2 = h.create("v2");
    // Through s1 and s0, one stage at a time: deploy, serve the one-box, bake.
    for _ in 0..3 {
        let d = h.take_deploys();
        h.succeed(&d);
        h.serve(0, v2, 100);
        h.run_for(60 + 30 + 120);
    }
    let completed = h.kinds().iter().filter(|k| **k == "stage_completed").count();
    assert_eq!(completed, 2, "s1 and s0 complete: {:?}", h.kinds());
    let blocked: Vec<_> =
        h.events.iter().filter(|e| e.kind == EventKind::Blocked).filter_map(|e| e.reason.clone()).collect();
    assert_eq!(blocked.last().map(String::as_str), Some("stage s2 is on hold"), "{blocked:?}");
    h.input(Input::Operator(OperatorCommand::Resume { stage: Some(StageId(2)) }));
    assert!(h.take_kinds().contains(&"stage_entered"), "resuming s2 lets the release in");
}

#[test]
fn an_alarm_on_data_from_before_a_rollback_is_the_rolled_back_release_s_not_the_one_before() {
    let mut h = Harness::new(manifest(&[2], &[false]));
    let v2 = h.create("v2");
    for _ in 0..400 {
        let deploys = h.take_deploys();
        h.succeed(&deploys);
        h.serve(0, v2, 100);
        h.after(1);
        if h.status("v2") == ReleaseStatus::Completed {
            break;
        }
    }
    assert_eq!(h.status("v2"), ReleaseStatus::Completed);
    h.create("v3");
    let one_box = h.take_deploys();
    h.succeed(&one_box);
    h.alarm(0, AlarmState::Alarm);
    let rollback = h.take_deploys();
    assert_eq!(rollback[0].3, Purpose::Rollback);
    h.succeed(&rollback);
    assert_eq!(h.status("v3"), ReleaseStatus::Halted);
    h.events.clear();

    // The alarm clears and fires again on the period that still holds v3's errors.
    h.alarm(0, AlarmState::Ok);
    h.alarm(0, AlarmState::Alarm);
    assert!(!h.kinds().contains(&"regression_suspected"), "{:?}", h.kinds());
    assert_eq!(h.engine.host_version(ENV, HostId(0)), v2, "the one-box is on v2 again");

    // Once the alarm's window holds only data from after the rollback, it is v2's.
    h.after(2);
    h.alarm(0, AlarmState::Ok);
    h.alarm(0, AlarmState::Alarm);
    assert!(h.kinds().contains(&"regression_suspected"), "{:?}", h.kinds());
}

#[test]
fn a_zone_whose_host_is_still_rolling_back_waits_for_it_instead_of_completing() {
    let mut m = manifest(&[1], &[false]);
    m.stages[0].waves[0].strategy.one_box = None;
    let mut h = Harness::new(m);
    let v2 = h.create("v2");
    let d = h.take_deploys();
    h.input(Input::HostReport { env: ENV, host: HostId(0), command: d[0].0, result: Err("refused".into()) });
    assert_eq!(h.status("v2"), ReleaseStatus::Halted);
    let rollback = h.take_deploys();
    assert_eq!(rollback.iter().map(|d| (d.1.clone(), d.3)).collect::<Vec<_>>(), [(vec![0], Purpose::Rollback)]);
    // The operator rolls v2 back everywhere while the host is still being put back on v1.
    h.input(Input::Operator(OperatorCommand::Rollback { release: v2 }));
    assert!(h.take_deploys().is_empty(), "the host's rollback is already under way");
    h.events.clear();

    // v3 comes before that rollback ends: its zone waits for the host.
    let v3 = h.create("v3");
    h.run_for(5);
    assert!(h.take_deploys().is_empty(), "nothing is sent to a host that is busy");
    let kinds = h.take_kinds();
    assert!(!kinds.contains(&"zone_completed") && !kinds.contains(&"release_completed"), "{kinds:?}");
    assert_eq!(h.status("v3"), ReleaseStatus::InProgress);

    // Once the rollback ends, v3 deploys the host, and only then completes.
    h.succeed(&rollback);
    h.after(1);
    let d = h.take_deploys();
    assert_eq!(d.iter().map(|d| (d.1.clone(), d.2)).collect::<Vec<_>>(), [(vec![0], v3)], "{:?}", h.kinds());
    h.succeed(&d);
    h.run_for(30 + 120 + 5);
    assert_eq!(h.status("v3"), ReleaseStatus::Completed, "{:?}", h.kinds());
    assert_eq!(h.engine.host_version(ENV, HostId(0)), v3);
}
