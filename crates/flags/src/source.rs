//! Reading a flag definition's text (JSON, or YAML, which the same parser reads) into a
//! `serde_json::Value`, keeping the parsed tree so that a diagnostic found later, at a
//! JSON pointer, can be placed at a line and column of the text.
//!
//! JSON is YAML's flow style for the documents flagd uses: objects, arrays, quoted
//! strings with JSON's escapes, numbers, `true`, `false` and `null`. Quoted scalars
//! stay strings (the loader runs with `prevent_coercion`); unquoted ones are read with
//! JSON's grammar, so `"10"` is a string and `10` a number in both languages.

use crate::Diagnostic;
use marked_yaml::{LoadError, LoaderOptions, Marker, Node};
use serde_json::{Map, Number, Value};

/// Nesting deeper than this (brackets or indentation) is refused before parsing: the
/// parser and the compiler recurse once per level, and no flag definition needs it.
pub(crate) const MAX_DEPTH: usize = 64;

/// One step of a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// Which part of a mapping entry a diagnostic points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The key itself (`"fractionl"` in `{"fractionl": …}`).
    Key,
    /// The value under the key.
    Value,
}

/// Places diagnostics: at a line and column of the text when there is one, otherwise
/// (a document handed over already parsed) at the JSON pointer, on line 0.
pub(crate) struct Locator<'n> {
    origin: &'n str,
    tree: Option<&'n Node>,
}

impl<'n> Locator<'n> {
    pub(crate) fn new(origin: &'n str, tree: Option<&'n Node>) -> Self {
        Locator { origin, tree }
    }

    pub(crate) fn diagnostic(&self, path: &[Step], part: Part, message: String) -> Diagnostic {
        let Some(tree) = self.tree else {
            return Diagnostic { origin: self.origin.to_owned(), line: 0, col: 0, pointer: pointer(path), message };
        };
        let (line, col) = locate(tree, path, part);
        Diagnostic { origin: self.origin.to_owned(), line, col, pointer: pointer(path), message }
    }
}

/// The JSON pointer (RFC 6901) of a path.
pub(crate) fn pointer(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

fn at(marker: Option<&Marker>) -> (usize, usize) {
    // The loader marks every node it builds; the fallback covers only nodes made by hand.
    marker.map(|m| (m.line(), m.column())).unwrap_or((1, 1))
}

/// Where a node visibly starts: a mapping at its `{` or its first key, whichever is first.
fn start(node: &Node) -> (usize, usize) {
    let own = at(node.span().start());
    match node {
        Node::Mapping(m) => m.iter().next().map(|(k, _)| own.min(at(k.span().start()))).unwrap_or(own),
        _ => own,
    }
}

/// The place of the deepest node on `path` that exists (a missing key is reported at
/// the mapping that lacks it).
fn locate(tree: &Node, path: &[Step], part: Part) -> (usize, usize) {
    let mut node = tree;
    for (i, step) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        match (node, step) {
            (Node::Mapping(m), Step::Key(k)) => match m.iter().find(|(key, _)| key.as_str() == k) {
                Some((key, value)) => {
                    if last && part == Part::Key {
                        return at(key.span().start());
                    }
                    node = value;
                }
                None => return start(node),
            },
            (Node::Sequence(s), Step::Index(i)) => match s.get(*i) {
                Some(item) => node = item,
                None => return start(node),
            },
            _ => return start(node),
        }
    }
    start(node)
}

/// Parses the text; on failure, the one syntax error the parser stops at.
pub(crate) fn parse(origin: &str, text: &str) -> Result<(Value, Node), Diagnostic> {
    let fail = |line: usize, col: usize, message: String| Diagnostic {
        origin: origin.to_owned(),
        line,
        col,
        pointer: String::new(),
        message,
    };
    if let Some((line, col)) = too_deep(text) {
        return Err(fail(line, col, format!("nested more than {MAX_DEPTH} levels deep")));
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true).prevent_coercion(true);
    let node = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(node) => node,
        Err(err) => {
            let (place, message) = load_error(&err);
            return Err(fail(place.0, place.1, message));
        }
    };
    let value = to_value(&node);
    Ok((value, node))
}

fn load_error(err: &LoadError) -> ((usize, usize), String) {
    let m = |m: &Marker| (m.line(), m.column());
    match err {
        LoadError::TopLevelMustBeMapping(at) => (m(at), "the document must be an object (a mapping)".into()),
        LoadError::TopLevelMustBeSequence(at) => (m(at), "the document must be an object (a mapping)".into()),
        LoadError::UnexpectedAnchor(at) => (m(at), "YAML anchors and aliases are not supported".into()),
        LoadError::MappingKeyMustBeScalar(at) => (m(at), "an object key must be a string".into()),
        LoadError::UnexpectedTag(at) => (m(at), "YAML tags are not supported".into()),
        LoadError::ScanError(at, scan) => (m(at), format!("syntax error: {}", scan.info())),
        LoadError::DuplicateKey(dup) => {
            let first = at(dup.prev_key.span().start());
            (
                at(dup.key.span().start()),
                format!(
                    "duplicate key {:?}; it is already defined at line {}, column {}",
                    dup.key.as_str(),
                    first.0,
                    first.1
                ),
            )
        }
    }
}

/// The first place where brackets or indentation nest deeper than [`MAX_DEPTH`]
/// (a cheap over-estimate: brackets inside strings count too).
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        if indent > 4 * MAX_DEPTH {
            return Some((n + 1, indent + 1));
        }
        for (c, ch) in line.chars().enumerate() {
            match ch {
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some((n + 1, c + 1));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

fn to_value(node: &Node) -> Value {
    match node {
        Node::Scalar(s) if !s.may_coerce() => Value::String(s.as_str().to_owned()),
        Node::Scalar(s) => plain_scalar(s.as_str()),
        Node::Sequence(items) => Value::Array(items.iter().map(to_value).collect()),
        Node::Mapping(m) => {
            let mut map = Map::new();
            for (k, v) in m.iter() {
                map.insert(k.as_str().to_owned(), to_value(v));
            }
            Value::Object(map)
        }
    }
}

/// An unquoted scalar: JSON's literals and numbers, YAML's spellings of null; anything
/// else is a string.
fn plain_scalar(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ if json_number(s) => match serde_json::from_str::<Number>(s) {
            Ok(n) => Value::Number(n),
            Err(_) => Value::String(s.to_owned()),
        },
        _ => Value::String(s.to_owned()),
    }
}

/// Whether `s` is a number in JSON's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - from
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}
