//! Building blocks for reading a YAML document into typed values while collecting
//! every error, each located at the node that causes it.
//!
//! A [`Decoder`] owns the file name and the errors found so far. Decoding functions
//! take the decoder and a [`Node`] and return `Option<T>`: `None` means the node was
//! unusable **and an error has already been recorded**, so callers simply carry on
//! with the next field (substituting a default if they need one) and the document's
//! other mistakes are still reported. [`Decoder::finish`] turns the outcome into a
//! `Result` with all errors sorted into document order.
//!
//! Every value decoder has the shape `fn(&mut Decoder, &Node) -> Option<T>`, so the
//! built-in ones ([`Decoder::string`], [`Decoder::duration`], …) and your own
//! functions or closures plug into [`Decoder::required`], [`Decoder::optional`] and
//! [`Decoder::list`] alike:
//!
//! ```
//! use rollwave_manifest::yaml::{Decoder, Node};
//! use std::time::Duration;
//!
//! const SCENARIO: &[&str] = &["start", "traffic", "events"];
//! const TRAFFIC: &[&str] = &["requests_per_host_per_s", "error_rate"];
//! const EVENT: &[&str] = &["at", "host"];
//!
//! struct Traffic { rps: f64, error_rate: f64 }
//!
//! fn traffic(d: &mut Decoder, node: &Node) -> Option<Traffic> {
//!     let map = d.mapping(node, TRAFFIC)?;
//!     let rps = d.required(&map, "requests_per_host_per_s", Decoder::f64);
//!     let error_rate = d.optional(&map, "error_rate", |d, n| {
//!         d.parsed(n, "an error rate", |s| match s.parse::<f64>() {
//!             Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
//!             _ => Err(format!("error rate {s:?} must be a number from 0 to 1")),
//!         })
//!     });
//!     Some(Traffic { rps: rps?, error_rate: error_rate.unwrap_or(0.0) })
//! }
//!
//! let text = "start: 2026-11-30T09:00:00Z\ntraffic: { requests_per_host_per_s: 20 }\n\
//!             events:\n  - { at: 6h, hots: use2-az1-1 }\n";
//! let mut d = Decoder::new("scenario.yaml");
//! let root = d.parse_document(text).unwrap();
//! let map = d.mapping(&root, SCENARIO).unwrap();
//! let start = d.required(&map, "start", Decoder::timestamp);
//! let traffic = d.required(&map, "traffic", traffic);
//! let events = d.optional(&map, "events", |d, n| {
//!     d.list(n, |d, item| {
//!         let event = d.mapping(item, EVENT)?;
//!         d.required(&event, "at", Decoder::duration)
//!     })
//! });
//! assert_eq!(start.map(|t| t.to_string()).as_deref(), Some("2026-11-30T09:00:00Z"));
//! assert_eq!(traffic.map(|t| t.rps), Some(20.0));
//! assert_eq!(events, Some(vec![Duration::from_secs(6 * 3600)]));
//! let errors = d.finish(Some(())).unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "scenario.yaml:4:15: unknown key \"hots\"; did you mean \"host\"?"
//! );
//! ```
//!
//! Conventions shared by every document read this way:
//! - a key with no value (`key:`, `key: ~`, `key: null`) counts as absent for
//!   [`Decoder::optional`] and is an error for [`Decoder::required`];
//! - quoting never matters: `"5"` and `5` are the same number;
//! - anchors, aliases and tags are rejected, and so are duplicate keys.

use crate::{Location, ManifestError, ManifestErrors};
use rollwave_core::share::BasisPoints;
use std::time::Duration;

pub use marked_yaml::Node;
pub use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};

/// How far a line may be indented (counting block indicators such as `- `) before the
/// document is rejected. The YAML parser recurses once per nesting level, and a
/// manifest needs about ten, so this keeps absurd inputs from exhausting the stack.
const MAX_INDENT: usize = 200;

/// Anything an error can point at.
pub trait Located {
    fn location(&self) -> Location;
}

impl Located for Location {
    fn location(&self) -> Location {
        *self
    }
}

impl Located for marked_yaml::Span {
    fn location(&self) -> Location {
        // The loader marks every node it builds; the fallback only covers nodes made by hand.
        self.start().map(|m| Location { line: m.line(), col: m.column() }).unwrap_or(Location { line: 1, col: 1 })
    }
}

impl Located for MarkedScalarNode {
    fn location(&self) -> Location {
        self.span().location()
    }
}

impl Located for MarkedSequenceNode {
    fn location(&self) -> Location {
        self.span().location()
    }
}

impl Located for MarkedMappingNode {
    /// Where the mapping visibly starts: its `{`, or its first key. (The loader marks a
    /// block mapping at the colon after its first key, which is not where a reader looks.)
    fn location(&self) -> Location {
        let start = self.span().location();
        match self.keys().next() {
            Some(first_key) => start.min(first_key.location()),
            None => start,
        }
    }
}

impl Located for Node {
    fn location(&self) -> Location {
        match self {
            Node::Scalar(s) => s.location(),
            Node::Mapping(m) => m.location(),
            Node::Sequence(s) => s.location(),
        }
    }
}

impl Located for Mapping<'_> {
    fn location(&self) -> Location {
        self.node.location()
    }
}

impl<T: Located + ?Sized> Located for &T {
    fn location(&self) -> Location {
        (**self).location()
    }
}

/// Whether a node is YAML's null: an empty value, `~` or `null`, unquoted.
pub fn is_null(node: &Node) -> bool {
    match node {
        // `may_coerce` is false exactly for quoted scalars (the loader runs with
        // `prevent_coercion`), so `""` and `"null"` stay ordinary strings.
        Node::Scalar(s) => s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"),
        _ => false,
    }
}

/// Names a node for an error message: `a mapping`, `a list`, `nothing`, or the scalar quoted.
pub fn describe(node: &Node) -> String {
    match node {
        _ if is_null(node) => "nothing".to_owned(),
        Node::Scalar(s) => format!("{:?}", s.as_str()),
        Node::Mapping(_) => "a mapping".to_owned(),
        Node::Sequence(_) => "a list".to_owned(),
    }
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo:
/// within a third of the candidate's length in edits (at least one), ignoring case.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&word, &c.to_lowercase()), c))
        .filter(|(distance, c)| *distance <= (c.chars().count() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// The end of an "unknown name" message: `; did you mean "prod"?` when a candidate is
/// close, else `; expected one of: a, b, c` (or `; none are defined`).
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str> + Clone) -> String {
    if let Some(near) = suggest(word, candidates.clone()) {
        return format!("; did you mean {near:?}?");
    }
    let all: Vec<&str> = candidates.into_iter().collect();
    if all.is_empty() { "; none are defined".to_owned() } else { format!("; expected one of: {}", all.join(", ")) }
}

/// A mapping node checked by [`Decoder::mapping`] or [`Decoder::open_mapping`].
#[derive(Clone, Copy, Debug)]
pub struct Mapping<'n> {
    node: &'n MarkedMappingNode,
}

impl<'n> Mapping<'n> {
    /// The value of `key`; `None` when the key is absent or has no value (null).
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.node.get(key).filter(|value| !is_null(value))
    }

    /// The key node itself, to point an error at the key rather than its value.
    pub fn key(&self, key: &str) -> Option<&'n MarkedScalarNode> {
        self.node.get_key_value(key).map(|(k, _)| k)
    }

    /// Every entry in document order, nulls included.
    pub fn entries(&self) -> impl Iterator<Item = (&'n MarkedScalarNode, &'n Node)> + 'n {
        self.node.iter()
    }

    pub fn len(&self) -> usize {
        self.node.len()
    }

    pub fn is_empty(&self) -> bool {
        self.node.is_empty()
    }

    pub fn node(&self) -> &'n MarkedMappingNode {
        self.node
    }
}

/// Reads one YAML document, collecting located errors; see the [module docs](self).
#[derive(Debug)]
pub struct Decoder {
    file: String,
    errors: Vec<ManifestError>,
}

impl Decoder {
    /// `file` names the document in [`ManifestErrors`]; it is not opened.
    pub fn new(file: impl Into<String>) -> Self {
        Self { file: file.into(), errors: Vec::new() }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Records an error at `at` (a node, a [`Mapping`] or a [`Location`]).
    pub fn error(&mut self, at: impl Located, message: impl Into<String>) {
        self.errors.push(ManifestError { location: at.location(), message: message.into() });
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors so far, in the order they were found.
    pub fn errors(&self) -> &[ManifestError] {
        &self.errors
    }

    /// `Ok(value)` when no error was recorded, else every error in document order.
    /// A `None` value with no error recorded cannot come from the decoders here, but is
    /// reported as an error rather than trusted.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ManifestErrors> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ if self.errors.is_empty() => {
                let mut d = self;
                d.error(Location { line: 1, col: 1 }, "the document could not be read");
                Err(d.into_errors())
            }
            _ => Err(self.into_errors()),
        }
    }

    /// All errors, sorted by position (errors at the same position keep their order).
    pub fn into_errors(mut self) -> ManifestErrors {
        self.errors.sort_by_key(|e| e.location);
        ManifestErrors { file: self.file, errors: self.errors }
    }

    /// Parses YAML text whose top level must be a mapping. Syntax errors, duplicate
    /// keys, anchors, aliases and tags are recorded (the parser stops at the first).
    /// An empty document is an empty mapping.
    pub fn parse_document(&mut self, text: &str) -> Option<Node> {
        use marked_yaml::LoadError;

        if let Some(at) = too_deep(text) {
            self.error(at, format!("indented more than {MAX_INDENT} columns; the document is nested too deeply"));
            return None;
        }
        let options = marked_yaml::LoaderOptions::default()
            .error_on_duplicate_keys(true)
            // Keeps quoted scalars distinguishable, so that `""` is not mistaken for null.
            .prevent_coercion(true);
        let err = match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(mut node) => {
                // An empty document is marked where the text ends; errors about its missing
                // keys read better at the top of the file.
                if let Node::Mapping(map) = &node
                    && map.is_empty()
                {
                    node.span_mut().set_start(Some(marked_yaml::Marker::new(0, 0, 1, 1)));
                }
                return Some(node);
            }
            Err(err) => err,
        };
        let at = |m: &marked_yaml::Marker| Location { line: m.line(), col: m.column() };
        match err {
            LoadError::TopLevelMustBeMapping(m) => {
                self.error(at(&m), "the document must be a mapping of `key: value` lines")
            }
            LoadError::TopLevelMustBeSequence(m) => self.error(at(&m), "the document must be a list"),
            LoadError::UnexpectedAnchor(m) => {
                self.error(at(&m), "YAML anchors and aliases (&name, *name) are not supported; repeat the value")
            }
            LoadError::MappingKeyMustBeScalar(m) => self.error(at(&m), "a mapping key must be a plain value"),
            LoadError::UnexpectedTag(m) => {
                self.error(at(&m), "YAML tags (!tag, !!str) are not supported; quote the value instead")
            }
            LoadError::ScanError(m, scan) => {
                let info = scan.info();
                // `threshold: > 0.02` is the classic trap: `>` starts a folded block scalar.
                let tip = if info.contains("block scalar") {
                    "; quote values that start with > or |, e.g. threshold: \"> 0.02\""
                } else {
                    ""
                };
                self.error(at(&m), format!("YAML syntax error: {info}{tip}"))
            }
            LoadError::DuplicateKey(dup) => {
                let first = dup.prev_key.location();
                self.error(&dup.key, format!("duplicate key {:?}; it is already defined at {first}", dup.key.as_str()))
            }
        }
        None
    }

    /// Expects a mapping whose keys all belong to `known_keys`; each other key is an
    /// error at the key, with a did-you-mean suggestion or the list of known keys.
    /// Its fields are then read with [`Decoder::required`] and [`Decoder::optional`].
    pub fn mapping<'n>(&mut self, node: &'n Node, known_keys: &[&str]) -> Option<Mapping<'n>> {
        let map = self.open_mapping(node)?;
        for (key, _) in map.entries() {
            if !known_keys.contains(&key.as_str()) {
                let hint = hint(key.as_str(), known_keys.iter().copied());
                self.error(key, format!("unknown key {:?}{hint}", key.as_str()));
            }
        }
        Some(map)
    }

    /// Expects a mapping with free-form keys (names of things); see [`Decoder::entries`].
    pub fn open_mapping<'n>(&mut self, node: &'n Node) -> Option<Mapping<'n>> {
        match node {
            Node::Mapping(node) => Some(Mapping { node }),
            _ => {
                self.error(node, format!("expected a mapping, found {}", describe(node)));
                None
            }
        }
    }

    /// The entries of a mapping in document order, minus those without a value, which
    /// are reported at their key.
    pub fn entries<'n>(&mut self, map: &Mapping<'n>) -> Vec<(&'n MarkedScalarNode, &'n Node)> {
        let mut entries = Vec::with_capacity(map.len());
        for (key, value) in map.entries() {
            if is_null(value) {
                self.error(key, format!("{:?} has no value", key.as_str()));
            } else {
                entries.push((key, value));
            }
        }
        entries
    }

    /// Decodes the value of a key that must be present (and not null); a missing key is
    /// an error at the mapping, a null value an error at the key.
    pub fn required<'n, T>(
        &mut self,
        map: &Mapping<'n>,
        key: &str,
        decode: impl FnOnce(&mut Self, &'n Node) -> Option<T>,
    ) -> Option<T> {
        if let Some(value) = map.get(key) {
            return decode(self, value);
        }
        match map.key(key) {
            Some(key_node) => self.error(key_node, format!("{key:?} has no value")),
            None => self.error(map, format!("missing required key {key:?}")),
        }
        None
    }

    /// Decodes the value of a key if it is present and not null. `None` means absent
    /// or invalid (then with an error recorded); either way the caller's default applies.
    pub fn optional<'n, T>(
        &mut self,
        map: &Mapping<'n>,
        key: &str,
        decode: impl FnOnce(&mut Self, &'n Node) -> Option<T>,
    ) -> Option<T> {
        map.get(key).and_then(|value| decode(self, value))
    }

    /// Expects a list.
    pub fn sequence<'n>(&mut self, node: &'n Node) -> Option<&'n [Node]> {
        match node {
            Node::Sequence(items) => Some(items.as_slice()),
            _ => {
                self.error(node, format!("expected a list, found {}", describe(node)));
                None
            }
        }
    }

    /// Expects a list and decodes every item; items that fail are left out (their
    /// errors recorded), so the result is `None` only when the node is not a list.
    pub fn list<'n, T>(
        &mut self,
        node: &'n Node,
        mut item: impl FnMut(&mut Self, &'n Node) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.sequence(node)?;
        Some(items.iter().filter_map(|i| item(self, i)).collect())
    }

    /// Expects a non-null scalar; `what` completes "expected …" in the error.
    pub fn scalar<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n MarkedScalarNode> {
        match node {
            Node::Scalar(s) if !is_null(node) => Some(s),
            _ => {
                self.error(node, format!("expected {what}, found {}", describe(node)));
                None
            }
        }
    }

    /// Expects a scalar and parses its text with `parse`, whose error message is
    /// recorded at the node. `what` names the expected value for non-scalar nodes.
    pub fn parsed<T>(&mut self, node: &Node, what: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let scalar = self.scalar(node, what)?;
        match parse(scalar.as_str()) {
            Ok(value) => Some(value),
            Err(message) => {
                self.error(node, message);
                None
            }
        }
    }

    /// A non-empty string.
    pub fn string(&mut self, node: &Node) -> Option<String> {
        self.parsed(node, "a text value", |s| {
            if s.trim().is_empty() { Err("expected a non-empty text value".to_owned()) } else { Ok(s.to_owned()) }
        })
    }

    /// A name of a thing (environment, region, stage…): letters, digits, `-`, `_` and `.`.
    pub fn name(&mut self, node: &Node) -> Option<String> {
        self.parsed(node, "a name", |s| check_name(s).map(|()| s.to_owned()))
    }

    /// `true` or `false`.
    pub fn bool(&mut self, node: &Node) -> Option<bool> {
        self.parsed(node, "true or false", |s| match s {
            "true" | "True" | "TRUE" => Ok(true),
            "false" | "False" | "FALSE" => Ok(false),
            _ => Err(format!("expected true or false, found {s:?}")),
        })
    }

    /// A whole number from 0 to 4294967295.
    pub fn u32(&mut self, node: &Node) -> Option<u32> {
        self.parsed(node, "a whole number", |s| parse_whole(s, u32::MAX.into()).map(|n| n as u32))
    }

    /// A whole number from 0 to 2^64 - 1.
    pub fn u64(&mut self, node: &Node) -> Option<u64> {
        self.parsed(node, "a whole number", |s| parse_whole(s, u64::MAX))
    }

    /// A finite number (`.5`, `1e3` and integers included).
    pub fn f64(&mut self, node: &Node) -> Option<f64> {
        self.parsed(node, "a number", |s| match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(format!("expected a number, found {s:?}")),
        })
    }

    /// A duration: see [`parse_duration`].
    pub fn duration(&mut self, node: &Node) -> Option<Duration> {
        self.parsed(node, "a duration such as 30m", parse_duration)
    }

    /// A duration longer than zero.
    pub fn positive_duration(&mut self, node: &Node) -> Option<Duration> {
        self.parsed(node, "a duration such as 30m", |s| match parse_duration(s)? {
            Duration::ZERO => Err(format!("expected a duration longer than 0s, found {s:?}")),
            d => Ok(d),
        })
    }

    /// A percentage: see [`parse_share`].
    pub fn share(&mut self, node: &Node) -> Option<BasisPoints> {
        self.parsed(node, "a percentage such as 33%", parse_share)
    }

    /// An RFC 3339 timestamp with an offset, e.g. `2026-11-30T09:00:00Z`.
    pub fn timestamp(&mut self, node: &Node) -> Option<jiff::Timestamp> {
        self.parsed(node, "a timestamp such as 2026-11-30T09:00:00Z", |s| {
            s.trim().parse::<jiff::Timestamp>().map_err(|e| {
                format!("invalid timestamp {s:?}: {e}; write RFC 3339 with an offset, e.g. 2026-11-30T09:00:00Z")
            })
        })
    }

    /// One of a fixed set of words; `what` names the setting in the error, which
    /// suggests the nearest word or lists them all.
    pub fn one_of<T: Copy>(&mut self, node: &Node, what: &str, choices: &[(&str, T)]) -> Option<T> {
        let words = choices.iter().map(|(word, _)| *word);
        self.parsed(node, &format!("a {what}"), |s| {
            choices
                .iter()
                .find(|(word, _)| *word == s)
                .map(|(_, value)| *value)
                .ok_or_else(|| format!("unknown {what} {s:?}{}", hint(s, words)))
        })
    }
}

/// Names become parts of host names and command-line arguments, so they keep to
/// characters that need no quoting anywhere.
pub fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("a name must not be empty".to_owned())
    } else if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Err(format!("invalid name {s:?}: {bad:?} is not allowed; use letters, digits, '-', '_' and '.'"))
    } else {
        Ok(())
    }
}

fn parse_whole(s: &str, max: u64) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') && t.len() > 1 && t[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number of at least 0, found {s:?}"));
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number, found {s:?}"));
    }
    match t.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("{s:?} is too large; the most allowed is {max}")),
    }
}

/// The first line indented (with block indicators) more than [`MAX_INDENT`] columns.
fn too_deep(text: &str) -> Option<Location> {
    text.lines().enumerate().find_map(|(i, line)| {
        let indent = line.chars().take_while(|c| matches!(c, ' ' | '\t' | '-' | '?' | ':')).count();
        (indent > MAX_INDENT).then_some(Location { line: i + 1, col: MAX_INDENT + 1 })
    })
}

const DURATION_FORMS: &str =
    "write a whole number and a unit (d, h, m or s), largest unit first, e.g. 90s, 30m, 12h, 2d or 1h30m";

/// Parses `90s`, `30m`, `12h`, `2d` or combinations with the larger unit first
/// (`1h30m`, `2d12h`). `0s` is allowed; empty text, signs, fractions, spaces, unknown
/// or repeated units and durations past `u64::MAX` seconds are not.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_FORMS}"));
    }
    if s.starts_with('-') {
        return Err(format!("invalid duration {s:?}: durations cannot be negative"));
    }
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    let mut total: u64 = 0;
    // Index into UNITS of the next unit allowed: units must strictly decrease.
    let mut next_unit = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, after) = rest.split_at(digits);
        let mut after_chars = after.chars();
        let unit = after_chars.next();
        if number.is_empty() {
            return Err(format!("invalid duration {s:?}: {DURATION_FORMS}"));
        }
        let Some(unit) = unit else {
            return Err(format!("invalid duration {s:?}: {number:?} needs a unit, e.g. {number}s or {number}m"));
        };
        let Some(position) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!("invalid duration {s:?}: unknown unit {unit:?}; {DURATION_FORMS}"));
        };
        if position < next_unit {
            return Err(format!("invalid duration {s:?}: each unit once, largest first; {DURATION_FORMS}"));
        }
        let overflow = || format!("duration {s:?} is too long");
        let value: u64 = number.parse().map_err(|_| overflow())?;
        let seconds = value.checked_mul(UNITS[position].1).ok_or_else(overflow)?;
        total = total.checked_add(seconds).ok_or_else(overflow)?;
        next_unit = position + 1;
        rest = after_chars.as_str();
    }
    Ok(Duration::from_secs(total))
}

/// Parses a percentage from `0%` to `100%` with at most two decimals (`33%`, `10.5%`,
/// `12.25%`) into basis points.
pub fn parse_share(s: &str) -> Result<BasisPoints, String> {
    const FORMS: &str = "write a percentage from 0% to 100%, e.g. 33% or 10.5%";
    let Some(number) = s.trim().strip_suffix('%') else {
        return Err(format!("invalid percentage {s:?}: {FORMS}"));
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits_only(whole)
        || !digits_only(fraction)
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(format!("invalid percentage {s:?}: {FORMS}"));
    }
    if fraction.len() > 2 {
        return Err(format!("invalid percentage {s:?}: at most two decimals (a basis point) are allowed"));
    }
    let too_large = || format!("invalid percentage {s:?}: it is above 100%");
    // Any whole part longer than this is certainly above 100%, and would overflow below.
    if whole.trim_start_matches('0').len() > 3 {
        return Err(too_large());
    }
    let whole: u32 = whole.parse().map_err(|_| too_large())?;
    let hundredths: u32 = format!("{fraction:0<2}").parse().unwrap_or(0);
    BasisPoints::new(whole * 100 + hundredths).ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Result<Duration, String> {
        Ok(Duration::from_secs(s))
    }

    #[test]
    fn durations_take_each_unit_once_largest_first() {
        assert_eq!(parse_duration("90s"), secs(90));
        assert_eq!(parse_duration("30m"), secs(1800));
        assert_eq!(parse_duration("12h"), secs(43_200));
        assert_eq!(parse_duration("2d"), secs(172_800));
        assert_eq!(parse_duration("1h30m"), secs(5400));
        assert_eq!(parse_duration("1d2h3m4s"), secs(93_784));
        assert_eq!(parse_duration("0s"), secs(0));
        for bad in ["", "-5m", "5", "5x", "m", "1.5h", "30m1h", "1h1h", "1h 30m", " 1h", "1ms", "5mm"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("99999999999999999999s").unwrap_err().contains("too long"));
        assert!(parse_duration("999999999999999999d").unwrap_err().contains("too long"));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit 'w'"));
    }

    #[test]
    fn shares_are_percentages_with_up_to_two_decimals() {
        let bp = |n| Ok(BasisPoints::new(n).unwrap());
        assert_eq!(parse_share("33%"), bp(3300));
        assert_eq!(parse_share("10.5%"), bp(1050));
        assert_eq!(parse_share("12.25%"), bp(1225));
        assert_eq!(parse_share("0%"), bp(0));
        assert_eq!(parse_share("100%"), bp(10_000));
        assert_eq!(parse_share("100.00%"), bp(10_000));
        for bad in
            ["33", "%", "-1%", "100.01%", "101%", "1.%", ".5%", "1.234%", "abc%", "99999999999999999999%", "1e2%"]
        {
            assert!(parse_share(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn suggestions_only_for_plausible_typos() {
        let keys = ["name", "environment", "approval", "waves"];
        assert_eq!(suggest("nmae", keys), Some("name"));
        assert_eq!(suggest("enviroment", keys), Some("environment"));
        assert_eq!(suggest("Name", keys), Some("name"));
        assert_eq!(suggest("wave", keys), Some("waves"));
        assert_eq!(suggest("colour", keys), None);
        assert_eq!(hint("colour", keys), "; expected one of: name, environment, approval, waves");
        assert_eq!(hint("x", []), "; none are defined");
    }

    #[test]
    fn whole_numbers_explain_what_is_wrong() {
        assert_eq!(parse_whole("42", 100), Ok(42));
        assert!(parse_whole("-1", 100).unwrap_err().contains("at least 0"));
        assert!(parse_whole("101", 100).unwrap_err().contains("too large"));
        assert!(parse_whole("1.5", 100).unwrap_err().contains("whole number"));
        assert!(parse_whole("99999999999999999999999", u64::MAX).unwrap_err().contains("too large"));
    }

    #[test]
    fn deep_indentation_is_refused_before_parsing() {
        let deep = format!("a:\n  {}x\n", "- ".repeat(150));
        assert_eq!(too_deep(&deep), Some(Location { line: 2, col: MAX_INDENT + 1 }));
        assert_eq!(too_deep("a:\n  - b\n"), None);
    }
}
