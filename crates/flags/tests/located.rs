//! Every kind of mistake in a flag definition, reported at the line and column of the
//! offending key or value, all of them at once, in JSON and in YAML.

use rollwave_flags::{FlagSet, InvalidRules, ParseOptions};
use serde_json::json;

fn errors(text: &str) -> Vec<String> {
    match FlagSet::parse("f.json", text) {
        Ok(_) => Vec::new(),
        Err(ds) => ds.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn every_error_of_a_json_document_is_reported_at_its_key_or_value() {
    let text = r#"{
  "flags": {
    "a": {
      "state": "ON",
      "variants": {"x": 1, "y": 2},
      "defaultVariant": "z",
      "targeting": {"if": [{"ends_wth": [{"var": "email"}, "@x.com"]}, "x", "w"]}
    },
    "b": {
      "state": "ENABLED",
      "defaultVariant": "x"
    },
    "c": {
      "state": "ENABLED",
      "variants": {"red": "r", "blue": "b"},
      "targeting": {"fractional": [["red", 12.5], ["blue", 87.5]]}
    },
    "d": {
      "state": "ENABLED",
      "variants": {"on": true},
      "targeting": {"if": [{"$ref": "is_admn"}, "on"]}
    }
  },
  "$evaluators": {"is_admin": {"in": [{"var": "email"}, ["a@x.com"]]}}
}"#;
    assert_eq!(
        errors(text),
        [
            r#"f.json:4:16: the state of flag "a" must be "ENABLED" or "DISABLED", not "ON""#,
            r#"f.json:6:25: "z" is not a variant of flag "a" (its variants: "x", "y")"#,
            r#"f.json:7:29: unknown operator "ends_wth"; did you mean "ends_with"?"#,
            r#"f.json:7:77: the targeting returns "w", which is not a variant of flag "a" (its variants: "x", "y")"#,
            r#"f.json:9:5: flag "b" has no "variants""#,
            r#"f.json:16:44: fractional weight 12.5 is not a whole number"#,
            r#"f.json:16:60: fractional weight 87.5 is not a whole number"#,
            r#"f.json:21:37: "$ref" to an unknown evaluator "is_admn" (there are is_admin)"#,
        ]
    );
}

#[test]
fn yaml_documents_are_located_the_same_way() {
    let text = "flags:\n  a:\n    state: ENABLED\n    variants:\n      on: true\n      off: false\n    defaultVariant: of\n    targeting:\n      fractional:\n        - [on, 50]\n        - [of, 50]\n";
    assert_eq!(
        errors(text),
        [
            r#"f.json:7:21: "of" is not a variant of flag "a" (its variants: "off", "on")"#,
            r#"f.json:11:12: the targeting returns "of", which is not a variant of flag "a" (its variants: "off", "on")"#,
        ]
    );
}

#[test]
fn a_syntax_error_is_located_where_the_parser_stops() {
    let e = errors("{\n  \"flags\": {\n    \"a\": {\"state\": \"ENABLED\",, }\n  }\n}");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("f.json:3:"), "{e:?}");
    let dup = errors("{\"flags\": {}, \"flags\": {}}");
    assert_eq!(dup, [r#"f.json:1:15: duplicate key "flags"; it is already defined at line 1, column 2"#]);
}

#[test]
fn json_that_yaml_might_read_differently_reads_as_json() {
    // Compact separators, tabs between tokens, JSON's escapes and exponents.
    let text = "{\"flags\":{\"a\":{\"state\":\"ENABLED\",\t\"variants\":{\"x\":\"\\u00e9\\/\\n\",\"y\":1e3,\"z\":-0.5,\"w\":\"10\"},\"defaultVariant\":\"x\"}}}";
    let set = FlagSet::parse("f.json", text).unwrap_or_else(|e| panic!("{e:?}"));
    let from_json = FlagSet::from_value("f.json", &serde_json::from_str(text).unwrap()).unwrap();
    let ctx = rollwave_flags::Context::new(Default::default());
    assert_eq!(set.evaluate("a", &ctx).value, Some(&json!("é/\n")));
    assert_eq!(set.evaluate("a", &ctx), from_json.evaluate("a", &ctx));
}

#[test]
fn a_document_given_as_a_value_is_located_by_json_pointer() {
    let doc = json!({"flags": {"a": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "q"}}});
    let e: Vec<String> = FlagSet::from_value("release 7", &doc).unwrap_err().iter().map(|d| d.to_string()).collect();
    assert_eq!(e, [r#"release 7:/flags/a/defaultVariant: "q" is not a variant of flag "a" (its variants: "x")"#]);
}

#[test]
fn rules_flagd_would_run_regardless_are_kept_when_asked_and_reported_still() {
    let text = r#"{"flags": {"a": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x",
        "targeting": {"sem_ver": [{"var": "v"}, "===", "1.0.0"]}}}}"#;
    assert_eq!(errors(text), [r#"f.json:2:49: unknown sem_ver operator "==="; expected one of = != < <= >= > ^ ~"#]);
    let options = ParseOptions { invalid_rules: InvalidRules::EvaluateAsFlagd, ..Default::default() };
    let set = FlagSet::parse_with("f.json", text, options).unwrap();
    assert_eq!(set.tolerated().len(), 1);
}
