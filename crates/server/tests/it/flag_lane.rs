//! Flag releases travel the pipeline in a lane of their own beside code releases: the
//! read model driven in virtual time, input by input, as the leader and every replica
//! drive it.

use rollwave_api::{AlarmState, EventKind, Lane, OperatorAction, Outcome, Purpose};
use rollwave_server::log::LogInput;
use rollwave_server::release::{FlagDocument, Version};
use rollwave_server::state::{CommandView, ReadModel};

const MANIFEST: &str = "\
service: web
environments:
  prod: { regions: { r1: { zones: { z1: 2, z2: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 50%, bake: { time: 10s, min_datapoints: 5 } }
  rolling: { batch: 100%, zone_bake: { time: 10s, min_datapoints: 5 } }
stages:
  - { name: prod, environment: prod, bake: 10s }
alarms:
  - { name: errors, metric: error_rate, scope: zone, threshold: \"> 0.05\", period: 1s, datapoints: 1 of 1 }
";

fn flags(default: &str) -> FlagDocument {
    FlagDocument::parse(&serde_json::json!({
        "flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": { "on": true, "off": false },
                "defaultVariant": default
            }
        }
    }))
    .unwrap()
}

/// A model with the service applied, and the clock (ms) it is at.
struct World {
    model: ReadModel,
    now_ms: i64,
    commands: Vec<CommandView>,
}

impl World {
    fn new() -> World {
        let mut w = World { model: ReadModel::default(), now_ms: 1_800_000_000_000, commands: Vec::new() };
        w.apply(LogInput::ApplyManifest { file: "web.yaml".into(), text: MANIFEST.into(), agents: false });
        w
    }

    fn apply(&mut self, input: LogInput) {
        let applied = self.try_apply(input).unwrap_or_else(|e| panic!("{e:?}"));
        self.commands.extend(applied);
    }

    fn try_apply(&mut self, input: LogInput) -> Result<Vec<CommandView>, rollwave_server::error::ApiError> {
        self.model.apply("web", self.now_ms, &input).map(|a| a.commands)
    }

    fn code(&mut self, version: &str) {
        self.apply(LogInput::CreateRelease {
            version: Version::parse(version).unwrap(),
            artifact: None,
            sha256: None,
            flags: None,
        });
    }

    fn flag_release(&mut self, version: &str, doc: FlagDocument) {
        self.apply(LogInput::CreateRelease {
            version: Version::parse(version).unwrap(),
            artifact: None,
            sha256: None,
            flags: Some(doc),
        });
    }

    /// Every host reports success for every command handed out so far.
    fn hosts_report(&mut self) {
        while !self.commands.is_empty() {
            for c in std::mem::take(&mut self.commands) {
                for host in &c.hosts {
                    self.apply(LogInput::HostReport {
                        environment: c.environment.clone(),
                        host: host.clone(),
                        command: c.id,
                        ok: true,
                        reason: None,
                        hooks: Vec::new(),
                        lane: c.lane,
                    });
                }
            }
        }
    }

    /// `seconds` pass, each with `requests` served per zone by each lane's version.
    fn pass(&mut self, seconds: i64, requests: u64) {
        for _ in 0..seconds {
            self.now_ms += 1000;
            for zone in ["z1", "z2"] {
                for lane in Lane::ALL {
                    for version in self.serving(lane, zone) {
                        self.apply(LogInput::Served {
                            environment: "prod".into(),
                            zone: zone.into(),
                            version,
                            requests,
                            lane,
                        });
                    }
                }
            }
            self.apply(LogInput::Tick);
            self.hosts_report();
        }
    }

    fn serving(&self, lane: Lane, zone: &str) -> Vec<String> {
        let s = &self.model.services["web"];
        let engine = s.lane_engine(lane);
        let env = s.env("prod").unwrap();
        let z = s.zone(env, zone).unwrap();
        let mut versions: Vec<String> = s
            .plan
            .zone_hosts(env, z)
            .map(|h| engine.version_name(engine.host_version(env, rollwave_core::plan::HostId(h))).to_owned())
            .collect();
        versions.dedup();
        versions.retain(|v| v != "baseline");
        versions
    }

    fn outcome(&self, version: &str) -> Outcome {
        self.model.services["web"].releases().into_iter().find(|r| r.version == version).unwrap().outcome
    }

    fn events(&self, version: &str) -> Vec<(EventKind, String)> {
        self.model.services["web"]
            .events
            .iter()
            .filter(|r| r.release.as_deref() == Some(version))
            .map(|r| (r.kind.wire(), r.view("web").scope))
            .collect()
    }
}

#[test]
fn a_flag_release_rolls_out_beside_a_baking_code_release_in_the_same_wave() {
    let mut w = World::new();
    w.code("v2");
    w.hosts_report();
    w.pass(3, 10);
    // v2's one-box bakes; a flag release is not stuck behind it.
    assert!(w.events("v2").iter().any(|(k, _)| *k == EventKind::BakeStarted));
    w.flag_release("f1", flags("on"));
    let flag_commands: Vec<&CommandView> = w.commands.iter().filter(|c| c.lane == Lane::Flags).collect();
    assert_eq!(flag_commands.len(), 1, "the flag release's one-box is deployed at once: {:?}", w.commands);
    assert_eq!(flag_commands[0].version, "f1");
    assert_eq!(flag_commands[0].purpose, Purpose::Rollout);
    assert!(flag_commands[0].targets.is_empty(), "nothing runs on a host for a flag set");
    w.pass(60, 10);
    assert_eq!(w.outcome("v2"), Outcome::Completed);
    assert_eq!(w.outcome("f1"), Outcome::Completed);
    let s = &w.model.services["web"];
    let releases = s.releases();
    let f1 = releases.iter().find(|r| r.version == "f1").unwrap();
    assert_eq!(f1.lane, Lane::Flags);
    assert!(!releases.iter().any(|r| r.version == "baseline" && r.lane == Lane::Flags));
    // Every host serves f1 and runs v2.
    let env = s.env("prod").unwrap();
    for h in 0..4 {
        let desired = s.desired(env, rollwave_core::plan::HostId(h));
        assert_eq!(desired.version, "v2");
        assert_eq!(desired.flags.as_ref().map(|f| f.version.as_str()), Some("f1"));
    }
}

#[test]
fn a_flag_release_bakes_on_the_data_points_of_the_hosts_that_serve_it() {
    let mut w = World::new();
    w.flag_release("f1", flags("on"));
    w.hosts_report();
    // Time alone does not end a bake that needs five data points.
    w.pass(30, 0);
    assert!(!w.events("f1").iter().any(|(k, _)| *k == EventKind::BakeCompleted), "{:?}", w.events("f1"));
    w.pass(30, 1);
    assert!(w.events("f1").iter().any(|(k, _)| *k == EventKind::BakeCompleted));
}

#[test]
fn an_alarm_in_a_zone_rolls_back_both_lanes_there_and_nothing_elsewhere() {
    let mut w = World::new();
    w.code("v2");
    w.flag_release("f1", flags("on"));
    w.hosts_report();
    // Both one-boxes are in z1, baking.
    w.pass(2, 10);
    w.apply(LogInput::Alarm {
        alarm: "errors".into(),
        scope: "prod/r1/z1".into(),
        state: AlarmState::Alarm,
        reason: "error rate 0.3 > 0.05".into(),
    });
    w.hosts_report();
    for version in ["v2", "f1"] {
        assert_eq!(w.outcome(version), Outcome::Halted, "{version}");
        let rolled_back: Vec<String> = w
            .events(version)
            .into_iter()
            .filter(|(k, _)| *k == EventKind::RollbackStarted || *k == EventKind::RollbackCompleted)
            .map(|(_, scope)| scope)
            .collect();
        assert!(!rolled_back.is_empty() && rolled_back.iter().all(|s| s.contains("z1")), "{version}: {rolled_back:?}");
    }
    // The one-box hosts are back on what they had; z2 never saw either release.
    let s = &w.model.services["web"];
    let env = s.env("prod").unwrap();
    for h in 0..4 {
        let desired = s.desired(env, rollwave_core::plan::HostId(h));
        assert_eq!(desired.version, "baseline");
        assert!(desired.flags.as_ref().is_none_or(|f| f.version == "baseline"), "{desired:?}");
    }
    // The operator's word applies to the release it names, in its lane.
    w.apply(LogInput::Operator { action: OperatorAction::Rollback, release: Some("f1".into()), stage: None });
    assert_eq!(w.outcome("f1"), Outcome::RolledBack);
    assert_eq!(w.outcome("v2"), Outcome::Halted);
}

#[test]
fn a_version_names_one_release_across_both_lanes() {
    let mut w = World::new();
    w.code("v2");
    let err = w
        .try_apply(LogInput::CreateRelease {
            version: Version::parse("v2").unwrap(),
            artifact: None,
            sha256: None,
            flags: Some(flags("on")),
        })
        .unwrap_err();
    assert_eq!(err.status, axum::http::StatusCode::CONFLICT, "{err:?}");
    assert_eq!(w.model.services["web"].releases().len(), 1, "nothing was added");
}

#[test]
fn relays_see_the_flag_release_at_the_share_of_the_region_that_serves_it() {
    let mut w = World::new();
    let s = &w.model.services["web"];
    let before = s.region_flags("prod", "r1", 0).unwrap();
    assert!(before.stable.is_none() && before.canary.is_none(), "no flag set before the first flag release");
    w.flag_release("f1", flags("on"));
    w.hosts_report();
    let during = w.model.services["web"].region_flags("prod", "r1", 1).unwrap();
    assert_eq!(during.canary.as_ref().map(|c| c.version.as_str()), Some("f1"));
    assert_eq!(during.canary_share, 2500, "one host of four");
    assert_eq!(during.salt, "web-f1");
    w.pass(60, 10);
    let after = w.model.services["web"].region_flags("prod", "r1", 2).unwrap();
    assert!(after.canary.is_none());
    assert_eq!(after.stable.as_ref().map(|c| c.version.as_str()), Some("f1"));
    assert_eq!(after.stable.unwrap().flags["flags"]["new-checkout"]["defaultVariant"], "on");
}

#[test]
fn flag_documents_that_do_not_compile_are_refused_and_replays_check_them_again() {
    let bad =
        serde_json::json!({ "flags": { "x": { "state": "ENABLED", "variants": { "a": 1 }, "defaultVariant": "b" } } });
    let errors = FlagDocument::parse(&bad).unwrap_err();
    assert!(errors.iter().any(|e| e.pointer.contains("defaultVariant")), "{errors:?}");
    let record = serde_json::json!({ "type": "create_release", "version": "f1", "artifact": null, "sha256": null, "flags": bad });
    assert!(
        serde_json::from_value::<LogInput>(record).is_err(),
        "a logged flag release is read through the same checks"
    );
}

#[test]
fn each_cell_shows_its_flags_lane_beside_its_code_once_the_service_has_a_flag_release() {
    let mut w = World::new();
    let cells = |w: &World| -> Vec<rollwave_server::views::CellView> {
        let now = jiff::Timestamp::from_millisecond(w.now_ms).unwrap();
        let pipeline = w.model.services["web"].pipeline(now);
        pipeline.stages.into_iter().flat_map(|s| s.waves).flat_map(|w| w.cells).collect()
    };
    w.code("v2");
    w.hosts_report();
    w.pass(1, 10);
    assert!(cells(&w).iter().all(|c| c.flags.is_none()), "no flags lane before any flag release");

    w.flag_release("f1", flags("on"));
    w.hosts_report();
    w.pass(1, 10);
    let cell = cells(&w).remove(0);
    assert_eq!((cell.release.as_deref(), cell.state), (Some("v2"), "baking"));
    let flags = cell.flags.expect("the flags lane");
    assert_eq!((flags.release.as_deref(), flags.state), (Some("f1"), "baking"));
    let versions: Vec<(String, u64)> = flags.versions.iter().map(|v| (v.version.clone(), v.hosts)).collect();
    assert_eq!(versions, [("baseline".to_owned(), 3), ("f1".to_owned(), 1)]);
    assert!(flags.flags.is_none() && flags.alarms.is_empty(), "alarms are shown once, on the cell");

    // An alarm in the one-box zone: both lanes roll back there, each says so.
    w.apply(LogInput::Alarm {
        alarm: "errors".into(),
        scope: "prod/r1/z1".into(),
        state: AlarmState::Alarm,
        reason: "error rate 0.3 > 0.05".into(),
    });
    let cell = cells(&w).remove(0);
    assert_eq!(cell.alarms.len(), 1);
    let flags = cell.flags.expect("the flags lane");
    assert_eq!((flags.release.as_deref(), flags.state), (Some("f1"), "rolling-back"), "{:?}", flags.detail);
    w.hosts_report();
    let flags = cells(&w).remove(0).flags.unwrap();
    let versions: Vec<(String, u64)> = flags.versions.iter().map(|v| (v.version.clone(), v.hosts)).collect();
    assert_eq!(versions, [("baseline".to_owned(), 4)]);
}

#[test]
fn an_alarm_where_a_flag_release_is_changing_hosts_is_not_blamed_on_the_code_that_finished_there() {
    let alarm = |w: &mut World, state: AlarmState| {
        w.apply(LogInput::Alarm {
            alarm: "errors".into(),
            scope: "prod/r1/z1".into(),
            state,
            reason: "error rate 0.3 > 0.05".into(),
        });
        w.hosts_report();
    };
    let mut w = World::new();
    w.code("v2");
    w.hosts_report();
    w.pass(60, 10);
    assert_eq!(w.outcome("v2"), Outcome::Completed);
    // A flag one-box bakes in z1 and the zone's alarm fires: the flag set is to blame.
    w.flag_release("f1", flags("on"));
    w.hosts_report();
    w.pass(2, 10);
    alarm(&mut w, AlarmState::Alarm);
    assert_eq!(w.outcome("f1"), Outcome::Halted, "{:?}", w.events("f1"));
    assert_eq!(w.outcome("v2"), Outcome::Completed, "{:?}", w.events("v2"));
    assert!(!w.events("v2").iter().any(|(k, _)| *k == EventKind::RegressionSuspected));

    // With nothing changing there, the same alarm suspects the code that finished last
    // (a release still open elsewhere would be halted; a completed one is flagged).
    alarm(&mut w, AlarmState::Ok);
    w.code("v3");
    w.hosts_report();
    w.pass(60, 10);
    assert_eq!(w.outcome("v3"), Outcome::Completed);
    alarm(&mut w, AlarmState::Alarm);
    assert!(w.events("v3").iter().any(|(k, _)| *k == EventKind::RegressionSuspected), "{:?}", w.events("v3"));
}
