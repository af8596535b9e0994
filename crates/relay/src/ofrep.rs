//! The OpenFeature Remote Evaluation Protocol, without I/O: a request's body and headers
//! in, a status, an ETag and a JSON body out.
//!
//! Followed: `service/openapi.yaml` and ADR-0008 (SSE change notifications) of
//! github.com/open-feature/protocol at commit d1a63a4 (OFREP 0.3.0).
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}`: 200 with the evaluation; 404 with
//!   `FLAG_NOT_FOUND`; 400 with the `errorCode` and `errorDetails` of any other error
//!   (`PARSE_ERROR`, `TARGETING_KEY_MISSING`, `INVALID_CONTEXT`, `GENERAL`), a request
//!   whose body is not `{"context": {...}}` being `INVALID_CONTEXT`.
//! - `POST /ofrep/v1/evaluate/flags`: 200 with every flag of the selected set (failed
//!   evaluations inline), the set's metadata, and `eventStreams` naming the SSE endpoint;
//!   an `ETag` that covers what is served (both sets' versions, salt and share), the
//!   track selected and the request (so its context): `If-None-Match` with it is
//!   answered 304 until any of them changes; 400 with `INVALID_CONTEXT` for a bad request.
//!
//! A body without `context` is read as an empty context (providers send `{}` when the
//! application gave none).

use crate::counters::{Counters, VersionCells};
use crate::served::{Pieces, Served, Set, digest_hex, write_json};
use bytes::Bytes;
use http::StatusCode;
use rollwave_flags::{Context, ErrorCode, Evaluation};
use rollwave_router::track::Track;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Largest request body read; a longer one is refused.
pub const MAX_BODY: usize = 64 * 1024;

/// Where change notifications are served (`eventStreams[].endpoint.requestUri`).
pub const EVENTS_PATH: &str = "/ofrep/v1/events";

/// What is served, with the counters of each set: replaced whole when the sets change.
#[derive(Debug)]
pub(crate) struct Current {
    pub served: Arc<Served>,
    stable: Arc<VersionCells>,
    canary: Option<Arc<VersionCells>>,
}

impl Current {
    pub fn new(served: Arc<Served>, counters: &Counters) -> Current {
        counters.set_current(&served);
        let stable = counters.cells_for(served.stable());
        let canary = served.canary().map(|c| counters.cells_for(&c.set));
        Current { served, stable, canary }
    }

    fn pick(&self, carried: Option<Track>, key: Option<&str>) -> (Track, &Set, &VersionCells) {
        let (track, set) = self.served.select(carried, key);
        let cells = match (track, &self.canary) {
            (Track::Canary, Some(cells)) => cells,
            _ => &self.stable,
        };
        (track, set, cells)
    }
}

/// An answer to write: status, optional ETag, JSON body (empty for 304).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub body: Bytes,
}

impl Answer {
    fn json(status: StatusCode, body: Vec<u8>) -> Answer {
        Answer { status, etag: None, body: Bytes::from(body) }
    }
}

/// The status OFREP gives a single evaluation that failed with `code`.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::FlagNotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The request's context, or why it is not one.
fn read_context(body: &[u8]) -> Result<Context, String> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the request body is not JSON ({e}); send {{\"context\": {{…}}}}"))?;
    let Value::Object(mut request) = request else {
        return Err("the request body must be a JSON object: {\"context\": {…}}".to_owned());
    };
    let attributes = match request.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(format!("\"context\" must be a JSON object, not {}", kind(&other))),
    };
    match attributes.get("targetingKey") {
        None | Some(Value::String(_)) => Ok(Context::new(attributes)),
        Some(other) => Err(format!("\"targetingKey\" must be a string, not {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub(crate) fn evaluate_one(
    current: &Current,
    counters: &Counters,
    key: &str,
    carried: Option<Track>,
    body: &[u8],
) -> Answer {
    let context = match read_context(body) {
        Ok(context) => context,
        Err(details) => return invalid_context(Some(key), &details),
    };
    let (_, set, cells) = current.pick(carried, context.targeting_key());
    let evaluation = set.flags().evaluate(key, &context);
    let status = match &evaluation.error {
        Some((code, _)) => status_of(*code),
        None => StatusCode::OK,
    };
    count(counters, cells, key, &evaluation);
    let mut out = Vec::with_capacity(256);
    write_evaluation(&mut out, key, &evaluation);
    Answer::json(status, out)
}

/// `POST /ofrep/v1/evaluate/flags`; `if_none_match` is the header's value, if any.
pub(crate) fn evaluate_bulk(
    current: &Current,
    carried: Option<Track>,
    body: &[u8],
    if_none_match: Option<&[u8]>,
) -> Answer {
    let context = match read_context(body) {
        Ok(context) => context,
        Err(details) => return invalid_context(None, &details),
    };
    let (track, set, cells) = current.pick(carried, context.targeting_key());
    let etag = etag(&current.served, track, body);
    if if_none_match.is_some_and(|header| matches_etag(header, &etag)) {
        return Answer { status: StatusCode::NOT_MODIFIED, etag: Some(etag), body: Bytes::new() };
    }
    let flags = set.flags();
    let mut out = Vec::with_capacity(128 + 160 * flags.len());
    out.extend_from_slice(b"{\"flags\":[");
    for (i, (key, pieces)) in flags.keys().zip(set.pieces()).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Some(evaluation) = flags.evaluate_at(i, &context) else { break };
        // Every key of the set: never FLAG_NOT_FOUND, and its cells are the i-th.
        cells.record_at(i, if evaluation.error.is_some() { None } else { evaluation.variant });
        if !write_from_pieces(&mut out, pieces, &evaluation) {
            write_evaluation(&mut out, key, &evaluation);
        }
    }
    out.extend_from_slice(set.bulk_tail(track));
    Answer { status: StatusCode::OK, etag: Some(etag), body: Bytes::from(out) }
}

/// [`write_evaluation`] from a set's constant pieces, for an evaluation that gave one of
/// its flag's variants or none; false (nothing written) for any other.
fn write_from_pieces(out: &mut Vec<u8>, pieces: &Pieces, e: &Evaluation) -> bool {
    let variant = match (e.error.is_some(), e.value, e.variant) {
        (false, Some(_), Some(name)) => match pieces.variant(name) {
            Some(piece) => piece,
            None => return false,
        },
        (false, None, None) => &[][..],
        _ => return false,
    };
    out.extend_from_slice(&pieces.head);
    out.extend_from_slice(variant);
    out.extend_from_slice(b",\"reason\":\"");
    out.extend_from_slice(e.reason.as_str().as_bytes());
    out.push(b'"');
    out.extend_from_slice(&pieces.tail);
    true
}

/// 400 `INVALID_CONTEXT`: the request is not an evaluation request.
pub(crate) fn invalid_context(key: Option<&str>, details: &str) -> Answer {
    let mut body = Map::new();
    if let Some(key) = key {
        body.insert("key".into(), Value::String(key.to_owned()));
    }
    body.insert("errorCode".into(), Value::String(ErrorCode::InvalidContext.as_str().to_owned()));
    body.insert("errorDetails".into(), Value::String(details.to_owned()));
    Answer::json(StatusCode::BAD_REQUEST, serde_json::to_vec(&body).unwrap_or_default())
}

/// A strong ETag over what is served, the track selected and the request's body (so
/// its context: the same context sent with other spacing only misses a 304).
fn etag(served: &Served, track: Track, body: &[u8]) -> String {
    let mut text = Vec::with_capacity(64 + body.len());
    text.extend_from_slice(served.fingerprint().as_bytes());
    text.push(0);
    text.extend_from_slice(track.as_str().as_bytes());
    text.push(0);
    text.extend_from_slice(body);
    format!("\"{}\"", digest_hex(&text, 32))
}

/// Whether an `If-None-Match` value (`*`, or a list of possibly weak tags) names `etag`.
fn matches_etag(header: &[u8], etag: &str) -> bool {
    header.split(|&b| b == b',').map(|tag| tag.trim_ascii()).any(|tag| {
        let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
        tag == b"*" || tag == etag.as_bytes()
    })
}

fn count(counters: &Counters, cells: &VersionCells, key: &str, evaluation: &Evaluation) {
    match &evaluation.error {
        Some((ErrorCode::FlagNotFound, _)) => counters.record_not_found(),
        Some(_) => cells.record(key, None),
        None => cells.record(key, evaluation.variant),
    }
}

/// The OFREP evaluation object ([`Evaluation::to_ofrep`]), written straight into `out`.
fn write_evaluation(out: &mut Vec<u8>, key: &str, e: &Evaluation) {
    out.extend_from_slice(b"{\"key\":");
    write_json(out, key);
    if let Some((code, details)) = &e.error {
        out.extend_from_slice(b",\"errorCode\":\"");
        out.extend_from_slice(code.as_str().as_bytes());
        out.extend_from_slice(b"\",\"errorDetails\":");
        write_json(out, details);
        out.push(b'}');
        return;
    }
    if let Some(value) = e.value {
        out.extend_from_slice(b",\"value\":");
        write_json(out, value);
    }
    if let Some(variant) = e.variant {
        out.extend_from_slice(b",\"variant\":");
        write_json(out, variant);
    }
    out.extend_from_slice(b",\"reason\":\"");
    out.extend_from_slice(e.reason.as_str().as_bytes());
    out.extend_from_slice(b"\",\"metadata\":");
    write_json(out, e.metadata);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollwave_flags::FlagSet;

    fn flags() -> FlagSet {
        FlagSet::parse(
            "t.json",
            r#"{"flags": {
              "on": {"state": "ENABLED", "variants": {"a": true, "b": false}, "defaultVariant": "a",
                     "metadata": {"team": "x"}},
              "off": {"state": "DISABLED", "variants": {"a": 1}, "defaultVariant": "a"},
              "quoted": {"state": "ENABLED", "variants": {"q\"": "\"\n"}, "defaultVariant": "q\""},
              "rule": {"state": "ENABLED", "variants": {"a": {"k": [1, 2.5]}, "b": null}, "defaultVariant": "b",
                       "targeting": {"var": "pick"}}
            }}"#,
        )
        .unwrap()
    }

    #[test]
    fn evaluations_are_written_as_to_ofrep_builds_them() {
        let set = flags();
        for pick in [serde_json::json!("a"), serde_json::json!("zzz"), serde_json::json!(null)] {
            let ctx = Context::from_value(&serde_json::json!({ "pick": pick })).unwrap();
            for key in ["on", "off", "quoted", "rule", "missing"] {
                let e = set.evaluate(key, &ctx);
                let mut out = Vec::new();
                write_evaluation(&mut out, key, &e);
                let written: Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(written, e.to_ofrep(key), "{key} with pick {pick}");
            }
        }
    }

    #[test]
    fn an_evaluation_written_from_the_set_s_pieces_is_the_one_written_whole() {
        let set = Set::new("v1", flags());
        let mut from_pieces = 0;
        for pick in [serde_json::json!("a"), serde_json::json!("b"), serde_json::json!("zzz"), serde_json::json!(null)]
        {
            let ctx = Context::from_value(&serde_json::json!({ "pick": pick })).unwrap();
            for (i, (key, pieces)) in set.flags().keys().zip(set.pieces()).enumerate() {
                let e = set.flags().evaluate_at(i, &ctx).unwrap();
                let (mut whole, mut pieced) = (Vec::new(), Vec::new());
                write_evaluation(&mut whole, key, &e);
                if write_from_pieces(&mut pieced, pieces, &e) {
                    from_pieces += 1;
                    assert_eq!(String::from_utf8(pieced).unwrap(), String::from_utf8(whole).unwrap(), "{key}");
                } else {
                    assert!(pieced.is_empty() && e.error.is_some(), "{key} with pick {pick}: {e:?}");
                }
            }
        }
        // `on`, `off` and `quoted` each time; `rule` when it picks a (a), b (b, whose
        // value is null) or nothing (its default); the unknown variant is an error,
        // written whole.
        assert_eq!(from_pieces, 4 * 3 + 3);
    }

    #[test]
    fn a_bulk_answer_is_every_flag_s_evaluation_and_the_set_s_metadata() {
        let set = Arc::new(Set::new("v7", flags()));
        let counters = Counters::new();
        let current = Current::new(Arc::new(Served::single(Arc::clone(&set))), &counters);
        let body = br#"{"context": {"pick": "a"}}"#;
        let answer = evaluate_bulk(&current, None, body, None);
        assert_eq!(answer.status, StatusCode::OK);
        let got: Value = serde_json::from_slice(&answer.body).unwrap();
        let ctx = read_context(body).unwrap();
        let expected: Vec<Value> = set.flags().keys().map(|k| set.flags().evaluate(k, &ctx).to_ofrep(k)).collect();
        assert_eq!(got["flags"], Value::Array(expected));
        assert_eq!(got["metadata"], serde_json::json!({ "flagSetVersion": "v7", "track": "stable" }));
        assert_eq!(got["eventStreams"][0]["endpoint"]["requestUri"], EVENTS_PATH);
        let again = evaluate_bulk(&current, None, body, answer.etag.as_deref().map(str::as_bytes));
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
        let other =
            evaluate_bulk(&current, None, br#"{"context": {"pick": "b"}}"#, answer.etag.as_deref().map(str::as_bytes));
        assert_eq!(other.status, StatusCode::OK);
    }

    #[test]
    fn if_none_match_reads_lists_weak_tags_and_the_star() {
        assert!(matches_etag(b"\"abc\"", "\"abc\""));
        assert!(matches_etag(b"\"x\", W/\"abc\"", "\"abc\""));
        assert!(matches_etag(b"*", "\"abc\""));
        assert!(!matches_etag(b"\"abd\"", "\"abc\""));
        assert!(!matches_etag(b"", "\"abc\""));
    }

    #[test]
    fn every_error_code_has_the_status_ofrep_gives_it() {
        for (code, status) in [
            (ErrorCode::FlagNotFound, 404),
            (ErrorCode::ParseError, 400),
            (ErrorCode::TargetingKeyMissing, 400),
            (ErrorCode::InvalidContext, 400),
            (ErrorCode::General, 400),
            (ErrorCode::TypeMismatch, 400),
        ] {
            assert_eq!(status_of(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn a_request_is_a_json_object_with_an_object_context_and_a_string_key() {
        assert!(read_context(b"{}").is_ok());
        assert!(read_context(br#"{"context": null}"#).is_ok());
        assert_eq!(read_context(br#"{"context": {"targetingKey": "u"}}"#).unwrap().targeting_key(), Some("u"));
        for bad in [&b""[..], b"[]", b"{", br#"{"context": 3}"#, br#"{"context": {"targetingKey": 7}}"#] {
            assert!(read_context(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{{\"context\": {{\"a\": {}{}}}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(read_context(deep.as_bytes()).is_err());
    }
}
