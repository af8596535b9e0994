//! JSON Logic, compiled: a rule is read once into a [`Node`] tree whose operators are
//! an enum, whose `var` paths are split into steps and whose string literals naming one
//! of the flag's variants carry that variant's index. Evaluating it borrows everything
//! it returns from the rule or the context ([`Val`]); only operators that build new
//! strings or lists (`cat`, `substr`, `merge`, `map`, `filter`, `missing`) allocate.
//!
//! The semantics are json-logic-js's, as flagd's evaluators implement them: JavaScript
//! truthiness and loose equality, numbers as `f64`, `if` chains, `var` with dotted paths
//! and defaults; plus flagd's `fractional`, `sem_ver`, `starts_with` and `ends_with`,
//! which return `null` (so the flag's default variant applies) on any bad input.

use crate::murmur::Murmur3;
use crate::semver::{SemverOp, Version};
use serde_json::Value;

/// A compiled JSON Logic expression.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Num(f64),
    Str(Box<str>),
    /// A string literal that is the name of one of the flag's variants (by index).
    Variant(u32, Box<str>),
    /// A literal array or object with no expression inside, kept as it was written.
    Json(Value),
    /// An array with expressions among its items.
    Array(Box<[Node]>),
    Var(Box<Var>),
    /// `{"var": "$flagd.flagKey"}`: the key of the flag being evaluated. flagd sets
    /// `$flagd` in the context itself, replacing whatever the caller put there.
    FlagKey,
    /// `{"var": "$flagd.timestamp"}`: the evaluation's time, in seconds since the epoch.
    Timestamp,
    Op(Op, Box<[Node]>),
    Fractional(Box<Fractional>),
}

/// `{"var": path}` or `{"var": [path, default]}`.
#[derive(Debug, Clone)]
pub(crate) struct Var {
    pub(crate) path: Path,
    pub(crate) default: Option<Node>,
}

#[derive(Debug, Clone)]
pub(crate) enum Path {
    /// A path known when the rule is read, split at its dots.
    Steps(Box<[Seg]>),
    /// A path computed by an expression.
    Computed(Node),
}

/// One step of a `var` path: an object key, which is also an array index when it is a number.
#[derive(Debug, Clone)]
pub(crate) struct Seg {
    pub(crate) key: Box<str>,
    pub(crate) index: Option<usize>,
}

impl Seg {
    pub(crate) fn new(key: &str) -> Seg {
        Seg { key: key.into(), index: key.parse().ok() }
    }
}

/// `{"fractional": [bucket_by?, [variant, weight?], …]}`.
#[derive(Debug, Clone)]
pub(crate) struct Fractional {
    /// The expression whose string value is hashed; absent when the first argument is
    /// already a bucket, in which case the flag key and the targeting key are hashed.
    pub(crate) bucket_by: Option<Node>,
    pub(crate) buckets: Box<[(Node, Option<Node>)]>,
    /// The operation is malformed (an argument that is no bucket): it evaluates to null.
    pub(crate) malformed: bool,
    /// When no weight is an expression: the weights as flagd reads them (negative ones
    /// as 0) and their total, computed once; `None` also when one of them is invalid.
    pub(crate) fixed: Option<(Box<[u32]>, u64)>,
}

/// A weight as flagd reads it: absent or null is 1, a whole number from 0 (negative
/// numbers count as 0) to `i32::MAX`; anything else makes the operation null.
pub(crate) fn weight_of(w: Option<&Val<'_>>) -> Option<u32> {
    let w = match w {
        None | Some(Val::Null) => return Some(1),
        Some(Val::Num(n)) => *n,
        Some(_) => return None,
    };
    // `w as i64` saturates, so this is exact for every finite whole `w` in range.
    if w.is_nan() || (w as i64) as f64 != w || w > f64::from(i32::MAX) {
        return None;
    }
    Some(if w < 0.0 { 0 } else { w as u32 })
}

impl Fractional {
    pub(crate) fn new(bucket_by: Option<Node>, buckets: Vec<(Node, Option<Node>)>, malformed: bool) -> Fractional {
        let literal = |n: &Option<Node>| -> Option<Option<u32>> {
            match n {
                None | Some(Node::Null) => Some(weight_of(None)),
                Some(Node::Num(x)) => Some(weight_of(Some(&Val::Num(*x)))),
                Some(Node::Bool(_) | Node::Str(_) | Node::Variant(..) | Node::Json(_)) => Some(None),
                Some(_) => None,
            }
        };
        let mut fixed = Some((Vec::new(), 0u64));
        let mut malformed = malformed;
        for (_, w) in &buckets {
            match (literal(w), fixed.as_mut()) {
                (Some(Some(w)), Some((ws, total))) => {
                    ws.push(w);
                    *total += u64::from(w);
                }
                (Some(None), _) => malformed = true,
                (None, _) => fixed = None,
                (Some(Some(_)), None) => {}
            }
        }
        let fixed = fixed.map(|(ws, total)| (ws.into_boxed_slice(), total));
        Fractional { bucket_by, buckets: buckets.into(), malformed, fixed }
    }
}

/// How `fractional` maps a hash to a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Bucketing {
    /// flagd's current ("fractional v2") integer bucketing: `(hash * total_weight) >> 32`.
    #[default]
    HighPrecision,
    /// The legacy ("fractional v1") percentage: `|hash as i32| / i32::MAX * 100`
    /// against cumulative percentages, kept to read old assignments.
    LegacyPercent,
}

macro_rules! operators {
    ($($name:literal => $op:ident),* $(,)?) => {
        /// The operators a rule may use.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Op { $($op),* }

        impl Op {
            pub(crate) const NAMES: &'static [&'static str] = &[$($name),*];

            pub(crate) fn from_name(name: &str) -> Option<Op> {
                match name { $($name => Some(Op::$op),)* _ => None }
            }
        }
    };
}

// `var`, `fractional` and `$ref` are read by the compiler itself.
operators! {
    "if" => If, "?:" => Ternary, "==" => Eq, "===" => StrictEq, "!=" => Ne, "!==" => StrictNe,
    "!" => Not, "!!" => Truthy, "or" => Or, "and" => And,
    ">" => Gt, ">=" => Ge, "<" => Lt, "<=" => Le, "max" => Max, "min" => Min,
    "+" => Add, "-" => Sub, "*" => Mul, "/" => Div, "%" => Mod,
    "map" => Map, "filter" => Filter, "reduce" => Reduce, "all" => All, "none" => NoneOf, "some" => Some,
    "merge" => Merge, "in" => In, "cat" => Cat, "substr" => Substr,
    "missing" => Missing, "missing_some" => MissingSome, "log" => Log,
    "starts_with" => StartsWith, "ends_with" => EndsWith, "sem_ver" => SemVer,
}

/// A value met while evaluating: borrowed from the rule or the context where it can be.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    /// A string that names one of the flag's variants, by index.
    Variant(u32, &'a str),
    String(String),
    /// An array or an object from the rule or the context.
    Json(&'a Value),
    List(Vec<Val<'a>>),
}

impl<'a> Val<'a> {
    pub(crate) fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Val::Str(s),
            Value::Array(_) | Value::Object(_) => Val::Json(v),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) | Val::Variant(_, s) => Some(s),
            Val::String(s) => Some(s),
            _ => None,
        }
    }

    /// JavaScript's truthiness.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(n) => *n != 0.0 && !n.is_nan(),
            Val::Str(s) | Val::Variant(_, s) => !s.is_empty(),
            Val::String(s) => !s.is_empty(),
            Val::Json(Value::Array(a)) => !a.is_empty(),
            Val::Json(_) => true,
            Val::List(l) => !l.is_empty(),
        }
    }

    /// JavaScript's `Number(x)`.
    fn number(&self) -> f64 {
        match self {
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Num(n) => *n,
            Val::Str(_) | Val::Variant(..) | Val::String(_) => {
                let s = self.as_str().unwrap_or("").trim();
                if s.is_empty() { 0.0 } else { s.parse().unwrap_or(f64::NAN) }
            }
            Val::Json(Value::Array(a)) => match a.as_slice() {
                [] => 0.0,
                [one] => Val::from_json(one).number(),
                _ => f64::NAN,
            },
            Val::List(l) => match l.as_slice() {
                [] => 0.0,
                [one] => one.number(),
                _ => f64::NAN,
            },
            Val::Json(_) => f64::NAN,
        }
    }

    fn items<'v>(&'v self) -> Option<Items<'v, 'a>> {
        match self {
            Val::Json(Value::Array(a)) => Some(Items::Json(a.as_slice())),
            Val::List(l) => Some(Items::List(l)),
            _ => None,
        }
    }

    /// The value as JSON, for a result that is neither a variant name nor null.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => serde_json::Number::from_f64(*n).map(Value::Number).unwrap_or(Value::Null),
            Val::Str(s) | Val::Variant(_, s) => Value::String((*s).to_owned()),
            Val::String(s) => Value::String(s.clone()),
            Val::Json(v) => (*v).clone(),
            Val::List(l) => Value::Array(l.iter().map(Val::to_json).collect()),
        }
    }

    /// Writes JavaScript's `String(x)` of a scalar (`cat`, and a result read as a variant name).
    pub(crate) fn write_str(&self, out: &mut impl std::fmt::Write) {
        let _ = match self {
            Val::Null => Ok(()),
            Val::Bool(b) => out.write_str(if *b { "true" } else { "false" }),
            Val::Num(n) => write_number(out, *n),
            Val::Str(s) | Val::Variant(_, s) => out.write_str(s),
            Val::String(s) => out.write_str(s),
            Val::Json(Value::Array(a)) => {
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        let _ = out.write_char(',');
                    }
                    Val::from_json(item).write_str(out);
                }
                Ok(())
            }
            Val::List(l) => {
                for (i, item) in l.iter().enumerate() {
                    if i > 0 {
                        let _ = out.write_char(',');
                    }
                    item.write_str(out);
                }
                Ok(())
            }
            Val::Json(_) => out.write_str("[object Object]"),
        };
    }
}

/// Numbers as JavaScript and Go print them for whole values (`2`, not `2.0`).
pub(crate) fn write_number(out: &mut impl std::fmt::Write, n: f64) -> std::fmt::Result {
    if n.fract() == 0.0 && n.abs() < 1e21 {
        if n.abs() < 9.0e15 { write!(out, "{}", n as i64) } else { write!(out, "{n:.0}") }
    } else {
        write!(out, "{n}")
    }
}

enum Items<'v, 'a> {
    Json(&'a [Value]),
    List(&'v [Val<'a>]),
}

/// A fixed buffer that formats without allocating (numbers for hashing and variant names).
pub(crate) struct StackStr {
    buf: [u8; 64],
    len: usize,
    overflowed: bool,
}

impl StackStr {
    pub(crate) fn new() -> Self {
        StackStr { buf: [0; 64], len: 0, overflowed: false }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so the bytes are UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            self.overflowed = true;
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// What an evaluation reads besides the rule: the context and flagd's `$flagd` properties.
pub(crate) struct Env<'a> {
    pub(crate) data: &'a Value,
    pub(crate) flag_key: &'a str,
    pub(crate) timestamp: i64,
    pub(crate) bucketing: Bucketing,
}

/// What `var` reads: the whole context, or inside `map`/`filter`/`reduce` the current item.
#[derive(Clone, Copy)]
enum Scope<'s, 'a> {
    Root,
    Item(&'s Val<'a>),
    Reduce { current: &'s Val<'a>, accumulator: &'s Val<'a> },
}

/// Nesting of `map`/`filter`/`reduce` and computed `var` paths is bounded by the rule's
/// depth, which the compiler bounds; evaluation itself needs no other limit.
pub(crate) fn eval<'a>(node: &'a Node, env: &Env<'a>) -> Val<'a> {
    eval_in(node, env, Scope::Root)
}

fn eval_in<'a>(node: &'a Node, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match node {
        Node::Null => Val::Null,
        Node::Bool(b) => Val::Bool(*b),
        Node::Num(n) => Val::Num(*n),
        Node::Str(s) => Val::Str(s),
        Node::Variant(i, s) => Val::Variant(*i, s),
        Node::Json(v) => Val::from_json(v),
        Node::Array(items) => Val::List(items.iter().map(|n| eval_in(n, env, scope)).collect()),
        Node::Var(var) => eval_var(var, env, scope),
        Node::FlagKey => Val::Str(env.flag_key),
        Node::Timestamp => Val::Num(env.timestamp as f64),
        Node::Op(op, args) => eval_op(*op, args, env, scope),
        Node::Fractional(f) => eval_fractional(f, env, scope),
    }
}

fn eval_var<'a>(var: &'a Var, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let found = match &var.path {
        Path::Steps(steps) => lookup(steps.iter().map(|s| (&*s.key, s.index)), env, scope),
        Path::Computed(node) => {
            let path = eval_in(node, env, scope);
            let mut text = String::new();
            path.write_str(&mut text);
            if text.is_empty() {
                lookup(std::iter::empty(), env, scope)
            } else {
                let steps: Vec<(&str, Option<usize>)> = text.split('.').map(|s| (s, s.parse().ok())).collect();
                lookup(steps.into_iter(), env, scope)
            }
        }
    };
    match (&found, &var.default) {
        (Val::Null, Some(default)) => eval_in(default, env, scope),
        _ => found,
    }
}

fn lookup<'p, 'a>(
    mut steps: impl Iterator<Item = (&'p str, Option<usize>)>,
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
) -> Val<'a> {
    let start: Val<'a> = match scope {
        Scope::Root => {
            let mut steps = steps.peekable();
            if steps.peek().map(|s| s.0) == Some("$flagd") {
                steps.next();
                return match (steps.next(), steps.next()) {
                    (Some(("flagKey", _)), None) => Val::Str(env.flag_key),
                    (Some(("timestamp", _)), None) => Val::Num(env.timestamp as f64),
                    _ => Val::Null,
                };
            }
            return walk_json(env.data, steps);
        }
        Scope::Item(item) => item.clone(),
        Scope::Reduce { current, accumulator } => match steps.next() {
            None => return Val::Null,
            Some(("current", _)) => current.clone(),
            Some(("accumulator", _)) => accumulator.clone(),
            Some(_) => return Val::Null,
        },
    };
    let mut at = start;
    for (key, index) in steps {
        at = match at {
            Val::Json(v) => match step_json(v, key, index) {
                Some(next) => Val::from_json(next),
                None => return Val::Null,
            },
            Val::List(l) => match index.and_then(|i| l.into_iter().nth(i)) {
                Some(next) => next,
                None => return Val::Null,
            },
            _ => return Val::Null,
        };
    }
    at
}

fn step_json<'a>(v: &'a Value, key: &str, index: Option<usize>) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => index.and_then(|i| a.get(i)),
        _ => None,
    }
}

fn walk_json<'p, 'a>(mut v: &'a Value, steps: impl Iterator<Item = (&'p str, Option<usize>)>) -> Val<'a> {
    for (key, index) in steps {
        match step_json(v, key, index) {
            Some(next) => v = next,
            None => return Val::Null,
        }
    }
    Val::from_json(v)
}

fn arg<'a>(args: &'a [Node], i: usize, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    args.get(i).map_or(Val::Null, |n| eval_in(n, env, scope))
}

fn eval_op<'a>(op: Op, args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let ev = |i: usize| arg(args, i, env, scope);
    match op {
        Op::If | Op::Ternary => {
            let mut i = 0;
            while i + 1 < args.len() {
                if ev(i).truthy() {
                    return ev(i + 1);
                }
                i += 2;
            }
            if i < args.len() { ev(i) } else { Val::Null }
        }
        Op::Eq => Val::Bool(loose_eq(&ev(0), &ev(1))),
        Op::Ne => Val::Bool(!loose_eq(&ev(0), &ev(1))),
        Op::StrictEq => Val::Bool(strict_eq(&ev(0), &ev(1))),
        Op::StrictNe => Val::Bool(!strict_eq(&ev(0), &ev(1))),
        Op::Not => Val::Bool(!ev(0).truthy()),
        Op::Truthy => Val::Bool(ev(0).truthy()),
        Op::Or => {
            let mut last = Val::Null;
            for n in args {
                last = eval_in(n, env, scope);
                if last.truthy() {
                    return last;
                }
            }
            last
        }
        Op::And => {
            let mut last = Val::Null;
            for n in args {
                last = eval_in(n, env, scope);
                if !last.truthy() {
                    return last;
                }
            }
            last
        }
        Op::Gt => Val::Bool(less(&ev(1), &ev(0), false)),
        Op::Ge => Val::Bool(less(&ev(1), &ev(0), true)),
        Op::Lt | Op::Le => {
            let or_equal = op == Op::Le;
            let (a, b) = (ev(0), ev(1));
            let first = less(&a, &b, or_equal);
            if args.len() == 3 { Val::Bool(first && less(&b, &ev(2), or_equal)) } else { Val::Bool(first) }
        }
        Op::Max | Op::Min => {
            let mut best: Option<f64> = None;
            for n in args {
                let x = eval_in(n, env, scope).number();
                if x.is_nan() {
                    return Val::Null;
                }
                best = Some(match best {
                    None => x,
                    Some(b) if op == Op::Max => b.max(x),
                    Some(b) => b.min(x),
                });
            }
            best.map_or(Val::Null, Val::Num)
        }
        Op::Add => Val::Num(args.iter().map(|n| eval_in(n, env, scope).number()).sum()),
        Op::Mul => Val::Num(args.iter().map(|n| eval_in(n, env, scope).number()).product()),
        Op::Sub => match args.len() {
            0 => Val::Null,
            1 => Val::Num(-ev(0).number()),
            _ => Val::Num(ev(0).number() - ev(1).number()),
        },
        Op::Div => Val::Num(ev(0).number() / ev(1).number()),
        Op::Mod => Val::Num(ev(0).number() % ev(1).number()),
        Op::Map | Op::Filter | Op::All | Op::NoneOf | Op::Some => each(op, args, env, scope),
        Op::Reduce => reduce(args, env, scope),
        Op::Merge => merge(args, env, scope),
        Op::In => in_op(args, env, scope),
        Op::Cat => cat(args, env, scope),
        Op::Substr => substr(&ev(0), args.get(1).map(|_| ev(1).number()), args.get(2).map(|_| ev(2).number())),
        Op::Missing => missing(args, env, scope),
        Op::MissingSome => {
            let need = ev(0).number();
            let keys = ev(1);
            let (missing, total) = missing_of(&keys, env, scope);
            if (total - missing.len()) as f64 >= need { Val::List(Vec::new()) } else { Val::List(missing) }
        }
        Op::Log => ev(0),
        Op::StartsWith | Op::EndsWith => {
            if args.len() != 2 {
                return Val::Null;
            }
            let (a, b) = (ev(0), ev(1));
            match (a.as_str(), b.as_str()) {
                (Some(s), Some(t)) if op == Op::StartsWith => Val::Bool(s.starts_with(t)),
                (Some(s), Some(t)) => Val::Bool(s.ends_with(t)),
                _ => Val::Null,
            }
        }
        Op::SemVer => sem_ver(args, env, scope),
    }
}

#[inline(never)]
fn sem_ver<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let ev = |i: usize| arg(args, i, env, scope);
    if args.len() != 3 {
        return Val::Null;
    }
    let (a, o, b) = (ev(0), ev(1), ev(2));
    let (mut sa, mut sb) = (StackStr::new(), StackStr::new());
    let (Some(va), Some(vb)) = (version(&a, &mut sa), version(&b, &mut sb)) else {
        return Val::Null;
    };
    match o.as_str().and_then(SemverOp::parse) {
        Some(op) => Val::Bool(op.holds(&va, &vb)),
        None => Val::Null,
    }
}

#[inline(never)]
fn in_op<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let ev = |i: usize| arg(args, i, env, scope);
    let _ = &ev;
    let (needle, hay) = (ev(0), ev(1));
    Val::Bool(match hay.items() {
        Some(Items::Json(a)) => a.iter().any(|x| strict_eq(&needle, &Val::from_json(x))),
        Some(Items::List(l)) => l.iter().any(|x| strict_eq(&needle, x)),
        None => match (hay.as_str(), needle.as_str()) {
            (Some(h), Some(n)) => h.contains(n),
            (Some(h), None) if !matches!(needle, Val::Json(_) | Val::List(_)) => {
                let mut s = StackStr::new();
                needle.write_str(&mut s);
                h.contains(s.as_str())
            }
            _ => false,
        },
    })
}

#[inline(never)]
fn merge<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let ev = |i: usize| arg(args, i, env, scope);
    let _ = &ev;
    let mut out = Vec::new();
    for n in args {
        match eval_in(n, env, scope) {
            Val::Json(Value::Array(a)) => out.extend(a.iter().map(Val::from_json)),
            Val::List(l) => out.extend(l),
            other => out.push(other),
        }
    }
    Val::List(out)
}

#[inline(never)]
fn cat<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let mut out = String::new();
    for n in args {
        eval_in(n, env, scope).write_str(&mut out);
    }
    Val::String(out)
}

/// A version from a string or, as flagd prints it, a number.
fn version<'v>(v: &'v Val<'_>, buf: &'v mut StackStr) -> Option<Version<'v>> {
    match v {
        Val::Num(n) => {
            write_number(buf, *n).ok()?;
            Version::parse(buf.as_str())
        }
        _ => Version::parse(v.as_str()?),
    }
}

#[inline(never)]
fn each<'a>(op: Op, args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let list = arg(args, 0, env, scope);
    let Some(rule) = args.get(1) else { return Val::Null };
    let items: Vec<Val<'a>> = match list.items() {
        Some(Items::Json(a)) => a.iter().map(Val::from_json).collect(),
        Some(Items::List(l)) => l.to_vec(),
        None => Vec::new(),
    };
    let test = |item: &Val<'a>| eval_in(rule, env, Scope::Item(item)).truthy();
    match op {
        Op::Map => Val::List(items.iter().map(|item| eval_in(rule, env, Scope::Item(item))).collect()),
        Op::Filter => Val::List(items.iter().filter(|i| test(i)).cloned().collect()),
        Op::All => Val::Bool(!items.is_empty() && items.iter().all(test)),
        Op::NoneOf => Val::Bool(!items.iter().any(test)),
        _ => Val::Bool(items.iter().any(test)),
    }
}

#[inline(never)]
fn reduce<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let list = arg(args, 0, env, scope);
    let mut acc = arg(args, 2, env, scope);
    let Some(rule) = args.get(1) else { return acc };
    let items: Vec<Val<'a>> = match list.items() {
        Some(Items::Json(a)) => a.iter().map(Val::from_json).collect(),
        Some(Items::List(l)) => l.to_vec(),
        None => return acc,
    };
    for item in &items {
        acc = eval_in(rule, env, Scope::Reduce { current: item, accumulator: &acc });
    }
    acc
}

#[inline(never)]
fn missing<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    // `{"missing": [[…keys]]}` (e.g. from `merge`) or `{"missing": ["a", "b"]}`.
    let first = arg(args, 0, env, scope);
    if first.items().is_some() {
        return Val::List(missing_of(&first, env, scope).0);
    }
    let keys = Val::List(args.iter().map(|n| eval_in(n, env, scope)).collect());
    Val::List(missing_of(&keys, env, scope).0)
}

/// The keys among `keys` whose value is null or empty, and how many keys there were.
fn missing_of<'a>(keys: &Val<'a>, env: &Env<'a>, scope: Scope<'_, 'a>) -> (Vec<Val<'a>>, usize) {
    let keys: Vec<Val<'a>> = match keys.items() {
        Some(Items::Json(a)) => a.iter().map(Val::from_json).collect(),
        Some(Items::List(l)) => l.to_vec(),
        None => return (Vec::new(), 0),
    };
    let total = keys.len();
    let mut out = Vec::new();
    for key in keys {
        let mut text = String::new();
        key.write_str(&mut text);
        let found = lookup(text.split('.').map(|s| (s, s.parse().ok())), env, scope);
        let absent = match &found {
            Val::Null => true,
            v => v.as_str() == Some(""),
        };
        if absent {
            out.push(Val::String(text));
        }
    }
    (out, total)
}

#[inline(never)]
fn substr<'a>(s: &Val<'a>, start: Option<f64>, len: Option<f64>) -> Val<'a> {
    let mut text = String::new();
    s.write_str(&mut text);
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len() as f64;
    let start = start.unwrap_or(0.0);
    let start = if start.is_nan() { 0.0 } else { start.trunc() };
    let from = if start < 0.0 { (n + start).max(0.0) } else { start.min(n) } as usize;
    let to = match len {
        None => chars.len(),
        Some(l) if l.is_nan() => from,
        Some(l) if l < 0.0 => ((n + l.trunc()).max(from as f64)) as usize,
        Some(l) => ((from as f64 + l.trunc()).min(n)) as usize,
    };
    Val::String(chars[from..to.max(from)].iter().collect())
}

/// JavaScript's `==` for the values JSON has.
fn loose_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Null, _) | (_, Val::Null) => false,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Json(x), Val::Json(y)) => std::ptr::eq(*x, *y),
        (Val::Json(_) | Val::List(_), _) | (_, Val::Json(_) | Val::List(_)) => {
            // An array compares as its string form; an object never equals a primitive.
            let composite_is_object =
                matches!(a, Val::Json(Value::Object(_))) || matches!(b, Val::Json(Value::Object(_)));
            if composite_is_object
                || (matches!(a, Val::Json(_) | Val::List(_)) && matches!(b, Val::Json(_) | Val::List(_)))
            {
                return false;
            }
            let (mut sa, mut sb) = (String::new(), String::new());
            a.write_str(&mut sa);
            b.write_str(&mut sb);
            loose_eq(&Val::Str(&sa), &Val::Str(&sb)) || {
                let (x, y) = (Val::Str(&sa).number(), b.number());
                let (x2, y2) = (a.number(), Val::Str(&sb).number());
                (matches!(b, Val::Num(_) | Val::Bool(_)) && x == y)
                    || (matches!(a, Val::Num(_) | Val::Bool(_)) && x2 == y2)
            }
        }
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x == y,
            _ => a.number() == b.number(),
        },
    }
}

/// JavaScript's `===`.
fn strict_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Json(x), Val::Json(y)) => std::ptr::eq(*x, *y),
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// JavaScript's `<` (or `<=`): strings compare as strings, anything else as numbers.
fn less(a: &Val<'_>, b: &Val<'_>, or_equal: bool) -> bool {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        return if or_equal { x <= y } else { x < y };
    }
    let (x, y) = (a.number(), b.number());
    if or_equal { x <= y } else { x < y }
}

#[inline(never)]
fn eval_fractional<'a>(f: &'a Fractional, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    if f.malformed || f.buckets.is_empty() {
        return Val::Null;
    }
    let mut hasher = Murmur3::new();
    let explicit = match &f.bucket_by {
        // `cat` is hashed piece by piece, so the usual `{"cat": [flagKey, id]}` allocates nothing.
        Some(Node::Op(Op::Cat, parts)) => {
            for part in parts.iter() {
                hash_str(&mut hasher, &eval_in(part, env, scope));
            }
            true
        }
        Some(node) => match eval_in(node, env, scope) {
            Val::Null => false,
            v => match v.as_str() {
                Some(s) => {
                    hasher.write(s.as_bytes());
                    true
                }
                // flagd then reads the value as a bucket, which it is not.
                None => return Val::Null,
            },
        },
        None => false,
    };
    if !explicit {
        let key = match env.data.get("targetingKey") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => return Val::Null,
        };
        hasher.write(env.flag_key.as_bytes());
        hasher.write(key.as_bytes());
    }
    let hash = hasher.finish();

    // Weights are whole numbers from 0 to i32::MAX, and so is their sum; anything else
    // makes the whole operation null, as in flagd.
    let computed: Vec<u32>;
    let (weights, total): (&[u32], u64) = match &f.fixed {
        Some((weights, total)) => (weights, *total),
        None => {
            let mut ws = Vec::with_capacity(f.buckets.len());
            for (_, w) in f.buckets.iter() {
                let w = w.as_ref().map(|w| eval_in(w, env, scope));
                match weight_of(w.as_ref()) {
                    Some(w) => ws.push(w),
                    None => return Val::Null,
                }
            }
            computed = ws;
            (&computed, computed.iter().map(|w| u64::from(*w)).sum())
        }
    };
    if total > i32::MAX as u64 || total == 0 {
        return Val::Null;
    }
    let chosen = match env.bucketing {
        Bucketing::HighPrecision => {
            let bucket = (u64::from(hash) * total) >> 32;
            let mut end = 0u64;
            weights.iter().position(|w| {
                end += u64::from(*w);
                bucket < end
            })
        }
        Bucketing::LegacyPercent => {
            let bucket = f64::from(hash as i32).abs() / f64::from(i32::MAX) * 100.0;
            let mut end = 0.0;
            weights.iter().position(|w| {
                end += 100.0 * f64::from(*w) / total as f64;
                bucket < end
            })
        }
    };
    let Some(chosen) = chosen else { return Val::Null };
    match eval_in(&f.buckets[chosen].0, env, scope) {
        v @ (Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_) | Val::Variant(..) | Val::String(_)) => v,
        _ => Val::Null,
    }
}

fn hash_str(hasher: &mut Murmur3, v: &Val<'_>) {
    match v.as_str() {
        Some(s) => hasher.write(s.as_bytes()),
        None => {
            let mut buf = StackStr::new();
            v.write_str(&mut buf);
            if buf.overflowed {
                // Too long for the buffer (a composite): hash its full text.
                let mut s = String::new();
                v.write_str(&mut s);
                hasher.write(s.as_bytes());
            } else {
                hasher.write(buf.as_str().as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval_json(rule: Value, data: Value) -> Value {
        let node = crate::compile::rule_for_tests(&rule);
        let env = Env { data: &data, flag_key: "my-flag", timestamp: 1_700_000_000, bucketing: Bucketing::default() };
        eval(&node, &env).to_json()
    }

    /// json-logic-js's answers for the operators flag rules use.
    #[test]
    fn operators_answer_as_json_logic_js_does() {
        let data = json!({"a": {"b": 2}, "list": [10, 20], "x": 1, "s": "hello"});
        let cases = [
            (json!({"==": [1, "1"]}), json!(true)),
            (json!({"===": [1, "1"]}), json!(false)),
            (json!({"==": [0, false]}), json!(true)),
            (json!({"==": [null, 0]}), json!(false)),
            (json!({"!=": ["a", "b"]}), json!(true)),
            (json!({"<": [1, 2, 3]}), json!(true)),
            (json!({"<": [1, 1, 3]}), json!(false)),
            (json!({"<=": [1, 1, 3]}), json!(true)),
            (json!({">": ["b", "a"]}), json!(true)),
            (json!({">=": [{"var": "x"}, 1]}), json!(true)),
            (json!({"+": ["1", 1]}), json!(2.0)),
            (json!({"-": [5]}), json!(-5.0)),
            (json!({"*": [2, "3"]}), json!(6.0)),
            (json!({"/": [1, 4]}), json!(0.25)),
            (json!({"%": [7, 3]}), json!(1.0)),
            (json!({"max": [1, 3, 2]}), json!(3.0)),
            (json!({"min": []}), json!(null)),
            (json!({"!": [[]]}), json!(true)),
            (json!({"!!": ["0"]}), json!(true)),
            (json!({"or": [0, "", "x"]}), json!("x")),
            (json!({"and": [1, 0, 2]}), json!(0.0)),
            (json!({"if": [false, 1, false, 2, 3]}), json!(3.0)),
            (json!({"if": [false, 1]}), json!(null)),
            (json!({"?:": [true, "y", "n"]}), json!("y")),
            (json!({"in": ["ell", {"var": "s"}]}), json!(true)),
            (json!({"in": ["b", ["a", "b"]]}), json!(true)),
            (json!({"cat": ["a", 1, null, true, 2.5]}), json!("a1true2.5")),
            (json!({"substr": ["jsonlogic", 4]}), json!("logic")),
            (json!({"substr": ["jsonlogic", -5]}), json!("logic")),
            (json!({"substr": ["jsonlogic", 1, 3]}), json!("son")),
            (json!({"substr": ["jsonlogic", 4, -2]}), json!("log")),
            (json!({"merge": [[1, 2], [3], 4]}), json!([1.0, 2.0, 3.0, 4.0])),
            (json!({"map": [[1, 2, 3], {"*": [{"var": ""}, 2]}]}), json!([2.0, 4.0, 6.0])),
            (json!({"filter": [{"var": "list"}, {">": [{"var": ""}, 15]}]}), json!([20.0])),
            (json!({"reduce": [[1, 2, 3], {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}), json!(6.0)),
            (json!({"all": [[1, 2], {">": [{"var": ""}, 0]}]}), json!(true)),
            (json!({"all": [[], {">": [{"var": ""}, 0]}]}), json!(false)),
            (json!({"none": [[1], {">": [{"var": ""}, 5]}]}), json!(true)),
            (json!({"some": [[1, 9], {">": [{"var": ""}, 5]}]}), json!(true)),
            (json!({"missing": ["a", "zz"]}), json!(["zz"])),
            (json!({"missing_some": [1, ["a", "zz"]]}), json!([])),
            (json!({"missing_some": [2, ["a", "zz"]]}), json!(["zz"])),
            (json!({"var": "a.b"}), json!(2.0)),
            (json!({"var": ["nope", 5]}), json!(5.0)),
            (json!({"var": "list.1"}), json!(20.0)),
            (json!({"var": {"cat": ["a", ".b"]}}), json!(2.0)),
            (json!({"var": "$flagd.flagKey"}), json!("my-flag")),
            (json!({"var": "$flagd.timestamp"}), json!(1_700_000_000.0)),
            (json!({"sem_ver": ["1.2.3", "^", "1.0.0"]}), json!(true)),
            (json!({"sem_ver": [1.2, ">", "1.1.9"]}), json!(true)),
            (json!({"starts_with": [{"var": "x"}, "ab"]}), json!(null)),
            (json!({"ends_with": [{"var": "s"}, "llo"]}), json!(true)),
            (json!({"fractional": [["only", 1]]}), json!(null)),
            (json!({"fractional": ["key", ["only", 1]]}), json!("only")),
            (json!({"fractional": ["key", ["a", 1.5], ["b", 1]]}), json!(null)),
        ];
        for (rule, expected) in cases {
            let got = eval_json(rule.clone(), data.clone());
            let same = match (&got, &expected) {
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                _ => got == expected,
            };
            assert!(same, "{rule}: {got} instead of {expected}");
        }
    }

    #[test]
    fn high_precision_buckets_split_keys_in_proportion_to_weights() {
        let rule = json!({"fractional": [{"var": "k"}, ["a", 1], ["b", 3]]});
        let mut counts = [0usize; 2];
        for i in 0..4000 {
            match eval_json(rule.clone(), json!({"k": format!("user-{i}")})).as_str() {
                Some("a") => counts[0] += 1,
                Some("b") => counts[1] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!((900..1100).contains(&counts[0]), "{counts:?}");
    }
}
