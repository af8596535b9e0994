//! The flag set's contract: evaluation results and reasons, and every kind of
//! mistake in a document reported at its place.

use rollwave_flags::{Context, ErrorCode, FlagSet, Reason, ValueType};
use serde_json::{Value, json};

fn ctx(v: Value) -> Context {
    Context::from_value(&v).expect("an object").at(1_700_000_000)
}

const DOC: &str = r#"{
  "metadata": {"team": "payments", "version": 1},
  "flags": {
    "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "by-email": {
      "state": "ENABLED",
      "variants": {"internal": "blue", "public": "green"},
      "defaultVariant": "public",
      "targeting": {"if": [{"==": [{"var": "email"}, "ada@example.com"]}, "internal", null]},
      "metadata": {"version": 2}
    },
    "off": {"state": "DISABLED", "variants": {"a": 1}, "defaultVariant": "a"},
    "no-default": {"state": "ENABLED", "variants": {"a": 1, "b": 2}}
  }
}"#;

#[test]
fn a_static_flag_gives_its_default_variant_with_reason_static() {
    let set = FlagSet::parse("flags.json", DOC).unwrap();
    let e = set.evaluate("static", &ctx(json!({})));
    assert_eq!((e.value, e.variant, e.reason, &e.error), (Some(&json!(true)), Some("on"), Reason::Static, &None));
    assert_eq!(e.metadata, json!({"team": "payments", "version": 1}).as_object().unwrap());
}

#[test]
fn a_rule_that_names_a_variant_is_a_targeting_match_and_null_means_the_default() {
    let set = FlagSet::parse("flags.json", DOC).unwrap();
    let hit = set.evaluate("by-email", &ctx(json!({"email": "ada@example.com"})));
    assert_eq!((hit.value, hit.variant, hit.reason), (Some(&json!("blue")), Some("internal"), Reason::TargetingMatch));
    assert_eq!(
        hit.metadata,
        json!({"team": "payments", "version": 2}).as_object().unwrap(),
        "the flag's metadata wins"
    );
    let miss = set.evaluate("by-email", &ctx(json!({"email": "bob@example.com"})));
    assert_eq!((miss.value, miss.variant, miss.reason), (Some(&json!("green")), Some("public"), Reason::Default));
}

#[test]
fn disabled_missing_and_defaultless_flags_leave_the_callers_default() {
    let set = FlagSet::parse("flags.json", DOC).unwrap();
    let off = set.evaluate("off", &ctx(json!({})));
    assert_eq!((off.value, off.variant, off.reason), (None, None, Reason::Disabled));
    let none = set.evaluate("no-default", &ctx(json!({})));
    assert_eq!((none.value, none.reason), (None, Reason::Default));
    let missing = set.evaluate("nope", &ctx(json!({})));
    assert_eq!(missing.reason, Reason::Error);
    assert_eq!(missing.error.map(|e| e.0), Some(ErrorCode::FlagNotFound));
}

#[test]
fn asking_for_another_type_is_a_type_mismatch() {
    let set = FlagSet::parse("flags.json", DOC).unwrap();
    let e = set.evaluate_as("by-email", &ctx(json!({})), ValueType::Boolean);
    assert_eq!(e.error.map(|e| e.0), Some(ErrorCode::TypeMismatch));
    let ok = set.evaluate_as("static", &ctx(json!({})), ValueType::Boolean);
    assert_eq!(ok.error, None);
}

#[test]
fn keys_come_in_key_order() {
    let set = FlagSet::parse("flags.json", DOC).unwrap();
    assert_eq!(set.keys().collect::<Vec<_>>(), ["by-email", "no-default", "off", "static"]);
    assert_eq!((set.len(), set.targeted()), (4, 1));
}

#[test]
fn ofrep_objects_carry_the_value_or_the_error() {
    let set = FlagSet::parse("flags.json", DOC).unwrap();
    let ok = set.evaluate("static", &ctx(json!({}))).to_ofrep("static");
    assert_eq!(
        ok,
        json!({"key": "static", "value": true, "variant": "on", "reason": "STATIC", "metadata": {"team": "payments", "version": 1}})
    );
    let err = set.evaluate("nope", &ctx(json!({}))).to_ofrep("nope");
    assert_eq!(err, json!({"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag \"nope\" not found"}));
}

#[test]
fn a_context_that_is_not_an_object_is_an_invalid_context() {
    let err = Context::from_value(&json!([1, 2])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidContext);
    assert_eq!(ctx(json!({"targetingKey": "u1"})).targeting_key(), Some("u1"));
}
