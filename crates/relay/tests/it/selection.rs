//! Which set a request gets: the router's buckets, the carried track, stickiness.

use crate::kit::{Relay, named_set};
use rollwave_core::share::BasisPoints;
use rollwave_relay::{Canary, Served};
use rollwave_router::track::{self, Track};
use std::collections::HashSet;
use std::sync::Arc;

const SALT: &str = "checkout-f2";

fn split(share: u32) -> Served {
    let canary = Canary { set: named_set("canary-v2"), salt: SALT.into(), share: BasisPoints::new(share).unwrap() };
    Served::split(named_set("stable-v1"), Some(canary))
}

#[test]
fn a_key_gets_the_set_of_its_bucket_under_the_salt() {
    let relay = Relay::start(split(3_000));
    for i in 0..300 {
        let key = format!("user-{i}");
        let expected = match track::assign(SALT, key.as_bytes(), BasisPoints::new(3_000).unwrap()) {
            Track::Canary => "canary-v2",
            Track::Stable => "stable-v1",
        };
        assert_eq!(relay.which(&key, &[]), expected, "{key}");
    }
}

#[test]
fn a_carried_track_wins_over_the_key() {
    let relay = Relay::start(split(5_000));
    let share = BasisPoints::new(5_000).unwrap();
    let on_canary =
        (0..).map(|i| format!("user-{i}")).find(|k| track::assign(SALT, k.as_bytes(), share) == Track::Canary).unwrap();
    let on_stable =
        (0..).map(|i| format!("user-{i}")).find(|k| track::assign(SALT, k.as_bytes(), share) == Track::Stable).unwrap();
    assert_eq!(relay.which(&on_canary, &[("x-rollwave-track", "stable")]), "stable-v1");
    assert_eq!(relay.which(&on_stable, &[("x-rollwave-track", "canary")]), "canary-v2");
    assert_eq!(relay.which(&on_canary, &[("baggage", "tenant=acme, rollwave.track=stable")]), "stable-v1");
    assert_eq!(relay.which(&on_stable, &[("baggage", "rollwave.track=canary")]), "canary-v2");
    // An unreadable decision is no decision: the key decides.
    assert_eq!(relay.which(&on_canary, &[("x-rollwave-track", "blue")]), "canary-v2");
    // The bulk answer says which set it evaluated.
    let bulk = relay.bulk(serde_json::json!({"targetingKey": on_stable}), &[("x-rollwave-track", "canary")]);
    assert_eq!(bulk.json()["metadata"]["flagSetVersion"], "canary-v2");
    assert_eq!(bulk.json()["metadata"]["track"], "canary");
}

#[test]
fn no_key_and_no_track_is_the_stable_set_and_no_canary_is_stable_for_everyone() {
    let relay = Relay::start(split(10_000));
    let answer = relay.post("/ofrep/v1/evaluate/flags/which", &[], "{\"context\": {}}");
    assert_eq!(answer.json()["value"], "stable-v1");
    assert_eq!(relay.which("anyone", &[]), "canary-v2");
    relay.flags.send_replace(Arc::new(Served::single(named_set("stable-v1"))));
    assert_eq!(relay.which("anyone", &[("x-rollwave-track", "canary")]), "stable-v1");
}

#[test]
fn ten_thousand_keys_stay_sticky_as_the_share_grows() {
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i:05}")).collect();
    // A sample of the keys goes through the server too, to show it selects the same.
    let relay = Relay::start(split(0));
    let mut on_canary: HashSet<&str> = HashSet::new();
    for share in [100, 1_000, 2_500, 5_000, 10_000] {
        let served = split(share);
        let now: HashSet<&str> = keys
            .iter()
            .filter(|k| served.select(None, Some(k.as_str())).0 == Track::Canary)
            .map(String::as_str)
            .collect();
        let fraction = now.len() as f64 / keys.len() as f64 * 100.0;
        let target = f64::from(share) / 100.0;
        assert!((fraction - target).abs() <= 1.0, "at {target}% the canary has {fraction:.2}% of the keys");
        let moved_back: Vec<&&str> = on_canary.difference(&now).collect();
        assert!(moved_back.is_empty(), "at {target}% these keys went back to stable: {moved_back:?}");

        relay.flags.send_replace(Arc::new(served));
        for key in keys.iter().step_by(97) {
            let expected = if now.contains(key.as_str()) { "canary-v2" } else { "stable-v1" };
            assert_eq!(relay.which(key, &[]), expected, "{key} at {target}%");
        }
        on_canary = now;
    }
    assert_eq!(on_canary.len(), keys.len());
}
