//! Which track a request belongs to: the sticky hash that assigns it, and the headers
//! that carry the decision along the call chain.
//!
//! This module is the "tiny library" for Rust services behind a router: a service
//! reads the decision from the request it is handling with [`from_headers`] and
//! writes it onto every request (or queue message) it sends with [`inject`], so the
//! next hop stays on the same track.
//!
//! ```
//! use http::HeaderMap;
//! use rollwave_router::track::{self, Track};
//!
//! // The request a service received from the router.
//! let mut incoming = HeaderMap::new();
//! incoming.insert("x-rollwave-track", "canary".parse().unwrap());
//! let track = track::from_headers(&incoming);
//! assert_eq!(track, Some(Track::Canary));
//!
//! // A request the service sends to another service.
//! let mut outgoing = HeaderMap::new();
//! outgoing.insert("baggage", "tenant=acme".parse().unwrap());
//! if let Some(track) = track {
//!     track::inject(&mut outgoing, track);
//! }
//! assert_eq!(outgoing["x-rollwave-track"], "canary");
//! assert_eq!(outgoing["baggage"], "tenant=acme,rollwave.track=canary");
//! ```

use crate::baggage;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use rollwave_core::share::BasisPoints;
use std::fmt;

/// The header that carries the decision, on requests, responses and queue messages.
pub const TRACK_HEADER: HeaderName = HeaderName::from_static("x-rollwave-track");

/// The W3C baggage member that carries the decision.
pub const BAGGAGE_KEY: &str = "rollwave.track";

/// How many buckets the hash is cut into: one per basis point.
pub const BUCKETS: u32 = 10_000;

/// The two populations a router splits traffic between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Track {
    Stable,
    Canary,
}

impl From<rollwave_api::Track> for Track {
    fn from(track: rollwave_api::Track) -> Self {
        match track {
            rollwave_api::Track::Stable => Track::Stable,
            rollwave_api::Track::Canary => Track::Canary,
        }
    }
}

impl Track {
    pub const ALL: [Track; 2] = [Track::Stable, Track::Canary];

    /// The word used in headers, baggage, routes files and metric labels: the wire's.
    pub const fn as_str(self) -> &'static str {
        self.wire().as_str()
    }

    /// The control plane's name for the track.
    pub const fn wire(self) -> rollwave_api::Track {
        match self {
            Track::Stable => rollwave_api::Track::Stable,
            Track::Canary => rollwave_api::Track::Canary,
        }
    }

    /// Reads `stable` or `canary`, ignoring ASCII case and surrounding spaces or tabs.
    /// Anything else is `None`: an unknown decision is no decision.
    pub fn parse(text: &[u8]) -> Option<Track> {
        let text = baggage::trim_ows(text);
        Track::ALL.into_iter().find(|t| text.eq_ignore_ascii_case(t.as_str().as_bytes()))
    }

    pub const fn other(self) -> Track {
        match self {
            Track::Stable => Track::Canary,
            Track::Canary => Track::Stable,
        }
    }

    /// 0 for stable, 1 for canary: an index into per-track arrays.
    pub const fn index(self) -> usize {
        match self {
            Track::Stable => 0,
            Track::Canary => 1,
        }
    }

    /// The value of [`TRACK_HEADER`]; costs no allocation.
    pub const fn header_value(self) -> HeaderValue {
        match self {
            Track::Stable => HeaderValue::from_static(Track::Stable.as_str()),
            Track::Canary => HeaderValue::from_static(Track::Canary.as_str()),
        }
    }

    /// The whole baggage member, `rollwave.track=stable` or `rollwave.track=canary`.
    pub const fn baggage_member(self) -> &'static str {
        match self {
            Track::Stable => "rollwave.track=stable",
            Track::Canary => "rollwave.track=canary",
        }
    }
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// MurmurHash3, x86 32-bit variant, of `data` with `seed`.
///
/// ```
/// use rollwave_router::track::murmur3_x86_32;
/// assert_eq!(murmur3_x86_32(b"hello", 0), 0x248b_fa47);
/// assert_eq!(murmur3_x86_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2e4f_f723);
/// assert_eq!(murmur3_x86_32(b"", 0), 0);
/// ```
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    let mut hasher = Murmur3::new(seed);
    hasher.write(data);
    hasher.finish()
}

/// The bucket, from 0 to 9999, of a key under a salt:
/// `murmur3_x86_32("{salt}:{key}", 0) % 10000`, computed without building the string.
///
/// ```
/// use rollwave_router::track::{bucket, murmur3_x86_32};
/// assert_eq!(bucket("checkout-v3", b"user-42"), (murmur3_x86_32(b"checkout-v3:user-42", 0) % 10_000) as u16);
/// ```
pub fn bucket(salt: &str, key: &[u8]) -> u16 {
    let mut hasher = Murmur3::new(0);
    hasher.write(salt.as_bytes());
    hasher.write(b":");
    hasher.write(key);
    // The remainder is below 10 000, so it fits.
    (hasher.finish() % BUCKETS) as u16
}

/// The track of a key: canary iff its bucket is below the canary share in basis points.
/// Growing the share only ever moves keys from stable to canary.
///
/// ```
/// use rollwave_core::share::BasisPoints;
/// use rollwave_router::track::{assign, bucket, Track};
///
/// let share = BasisPoints::new(1_000).unwrap(); // 10 %
/// let expected = if bucket("checkout-v3", b"user-42") < 1_000 { Track::Canary } else { Track::Stable };
/// assert_eq!(assign("checkout-v3", b"user-42", share), expected);
/// assert_eq!(assign("checkout-v3", b"user-42", BasisPoints::ZERO), Track::Stable);
/// assert_eq!(assign("checkout-v3", b"user-42", BasisPoints::FULL), Track::Canary);
/// ```
pub fn assign(salt: &str, key: &[u8], canary_share: BasisPoints) -> Track {
    if u32::from(bucket(salt, key)) < canary_share.get() { Track::Canary } else { Track::Stable }
}

/// The decision a request already carries: the `x-rollwave-track` header if it holds
/// `stable` or `canary`, else the first `rollwave.track` member of the W3C `baggage`
/// headers (within the limits of [`baggage`](crate::baggage)) that holds one.
/// Unknown values and malformed headers count as no decision.
pub fn from_headers(headers: &HeaderMap) -> Option<Track> {
    headers
        .get_all(TRACK_HEADER)
        .iter()
        .find_map(|value| Track::parse(value.as_bytes()))
        .or_else(|| baggage::find_track(headers))
}

/// Writes the decision onto an outgoing request: sets `x-rollwave-track` (replacing any
/// value) and adds or replaces the `rollwave.track` member of `baggage`, keeping the
/// other well-formed members within the W3C limits.
pub fn inject(headers: &mut HeaderMap, track: Track) {
    headers.insert(TRACK_HEADER, track.header_value());
    baggage::set_track(headers, track);
}

/// MurmurHash3 x86 32 fed in pieces, so that `salt`, `:` and `key` need not be joined.
struct Murmur3 {
    state: u32,
    /// Bytes waiting to make up a 4-byte block, little-endian.
    tail: u32,
    tail_len: u32,
    len: u32,
}

impl Murmur3 {
    fn new(seed: u32) -> Self {
        Murmur3 { state: seed, tail: 0, tail_len: 0, len: 0 }
    }

    fn write(&mut self, mut data: &[u8]) {
        // The reference implementation takes the length as a 32-bit integer.
        self.len = self.len.wrapping_add(data.len() as u32);
        while self.tail_len > 0 {
            let Some((&byte, rest)) = data.split_first() else { return };
            self.tail |= u32::from(byte) << (8 * self.tail_len);
            self.tail_len += 1;
            data = rest;
            if self.tail_len == 4 {
                self.mix_block(self.tail);
                self.tail = 0;
                self.tail_len = 0;
            }
        }
        let mut blocks = data.chunks_exact(4);
        for block in &mut blocks {
            self.mix_block(u32::from_le_bytes([block[0], block[1], block[2], block[3]]));
        }
        for (i, &byte) in blocks.remainder().iter().enumerate() {
            self.tail |= u32::from(byte) << (8 * i);
        }
        self.tail_len = blocks.remainder().len() as u32;
    }

    fn mix_block(&mut self, block: u32) {
        self.state ^= scramble(block);
        self.state = self.state.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }

    fn finish(self) -> u32 {
        let mut h = self.state;
        if self.tail_len > 0 {
            h ^= scramble(self.tail);
        }
        h ^= self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

fn scramble(k: u32) -> u32 {
    k.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_test_vectors_hold() {
        assert_eq!(murmur3_x86_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_x86_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2e4f_f723);
        assert_eq!(murmur3_x86_32(b"", 0), 0);
    }

    #[test]
    fn agrees_with_the_murmur3_crate_however_the_input_is_cut() {
        let text: Vec<u8> = (0u32..200).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        for len in 0..text.len() {
            let data = &text[..len];
            let expected = murmur3::murmur3_32(&mut std::io::Cursor::new(data), 0x9747_b28c).unwrap();
            assert_eq!(murmur3_x86_32(data, 0x9747_b28c), expected, "length {len}");
            for cut in 0..=len.min(9) {
                let mut pieces = Murmur3::new(0x9747_b28c);
                pieces.write(&data[..cut]);
                pieces.write(&[]);
                pieces.write(&data[cut..]);
                assert_eq!(pieces.finish(), expected, "length {len} cut at {cut}");
            }
        }
    }

    #[test]
    fn bucket_hashes_salt_colon_key() {
        for (salt, key) in [("checkout-v3", "user-1"), ("", ""), ("s", "a longer key than the salt")] {
            let joined = format!("{salt}:{key}");
            assert_eq!(u32::from(bucket(salt, key.as_bytes())), murmur3_x86_32(joined.as_bytes(), 0) % 10_000);
        }
    }

    #[test]
    fn track_words_ignore_case_and_spaces_only() {
        assert_eq!(Track::parse(b"canary"), Some(Track::Canary));
        assert_eq!(Track::parse(b" Stable\t"), Some(Track::Stable));
        assert_eq!(Track::parse(b"canary2"), None);
        assert_eq!(Track::parse(b""), None);
        assert_eq!(Track::Canary.other(), Track::Stable);
    }
}
