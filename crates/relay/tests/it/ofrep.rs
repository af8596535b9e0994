//! OFREP's bodies and status codes, read from the real server.

use crate::kit::{Events, Relay, named_set, set};
use rollwave_core::share::BasisPoints;
use rollwave_flags::{FlagSet, InvalidRules, ParseOptions};
use rollwave_relay::{Canary, Served, Set};
use serde_json::json;
use std::sync::Arc;

fn flags() -> serde_json::Value {
    json!({"flags": {
        "banner": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                   "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on"]},
                   "metadata": {"team": "growth"}},
        "theme": {"state": "ENABLED", "variants": {"blue": "blue", "red": "red"}, "defaultVariant": "blue"},
        "retired": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
        "computed": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
                     "targeting": {"var": "pick"}}
    }})
}

fn relay() -> Relay {
    Relay::start(Served::single(set("v1", flags())))
}

#[test]
fn a_flag_evaluates_to_200_with_its_value_variant_reason_and_metadata() {
    let relay = relay();
    let answer = relay.evaluate("banner", json!({"targetingKey": "u1", "email": "ada@example.com"}));
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.json(),
        json!({"key": "banner", "value": true, "variant": "on", "reason": "TARGETING_MATCH", "metadata": {"team": "growth"}})
    );
    let answer = relay.evaluate("theme", json!({}));
    assert_eq!(
        answer.json(),
        json!({"key": "theme", "value": "blue", "variant": "blue", "reason": "STATIC", "metadata": {}})
    );
}

#[test]
fn a_disabled_flag_defers_to_the_code_default() {
    let answer = relay().evaluate("retired", json!({"targetingKey": "u1"}));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"key": "retired", "reason": "DISABLED", "metadata": {}}));
}

#[test]
fn a_missing_flag_is_404_flag_not_found() {
    let answer = relay().evaluate("nope", json!({"targetingKey": "u1"}));
    assert_eq!(answer.status, 404);
    let body = answer.json();
    assert_eq!((body["key"].as_str(), body["errorCode"].as_str()), (Some("nope"), Some("FLAG_NOT_FOUND")));
    assert!(body["errorDetails"].as_str().unwrap().contains("nope"));
}

#[test]
fn a_targeting_rule_that_names_no_variant_is_400_general() {
    let answer = relay().evaluate("computed", json!({"targetingKey": "u1", "pick": "zzz"}));
    assert_eq!(answer.status, 400);
    let body = answer.json();
    assert_eq!((body["key"].as_str(), body["errorCode"].as_str()), (Some("computed"), Some("GENERAL")));
    assert!(body["errorDetails"].as_str().unwrap().contains("zzz"), "{body}");
}

#[test]
fn a_rule_flagd_cannot_run_is_400_parse_error() {
    let options = ParseOptions { invalid_rules: InvalidRules::EvaluateAsFlagd, ..ParseOptions::default() };
    let doc = json!({"flags": {"odd": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a",
                                        "targeting": {"no_such_operator": [1]}}}});
    let flags = FlagSet::from_value_with("odd.json", &doc, options).unwrap();
    let relay = Relay::start(Served::single(Arc::new(Set::new("v1", flags))));
    let answer = relay.evaluate("odd", json!({"targetingKey": "u1"}));
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert_eq!(answer.json()["errorCode"], "PARSE_ERROR");
    // In bulk, the failure is one item among the others.
    let bulk = relay.bulk(json!({"targetingKey": "u1"}), &[]);
    assert_eq!(bulk.status, 200);
    assert_eq!(bulk.json()["flags"][0]["errorCode"], "PARSE_ERROR");
}

#[test]
fn a_request_that_is_not_a_context_is_400_invalid_context() {
    let relay = relay();
    let long = format!("{{\"context\": {{\"pad\": \"{}\"}}}}", "x".repeat(70 * 1024));
    for body in ["", "not json", "[1]", "{\"context\": 3}", "{\"context\": {\"targetingKey\": 42}}", long.as_str()] {
        let one = relay.post("/ofrep/v1/evaluate/flags/theme", &[], body);
        assert_eq!(one.status, 400, "{body:.40}: {}", one.text);
        let json = one.json();
        assert_eq!(
            (json["key"].as_str(), json["errorCode"].as_str()),
            (Some("theme"), Some("INVALID_CONTEXT")),
            "{body:.40}"
        );
        assert!(json["errorDetails"].as_str().is_some_and(|d| !d.is_empty()));
        if body.len() > 1024 {
            // A refused body is not read to its end; the item above used a connection
            // of its own, which the relay closed.
            continue;
        }
        let bulk = relay.post("/ofrep/v1/evaluate/flags", &[], body);
        assert_eq!(bulk.status, 400, "{body:.40}");
        assert_eq!(bulk.json()["errorCode"], "INVALID_CONTEXT");
        assert_eq!(bulk.json().get("key"), None);
    }
    // No context at all is an empty one.
    assert_eq!(relay.post("/ofrep/v1/evaluate/flags/theme", &[], "{}").status, 200);
}

#[test]
fn other_paths_and_methods_are_refused_without_evaluating() {
    let relay = relay();
    assert_eq!(relay.get("/ofrep/v1/evaluate/flags").status, 405);
    assert_eq!(relay.get("/ofrep/v1/evaluate/flags/theme").header("allow"), Some("POST"));
    assert_eq!(relay.get("/elsewhere").status, 404);
    assert_eq!(relay.post("/ofrep/v1/evaluate/flags/%FF", &[], "{}").status, 404);
    assert_eq!(relay.get("/healthz").status, 200);
    assert_eq!(relay.counters.totals().len(), 0);
}

#[test]
fn bulk_evaluation_answers_every_flag_with_an_etag_and_the_event_stream() {
    let relay = relay();
    let answer = relay.bulk(json!({"targetingKey": "u1", "email": "ada@example.com", "pick": "b"}), &[]);
    assert_eq!(answer.status, 200, "{}", answer.text);
    let body = answer.json();
    let keys: Vec<&str> = body["flags"].as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["banner", "computed", "retired", "theme"]);
    assert_eq!(body["flags"][0]["value"], true);
    assert_eq!(body["flags"][1]["value"], 2);
    assert_eq!(body["flags"][2], json!({"key": "retired", "reason": "DISABLED", "metadata": {}}));
    assert_eq!(body["metadata"], json!({"flagSetVersion": "v1", "track": "stable"}));
    assert_eq!(body["eventStreams"], json!([{"type": "sse", "endpoint": {"requestUri": "/ofrep/v1/events"}}]));
    let etag = answer.header("etag").expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10, "{etag}");
}

#[test]
fn if_none_match_with_the_current_etag_is_304_until_the_sets_or_the_share_change() {
    let relay = Relay::start(Served::single(named_set("v1")));
    let context = json!({"targetingKey": "user-7"});
    let first = relay.bulk(context.clone(), &[]);
    let etag = first.header("etag").unwrap().to_owned();

    let again = relay.bulk(context.clone(), &[("if-none-match", &etag)]);
    assert_eq!(again.status, 304);
    assert_eq!(again.text, "");
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(relay.bulk(context.clone(), &[("if-none-match", &format!("\"other\", W/{etag}"))]).status, 304);
    assert_eq!(relay.bulk(context.clone(), &[("if-none-match", "\"other\"")]).status, 200);

    // Another context is another answer.
    let other = relay.bulk(json!({"targetingKey": "user-8"}), &[]);
    assert_ne!(other.header("etag"), Some(etag.as_str()));

    // A new set.
    relay.flags.send_replace(Arc::new(Served::single(named_set("v2"))));
    let changed = relay.bulk(context.clone(), &[("if-none-match", &etag)]);
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["flags"][0]["value"], "v2");
    let etag = changed.header("etag").unwrap().to_owned();

    // A canary beside it, then a larger share of it.
    let mut etags = vec![etag];
    for share in [100, 2_000] {
        let canary = Canary { set: named_set("v3"), salt: "s".into(), share: BasisPoints::new(share).unwrap() };
        relay.flags.send_replace(Arc::new(Served::split(named_set("v2"), Some(canary))));
        let answer = relay.bulk(context.clone(), &[("if-none-match", etags.last().unwrap())]);
        assert_eq!(answer.status, 200, "share {share}");
        let etag = answer.header("etag").unwrap().to_owned();
        assert!(!etags.contains(&etag), "share {share}");
        etags.push(etag);
    }
}

#[test]
fn a_change_of_sets_is_notified_over_server_sent_events() {
    let relay = Relay::start(Served::single(named_set("v1")));
    let mut events = Events::open(relay.addr, None);
    let next = Served::single(named_set("v2"));
    let fingerprint = next.fingerprint().to_owned();
    relay.flags.send_replace(Arc::new(next));

    let event = events.next_event();
    let field = |name: &str| event.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(field("event").as_deref(), Some("message"));
    assert_eq!(field("id"), Some(fingerprint.clone()));
    let data: serde_json::Value = serde_json::from_str(&field("data").unwrap()).unwrap();
    assert_eq!(data, json!({"type": "refetchEvaluation", "etag": format!("\"{fingerprint}\"")}));

    // A client that reconnects having missed a change hears of it at once.
    let mut late = Events::open(relay.addr, Some("an-older-state"));
    let event = late.next_event();
    assert!(event.contains(&("id".to_owned(), fingerprint)), "{event:?}");
}

#[test]
fn metrics_count_evaluations_per_flag_variant_and_version() {
    let relay = relay();
    for _ in 0..3 {
        relay.evaluate("banner", json!({"targetingKey": "u1", "email": "ada@example.com"}));
    }
    relay.evaluate("banner", json!({"targetingKey": "u2"}));
    relay.evaluate("computed", json!({"pick": "zzz"}));
    relay.evaluate("nope", json!({}));
    let metrics = relay.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type"), Some(rollwave_exposition::CONTENT_TYPE));
    let text = metrics.text;
    for line in [
        "# TYPE rollwave_relay_flag_evaluations_total counter",
        "rollwave_relay_flag_evaluations_total{flag=\"banner\",variant=\"on\",version=\"v1\"} 3",
        "rollwave_relay_flag_evaluations_total{flag=\"banner\",variant=\"off\",version=\"v1\"} 1",
        "rollwave_relay_flag_evaluations_total{flag=\"computed\",variant=\"\",version=\"v1\"} 1",
        "rollwave_relay_flag_not_found_total 1",
        "rollwave_relay_flag_set{track=\"stable\",version=\"v1\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }
}
