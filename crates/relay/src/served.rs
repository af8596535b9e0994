//! What a relay serves at one moment: a stable flag set, perhaps a canary set rolling out
//! beside it, and the salt and share that split targeting keys between them.
//!
//! The split is the router's: a key is on the canary set iff
//! `murmur3_x86_32("{salt}:{key}") % 10000 < share` ([`rollwave_router::track::assign`]),
//! so a function behind a router sees the flags of the track its request was sent to, and
//! a growing share only ever moves keys from stable to canary. A request that already
//! carries a track (`x-rollwave-track`, or `rollwave.track` in `baggage`) gets that
//! track's set whatever its key.

use rollwave_core::share::BasisPoints;
use rollwave_flags::FlagSet;
use rollwave_router::track::{self, Track};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;

/// One flag-set version, parsed, with its bulk answer's constant parts written out.
#[derive(Debug)]
pub struct Set {
    version: String,
    flags: FlagSet,
    /// Per flag, in key order.
    pieces: Vec<Pieces>,
    /// The end of a bulk answer for each track: `],"metadata":…,"eventStreams":…}`.
    bulk_tails: [Box<[u8]>; 2],
}

/// A flag's OFREP evaluation object in the pieces that do not depend on the context,
/// written once per set: a bulk answer copies them instead of serializing the variant's
/// value and the metadata again at each request (most of its cost, measured with
/// `bench/flags/relay.sh`).
#[derive(Debug)]
pub(crate) struct Pieces {
    /// `{"key":…`
    pub head: Box<[u8]>,
    /// Per variant, sorted by name as the flag keeps them: `,"value":…,"variant":…`.
    pub variants: Vec<(Box<str>, Box<[u8]>)>,
    /// `,"metadata":…}`
    pub tail: Box<[u8]>,
}

impl Pieces {
    /// The piece of the variant named `name`.
    pub fn variant(&self, name: &str) -> Option<&[u8]> {
        let i = self.variants.binary_search_by(|(n, _)| (**n).cmp(name)).ok()?;
        Some(&self.variants[i].1)
    }
}

/// Writes `value` as JSON: of values and string keys only, which cannot fail.
pub(crate) fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

impl Set {
    pub fn new(version: impl Into<String>, flags: FlagSet) -> Set {
        let version = version.into();
        let pieces = flags
            .keys()
            .enumerate()
            .map(|(i, key)| {
                let mut head = b"{\"key\":".to_vec();
                write_json(&mut head, key);
                let variants = flags
                    .variants_at(i)
                    .map(|(name, value)| {
                        let mut piece = b",\"value\":".to_vec();
                        write_json(&mut piece, value);
                        piece.extend_from_slice(b",\"variant\":");
                        write_json(&mut piece, name);
                        (name.into(), piece.into_boxed_slice())
                    })
                    .collect();
                let mut tail = b",\"metadata\":".to_vec();
                write_json(&mut tail, &flags.metadata_at(i));
                tail.push(b'}');
                Pieces { head: head.into_boxed_slice(), variants, tail: tail.into_boxed_slice() }
            })
            .collect();
        let bulk_tail = |track: Track| {
            let mut metadata = flags.metadata().clone();
            metadata.insert("flagSetVersion".into(), serde_json::Value::String(version.clone()));
            metadata.insert("track".into(), serde_json::Value::String(track.as_str().to_owned()));
            let mut out = b"],\"metadata\":".to_vec();
            write_json(&mut out, &metadata);
            let _ = write!(
                out,
                ",\"eventStreams\":[{{\"type\":\"sse\",\"endpoint\":{{\"requestUri\":\"{}\"}}}}]}}",
                crate::ofrep::EVENTS_PATH
            );
            out.into_boxed_slice()
        };
        let bulk_tails = [bulk_tail(Track::Stable), bulk_tail(Track::Canary)];
        Set { version, flags, pieces, bulk_tails }
    }

    /// The constant pieces of each flag's evaluation object, in key order.
    pub(crate) fn pieces(&self) -> &[Pieces] {
        &self.pieces
    }

    /// How a bulk answer served on `track` ends.
    pub(crate) fn bulk_tail(&self, track: Track) -> &[u8] {
        match track {
            Track::Stable => &self.bulk_tails[0],
            Track::Canary => &self.bulk_tails[1],
        }
    }

    /// A set with no flags: what a relay serves before it has learnt any (every
    /// evaluation is `FLAG_NOT_FOUND`, so SDKs use their code defaults).
    pub fn empty(version: impl Into<String>) -> Set {
        let flags = FlagSet::from_value("(no flag set yet)", &serde_json::json!({ "flags": {} }))
            .unwrap_or_else(|_| unreachable!("a document without flags is valid"));
        Set::new(version, flags)
    }

    /// The version released (server mode), or a digest of the file's contents
    /// (standalone): a label of metrics and part of every ETag.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn flags(&self) -> &FlagSet {
        &self.flags
    }
}

/// The canary half of what is served.
#[derive(Debug, Clone)]
pub struct Canary {
    pub set: Arc<Set>,
    /// Fixed for one flag release, so that a growing share never moves a key back.
    pub salt: String,
    pub share: BasisPoints,
}

/// What is served now; replaced whole (through a `watch` channel) when anything changes.
#[derive(Debug, Clone)]
pub struct Served {
    stable: Arc<Set>,
    canary: Option<Canary>,
    fingerprint: String,
}

impl Served {
    /// One set for every request: what the agent serves its host, and standalone mode.
    pub fn single(set: Arc<Set>) -> Served {
        Served::split(set, None)
    }

    /// A stable set and, while a flag release rolls out, a canary set.
    pub fn split(stable: Arc<Set>, canary: Option<Canary>) -> Served {
        let mut text = format!("stable\0{}\0", stable.version);
        if let Some(c) = &canary {
            let _ = write!(text, "canary\0{}\0{}\0{}", c.set.version, c.salt, c.share.get());
        }
        let fingerprint = digest_hex(text.as_bytes(), 16);
        Served { stable, canary, fingerprint }
    }

    pub fn stable(&self) -> &Arc<Set> {
        &self.stable
    }

    pub fn canary(&self) -> Option<&Canary> {
        self.canary.as_ref()
    }

    /// Changes whenever the sets, the salt or the share do: the id of change
    /// notifications and part of every ETag.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The set for a request: the track it carries if any, else its targeting key's
    /// bucket, else stable. Without a canary set, always stable.
    pub fn select(&self, carried: Option<Track>, key: Option<&str>) -> (Track, &Arc<Set>) {
        let Some(canary) = &self.canary else { return (Track::Stable, &self.stable) };
        let track = match (carried, key) {
            (Some(track), _) => track,
            (None, Some(key)) => track::assign(&canary.salt, key.as_bytes(), canary.share),
            (None, None) => Track::Stable,
        };
        match track {
            Track::Stable => (Track::Stable, &self.stable),
            Track::Canary => (Track::Canary, &canary.set),
        }
    }
}

/// The first `len` hex digits of the SHA-256 of `bytes`.
pub(crate) fn digest_hex(bytes: &[u8], len: usize) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        let _ = write!(out, "{byte:02x}");
    }
    out.truncate(len);
    out
}
