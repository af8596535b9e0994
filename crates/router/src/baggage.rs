//! The W3C `baggage` header, as far as the router needs it: find the
//! `rollwave.track` member, and replace it while passing every other member on.
//!
//! Reading follows the specification (<https://www.w3.org/TR/baggage/>):
//! - `baggage: key=value;property;key2=value2, other=value`; spaces and tabs around
//!   keys, values, `=`, `;` and `,` are allowed and trimmed;
//! - several `baggage` headers are one list, in order;
//! - a member that does not match the grammar (no `=`, a key that is not a token, a
//!   value with characters outside `baggage-octet`, a malformed property) is dropped,
//!   alone: its neighbours are kept; empty members (`a=1,,b=2`) are skipped;
//! - at most [`MAX_MEMBERS`] members and [`MAX_BYTES`] bytes (members plus the commas
//!   between them) are honoured: the first member that would go past either limit and
//!   every member after it are dropped whole, never cut.
//!
//! Nothing here fails: a header that cannot be read is no decision, and a request is
//! never refused because of its baggage.
//!
//! ```
//! use http::HeaderMap;
//! use rollwave_router::{baggage, track::Track};
//!
//! let mut headers = HeaderMap::new();
//! headers.append("baggage", "tenant=acme, rollwave.track = canary ;src=edge".parse().unwrap());
//! headers.append("baggage", "bad member, user=alice".parse().unwrap());
//! assert_eq!(baggage::find_track(&headers), Some(Track::Canary));
//!
//! baggage::set_track(&mut headers, Track::Stable);
//! assert_eq!(headers["baggage"], "tenant=acme,user=alice,rollwave.track=stable");
//! ```

use crate::track::{BAGGAGE_KEY, Track};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header name; several headers of this name form one list.
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// Members honoured, counting the router's own `rollwave.track` when it writes.
pub const MAX_MEMBERS: usize = 64;

/// Bytes honoured: the members (trimmed) and one comma between each two.
pub const MAX_BYTES: usize = 8192;

/// One well-formed list member: slices of the header text, trimmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    /// The whole member, properties included: what is passed on.
    pub text: &'a [u8],
    pub key: &'a [u8],
    /// The value, still percent-encoded.
    pub value: &'a [u8],
}

/// The honoured members of all `baggage` headers, in order. `skip` drops members before
/// the limits are counted (the router drops its own key when it rewrites the header);
/// `max_members` and `max_bytes` are the limits.
pub fn members<'h>(
    headers: &'h HeaderMap,
    skip: impl Fn(&Member<'h>) -> bool + 'h,
    max_members: usize,
    max_bytes: usize,
) -> impl Iterator<Item = Member<'h>> + 'h {
    let mut count = 0;
    let mut bytes = 0;
    headers
        .get_all(BAGGAGE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(parse_member)
        .filter(move |m| !skip(m))
        .map_while(move |m| {
            let separator = usize::from(count > 0);
            if count == max_members || bytes + separator + m.text.len() > max_bytes {
                return None;
            }
            count += 1;
            bytes += separator + m.text.len();
            Some(m)
        })
}

/// The track named by the first honoured `rollwave.track` member whose value is
/// `stable` or `canary` (percent-encoding allowed, case ignored).
pub fn find_track(headers: &HeaderMap) -> Option<Track> {
    if !headers.contains_key(BAGGAGE) {
        return None;
    }
    members(headers, |_| false, MAX_MEMBERS, MAX_BYTES)
        .filter(|m| m.key == BAGGAGE_KEY.as_bytes())
        .find_map(|m| decode_short(m.value).and_then(|(buf, len)| Track::parse(&buf[..len])))
}

/// Replaces the `baggage` headers with one: the honoured members other than
/// `rollwave.track`, in order, then `rollwave.track=<track>`, all within the limits.
pub fn set_track(headers: &mut HeaderMap, track: Track) {
    let ours = track.baggage_member();
    if !headers.contains_key(BAGGAGE) {
        headers.insert(BAGGAGE, HeaderValue::from_static(ours));
        return;
    }
    let mut out = Vec::new();
    for member in members(headers, |m| m.key == BAGGAGE_KEY.as_bytes(), MAX_MEMBERS - 1, MAX_BYTES - ours.len() - 1) {
        out.extend_from_slice(member.text);
        out.push(b',');
    }
    out.extend_from_slice(ours.as_bytes());
    // Every member kept matched the grammar, whose bytes are all valid in a header
    // value, so this cannot fail; if it ever did, the decision alone still goes out.
    let value = HeaderValue::from_maybe_shared(Bytes::from(out)).unwrap_or(HeaderValue::from_static(ours));
    headers.insert(BAGGAGE, value);
}

/// Removes spaces and horizontal tabs at both ends (HTTP's optional white space).
pub fn trim_ows(mut text: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = text {
        text = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = text {
        text = rest;
    }
    text
}

/// Parses one comma-separated piece; `None` when it is empty or malformed.
fn parse_member(raw: &[u8]) -> Option<Member<'_>> {
    let text = trim_ows(raw);
    let eq = text.iter().position(|&b| b == b'=')?;
    let key = trim_ows(&text[..eq]);
    if !is_token(key) {
        return None;
    }
    let rest = &text[eq + 1..];
    let value_end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
    let value = trim_ows(&rest[..value_end]);
    if !value.iter().all(|&b| is_baggage_octet(b)) {
        return None;
    }
    if value_end < rest.len() && !rest[value_end + 1..].split(|&b| b == b';').all(is_property) {
        return None;
    }
    Some(Member { text, key, value })
}

/// `key OWS "=" OWS value` or `key OWS`.
fn is_property(raw: &[u8]) -> bool {
    let text = trim_ows(raw);
    match text.iter().position(|&b| b == b'=') {
        Some(eq) => is_token(trim_ows(&text[..eq])) && trim_ows(&text[eq + 1..]).iter().all(|&b| is_baggage_octet(b)),
        None => is_token(text),
    }
}

/// RFC 7230 `token`: one or more of ALPHA, DIGIT and ``!#$%&'*+-.^_`|~``.
fn is_token(text: &[u8]) -> bool {
    !text.is_empty() && text.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Printable ASCII except space, `"`, `,`, `;` and `\`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Percent-decodes a value of at most 8 decoded bytes (enough for any track word);
/// `None` when it is longer or its escapes are malformed.
fn decode_short(value: &[u8]) -> Option<([u8; 8], usize)> {
    let mut out = [0u8; 8];
    let mut len = 0;
    let mut i = 0;
    while i < value.len() {
        let byte = if value[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            i += 3;
            (hi * 16 + lo) as u8
        } else {
            i += 1;
            value[i - 1]
        };
        *out.get_mut(len)? = byte;
        len += 1;
    }
    Some((out, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(BAGGAGE, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn kept(values: &[&str]) -> Vec<String> {
        let map = headers(values);
        members(&map, |_| false, MAX_MEMBERS, MAX_BYTES).map(|m| String::from_utf8_lossy(m.text).into_owned()).collect()
    }

    #[test]
    fn members_follow_the_grammar_and_bad_ones_drop_alone() {
        assert_eq!(
            kept(&["key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue"]),
            ["key1=value1;property1;property2", "key2 = value2", "key3=value3; propertyKey=propertyValue"]
        );
        assert_eq!(kept(&["a=1,,b=2,"]), ["a=1", "b=2"]);
        assert_eq!(kept(&["noequals, =novalue, k y=1, ok=1"]), ["ok=1"]);
        assert_eq!(kept(&["q=\"quoted\", bs=a\\b, sp=a b, ok=x=y"]), ["ok=x=y"]);
        assert_eq!(kept(&["p=1;, p2=1;=v, p3=1;k=v;flag"]), ["p3=1;k=v;flag"]);
        assert_eq!(kept(&["empty=", "second=2"]), ["empty=", "second=2"]);
    }

    #[test]
    fn limits_drop_whole_members_from_the_first_that_does_not_fit() {
        let many: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
        let kept64 = kept(&[&many.join(",")]);
        assert_eq!(kept64.len(), 64);
        assert_eq!(kept64.last().map(String::as_str), Some("k63=v"));

        // 8 members of 1023 bytes plus 7 commas is 8191 bytes: all fit. A ninth does not,
        // and a short member after it is dropped too.
        let big = |i: usize| format!("k{i}={}", "x".repeat(1023 - 3));
        let values: Vec<String> = (0..9).map(big).chain(["z=1".to_owned()]).collect();
        let fit = kept(&[&values.join(",")]);
        assert_eq!(fit.len(), 8);
        assert_eq!(fit.iter().map(String::len).sum::<usize>() + 7, 8191);
    }

    #[test]
    fn decisions_are_read_from_the_first_known_value() {
        let track = |values: &[&str]| find_track(&headers(values));
        assert_eq!(track(&["rollwave.track=canary"]), Some(Track::Canary));
        assert_eq!(track(&["a=1", " rollwave.track =\tStable ;p"]), Some(Track::Stable));
        assert_eq!(track(&["rollwave.track=%63anary"]), Some(Track::Canary));
        assert_eq!(track(&["rollwave.track=blue, rollwave.track=stable"]), Some(Track::Stable));
        assert_eq!(track(&["rollwave.track=blue"]), None);
        assert_eq!(track(&["rollwave.track=%zz"]), None);
        assert_eq!(track(&["rollwave.track=canary-but-longer"]), None);
        assert_eq!(track(&["Rollwave.Track=canary"]), None);
        assert_eq!(track(&["rollwave.track=\"canary\""]), None);
        let beyond: Vec<String> = (0..64).map(|i| format!("k{i}=v")).chain(["rollwave.track=canary".into()]).collect();
        assert_eq!(track(&[&beyond.join(",")]), None);
    }

    #[test]
    fn rewriting_replaces_our_member_and_keeps_the_rest_within_limits() {
        let mut map = headers(&["a=1, rollwave.track=canary, b=2;p", "c=3"]);
        set_track(&mut map, Track::Stable);
        assert_eq!(map.get_all(BAGGAGE).iter().count(), 1);
        assert_eq!(map[BAGGAGE], "a=1,b=2;p,c=3,rollwave.track=stable");

        let mut map = HeaderMap::new();
        set_track(&mut map, Track::Canary);
        assert_eq!(map[BAGGAGE], "rollwave.track=canary");

        let many: Vec<String> = (0..80).map(|i| format!("k{i}=v")).collect();
        let mut map = headers(&[&many.join(",")]);
        set_track(&mut map, Track::Canary);
        let out = map[BAGGAGE].to_str().unwrap().to_owned();
        assert_eq!(out.split(',').count(), 64);
        assert!(out.ends_with(",k62=v,rollwave.track=canary"));

        let huge = format!("big={}", "x".repeat(9000));
        let mut map = headers(&[&huge, "small=1"]);
        set_track(&mut map, Track::Canary);
        assert_eq!(map[BAGGAGE], "rollwave.track=canary");
        assert!(map[BAGGAGE].len() <= MAX_BYTES);
    }

    #[test]
    fn bytes_that_are_not_text_are_ignored() {
        let mut map = HeaderMap::new();
        map.append(BAGGAGE, HeaderValue::from_bytes(b"x=\xff\xfe, rollwave.track=canary").unwrap());
        assert_eq!(find_track(&map), Some(Track::Canary));
        set_track(&mut map, Track::Canary);
        assert_eq!(map[BAGGAGE], "rollwave.track=canary");
    }
}

#[cfg(test)]
mod fuzz;
