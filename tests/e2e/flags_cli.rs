//! `rollwave flags validate` and `rollwave flags eval` as scripts see them: exit codes,
//! the one-line summary, every error located at FILE:LINE:COL, the OFREP object.

use crate::kit::BIN;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rollwave(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("rollwave runs")
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = r#"{
  "flags": {
    "checkout": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"if": [{"$ref": "staff"}, "on"]},
      "metadata": {"owner": "payments"}
    },
    "banner": {"state": "ENABLED", "variants": {"a": "hello", "b": "hi"}, "defaultVariant": "a"}
  },
  "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}
}"#;

#[test]
fn validate_summarises_a_good_flag_file_in_one_line() {
    let file = scratch("flags-good.json", GOOD);
    let o = rollwave(&["flags", "validate", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{}: 2 flags (1 with targeting), 1 evaluators\n", file.display())
    );
}

#[test]
fn validate_lists_every_error_at_its_place_and_exits_1() {
    let text = "flags:\n  a:\n    state: ON\n    variants: {x: 1}\n    defaultVariant: y\n  b:\n    state: ENABLED\n    variants: {x: 1}\n    targeting: {\"$ref\": nobody}\n";
    let file = scratch("flags-bad.yaml", text);
    let name = file.display().to_string();
    let o = rollwave(&["flags", "validate", &name]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{name}:3:12: the state of flag \"a\" must be \"ENABLED\" or \"DISABLED\", not \"ON\""),
            format!("{name}:5:21: \"y\" is not a variant of flag \"a\" (its variants: \"x\")"),
            format!("{name}:9:25: \"$ref\" to an unknown evaluator \"nobody\" (there are none)"),
        ]
    );
}

#[test]
fn an_unreadable_file_is_a_usage_error() {
    let o = rollwave(&["flags", "validate", "/nonexistent/flags.json"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn eval_prints_one_evaluation_as_text_or_as_ofrep() {
    let file = scratch("flags-eval.json", GOOD);
    let file = file.to_str().unwrap();
    let o = rollwave(&["flags", "eval", file, "checkout", "--context", r#"{"email": "ada@example.com"}"#]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "checkout: variant \"on\" = true (TARGETING_MATCH)\n");

    let o = rollwave(&["flags", "eval", file, "checkout", "--context", r#"{"email": "bob@elsewhere.org"}"#, "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(
        v,
        json!({"key": "checkout", "value": false, "variant": "off", "reason": "DEFAULT", "metadata": {"owner": "payments"}})
    );
}

#[test]
fn eval_of_a_missing_flag_or_with_a_bad_context_exits_1() {
    let file = scratch("flags-eval-missing.json", GOOD);
    let file = file.to_str().unwrap();
    let o = rollwave(&["flags", "eval", file, "nope", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v, json!({"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag \"nope\" not found"}));

    let o = rollwave(&["flags", "eval", file, "banner", "--context", "[1]"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("INVALID_CONTEXT"), "{}", String::from_utf8_lossy(&o.stderr));
}
