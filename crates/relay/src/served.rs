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
use std::sync::Arc;

/// One flag-set version, parsed.
#[derive(Debug)]
pub struct Set {
    version: String,
    flags: FlagSet,
}

impl Set {
    pub fn new(version: impl Into<String>, flags: FlagSet) -> Set {
        Set { version: version.into(), flags }
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
