//! Structure-aware mutation of YAML documents for property tests: a valid document is
//! read into a tree, random subtrees are replaced, deleted, duplicated, nested deeply or
//! given odd keys and values (unicode, huge numbers, nulls, grammar near-misses), and the
//! tree is written back as block or flow YAML. Shared by the manifest and scenario tests.
#![allow(dead_code)]

use proptest::prelude::*;
use rollwave_manifest::yaml::Node;
use std::sync::mpsc;
use std::time::Duration;

/// A YAML document as plain data.
#[derive(Clone, Debug)]
pub enum Tree {
    Scalar(String),
    Map(Vec<(String, Tree)>),
    Seq(Vec<Tree>),
}

impl Tree {
    /// The tree of a YAML document; `None` if it does not parse.
    pub fn of(text: &str) -> Option<Tree> {
        let mut d = rollwave_manifest::yaml::Decoder::new("seed.yaml");
        d.parse_document(text).map(|n| Self::from_node(&n))
    }

    fn from_node(node: &Node) -> Tree {
        match node {
            Node::Scalar(s) => Tree::Scalar(s.as_str().to_owned()),
            Node::Mapping(m) => Tree::Map(m.iter().map(|(k, v)| (k.as_str().to_owned(), Self::from_node(v))).collect()),
            Node::Sequence(s) => Tree::Seq(s.iter().map(Self::from_node).collect()),
        }
    }

    fn children(&mut self) -> Vec<&mut Tree> {
        match self {
            Tree::Scalar(_) => Vec::new(),
            Tree::Map(entries) => entries.iter_mut().map(|(_, v)| v).collect(),
            Tree::Seq(items) => items.iter_mut().collect(),
        }
    }

    /// The node reached by following `path` (each step picks a child modulo their count).
    fn at(&mut self, path: &[usize]) -> &mut Tree {
        let Some((step, rest)) = path.split_first() else { return self };
        if matches!(self, Tree::Scalar(_)) || self.children().is_empty() {
            return self;
        }
        let count = self.children().len();
        let child = match self {
            Tree::Map(entries) => &mut entries[step % count].1,
            Tree::Seq(items) => &mut items[step % count],
            Tree::Scalar(_) => unreachable!("handled above"),
        };
        child.at(rest)
    }

    /// YAML text: flow style (`{ a: 1 }`) when `flow`, else block style.
    pub fn render(&self, flow: bool) -> String {
        let mut out = String::new();
        match self {
            Tree::Map(_) if !flow => self.block(&mut out, 0),
            _ => {
                out.push_str(&self.flow());
                out.push('\n');
            }
        }
        out
    }

    fn block(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        match self {
            Tree::Map(entries) if !entries.is_empty() => {
                for (k, v) in entries {
                    out.push_str(&format!("{pad}{}:", scalar(k)));
                    v.block_value(out, indent);
                }
            }
            Tree::Seq(items) if !items.is_empty() => {
                for item in items {
                    out.push_str(&format!("{pad}-"));
                    item.block_value(out, indent);
                }
            }
            _ => out.push_str(&format!("{pad}{}\n", self.flow())),
        }
    }

    fn block_value(&self, out: &mut String, indent: usize) {
        match self {
            Tree::Map(e) if !e.is_empty() => {
                out.push('\n');
                self.block(out, indent + 2);
            }
            Tree::Seq(i) if !i.is_empty() => {
                out.push('\n');
                self.block(out, indent + 2);
            }
            _ => out.push_str(&format!(" {}\n", self.flow())),
        }
    }

    fn flow(&self) -> String {
        match self {
            Tree::Scalar(s) => scalar(s),
            Tree::Map(entries) => {
                let inner: Vec<String> = entries.iter().map(|(k, v)| format!("{}: {}", scalar(k), v.flow())).collect();
                format!("{{ {} }}", inner.join(", "))
            }
            Tree::Seq(items) => {
                let inner: Vec<String> = items.iter().map(Tree::flow).collect();
                format!("[ {} ]", inner.join(", "))
            }
        }
    }
}

/// A scalar as YAML: plain when that reads back as the same text, else double-quoted.
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '%'))
        && !s.starts_with(['-', '.', '%']);
    if plain {
        return s.to_owned();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Words that mean something somewhere in a manifest or a scenario.
pub const WORDS: &[&str] = &[
    "service",
    "environments",
    "regions",
    "zones",
    "stages",
    "waves",
    "name",
    "environment",
    "strategy",
    "one_box",
    "rolling",
    "bake",
    "time",
    "min_datapoints",
    "hosts",
    "max_share",
    "batch",
    "alarms",
    "metric",
    "threshold",
    "datapoints",
    "period",
    "scope",
    "missing",
    "source",
    "query",
    "windows",
    "allow",
    "block",
    "watch",
    "notifications",
    "url",
    "env",
    "file",
    "on",
    "monitors",
    "request",
    "method",
    "path",
    "expect",
    "status",
    "every",
    "exec",
    "deploy",
    "timeout",
    "tests",
    "run",
    "approval",
    "judge",
    "start",
    "traffic",
    "releases",
    "version",
    "at",
    "defect",
    "error_rate",
    "latency_p99_ms",
    "operators",
    "action",
    "release",
    "incidents",
    "region",
    "zone",
    "for",
    "host_failures",
    "host",
    "requests_per_host_per_s",
    "initial_version",
    "prod",
    "us-east-2",
    "use2-az1",
    "cpu_percent",
    "monitor:home:success_rate",
    "prometheus",
    "builtin",
];

/// Values near and far from what the grammars take.
pub const VALUES: &[&str] = &[
    "",
    "~",
    "null",
    "0",
    "1",
    "-1",
    "3",
    "100",
    "101",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "1e308",
    "1e309",
    "-0",
    "NaN",
    "inf",
    ".5",
    "0.05",
    "5",
    "250",
    "> 0.02",
    ">= 0",
    "< 0",
    "<= 1",
    "> 5",
    "6 of 5",
    "3 of 5",
    "0 of 0",
    "100 of 100",
    "0s",
    "30m",
    "1h30m",
    "1d2h3m4s",
    "99999999999999999999d",
    "-5m",
    "0%",
    "33%",
    "100%",
    "100.01%",
    "10.5%",
    "Mon-Fri 09:00-17:00",
    "daily 22:00-06:00",
    "Mon 24:00-05:00",
    "2026-12-24/2026-12-26",
    "2026-02-30",
    "2026-11-30T09:00:00Z",
    "yesterday",
    "true",
    "false",
    "GET",
    "GTE",
    "/health",
    "https://hooks.example.com/x",
    "ftp://x",
    "Europe/Dublin",
    "Mars/Olympus",
    "é",
    "日本語",
    "💥",
    "\u{0}",
    "\u{202e}",
    "a\nb",
    "\"",
    "{{service}}",
    "monitor:nope:success_rate",
    "monitor::",
    "::",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
        1 => "[a-z_]{1,8}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(VALUES).prop_map(str::to_owned),
        2 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => "\\PC{0,16}",
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|x| x.to_string()),
    ]
}

/// Random trees up to a few levels deep.
pub fn tree() -> impl Strategy<Value = Tree> {
    let leaf = value().prop_map(Tree::Scalar);
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec((word(), inner.clone()), 0..6).prop_map(Tree::Map),
            proptest::collection::vec(inner, 0..6).prop_map(Tree::Seq),
        ]
    })
}

/// One change to a document.
#[derive(Clone, Debug)]
pub enum Mutation {
    Replace(Vec<usize>, Tree),
    SetScalar(Vec<usize>, String),
    /// Deletes the entry (or item) picked by the last step.
    Delete(Vec<usize>),
    /// Adds an entry with this key and value to the mapping reached (or an item to a list).
    Insert(Vec<usize>, String, Tree),
    RenameKey(Vec<usize>, String),
    /// Wraps the node reached in this many levels of lists and mappings.
    Nest(Vec<usize>, usize),
    Duplicate(Vec<usize>),
}

/// Mostly small changes deep in the document (a value, a key), so that most mutated
/// documents get past the first mistake and into the checks further in.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    let path = || proptest::collection::vec(any::<usize>(), 1..8);
    prop_oneof![
        6 => (path(), value()).prop_map(|(p, v)| Mutation::SetScalar(p, v)),
        2 => path().prop_map(Mutation::Delete),
        2 => path().prop_map(Mutation::Duplicate),
        1 => (path(), word()).prop_map(|(p, k)| Mutation::RenameKey(p, k)),
        1 => (path(), word(), tree()).prop_map(|(p, k, t)| Mutation::Insert(p, k, t)),
        1 => (path(), 1usize..60).prop_map(|(p, n)| Mutation::Nest(p, n)),
        1 => (path(), tree()).prop_map(|(p, t)| Mutation::Replace(p, t)),
    ]
}

impl Mutation {
    pub fn apply(&self, tree: &mut Tree) {
        match self {
            Mutation::Replace(p, t) => *tree.at(p) = t.clone(),
            Mutation::SetScalar(p, v) => *tree.at(p) = Tree::Scalar(v.clone()),
            Mutation::Delete(p) => {
                let (last, parent) = p.split_last().map_or((0, &p[..]), |(l, rest)| (*l, rest));
                match tree.at(parent) {
                    Tree::Map(e) if !e.is_empty() => {
                        let i = last % e.len();
                        e.remove(i);
                    }
                    Tree::Seq(items) if !items.is_empty() => {
                        let i = last % items.len();
                        items.remove(i);
                    }
                    _ => {}
                }
            }
            Mutation::Insert(p, k, t) => match tree.at(p) {
                Tree::Map(e) => e.push((k.clone(), t.clone())),
                Tree::Seq(items) => items.push(t.clone()),
                other => *other = Tree::Map(vec![(k.clone(), t.clone())]),
            },
            Mutation::RenameKey(p, k) => {
                let (last, parent) = p.split_last().map_or((0, &p[..]), |(l, rest)| (*l, rest));
                if let Tree::Map(e) = tree.at(parent)
                    && !e.is_empty()
                {
                    let i = last % e.len();
                    e[i].0 = k.clone();
                }
            }
            Mutation::Nest(p, levels) => {
                let node = tree.at(p);
                let mut t = node.clone();
                for level in 0..*levels {
                    t = if level % 2 == 0 { Tree::Seq(vec![t]) } else { Tree::Map(vec![("k".into(), t)]) };
                }
                *node = t;
            }
            Mutation::Duplicate(p) => {
                let (last, parent) = p.split_last().map_or((0, &p[..]), |(l, rest)| (*l, rest));
                match tree.at(parent) {
                    Tree::Map(e) if !e.is_empty() => {
                        let copy = e[last % e.len()].clone();
                        e.push(copy);
                    }
                    Tree::Seq(items) if !items.is_empty() => {
                        let copy = items[last % items.len()].clone();
                        items.push(copy);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Runs `read` on another thread and fails if it has not returned within `limit`: a
/// reader that loops forever shows up as a failure, not as a test that never ends.
/// A panic in `read` fails too.
pub fn within<T: Send + 'static>(limit: Duration, read: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => Ok(value),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no answer within {limit:?}")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the reader panicked".to_owned()),
    }
}

/// Every error of `errors` points inside `text` (or just past its end) and says something.
pub fn located_inside(text: &str, errors: &rollwave_manifest::ManifestErrors) -> Result<(), String> {
    let lines = text.lines().count().max(1) + 1;
    if errors.errors.is_empty() {
        return Err("an error result without errors".to_owned());
    }
    for e in &errors.errors {
        if e.location.line == 0 || e.location.line > lines || e.location.col == 0 || e.message.trim().is_empty() {
            return Err(format!("badly located error {e} in a text of {lines} lines"));
        }
    }
    Ok(())
}
