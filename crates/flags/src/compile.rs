//! From a flagd document (a `serde_json::Value`) to a [`FlagSet`]: the document's shape
//! is checked, every targeting rule compiled into a [`Node`] tree with `$ref`s inlined
//! (as flagd substitutes them) and string literals that name variants interned, and
//! every mistake recorded at its place before anything is returned.

use crate::logic::{Fractional, Node, Op, Path, Seg, Var};
use crate::semver::{SemverOp, Version};
use crate::source::{Locator, MAX_DEPTH, Part, Step};
use crate::{Diagnostic, Flag, FlagSet, InvalidRules, ParseOptions, State, Targeting, kind};
use serde_json::{Map, Value};

const TOP_KEYS: &[&str] = &["$schema", "flags", "$evaluators", "metadata"];
const FLAG_KEYS: &[&str] = &["state", "variants", "defaultVariant", "targeting", "metadata"];

/// Diagnostics as they are found, split by what [`InvalidRules`] may forgive.
struct Report<'l> {
    at: &'l Locator<'l>,
    /// Mistakes in the document's shape: never forgiven.
    fatal: Vec<Diagnostic>,
    /// Rules that cannot work as written: forgiven by `EvaluateAsFlagd`.
    rules: Vec<Diagnostic>,
}

impl Report<'_> {
    fn fatal(&mut self, path: &[Step], part: Part, message: String) {
        self.fatal.push(self.at.diagnostic(path, part, message));
    }

    fn rule(&mut self, path: &[Step], part: Part, message: String) {
        let d = self.at.diagnostic(path, part, message);
        if !self.rules.contains(&d) {
            self.rules.push(d);
        }
    }
}

pub(crate) fn compile(doc: &Value, at: &Locator<'_>, options: ParseOptions) -> Result<FlagSet, Vec<Diagnostic>> {
    let mut report = Report { at, fatal: Vec::new(), rules: Vec::new() };
    let mut path = Vec::new();
    let Some(top) = doc.as_object() else {
        report.fatal(&path, Part::Value, format!("the document must be an object, not {}", kind(doc)));
        return Err(report.fatal);
    };
    for key in top.keys().filter(|k| !TOP_KEYS.contains(&k.as_str())) {
        path.push(Step::Key(key.clone()));
        report.fatal(&path, Part::Key, unknown_key(key, TOP_KEYS, "at the top of a flag definition"));
        path.pop();
    }
    let metadata = match top.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(m) => {
            path.push(Step::Key("metadata".into()));
            let m = metadata_of(m, &mut path, &mut report);
            path.pop();
            m
        }
    };
    let evaluators = match top.get("$evaluators") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(e)) => e.clone(),
        Some(other) => {
            path.push(Step::Key("$evaluators".into()));
            report.fatal(
                &path,
                Part::Value,
                format!("\"$evaluators\" must be an object of named rules, not {}", kind(other)),
            );
            path.pop();
            Map::new()
        }
    };
    let mut flags = Vec::new();
    match top.get("flags") {
        Some(Value::Object(defs)) => {
            for (key, def) in defs {
                path.push(Step::Key("flags".into()));
                path.push(Step::Key(key.clone()));
                let mut cx = Cx {
                    report: &mut report,
                    evaluators: &evaluators,
                    variants: &[],
                    flag: key,
                    refs: Vec::new(),
                    unusable: None,
                };
                if let Some(flag) = flag(key, def, &metadata, &mut path, &mut cx) {
                    flags.push(flag);
                }
                path.truncate(0);
            }
        }
        Some(other) => {
            path.push(Step::Key("flags".into()));
            report.fatal(
                &path,
                Part::Value,
                format!("\"flags\" must be an object of flags by key, not {}", kind(other)),
            );
            path.pop();
        }
        None => report.fatal(&path, Part::Value, "the document has no \"flags\"".into()),
    }
    // Each evaluator is checked where it is defined, even if no flag uses it.
    for (name, rule) in &evaluators {
        path = vec![Step::Key("$evaluators".into()), Step::Key(name.clone())];
        let mut cx = Cx {
            report: &mut report,
            evaluators: &evaluators,
            variants: &[],
            flag: "",
            refs: vec![name.clone()],
            unusable: None,
        };
        node(rule, &mut path, &mut cx, Returned::No, 0);
    }

    let Report { mut fatal, rules, .. } = report;
    let tolerated = match options.invalid_rules {
        InvalidRules::Reject => {
            fatal.extend(rules);
            Vec::new()
        }
        InvalidRules::EvaluateAsFlagd => rules,
    };
    if !fatal.is_empty() {
        fatal.sort_by(|a, b| (a.line, a.col, &a.pointer).cmp(&(b.line, b.col, &b.pointer)));
        fatal.dedup();
        return Err(fatal);
    }
    flags.sort_by(|a: &Flag, b: &Flag| a.key.cmp(&b.key));
    let index = flags.iter().enumerate().map(|(i, f)| (f.key.clone(), i as u32)).collect();
    Ok(FlagSet { flags, index, metadata, evaluators: evaluators.len(), bucketing: options.bucketing, tolerated })
}

fn unknown_key(key: &str, known: &[&str], place: &str) -> String {
    let close = known.iter().copied().filter(|k| distance(k, key) <= 2).min_by_key(|k| distance(k, key));
    match close {
        Some(k) => format!("unknown key {key:?} {place}; did you mean {k:?}?"),
        None => format!("unknown key {key:?} {place}; expected one of {}", known.join(", ")),
    }
}

/// Levenshtein distance, for did-you-mean suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn metadata_of(m: &Value, path: &mut Vec<Step>, report: &mut Report<'_>) -> Map<String, Value> {
    let Some(m) = m.as_object() else {
        report.fatal(path, Part::Value, format!("\"metadata\" must be an object, not {}", kind(m)));
        return Map::new();
    };
    for (k, v) in m {
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            path.push(Step::Key(k.clone()));
            report.fatal(
                path,
                Part::Value,
                format!("metadata {k:?} must be a string, a number or a boolean, not {}", kind(v)),
            );
            path.pop();
        }
    }
    m.clone()
}

/// What compiling one rule needs besides the rule.
struct Cx<'r, 'l> {
    report: &'r mut Report<'l>,
    evaluators: &'r Map<String, Value>,
    /// The flag's variant names, sorted (empty while checking an evaluator on its own).
    variants: &'r [&'r str],
    flag: &'r str,
    /// The `$ref`s being inlined, innermost last, to refuse cycles.
    refs: Vec<String>,
    /// Why the rule cannot run at all, if it cannot.
    unusable: Option<String>,
}

/// Whether a node's value is what the rule returns (so a string there must be a variant).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Returned {
    Yes,
    No,
}

fn flag(
    key: &str,
    def: &Value,
    set_metadata: &Map<String, Value>,
    path: &mut Vec<Step>,
    cx: &mut Cx<'_, '_>,
) -> Option<Flag> {
    let Some(def) = def.as_object() else {
        cx.report.fatal(path, Part::Value, format!("flag {key:?} must be an object, not {}", kind(def)));
        return None;
    };
    for k in def.keys().filter(|k| !FLAG_KEYS.contains(&k.as_str())) {
        path.push(Step::Key(k.clone()));
        cx.report.fatal(path, Part::Key, unknown_key(k, FLAG_KEYS, &format!("in flag {key:?}")));
        path.pop();
    }
    path.push(Step::Key("state".into()));
    let state = match def.get("state") {
        Some(Value::String(s)) if s == "ENABLED" => Some(State::Enabled),
        Some(Value::String(s)) if s == "DISABLED" => Some(State::Disabled),
        None => {
            path.pop();
            cx.report.fatal(path, Part::Key, format!("flag {key:?} has no \"state\" (ENABLED or DISABLED)"));
            path.push(Step::Key("state".into()));
            None
        }
        Some(other) => {
            cx.report.fatal(
                path,
                Part::Value,
                format!("the state of flag {key:?} must be \"ENABLED\" or \"DISABLED\", not {other}"),
            );
            None
        }
    };
    path.pop();

    path.push(Step::Key("variants".into()));
    let variants: Option<Vec<(Box<str>, Value)>> = match def.get("variants") {
        Some(Value::Object(v)) if !v.is_empty() => {
            Some(v.iter().map(|(k, v)| (k.as_str().into(), v.clone())).collect())
        }
        Some(Value::Object(_)) => {
            cx.report.fatal(path, Part::Value, format!("flag {key:?} has no variants; give it at least one"));
            None
        }
        None => {
            path.pop();
            cx.report.fatal(path, Part::Key, format!("flag {key:?} has no \"variants\""));
            path.push(Step::Key("variants".into()));
            None
        }
        Some(other) => {
            cx.report.fatal(
                path,
                Part::Value,
                format!("the variants of flag {key:?} must be an object, not {}", kind(other)),
            );
            None
        }
    };
    path.pop();
    // serde_json's map is ordered by key, so the names are sorted already.
    let names: Vec<&str> = variants.iter().flatten().map(|(n, _)| &**n).collect();

    path.push(Step::Key("defaultVariant".into()));
    let default_variant = match def.get("defaultVariant") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match names.binary_search(&s.as_str()) {
            Ok(i) => Some(i as u32),
            Err(_) => {
                if variants.is_some() {
                    cx.report.fatal(path, Part::Value, not_a_variant(s, key, &names));
                }
                None
            }
        },
        Some(other) => {
            cx.report.fatal(
                path,
                Part::Value,
                format!("the defaultVariant of flag {key:?} must be a variant's name, not {}", kind(other)),
            );
            None
        }
    };
    path.pop();

    path.push(Step::Key("metadata".into()));
    let mut metadata = set_metadata.clone();
    if let Some(m) = def.get("metadata").filter(|m| !m.is_null()) {
        metadata.extend(metadata_of(m, path, cx.report));
    }
    path.pop();

    path.push(Step::Key("targeting".into()));
    let targeting = match def.get("targeting") {
        None | Some(Value::Null) => Targeting::None,
        Some(Value::Object(o)) if o.is_empty() => Targeting::None,
        Some(rule @ Value::Object(_)) => {
            let mut rule_cx = Cx {
                report: cx.report,
                evaluators: cx.evaluators,
                variants: &names,
                flag: key,
                refs: Vec::new(),
                unusable: None,
            };
            let node = node(rule, path, &mut rule_cx, Returned::Yes, 0);
            match rule_cx.unusable {
                Some(why) => Targeting::Unusable(why),
                None => Targeting::Rule(node),
            }
        }
        Some(other) => {
            cx.report.fatal(
                path,
                Part::Value,
                format!("the targeting of flag {key:?} must be a JSON Logic object, not {}", kind(other)),
            );
            Targeting::None
        }
    };
    path.pop();
    Some(Flag { key: key.into(), state: state?, variants: variants?, default_variant, targeting, metadata })
}

fn not_a_variant(name: &str, flag: &str, names: &[&str]) -> String {
    format!("{name:?} is not a variant of flag {flag:?} (its variants: {})", variant_list(names))
}

fn variant_list(names: &[&str]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    list.join(", ")
}

/// Compiles one expression.
fn node(v: &Value, path: &mut Vec<Step>, cx: &mut Cx<'_, '_>, returned: Returned, depth: usize) -> Node {
    if depth > MAX_DEPTH {
        cx.report.rule(path, Part::Value, format!("the rule is nested more than {MAX_DEPTH} levels deep"));
        cx.unusable.get_or_insert_with(|| "the rule is nested too deeply".into());
        // Not a literal, so that no enclosing array is kept (cloned) as literal JSON;
        // the rule is unusable and never evaluated.
        return Node::Array(Box::new([]));
    }
    match v {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(*b),
        Value::Number(n) => Node::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => match cx.variants.binary_search(&s.as_str()) {
            Ok(i) => Node::Variant(i as u32, s.as_str().into()),
            Err(_) => {
                if returned == Returned::Yes && !cx.flag.is_empty() {
                    cx.report.rule(
                        path,
                        Part::Value,
                        format!(
                            "the targeting returns {s:?}, which is not a variant of flag {:?} (its variants: {})",
                            cx.flag,
                            variant_list(cx.variants)
                        ),
                    );
                }
                Node::Str(s.as_str().into())
            }
        },
        Value::Array(items) => {
            let nodes: Vec<Node> = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    path.push(Step::Index(i));
                    let n = node(item, path, cx, Returned::No, depth + 1);
                    path.pop();
                    n
                })
                .collect();
            if nodes
                .iter()
                .all(|n| matches!(n, Node::Null | Node::Bool(_) | Node::Num(_) | Node::Str(_) | Node::Json(_)))
            {
                Node::Json(v.clone())
            } else {
                Node::Array(nodes.into())
            }
        }
        // JSON Logic reads an object with other than one key as data.
        Value::Object(o) if o.len() != 1 => Node::Json(v.clone()),
        Value::Object(o) => {
            let Some((op, args)) = o.iter().next() else { return Node::Json(v.clone()) };
            path.push(Step::Key(op.clone()));
            let n = operation(op, args, path, cx, returned, depth);
            path.pop();
            n
        }
    }
}

/// The arguments of an operation: an array, or a single value standing for a one-item array.
fn args_of(args: &Value) -> (&[Value], bool) {
    match args {
        Value::Array(a) => (a.as_slice(), true),
        other => (std::slice::from_ref(other), false),
    }
}

fn compile_args(
    args: &Value,
    path: &mut Vec<Step>,
    cx: &mut Cx<'_, '_>,
    returned: impl Fn(usize, usize) -> Returned,
    depth: usize,
) -> Box<[Node]> {
    let (items, is_array) = args_of(args);
    let n = items.len();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if is_array {
                path.push(Step::Index(i));
            }
            let node = node(item, path, cx, returned(i, n), depth + 1);
            if is_array {
                path.pop();
            }
            node
        })
        .collect()
}

fn operation(
    op: &str,
    args: &Value,
    path: &mut Vec<Step>,
    cx: &mut Cx<'_, '_>,
    returned: Returned,
    depth: usize,
) -> Node {
    match op {
        "$ref" => reference(args, path, cx, returned, depth),
        "var" => var(args, path, cx, depth),
        "fractional" => fractional(args, path, cx, returned, depth),
        _ => {
            let Some(op_kind) = Op::from_name(op) else {
                let mut known: Vec<&str> = Op::NAMES.to_vec();
                known.extend(["var", "fractional", "$ref"]);
                let close = known
                    .iter()
                    .copied()
                    .filter(|k| distance(k, op) <= 2 && k.len() > 1)
                    .min_by_key(|k| distance(k, op));
                let hint = close.map(|k| format!("; did you mean {k:?}?")).unwrap_or_default();
                cx.report.rule(path, Part::Key, format!("unknown operator {op:?}{hint}"));
                cx.unusable.get_or_insert_with(|| format!("the targeting uses the unknown operator {op:?}"));
                return Node::Null;
            };
            let branch = |i: usize, n: usize| if i % 2 == 1 || i + 1 == n { returned } else { Returned::No };
            let args = match op_kind {
                Op::If | Op::Ternary => compile_args(args, path, cx, branch, depth),
                Op::Or | Op::And => compile_args(args, path, cx, |_, _| returned, depth),
                _ => compile_args(args, path, cx, |_, _| Returned::No, depth),
            };
            check_arguments(op_kind, args_of_len(&args), &args, path, cx);
            Node::Op(op_kind, args)
        }
    }
}

fn args_of_len(args: &[Node]) -> usize {
    args.len()
}

/// The mistakes flagd's operations would answer with null at every evaluation.
fn check_arguments(op: Op, n: usize, args: &[Node], path: &mut Vec<Step>, cx: &mut Cx<'_, '_>) {
    match op {
        Op::StartsWith | Op::EndsWith => {
            let name = if op == Op::StartsWith { "starts_with" } else { "ends_with" };
            if n != 2 {
                cx.report.rule(
                    path,
                    Part::Key,
                    format!("{name} takes 2 arguments (a string and a prefix or suffix), not {n}"),
                );
            } else {
                for (i, a) in args.iter().enumerate() {
                    if matches!(a, Node::Null | Node::Bool(_) | Node::Num(_) | Node::Json(_)) {
                        path.push(Step::Index(i));
                        cx.report.rule(path, Part::Value, format!("{name} compares strings; this argument is not one"));
                        path.pop();
                    }
                }
            }
        }
        Op::SemVer => {
            if n != 3 {
                cx.report.rule(
                    path,
                    Part::Key,
                    format!("sem_ver takes 3 arguments (a version, an operator and a version), not {n}"),
                );
                return;
            }
            if let Node::Str(s) | Node::Variant(_, s) = &args[1]
                && SemverOp::parse(s).is_none()
            {
                path.push(Step::Index(1));
                cx.report.rule(
                    path,
                    Part::Value,
                    format!("unknown sem_ver operator {s:?}; expected one of {}", SemverOp::SPELLINGS.join(" ")),
                );
                path.pop();
            }
            for i in [0, 2] {
                if let Node::Str(s) | Node::Variant(_, s) = &args[i]
                    && Version::parse(s).is_none()
                {
                    path.push(Step::Index(i));
                    cx.report.rule(path, Part::Value, format!("{s:?} is not a semantic version"));
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn reference(args: &Value, path: &mut [Step], cx: &mut Cx<'_, '_>, returned: Returned, depth: usize) -> Node {
    let Some(name) = args.as_str() else {
        cx.report.rule(path, Part::Value, format!("\"$ref\" names an evaluator with a string, not {}", kind(args)));
        cx.unusable.get_or_insert_with(|| "a \"$ref\" is not a string".into());
        return Node::Null;
    };
    let Some(rule) = cx.evaluators.get(name) else {
        let mut known: Vec<&str> = cx.evaluators.keys().map(String::as_str).collect();
        known.sort_unstable();
        let hint =
            if known.is_empty() { "there are none".to_owned() } else { format!("there are {}", known.join(", ")) };
        cx.report.rule(path, Part::Value, format!("\"$ref\" to an unknown evaluator {name:?} ({hint})"));
        cx.unusable.get_or_insert_with(|| format!("the targeting refers to the unknown evaluator {name:?}"));
        return Node::Null;
    };
    if cx.refs.iter().any(|r| r == name) {
        cx.report.rule(path, Part::Value, format!("evaluator {name:?} refers to itself"));
        cx.unusable.get_or_insert_with(|| format!("evaluator {name:?} refers to itself"));
        return Node::Null;
    }
    // The evaluator is compiled in place (its literals interned for this flag); its own
    // mistakes were reported where it is defined, so only this flag's are kept here.
    let mut inner = vec![Step::Key("$evaluators".into()), Step::Key(name.to_owned())];
    cx.refs.push(name.to_owned());
    let n = node(rule, &mut inner, cx, returned, depth + 1);
    cx.refs.pop();
    n
}

fn var(args: &Value, path: &mut Vec<Step>, cx: &mut Cx<'_, '_>, depth: usize) -> Node {
    let (items, is_array) = args_of(args);
    let default = items.get(1).map(|d| {
        path.push(Step::Index(1));
        let n = node(d, path, cx, Returned::No, depth + 1);
        path.pop();
        n
    });
    let steps = |s: &str| -> Path {
        if s.is_empty() { Path::Steps(Box::new([])) } else { Path::Steps(s.split('.').map(Seg::new).collect()) }
    };
    let path_node = match items.first() {
        Some(Value::String(s)) if s == "$flagd.flagKey" && default.is_none() => return Node::FlagKey,
        Some(Value::String(s)) if s == "$flagd.timestamp" && default.is_none() => return Node::Timestamp,
        None | Some(Value::Null) => Path::Steps(Box::new([])),
        Some(Value::String(s)) => steps(s),
        Some(Value::Number(n)) => steps(&n.to_string()),
        Some(other) => {
            if is_array {
                path.push(Step::Index(0));
            }
            let n = node(other, path, cx, Returned::No, depth + 1);
            if is_array {
                path.pop();
            }
            Path::Computed(n)
        }
    };
    Node::Var(Box::new(Var { path: path_node, default }))
}

fn fractional(args: &Value, path: &mut Vec<Step>, cx: &mut Cx<'_, '_>, returned: Returned, depth: usize) -> Node {
    let Value::Array(items) = args else {
        cx.report.rule(
            path,
            Part::Value,
            "fractional takes an array: an optional bucketing value, then [variant, weight] buckets".into(),
        );
        return Node::Fractional(Box::new(Fractional::new(None, Vec::new(), true)));
    };
    let mut malformed = false;
    let mut bucket_by = None;
    let mut buckets = Vec::new();
    let mut literal_total: u64 = 0;
    for (i, item) in items.iter().enumerate() {
        path.push(Step::Index(i));
        match item {
            Value::Array(bucket) => {
                let variant = match bucket.first() {
                    Some(name) => {
                        path.push(Step::Index(0));
                        if matches!(name, Value::Array(_)) || (matches!(name, Value::Object(o) if o.len() != 1)) {
                            cx.report.rule(
                                path,
                                Part::Value,
                                "a bucket's variant must be a string (or an expression giving one)".into(),
                            );
                            malformed = true;
                        }
                        let n = node(name, path, cx, returned, depth + 2);
                        path.pop();
                        n
                    }
                    None => {
                        cx.report.rule(
                            path,
                            Part::Value,
                            "a fractional bucket needs a variant: [variant, weight]".into(),
                        );
                        malformed = true;
                        Node::Null
                    }
                };
                let weight = bucket.get(1).map(|w| {
                    path.push(Step::Index(1));
                    match w {
                        Value::Number(n) => {
                            let x = n.as_f64().unwrap_or(f64::NAN);
                            if x.fract() != 0.0 || x.is_nan() {
                                cx.report.rule(
                                    path,
                                    Part::Value,
                                    format!("fractional weight {n} is not a whole number"),
                                );
                            } else if x > f64::from(i32::MAX) {
                                cx.report.rule(
                                    path,
                                    Part::Value,
                                    format!("fractional weight {n} is more than {}", i32::MAX),
                                );
                            } else if x > 0.0 {
                                literal_total += x as u64;
                            }
                        }
                        Value::Null | Value::Object(_) => {}
                        other => cx.report.rule(
                            path,
                            Part::Value,
                            format!("a fractional weight must be a whole number, not {}", kind(other)),
                        ),
                    }
                    let n = node(w, path, cx, Returned::No, depth + 2);
                    path.pop();
                    n
                });
                buckets.push((variant, weight));
            }
            _ if i == 0 => bucket_by = Some(node(item, path, cx, Returned::No, depth + 1)),
            other => {
                cx.report.rule(
                    path,
                    Part::Value,
                    format!("a fractional bucket must be an array [variant, weight], not {}", kind(other)),
                );
                malformed = true;
            }
        }
        path.pop();
    }
    if buckets.is_empty() {
        cx.report.rule(path, Part::Key, "fractional needs at least one bucket [variant, weight]".into());
    }
    if literal_total > i32::MAX as u64 {
        cx.report.rule(
            path,
            Part::Key,
            format!("the fractional weights add up to {literal_total}, more than {}", i32::MAX),
        );
    }
    Node::Fractional(Box::new(Fractional::new(bucket_by, buckets, malformed)))
}

/// Compiles a rule on its own (no variants, no evaluators) for the evaluator's tests.
#[cfg(test)]
pub(crate) fn rule_for_tests(rule: &Value) -> Node {
    let at = Locator::new("test", None);
    let mut report = Report { at: &at, fatal: Vec::new(), rules: Vec::new() };
    let evaluators = Map::new();
    let mut cx =
        Cx { report: &mut report, evaluators: &evaluators, variants: &[], flag: "", refs: Vec::new(), unusable: None };
    let node = node(rule, &mut Vec::new(), &mut cx, Returned::No, 0);
    assert!(cx.unusable.is_none(), "{:?}", report.rules);
    node
}
