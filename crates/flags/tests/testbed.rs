//! The flagd testbed's evaluator suite (`tests/testbed/`, see its README), run scenario
//! by scenario: a small Gherkin reader (features, backgrounds, scenario outlines with
//! tagged examples, data tables) and the steps those features use.
//!
//! Every scenario of every feature there runs. Scenarios tagged `@fractional-v1` run
//! with the legacy percentage bucketing ([`Bucketing::LegacyPercent`]), the others with
//! the default; flags whose rules flagd itself could not run are read with
//! [`InvalidRules::EvaluateAsFlagd`], as the suite expects them to evaluate.

use rollwave_flags::{Bucketing, Context, FlagSet, InvalidRules, ParseOptions, ValueType};
use serde_json::{Map, Value, json};
use std::path::Path;

/// The testbed's provider suites (its top-level `gherkin/`) are not copied here: they
/// test a provider around the evaluator, which rollwave's relay will be.
const OUT_OF_SCOPE: &[(&str, &str)] = &[
    ("gherkin/config.feature", "provider options (host, port, resolver, TLS, cache)"),
    ("gherkin/connection.feature", "provider connection, reconnection and its events"),
    ("gherkin/events.feature", "provider events (ready, change, stale, error)"),
    ("gherkin/rpc-caching.feature", "the RPC provider's cache"),
    ("gherkin/selector.feature", "flag-set selection by a sync server"),
    ("gherkin/sync-payload.feature", "the sync stream's payload"),
    ("gherkin/contextEnrichment.feature", "context enrichment by a sync server"),
    (
        "gherkin/{evaluation,targeting,disabled,metadata}.feature",
        "the same evaluations as this suite, through a running flagd and its launchpad",
    ),
];

#[derive(Debug, Default, Clone)]
struct Step {
    text: String,
    table: Vec<Vec<String>>,
}

#[derive(Debug)]
struct Scenario {
    name: String,
    tags: Vec<String>,
    steps: Vec<Step>,
}

/// Reads a feature file into its concrete scenarios (outlines expanded, background first).
/// A scenario being read: its name, tags, steps, and for an outline its example blocks
/// (each block's tags and table rows).
type ScenarioDraft = (String, Vec<String>, Vec<Step>, Vec<(Vec<String>, Vec<Vec<String>>)>);

fn scenarios(text: &str) -> Vec<Scenario> {
    let mut out = Vec::new();
    let mut feature_tags: Vec<String> = Vec::new();
    let mut pending_tags: Vec<String> = Vec::new();
    let mut background: Vec<Step> = Vec::new();
    // The scenario being read: name, tags, steps, and for an outline its example blocks.
    let mut current: Option<ScenarioDraft> = None;
    let mut in_background = false;
    let mut in_examples = false;

    let flush =
        |current: &mut Option<ScenarioDraft>, out: &mut Vec<Scenario>, background: &[Step], feature_tags: &[String]| {
            let Some((name, tags, steps, examples)) = current.take() else { return };
            let mut all_tags = feature_tags.to_vec();
            all_tags.extend(tags);
            let with_background = |steps: &[Step]| background.iter().chain(steps).cloned().collect::<Vec<_>>();
            if examples.is_empty() {
                out.push(Scenario { name, tags: all_tags, steps: with_background(&steps) });
                return;
            }
            for (example_tags, table) in examples {
                let Some((header, rows)) = table.split_first() else { continue };
                for row in rows {
                    let fill = |s: &str| {
                        let mut s = s.to_owned();
                        for (h, v) in header.iter().zip(row) {
                            s = s.replace(&format!("<{h}>"), v);
                        }
                        s
                    };
                    let steps: Vec<Step> = steps
                        .iter()
                        .map(|st| Step {
                            text: fill(&st.text),
                            table: st.table.iter().map(|r| r.iter().map(|c| fill(c)).collect()).collect(),
                        })
                        .collect();
                    let mut tags = all_tags.clone();
                    tags.extend(example_tags.iter().cloned());
                    out.push(Scenario { name: format!("{name} {row:?}"), tags, steps: with_background(&steps) });
                }
            }
        };

    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            pending_tags.extend(line.split_whitespace().map(str::to_owned));
            continue;
        }
        if let Some(rest) = line.strip_prefix('|') {
            let cells = table_row(rest);
            if in_examples {
                if let Some((_, _, _, examples)) = current.as_mut()
                    && let Some((_, table)) = examples.last_mut()
                {
                    table.push(cells);
                }
            } else {
                let steps = if in_background { Some(&mut background) } else { current.as_mut().map(|c| &mut c.2) };
                if let Some(step) = steps.and_then(|s| s.last_mut()) {
                    step.table.push(cells);
                }
            }
            continue;
        }
        if line.starts_with("Feature:") {
            feature_tags = std::mem::take(&mut pending_tags);
        } else if line.starts_with("Background:") {
            in_background = true;
        } else if let Some(name) = line.strip_prefix("Scenario Outline:").or_else(|| line.strip_prefix("Scenario:")) {
            flush(&mut current, &mut out, &background, &feature_tags);
            current = Some((name.trim().to_owned(), std::mem::take(&mut pending_tags), Vec::new(), Vec::new()));
            in_background = false;
            in_examples = false;
        } else if line.starts_with("Examples") {
            in_examples = true;
            let tags = std::mem::take(&mut pending_tags);
            if let Some((_, _, _, examples)) = current.as_mut() {
                examples.push((tags, Vec::new()));
            }
        } else {
            let text = ["Given ", "When ", "Then ", "And ", "But "]
                .iter()
                .find_map(|k| line.strip_prefix(k))
                .unwrap_or_else(|| panic!("not a step: {line}"))
                .to_owned();
            let step = Step { text, table: Vec::new() };
            if in_background {
                background.push(step);
            } else if let Some(c) = current.as_mut() {
                c.2.push(step);
            }
        }
    }
    flush(&mut current, &mut out, &background, &feature_tags);
    out
}

/// The cells of a table row (after its first `|`), with Gherkin's escapes undone.
fn table_row(rest: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            // Gherkin unescapes `\|`, `\\` and `\n` in cells; `\"` stays for the step's own strings.
            '\\' => match chars.next() {
                Some('n') => cell.push('\n'),
                Some(c @ ('|' | '\\')) => cell.push(c),
                Some(other) => {
                    cell.push('\\');
                    cell.push(other);
                }
                None => cell.push('\\'),
            },
            '|' => cells.push(std::mem::take(&mut cell).trim().to_owned()),
            other => cell.push(other),
        }
    }
    cells
}

/// The quoted arguments of a step, in order, as Cucumber's `{string}` reads them
/// (`\"` inside is a quote).
fn quoted(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while chars.by_ref().any(|c| c == '"') {
        let mut arg = String::new();
        loop {
            match chars.next() {
                Some('\\') => arg.extend(chars.next()),
                Some('"') | None => break,
                Some(c) => arg.push(c),
            }
        }
        out.push(arg);
    }
    out
}

fn typed(ty: &str, text: &str) -> Value {
    match ty {
        "Boolean" => json!(text.parse::<bool>().unwrap_or_else(|_| panic!("{text} is a boolean"))),
        "String" => json!(text),
        "Integer" => json!(text.parse::<i64>().unwrap_or_else(|_| panic!("{text} is an integer"))),
        "Float" => json!(text.parse::<f64>().unwrap_or_else(|_| panic!("{text} is a float"))),
        "Object" => serde_json::from_str(text).unwrap_or_else(|e| panic!("{text} is JSON: {e}")),
        other => panic!("unknown type {other}"),
    }
}

fn value_type(ty: &str) -> ValueType {
    match ty {
        "Boolean" => ValueType::Boolean,
        "String" => ValueType::String,
        "Integer" => ValueType::Integer,
        "Float" => ValueType::Float,
        "Object" => ValueType::Object,
        other => panic!("unknown type {other}"),
    }
}

/// Numbers compare by value (`0.0` is `0`), everything else exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// What a scenario's steps build and check.
struct World<'s> {
    sets: &'s Sets,
    bucketing: Bucketing,
    flag: Option<(String, String, Value)>,
    context: Map<String, Value>,
    result: Option<Outcome>,
}

struct Outcome {
    value: Value,
    reason: String,
    error_code: Option<String>,
    metadata: Map<String, Value>,
}

struct Sets {
    v2: FlagSet,
    v1: FlagSet,
}

impl World<'_> {
    fn step(&mut self, step: &Step) {
        let t = step.text.as_str();
        let q = quoted(t);
        let q: Vec<&str> = q.iter().map(String::as_str).collect();
        if t == "an evaluator" {
        } else if t.contains("-flag with key") && t.contains("and a fallback value") {
            let ty = t.split('-').next().unwrap_or_default().trim_start_matches("a ").to_owned();
            let default = typed(&ty, q[1]);
            self.flag = Some((ty, q[0].to_owned(), default));
        } else if t.starts_with("a context containing a key") {
            self.context.insert(q[0].to_owned(), typed(q[1], q[2]));
        } else if t.starts_with("a context containing a nested property") {
            let inner = self.context.entry(q[0].to_owned()).or_insert_with(|| json!({}));
            inner.as_object_mut().expect("an object").insert(q[1].to_owned(), json!(q[2]));
        } else if t.starts_with("a context containing a targeting key") {
            self.context.insert("targetingKey".into(), json!(q[0]));
        } else if t == "the flag was evaluated with details" {
            self.evaluate();
        } else if t.starts_with("the resolved details value should be") {
            let (ty, key, _) = self.flag.as_ref().expect("a flag");
            let expected = typed(ty, q[0]);
            let got = &self.result().value;
            assert!(same(got, &expected), "{key}: value {got} instead of {expected}");
        } else if t.starts_with("the reason should be") {
            assert_eq!(self.result().reason, q[0]);
        } else if t.starts_with("the error-code should be") {
            assert_eq!(self.result().error_code.as_deref(), Some(q[0]));
        } else if t == "the resolved metadata is empty" {
            assert!(self.result().metadata.is_empty(), "metadata {:?}", self.result().metadata);
        } else if t == "the resolved metadata should contain" {
            let (_, rows) = step.table.split_first().expect("a header");
            for row in rows {
                let (key, ty, value) = (&row[0], &row[1], &row[2]);
                let got = self.result().metadata.get(key).unwrap_or_else(|| panic!("metadata {key}"));
                assert!(same(got, &typed(ty, value)), "metadata {key}: {got} instead of {value}");
            }
        } else {
            panic!("a step this runner does not know: {t}");
        }
    }

    fn result(&self) -> &Outcome {
        self.result.as_ref().expect("the flag was evaluated")
    }

    fn evaluate(&mut self) {
        let (ty, key, fallback) = self.flag.clone().expect("a flag");
        let set = match self.bucketing {
            Bucketing::LegacyPercent => &self.sets.v1,
            _ => &self.sets.v2,
        };
        let ctx = Context::new(self.context.clone());
        let e = set.evaluate_as(&key, &ctx, value_type(&ty));
        self.result = Some(Outcome {
            value: e.value.cloned().unwrap_or(fallback),
            reason: e.reason.as_str().to_owned(),
            error_code: e.error.as_ref().map(|(code, _)| code.as_str().to_owned()),
            metadata: e.metadata.clone(),
        });
    }
}

#[test]
fn the_whole_evaluator_suite_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed");
    let text = std::fs::read_to_string(dir.join("flags/testkit-flags.json")).expect("the testbed's flags");
    let read = |bucketing| {
        let options = ParseOptions { invalid_rules: InvalidRules::EvaluateAsFlagd, bucketing };
        FlagSet::parse_with("testkit-flags.json", &text, options).unwrap_or_else(|e| panic!("{e:?}"))
    };
    let sets = Sets { v2: read(Bucketing::HighPrecision), v1: read(Bucketing::LegacyPercent) };

    let mut features: Vec<_> =
        std::fs::read_dir(dir.join("gherkin")).expect("features").map(|e| e.expect("entry").path()).collect();
    features.sort();
    let (mut ran, mut failed) = (0, Vec::new());
    for path in &features {
        let text = std::fs::read_to_string(path).expect("a feature");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        for scenario in scenarios(&text) {
            let bucketing = if scenario.tags.iter().any(|t| t == "@fractional-v1") {
                Bucketing::LegacyPercent
            } else {
                Bucketing::HighPrecision
            };
            let mut world = World { sets: &sets, bucketing, flag: None, context: Map::new(), result: None };
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for step in &scenario.steps {
                    world.step(step);
                }
            }));
            ran += 1;
            if let Err(panic) = run {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                failed.push(format!("{name}: {}: {}", scenario.name, why.unwrap_or_default()));
            }
        }
    }
    eprintln!("testbed: {ran} scenarios run, {} failed; out of scope: {}", failed.len(), OUT_OF_SCOPE.len());
    assert!(ran >= 100, "only {ran} scenarios were read");
    assert!(failed.is_empty(), "{} of {ran} scenarios failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn the_reader_expands_outlines_with_their_background_and_tags() {
    let text = "@f\nFeature: x\n  Background:\n    Given an evaluator\n\n  Scenario Outline: o\n    Given a String-flag with key \"<k>\" and a fallback value \"d\"\n\n    @v1\n    Examples: one\n      | k |\n      | a |\n      | b\\|c |\n\n  Scenario: s\n    Then the resolved metadata should contain\n      | key | metadata_type | value |\n";
    let s = scenarios(text);
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].tags, ["@f", "@v1"]);
    assert_eq!(s[1].steps[1].text, "a String-flag with key \"b|c\" and a fallback value \"d\"");
    assert_eq!(quoted(r#"key "a" and "{\"b\": 1}""#), ["a", r#"{"b": 1}"#]);
    assert_eq!(s[2].steps.len(), 2);
    assert_eq!(s[2].steps[1].table, vec![vec!["key", "metadata_type", "value"]]);
}
