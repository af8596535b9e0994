//! Feature flags in the [flagd flag definition format]: a document is parsed once into
//! a [`FlagSet`], every mistake in it reported with its place, and each evaluation
//! follows the flagd specification (reasons, error codes, `fractional`, `sem_ver`,
//! `starts_with`, `ends_with`, `$evaluators` and `$ref`, `$flagd.flagKey` and
//! `$flagd.timestamp`).
//!
//! ```
//! use rollwave_flags::{Context, FlagSet, Reason};
//!
//! let set = FlagSet::parse("flags.json", r#"{"flags": {"checkout": {
//!     "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
//!     "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on"]}}}}"#)
//!     .unwrap();
//! let ctx = Context::from_value(&serde_json::json!({"email": "ada@example.com"})).unwrap();
//! let e = set.evaluate("checkout", &ctx);
//! assert_eq!((e.variant, e.reason), (Some("on"), Reason::TargetingMatch));
//! assert_eq!(e.value, Some(&serde_json::json!(true)));
//!
//! let broken = FlagSet::parse("flags.json", "{\"flags\": {\"x\": {\"state\": \"ON\"}}}").unwrap_err();
//! let lines: Vec<String> = broken.iter().map(|d| d.to_string()).collect();
//! assert_eq!(lines, [
//!     "flags.json:1:12: flag \"x\" has no \"variants\"",
//!     "flags.json:1:27: the state of flag \"x\" must be \"ENABLED\" or \"DISABLED\", not \"ON\"",
//! ]);
//! ```
//!
//! [flagd flag definition format]: https://flagd.dev/reference/flag-definitions/

mod compile;
mod logic;
mod murmur;
mod semver;
mod source;

pub use logic::Bucketing;

use logic::{Env, Node, StackStr, Val};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a: flag keys are short and chosen by the set's author, so a simple hash serves
/// lookups better than a DoS-resistant one.
#[derive(Default)]
struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A parsed flag set: every flag compiled, its variants interned, its metadata merged
/// with the set's. Immutable, `Send + Sync`, meant to be shared behind an `Arc`.
#[derive(Debug)]
pub struct FlagSet {
    /// Sorted by key.
    flags: Vec<Flag>,
    /// Each flag's position in `flags` by key, for lookups only (never iterated).
    index: HashMap<Box<str>, u32, BuildHasherDefault<Fnv1a>>,
    metadata: Map<String, Value>,
    evaluators: usize,
    bucketing: Bucketing,
    tolerated: Vec<Diagnostic>,
}

#[derive(Debug)]
struct Flag {
    key: Box<str>,
    state: State,
    /// Sorted by name, so that a variant is found by binary search and named by index.
    variants: Vec<(Box<str>, Value)>,
    default_variant: Option<u32>,
    targeting: Targeting,
    /// The set's metadata overlaid with the flag's own.
    metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Enabled,
    Disabled,
}

#[derive(Debug)]
enum Targeting {
    None,
    Rule(Node),
    /// A rule flagd cannot run (an unknown operator, a `$ref` to no evaluator): every
    /// evaluation is a `PARSE_ERROR`. Only kept under [`InvalidRules::EvaluateAsFlagd`].
    Unusable(String),
}

/// How [`FlagSet::parse_with`] treats targeting rules that cannot work as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InvalidRules {
    /// They are errors: the document is refused (what a release needs).
    #[default]
    Reject,
    /// They are kept and evaluate as flagd evaluates them (an unknown operator or
    /// `$ref` gives `PARSE_ERROR`, a bad `sem_ver` or `fractional` gives null and so the
    /// default variant, an unknown variant gives `GENERAL`); their diagnostics are
    /// available from [`FlagSet::tolerated`].
    EvaluateAsFlagd,
}

/// Choices for [`FlagSet::parse_with`]; [`FlagSet::parse`] uses the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    pub invalid_rules: InvalidRules,
    pub bucketing: Bucketing,
}

/// A mistake in a flag definition, at the place that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: String,
    /// 1-based; 0 for a document that had no text (see [`FlagSet::from_value`]).
    pub line: usize,
    /// 1-based; 0 when `line` is.
    pub col: usize,
    pub message: String,
    /// The JSON pointer of the offending key or value (`""` for the whole document).
    pub pointer: String,
}

impl fmt::Display for Diagnostic {
    /// `origin:line:col: message`, or `origin:pointer: message` when there is no text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}:{}: {}", self.origin, self.pointer, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.origin, self.line, self.col, self.message)
        }
    }
}

impl std::error::Error for Diagnostic {}

/// The evaluation context: an object of attributes (`targetingKey` among them) and the
/// time `$flagd.timestamp` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// Always an object.
    data: Value,
    timestamp: i64,
}

/// A context that is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextError {
    pub message: String,
}

impl ContextError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidContext
    }
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ContextError {}

impl Context {
    /// A context whose `$flagd.timestamp` is the time it is made.
    pub fn new(attributes: Map<String, Value>) -> Context {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Context { data: Value::Object(attributes), timestamp: now }
    }

    /// A context from JSON: an object, or null for an empty one.
    pub fn from_value(value: &Value) -> Result<Context, ContextError> {
        match value {
            Value::Object(m) => Ok(Context::new(m.clone())),
            Value::Null => Ok(Context::new(Map::new())),
            other => Err(ContextError { message: format!("the context must be a JSON object, not {}", kind(other)) }),
        }
    }

    /// The same context with `$flagd.timestamp` fixed (seconds since the Unix epoch).
    pub fn at(mut self, unix_seconds: i64) -> Context {
        self.timestamp = unix_seconds;
        self
    }

    pub fn targeting_key(&self) -> Option<&str> {
        self.data.get("targetingKey").and_then(Value::as_str)
    }

    pub fn attributes(&self) -> &Map<String, Value> {
        match &self.data {
            Value::Object(m) => m,
            // `data` is built from objects only.
            _ => unreachable!("a context is always an object"),
        }
    }
}

/// Why an evaluation gave what it gave (OpenFeature's resolution reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No targeting: the default variant.
    Static,
    /// The targeting rule named a variant.
    TargetingMatch,
    /// A `fractional` split chose the variant.
    Split,
    /// The targeting rule gave null: the default variant, or, when there is none, the
    /// caller's own default (no value).
    Default,
    /// The flag is disabled: the caller's own default (no value).
    Disabled,
    Error,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OpenFeature's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    FlagNotFound,
    ParseError,
    TypeMismatch,
    TargetingKeyMissing,
    InvalidContext,
    General,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type a caller expects a flag's value to have ([`FlagSet::evaluate_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Boolean,
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Float,
    Object,
}

impl ValueType {
    pub fn admits(self, value: &Value) -> bool {
        match self {
            ValueType::Boolean => value.is_boolean(),
            ValueType::String => value.is_string(),
            ValueType::Integer => value.is_i64() || value.is_u64(),
            ValueType::Float => value.is_number(),
            ValueType::Object => value.is_object(),
        }
    }
}

/// The outcome of one evaluation, borrowing from the flag set.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<'a> {
    /// The chosen variant's value; `None` when the caller's default applies.
    pub value: Option<&'a Value>,
    pub variant: Option<&'a str>,
    pub reason: Reason,
    pub error: Option<(ErrorCode, String)>,
    /// The flag set's metadata overlaid with the flag's, merged when the set was parsed.
    pub metadata: &'a Map<String, Value>,
}

impl<'a> Evaluation<'a> {
    fn failed(code: ErrorCode, message: String, metadata: &'a Map<String, Value>) -> Evaluation<'a> {
        Evaluation { value: None, variant: None, reason: Reason::Error, error: Some((code, message)), metadata }
    }

    /// The OFREP evaluation object: `key`, `value`, `variant`, `reason`, `metadata`, or
    /// `key`, `errorCode`, `errorDetails` for an error. An evaluation whose value is the
    /// caller's default (disabled, or no default variant) has no `value` or `variant`.
    pub fn to_ofrep(&self, key: &str) -> Value {
        let mut out = Map::new();
        out.insert("key".into(), Value::String(key.to_owned()));
        if let Some((code, details)) = &self.error {
            out.insert("errorCode".into(), Value::String(code.as_str().to_owned()));
            out.insert("errorDetails".into(), Value::String(details.clone()));
            return Value::Object(out);
        }
        if let Some(value) = self.value {
            out.insert("value".into(), value.clone());
        }
        if let Some(variant) = self.variant {
            out.insert("variant".into(), Value::String(variant.to_owned()));
        }
        out.insert("reason".into(), Value::String(self.reason.as_str().to_owned()));
        out.insert("metadata".into(), Value::Object(self.metadata.clone()));
        Value::Object(out)
    }
}

impl FlagSet {
    /// A flagd document, JSON or YAML; every error found, each with its place.
    pub fn parse(origin: &str, text: &str) -> Result<FlagSet, Vec<Diagnostic>> {
        FlagSet::parse_with(origin, text, ParseOptions::default())
    }

    /// [`FlagSet::parse`] with choices other than the defaults.
    pub fn parse_with(origin: &str, text: &str, options: ParseOptions) -> Result<FlagSet, Vec<Diagnostic>> {
        let (doc, tree) = source::parse(origin, text).map_err(|d| vec![d])?;
        compile::compile(&doc, &source::Locator::new(origin, Some(&tree)), options)
    }

    /// Parses a document's text (JSON or YAML) and gives it back as JSON beside its
    /// compiled form: what a flag release ships is the JSON, checked here with places.
    pub fn parse_document(origin: &str, text: &str) -> Result<(FlagSet, Value), Vec<Diagnostic>> {
        let (doc, tree) = source::parse(origin, text).map_err(|d| vec![d])?;
        let set = compile::compile(&doc, &source::Locator::new(origin, Some(&tree)), ParseOptions::default())?;
        Ok((set, doc))
    }

    /// The same from an already-parsed JSON document (places are then JSON pointers, line 0).
    pub fn from_value(origin: &str, doc: &Value) -> Result<FlagSet, Vec<Diagnostic>> {
        FlagSet::from_value_with(origin, doc, ParseOptions::default())
    }

    pub fn from_value_with(origin: &str, doc: &Value, options: ParseOptions) -> Result<FlagSet, Vec<Diagnostic>> {
        compile::compile(doc, &source::Locator::new(origin, None), options)
    }

    /// The flag keys, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(|f| &*f.key)
    }

    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// How many flags have a targeting rule.
    pub fn targeted(&self) -> usize {
        self.flags.iter().filter(|f| !matches!(f.targeting, Targeting::None)).count()
    }

    /// How many shared rules (`$evaluators`) the document defines.
    pub fn evaluators(&self) -> usize {
        self.evaluators
    }

    /// The flag set's own metadata.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// The diagnostics [`InvalidRules::EvaluateAsFlagd`] kept the set despite.
    pub fn tolerated(&self) -> &[Diagnostic] {
        &self.tolerated
    }

    fn find(&self, key: &str) -> Option<&Flag> {
        self.index.get(key).and_then(|i| self.flags.get(*i as usize))
    }

    /// The flag at `index` of [`FlagSet::keys`], evaluated as [`FlagSet::evaluate`]
    /// would its key, without looking the key up; `None` past the last flag.
    pub fn evaluate_at<'a>(&'a self, index: usize, ctx: &Context) -> Option<Evaluation<'a>> {
        self.flags.get(index).map(|flag| flag.evaluate(ctx, self.bucketing))
    }

    /// The variants of the flag at `index` of [`FlagSet::keys`], sorted by name (none
    /// past the last flag).
    pub fn variants_at(&self, index: usize) -> impl Iterator<Item = (&str, &Value)> {
        self.flags.get(index).into_iter().flat_map(|flag| flag.variants.iter().map(|(name, value)| (&**name, value)))
    }

    /// The metadata every evaluation of the flag at `index` carries (the set's
    /// overlaid with the flag's).
    pub fn metadata_at(&self, index: usize) -> Option<&Map<String, Value>> {
        self.flags.get(index).map(|flag| &flag.metadata)
    }

    /// Evaluates one flag.
    pub fn evaluate<'a>(&'a self, key: &str, ctx: &Context) -> Evaluation<'a> {
        let Some(flag) = self.find(key) else {
            return Evaluation::failed(ErrorCode::FlagNotFound, format!("flag {key:?} not found"), &self.metadata);
        };
        flag.evaluate(ctx, self.bucketing)
    }

    /// Evaluates one flag for a caller that expects a value of type `ty`: a variant of
    /// another type is a `TYPE_MISMATCH`.
    pub fn evaluate_as<'a>(&'a self, key: &str, ctx: &Context, ty: ValueType) -> Evaluation<'a> {
        let e = self.evaluate(key, ctx);
        match e.value {
            Some(v) if !ty.admits(v) => Evaluation::failed(
                ErrorCode::TypeMismatch,
                format!("flag {key:?} is {}, not {ty:?}", kind(v)),
                e.metadata,
            ),
            _ => e,
        }
    }
}

impl Flag {
    fn variant(&self, index: u32) -> (Option<&Value>, Option<&str>) {
        match self.variants.get(index as usize) {
            Some((name, value)) => (Some(value), Some(name)),
            None => (None, None),
        }
    }

    fn default_variant(&self, reason: Reason) -> Evaluation<'_> {
        let (value, variant) = match self.default_variant {
            Some(i) => self.variant(i),
            // No default variant: the caller's own default applies.
            None => (None, None),
        };
        let reason = if value.is_none() && reason == Reason::Static { Reason::Default } else { reason };
        Evaluation { value, variant, reason, error: None, metadata: &self.metadata }
    }

    fn evaluate(&self, ctx: &Context, bucketing: Bucketing) -> Evaluation<'_> {
        if self.state == State::Disabled {
            return Evaluation {
                value: None,
                variant: None,
                reason: Reason::Disabled,
                error: None,
                metadata: &self.metadata,
            };
        }
        let rule = match &self.targeting {
            Targeting::None => return self.default_variant(Reason::Static),
            Targeting::Unusable(why) => {
                return Evaluation::failed(ErrorCode::ParseError, why.clone(), &self.metadata);
            }
            Targeting::Rule(rule) => rule,
        };
        let env = Env { data: &ctx.data, flag_key: &self.key, timestamp: ctx.timestamp, bucketing };
        let result = logic::eval(rule, &env);
        let index = match &result {
            Val::Null => return self.default_variant(Reason::Default),
            Val::Variant(i, _) => Some(*i),
            Val::Str(s) => self.index_of(s),
            Val::String(s) => self.index_of(s),
            Val::Bool(_) | Val::Num(_) => {
                let mut name = StackStr::new();
                result.write_str(&mut name);
                self.index_of(name.as_str())
            }
            Val::Json(_) | Val::List(_) => None,
        };
        match index {
            Some(i) => {
                let (value, variant) = self.variant(i);
                Evaluation { value, variant, reason: Reason::TargetingMatch, error: None, metadata: &self.metadata }
            }
            None => Evaluation::failed(
                ErrorCode::General,
                format!("targeting of flag {:?} gave {}, which is not one of its variants", self.key, result.to_json()),
                &self.metadata,
            ),
        }
    }

    fn index_of(&self, name: &str) -> Option<u32> {
        self.variants.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| i as u32)
    }
}

/// How a JSON value's type reads in a message.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
