//! Server mode against a fake control plane: following, the disk, pushes.

use crate::kit::{FakePlane, Relay, wait_for};
use rollwave_api::{FlagSetDocument, RegionFlags};
use rollwave_relay::follow::{self, STATE_FILE, Source};
use rollwave_relay::push::{self, PushTarget};
use rollwave_relay::{FollowerStatus, Served, Set};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn doc(version: &str, theme: &str) -> FlagSetDocument {
    FlagSetDocument {
        version: version.into(),
        flags: json!({"flags": {"theme": {"state": "ENABLED", "variants": {"blue": "blue", "red": "red", "green": "green"}, "defaultVariant": theme}}}),
    }
}

fn region(generation: i64) -> RegionFlags {
    RegionFlags { salt: "web-f2".into(), canary_share: 0, stable: Some(doc("f1", "blue")), canary: None, generation }
}

fn source(server: &str) -> Source {
    Source {
        server: server.into(),
        service: "web".into(),
        environment: "prod".into(),
        region: "use1".into(),
        token: Some("rw_router_token".into()),
        roots: Default::default(),
    }
}

/// A relay fed by a follower of `server` keeping its state in `dir`.
fn follower(server: &str, dir: &std::path::Path) -> (Relay, follow::Follower, Arc<FollowerStatus>) {
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Served::single(Arc::new(Set::empty("none")))));
    let status = Arc::new(FollowerStatus::default());
    let follower = follow::start(source(server), dir, tx.clone(), status.clone()).unwrap();
    let relay = Relay::start_with(tx, rx);
    relay.counters.attach_follower(status.clone());
    (relay, follower, status)
}

fn theme(relay: &Relay, key: &str) -> Option<String> {
    relay.evaluate("theme", json!({"targetingKey": key})).json()["value"].as_str().map(str::to_owned)
}

#[test]
fn the_relay_follows_the_region_by_long_poll_and_keeps_it_on_disk() {
    let plane = FakePlane::start(region(1));
    let dir = tempfile::tempdir().unwrap();
    let (relay, _follower, status) = follower(&plane.url, dir.path());
    wait_for("the first sets", WAIT, || theme(&relay, "u1").as_deref() == Some("blue"));
    assert_eq!(status.generation(), 1);

    // A flag release starts: everyone's track is canary at 100 %.
    plane.publish(|f| {
        f.canary = Some(doc("f2", "red"));
        f.canary_share = 10_000;
    });
    wait_for("the canary set", WAIT, || theme(&relay, "u1").as_deref() == Some("red"));
    let on_disk: RegionFlags = serde_json::from_slice(&std::fs::read(dir.path().join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(on_disk.canary.unwrap().version, "f2");
    assert_eq!(on_disk.generation, 2);

    // A set that does not parse is never served (nor written).
    plane.publish(|f| {
        f.stable = Some(FlagSetDocument { version: "f3".into(), flags: json!({"flags": {"x": {"state": "ON"}}}) })
    });
    wait_for("the bad answer to be seen", WAIT, || status.generation() == 3);
    assert_eq!(theme(&relay, "u1").as_deref(), Some("red"));
    let on_disk: RegionFlags = serde_json::from_slice(&std::fs::read(dir.path().join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(on_disk.generation, 2);

    // Polls name the region, wait for the generation last seen, and carry the token.
    let (polls, tokens) = plane.with(|s| (s.polls.clone(), s.tokens.clone()));
    assert_eq!(polls[0], "/v1/services/web/flags/prod/use1");
    assert!(polls[1..].iter().all(|p| p.starts_with("/v1/services/web/flags/prod/use1?after=")), "{polls:?}");
    assert!(tokens.iter().all(|t| t.as_deref() == Some("rw_router_token")));

    let metrics = relay.get("/metrics").text;
    assert!(metrics.contains("rollwave_relay_sync_generation 3\n"), "{metrics}");
    assert!(metrics.contains("rollwave_relay_served_from_disk 0\n"), "{metrics}");
    assert!(metrics.contains("rollwave_relay_sync_age_seconds "), "{metrics}");
}

#[test]
fn a_relay_started_while_the_control_plane_is_down_serves_the_sets_of_its_last_run() {
    let dir = tempfile::tempdir().unwrap();
    {
        let plane = FakePlane::start(RegionFlags { canary: Some(doc("f2", "red")), canary_share: 10_000, ..region(5) });
        let (relay, _follower, _) = follower(&plane.url, dir.path());
        wait_for("the sets", WAIT, || theme(&relay, "u1").as_deref() == Some("red"));
    }
    // Nothing listens on this port: the control plane is down.
    let down = format!("http://127.0.0.1:{}", rollwave_testkit::free_port());
    let (relay, _follower, status) = follower(&down, dir.path());
    // The disk was read before the follower started: no wait.
    assert_eq!(theme(&relay, "u1").as_deref(), Some("red"));
    let bulk = relay.bulk(json!({"targetingKey": "u1"}), &[("x-rollwave-track", "stable")]);
    assert_eq!(bulk.json()["flags"][0]["value"], "blue");
    assert!(status.from_disk());
    assert_eq!(status.generation(), 5);
    wait_for("a failed poll", WAIT, || relay.get("/metrics").text.contains("rollwave_relay_sync_failures_total 1"));
    let metrics = relay.get("/metrics").text;
    assert!(metrics.contains("rollwave_relay_served_from_disk 1\n"), "{metrics}");
    assert_eq!(theme(&relay, "u1").as_deref(), Some("red"));

    // The control plane comes back on that port with newer sets.
    let listener = std::net::TcpListener::bind(down.trim_start_matches("http://")).unwrap();
    let plane = FakePlane::start_on(listener, RegionFlags { stable: Some(doc("f4", "green")), ..region(6) });
    wait_for("the newer sets", WAIT, || theme(&relay, "u1").as_deref() == Some("green"));
    assert!(!status.from_disk());
    drop(plane);
}

#[test]
fn counts_are_pushed_per_flag_variant_and_version_and_a_failed_push_keeps_them() {
    let plane = FakePlane::start(RegionFlags { canary: Some(doc("f2", "red")), canary_share: 5_000, ..region(1) });
    plane.with(|s| s.push_failures = vec![503, 503]);
    let dir = tempfile::tempdir().unwrap();
    let (relay, _follower, _) = follower(&plane.url, dir.path());
    // Looked at without evaluating, which would count.
    wait_for("the sets", WAIT, || relay.flags.borrow().canary().is_some());
    let pusher = push::start(
        PushTarget {
            server: plane.url.clone(),
            service: "web".into(),
            environment: "prod".into(),
            region: "use1".into(),
            token: Some("rw_router_token".into()),
            every: Duration::from_millis(50),
            roots: Default::default(),
        },
        relay.counters.clone(),
    );
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..200 {
        let key = format!("user-{i}");
        let value = theme(&relay, &key).unwrap();
        let version = if value == "red" { "f2" } else { "f1" };
        *expected.entry((value, version.to_owned())).or_insert(0u64) += 1;
    }
    let pushed = || {
        let mut got = std::collections::BTreeMap::new();
        for push in plane.with(|s| s.pushes.clone()) {
            assert_eq!(
                (push.service.as_str(), push.environment.as_str(), push.region.as_str()),
                ("web", "prod", "use1")
            );
            for c in push.counts {
                assert_eq!(c.flag, "theme");
                *got.entry((c.variant.unwrap(), c.version)).or_insert(0u64) += c.count;
            }
        }
        got
    };
    wait_for("every evaluation to be pushed", WAIT, || pushed() == expected);
    assert_eq!(expected.len(), 2, "both sets answered: {expected:?}");
    assert!(plane.with(|s| s.push_failures.is_empty()), "the failures were met");
    pusher.finish();
    assert_eq!(pushed(), expected, "nothing was pushed twice");
}
