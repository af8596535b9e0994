//! Health signals closing the loop with real processes: a server, an agent per host, a
//! router per region pushing what it measures, and sticky users. A release whose service
//! fails 5% of requests is rolled back in the first zone it reaches and goes no further;
//! a quiet region completes its bakes on synthetic monitors alone; a defect that shows
//! after a release finished is reported as a suspected regression.

use crate::kit::{one_world_at_a_time, wait_for};
use rollwave_api::*;
use rollwave_demo::traffic::Users;
use rollwave_demo::world::{Version, World, WorldSpec};
use std::time::Duration;

const MANIFEST: &str = "\
service: web
environments:
  prod:
    regions:
      r1: { zones: { z1: 2, z2: 2 } }
      r2: { zones: { z3: 2 } }
strategy:
  one_box: { hosts: 1, max_share: 25%, bake: 8s }
  rolling: { batch: 100%, zone_bake: 1s, deploy_timeout: 1m }
  bake: { min_datapoints: 5 }
stages:
  - name: prod
    environment: prod
    waves:
      - { name: wave-1, regions: [r1], bake: 1s }
      - { name: wave-2, regions: [r2], bake: 1s }
alarms:
  - { name: host-errors, metric: error_rate, scope: host, threshold: \"> 0.01\", period: 2s, datapoints: 2 of 3, missing: not_breaching }
  - { name: health-check, metric: \"monitor:health:success_rate\", scope: region, threshold: \"< 1\", period: 2s, datapoints: 2 of 2 }
monitors:
  - { name: health, request: { method: GET, path: /health }, expect: { status: 200 }, every: 1s }
watch: 10m
";

#[test]
fn bad_releases_are_stopped_by_what_routers_and_monitors_measure() {
    let _alone = one_world_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let defect = dir.path().join("defect-on");
    let versions = vec![
        Version::good("v1"),
        Version { error_rate: 0.05, ..Version::good("v2") },
        Version { error_rate: 0.2, fail_while: Some(defect.clone()), ..Version::good("v3") },
    ];
    let spec = WorldSpec {
        manifest: MANIFEST.into(),
        versions,
        push_every: Duration::from_secs(1),
        host_timeout: Duration::from_secs(30),
        datapoint_bin: Duration::from_secs(1),
        starting_version: Some("v1".into()),
    };
    let world = World::start(&spec, dir.path(), std::path::Path::new(env!("CARGO_BIN_EXE_rollwave"))).unwrap();
    let client = world.client();
    let r1 = world.routers.iter().find(|r| r.region == "r1").unwrap().url.clone();
    // Every user is in r1; r2 has no traffic at all.
    let users = Users::start(vec![r1], 60, 4.0);
    let create = |v: &str| {
        let a = world.artifact(v).unwrap();
        let req = CreateRelease {
            version: v.into(),
            artifact: Some(a.url.clone()),
            sha256: Some(a.sha256.clone()),
            flags: None,
        };
        client.create_release("web", &req).unwrap();
    };
    let detail = |v: &str| client.release("web", v).unwrap();

    // v2 fails 5% of its requests: its one-box in z1 is rolled back, nothing else moves.
    create("v2");
    wait_for("v2 to halt", Duration::from_secs(90), || detail("v2").release.outcome == rollwave_api::Outcome::Halted);
    let v2 = detail("v2");
    assert_eq!(v2.release.rolled_back_scopes.len(), 1, "{:?}", v2.release);
    assert!(v2.release.rolled_back_scopes[0].starts_with("prod/r1/z1"), "{:?}", v2.release);
    assert!(v2.release.reached.is_empty(), "{:?}", v2.release);
    let caught = v2.events.iter().find(|e| e.kind == rollwave_api::EventKind::RollbackStarted).unwrap();
    let reason = caught.reason.as_deref().unwrap();
    assert!(reason.contains("alarm host-errors") || reason.contains("one-box judge"), "{reason}");
    assert!(
        !v2.events.iter().any(|e| e.kind == rollwave_api::EventKind::ZoneStarted && !e.scope.starts_with("prod/r1/z1")),
        "v2 went beyond the first zone: {:?}",
        v2.events
    );
    wait_for("z1's rollback", Duration::from_secs(30), || {
        detail("v2").events.iter().any(|e| e.kind == rollwave_api::EventKind::RollbackCompleted)
    });
    let seen = users.seen();
    assert!(seen.by_version.get("v2").is_some_and(|&n| n > 0), "users reached the one-box: {seen:?}");
    client.action("web", "v2", rollwave_api::OperatorAction::Rollback, None).unwrap();
    wait_for("v2 rolled back", Duration::from_secs(30), || {
        detail("v2").release.outcome == rollwave_api::Outcome::RolledBack
    });

    // v3 is healthy until its defect is switched on; r2, quiet, bakes on monitor checks.
    create("v3");
    wait_for("v3 to complete", Duration::from_secs(180), || {
        detail("v3").release.outcome != rollwave_api::Outcome::InProgress
    });
    let v3 = detail("v3");
    assert_eq!(v3.release.outcome, rollwave_api::Outcome::Completed, "{:?}", v3.events);
    assert!(v3.release.reached.contains(&"prod/wave-2".to_owned()));
    let r2 = v3.scopes.iter().find(|s| s.scope == "prod/r2").unwrap();
    assert_eq!(r2.versions, [("v3".to_owned(), 2)], "the quiet region runs v3");
    let quiet_bake =
        v3.events.iter().any(|e| e.kind == rollwave_api::EventKind::BakeCompleted && e.scope.starts_with("prod/r2"));
    assert!(quiet_bake, "r2 completed its bakes: {:?}", v3.events);

    // Monitors probe r2 through its router too (the router says where it is when it asks
    // for its table): its only traffic.
    let r2_admin = world.routers.iter().find(|r| r.region == "r2").unwrap().admin.clone();
    let text = ureq::get(format!("{r2_admin}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    let through_router: f64 = text
        .lines()
        .filter(|l| l.starts_with("rollwave_router_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(through_router > 0.0, "no monitor check went through r2's router:\n{text}");

    std::fs::write(&defect, "on").unwrap();
    wait_for("a suspected regression", Duration::from_secs(60), || {
        let page: EventPage = client.get("/v1/events?after=0&limit=5000").unwrap();
        page.events
            .iter()
            .any(|e| e.kind == rollwave_api::EventKind::RegressionSuspected && e.release.as_deref() == Some("v3"))
    });
    let page: EventPage = client.get("/v1/events?after=0&limit=5000").unwrap();
    let suspected = page.events.iter().find(|e| e.kind == rollwave_api::EventKind::RegressionSuspected).unwrap();
    assert!(suspected.scope.starts_with("prod/r1"), "where the users are: {suspected:?}");
    drop(users);
}
