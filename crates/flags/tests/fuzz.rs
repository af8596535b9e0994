//! Nothing panics on input: arbitrary JSON documents, documents shaped like flag sets
//! whose rules use every operator with arbitrary arguments, arbitrary contexts, and
//! their text cut or garbled. Whatever is refused is refused at a place in the text.

use proptest::prelude::*;
use rollwave_flags::{Bucketing, Context, FlagSet, InvalidRules, ParseOptions, ValueType};
use serde_json::{Map, Value, json};

const OPERATORS: &[&str] = &[
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    ">",
    ">=",
    "<",
    "<=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "map",
    "filter",
    "reduce",
    "all",
    "none",
    "some",
    "merge",
    "in",
    "cat",
    "substr",
    "missing",
    "missing_some",
    "log",
    "starts_with",
    "ends_with",
    "sem_ver",
    "fractional",
    "var",
    "$ref",
    "nope",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "a",
            "b",
            "on",
            "1.2.3",
            "v2",
            "",
            "x.y",
            "targetingKey",
            "$flagd.flagKey",
            "shared"
        ])
        .prop_map(|s| json!(s)),
        "[a-z.0-9]{0,6}".prop_map(Value::String),
    ]
}

/// JSON Logic-looking expressions: operators with arbitrary arguments, arrays, scalars.
fn rule() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            (prop::sample::select(OPERATORS), prop::collection::vec(inner.clone(), 0..4))
                .prop_map(|(op, args)| json!({ op: args })),
            (prop::sample::select(OPERATORS), inner.clone()).prop_map(|(op, arg)| json!({ op: arg })),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn flag() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![json!("ENABLED"), json!("DISABLED"), json!("ON"), Value::Null]),
        prop::collection::btree_map(prop::sample::select(vec!["a", "b", "on", "true", "1"]), scalar(), 0..4),
        prop::option::of(prop::sample::select(vec!["a", "b", "on", "zz"])),
        prop::option::of(rule()),
    )
        .prop_map(|(state, variants, default, targeting)| {
            let mut f = Map::new();
            f.insert("state".into(), state);
            f.insert("variants".into(), Value::Object(variants.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
            if let Some(d) = default {
                f.insert("defaultVariant".into(), json!(d));
            }
            if let Some(t) = targeting {
                f.insert("targeting".into(), t);
            }
            Value::Object(f)
        })
}

fn document() -> impl Strategy<Value = Value> {
    (prop::collection::btree_map("[a-d]{1,2}", flag(), 0..4), prop::option::of(rule())).prop_map(|(flags, shared)| {
        let mut doc = json!({ "flags": Value::Object(flags.into_iter().collect()) });
        if let Some(rule) = shared {
            doc["$evaluators"] = json!({ "shared": rule });
        }
        doc
    })
}

fn context() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(vec!["targetingKey", "a", "b", "x", "email", "$flagd", "version"]),
        scalar().prop_recursive(2, 8, 3, |inner| prop::collection::vec(inner, 0..3).prop_map(Value::Array)),
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn evaluate_everything(set: &FlagSet, ctx: &Value) {
    let ctx = Context::from_value(ctx).expect("an object").at(1);
    for key in set.keys() {
        let e = set.evaluate(key, &ctx);
        let _ = e.to_ofrep(key);
        for ty in [ValueType::Boolean, ValueType::String, ValueType::Integer, ValueType::Float, ValueType::Object] {
            let typed = set.evaluate_as(key, &ctx, ty);
            if let Some(v) = typed.value {
                assert!(ty.admits(v), "{key}: {v} is not {ty:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn flag_shaped_documents_parse_or_are_refused_at_a_place(doc in document(), ctx in context()) {
        let text = serde_json::to_string_pretty(&doc).expect("JSON");
        for invalid_rules in [InvalidRules::Reject, InvalidRules::EvaluateAsFlagd] {
            for bucketing in [Bucketing::HighPrecision, Bucketing::LegacyPercent] {
                let options = ParseOptions { invalid_rules, bucketing };
                match FlagSet::parse_with("f.json", &text, options) {
                    Ok(set) => evaluate_everything(&set, &ctx),
                    Err(ds) => {
                        prop_assert!(!ds.is_empty());
                        for d in &ds {
                            prop_assert!(d.line >= 1 && d.col >= 1, "{d}");
                        }
                    }
                }
                // The same document handed over as a value is read the same way.
                let from_text = FlagSet::parse_with("f.json", &text, options).map(|s| s.len()).map_err(|e| e.len());
                let from_value = FlagSet::from_value_with("f.json", &doc, options).map(|s| s.len()).map_err(|e| e.len());
                prop_assert_eq!(from_text, from_value);
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics(doc in scalar().prop_recursive(6, 64, 5, |inner| prop_oneof![
        prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
        prop::collection::btree_map("[a-z$]{0,8}", inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
    ]), ctx in context()) {
        if let Ok(set) = FlagSet::from_value("f.json", &doc) {
            evaluate_everything(&set, &ctx);
        }
        let _ = FlagSet::parse("f.json", &doc.to_string());
    }

    #[test]
    fn cut_and_garbled_text_never_panics(doc in document(), cut in any::<prop::sample::Index>(), junk in "[\\[\\]{}\",:a-z0-9 \\n\\t-]{0,12}") {
        let text = serde_json::to_string_pretty(&doc).expect("JSON");
        let at = cut.index(text.len() + 1);
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let garbled = format!("{}{junk}{}", &text[..at], &text[at..]);
        for t in [&text[..at], garbled.as_str()] {
            if let Err(ds) = FlagSet::parse("f.json", t) {
                for d in &ds {
                    prop_assert!(d.line >= 1 && d.col >= 1, "{d}");
                }
            }
        }
    }
}

#[test]
fn absurdly_deep_nesting_is_refused_not_overflowed() {
    let deep = format!("{{\"flags\": {}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let e = FlagSet::parse("f.json", &deep).unwrap_err();
    assert!(e[0].message.contains("nested more than"), "{}", e[0]);
    let mut v = json!(1);
    // Built by moving values (`json!` would copy the whole tree at every level).
    for _ in 0..10_000 {
        v = Value::Object(Map::from_iter([("if".to_owned(), Value::Array(vec![v]))]));
    }
    let mut doc = json!({"flags": {"a": {"state": "ENABLED", "variants": {"x": 1}}}});
    doc["flags"]["a"]["targeting"] = v;
    let e = FlagSet::from_value("f.json", &doc).unwrap_err();
    assert!(e.iter().any(|d| d.message.contains("nested more than")), "{e:?}");
    std::mem::forget(doc); // Dropping 10,000 nested values recurses as deeply as building them did not.
}
