//! The request path: decide the track, choose a host, forward, account.

use crate::balance::{FailureOutcome, HealthPolicy};
use crate::body::{Exchange, ProxyBody, UpstreamBody};
use crate::metrics::Metrics;
use crate::pool::{Connector, SendError};
use crate::table::{Routed, Table, Upstream};
use crate::track::{self, TRACK_HEADER, Track};
use crate::upstream::ResponseBody;
use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sent by the control plane's synthetic monitors: answer with [`BACKEND_HEADER`].
pub const MONITOR_HEADER: HeaderName = HeaderName::from_static("x-rollwave-monitor");
/// The address of the host that answered, on answers to monitors only.
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-rollwave-backend");

/// What the proxy needs besides the table.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// From a request's arrival to the end of its response.
    pub timeout: Duration,
    pub health: HealthPolicy,
    /// Honour `x-rollwave-track` and baggage on incoming requests.
    pub trust_incoming_track: bool,
}

/// State shared by every connection.
pub struct Shared {
    pub table: ArcSwap<Table>,
    pub connector: Connector,
    pub metrics: Arc<Metrics>,
    pub options: ProxyOptions,
    /// Time zero of the millisecond clock that [`crate::balance`] works with.
    pub epoch: Instant,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("options", &self.options).finish_non_exhaustive()
    }
}

/// How the track of a request was settled.
struct Decision {
    track: Track,
    /// A `Set-Cookie` value when the key was made up for this request.
    set_cookie: Option<HeaderValue>,
}

impl Shared {
    /// Milliseconds since the router started, plus one so that it is never zero.
    fn now_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Handles one request; never fails (errors become 5xx responses).
    pub async fn handle(&self, peer: IpAddr, req: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.options.timeout);
        if req.method() == Method::CONNECT {
            return local_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n", None, None);
        }
        let now = self.now_ms(started);
        let (decision, routed) = {
            let table = self.table.load();
            let decision = self.decide(&table, req.headers(), peer);
            let routed = table.route(decision.track, now, crate::rng::next_u64(), &self.options.health, None);
            (decision, routed)
        };
        let Some(routed) = routed else {
            self.metrics.unavailable();
            return local_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no host of this service can take the request\n",
                Some(decision.track),
                decision.set_cookie,
            );
        };
        if routed.fell_back {
            self.metrics.fallback(decision.track);
        }

        // A synthetic monitor asks which host answered, so its result counts for that host.
        let monitor = req.headers().contains_key(&MONITOR_HEADER);
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        track::inject(&mut parts.headers, decision.track);
        // Hosts are sent the origin form (`/path?query`).
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path);
        }
        // A request without a body can be sent again if its host turns out to be down;
        // the copy is only made when the host already failed recently.
        let resend = (routed.upstream.state.is_suspect() && body.is_end_stream()).then(|| Resend {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        });
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, UpstreamBody::Client(body));

        let mut attempt = self.send(request, routed.upstream, started, deadline).await;
        if let Err(failure) = &mut attempt {
            // A request that never left goes elsewhere as it is; one whose exchange broke
            // only if it has no body and may be repeated.
            let again = failure.unsent.take().or_else(|| {
                let resend = resend.filter(|r| failure.may_resend(&r.method))?;
                let mut request = Request::new(UpstreamBody::Empty);
                *request.method_mut() = resend.method;
                *request.uri_mut() = resend.uri;
                *request.headers_mut() = resend.headers;
                Some(request)
            });
            if let Some(request) = again
                && let Some(routed) = self.reroute(decision.track, failure.exchange.upstream())
            {
                attempt = self.send(request, routed.upstream, started, deadline).await;
            }
        }

        match attempt {
            Ok((response, exchange)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.headers.insert(TRACK_HEADER, decision.track.header_value());
                if monitor && let Ok(address) = HeaderValue::from_str(exchange.upstream().spec.address.as_str()) {
                    parts.headers.insert(BACKEND_HEADER, address);
                }
                if let Some(cookie) = decision.set_cookie {
                    parts.headers.append(header::SET_COOKIE, cookie);
                }
                Response::from_parts(parts, ProxyBody::upstream(body, deadline, exchange))
            }
            Err(failure) => {
                let (status, text) = match failure.kind {
                    FailureKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "the upstream host did not answer in time\n"),
                    FailureKind::Connect | FailureKind::Other => {
                        (StatusCode::BAD_GATEWAY, "the upstream host could not be reached\n")
                    }
                };
                local_response(status, text, Some(decision.track), decision.set_cookie)
            }
        }
    }

    /// The track of a request: a decision it carries (when trusted), else its key's hash.
    fn decide(&self, table: &Table, headers: &HeaderMap, peer: IpAddr) -> Decision {
        if self.options.trust_incoming_track
            && let Some(track) = track::from_headers(headers)
        {
            return Decision { track, set_cookie: None };
        }
        let key = &table.key;
        if let Some(value) = headers.get(&key.header).filter(|v| !v.is_empty()) {
            return hashed(table, value.as_bytes(), None);
        }
        if let Some(value) = find_cookie(headers, &key.cookie) {
            return hashed(table, value, None);
        }
        if key.set_cookie {
            let mut new_key = [0u8; 32];
            random_hex(&mut new_key);
            // Hex digits and the cookie name (a token) are valid in a header value.
            let cookie = HeaderValue::from_maybe_shared(bytes::Bytes::from(format!(
                "{}={}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax",
                key.cookie,
                std::str::from_utf8(&new_key).unwrap_or_default()
            )))
            .ok();
            return hashed(table, &new_key, cookie);
        }
        let mut buf = [0u8; 48];
        let len = {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // 48 bytes hold the longest IPv6 text form (45 bytes).
            let _ = write!(cursor, "{peer}");
            cursor.position() as usize
        };
        hashed(table, &buf[..len], None)
    }

    /// Sends one attempt and records its outcome on the host's health and metrics.
    async fn send(
        &self,
        mut request: Request<UpstreamBody>,
        upstream: Arc<Upstream>,
        started: Instant,
        deadline: tokio::time::Instant,
    ) -> Result<(Response<ResponseBody>, Exchange), Failure> {
        let add_host = !request.headers().contains_key(header::HOST);
        if add_host && let Some(host) = &upstream.host_header {
            request.headers_mut().insert(header::HOST, host.clone());
        }
        let exchange = Exchange::begin(upstream, started);
        let mut unsent = None;
        let host = exchange.upstream();
        let result =
            tokio::time::timeout_at(deadline, self.connector.send(&host.pool, &host.spec.address, request)).await;
        host.metrics.sent();
        let kind = match result {
            Ok(Ok(response)) => {
                if response.status().is_server_error() {
                    host.metrics.failed();
                    self.record_failure(host);
                } else {
                    host.state.record_success();
                }
                return Ok((response, exchange));
            }
            Ok(Err(SendError::Connect(mut request))) => {
                if add_host {
                    request.headers_mut().remove(header::HOST);
                }
                unsent = Some(*request);
                FailureKind::Connect
            }
            Ok(Err(SendError::Exchange)) => FailureKind::Other,
            Err(_elapsed) => FailureKind::Timeout,
        };
        host.metrics.failed();
        self.record_failure(host);
        Err(Failure { kind, exchange, unsent })
    }

    fn record_failure(&self, host: &Upstream) {
        if host.state.record_failure(self.now_ms(Instant::now()), &self.options.health) == FailureOutcome::Ejected {
            host.metrics.ejected();
        }
    }

    /// Another host for a request whose first host failed.
    fn reroute(&self, wanted: Track, failed: &Upstream) -> Option<Routed> {
        let table = self.table.load();
        let now = self.now_ms(Instant::now());
        let routed = table.route(wanted, now, crate::rng::next_u64(), &self.options.health, Some(&failed.state))?;
        if routed.fell_back {
            self.metrics.fallback(wanted);
        }
        Some(routed)
    }
}

/// What is kept of a bodyless request to send it again.
struct Resend {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

enum FailureKind {
    /// No connection could be made: nothing was sent.
    Connect,
    /// The connection failed during the exchange.
    Other,
    Timeout,
}

struct Failure {
    kind: FailureKind,
    exchange: Exchange,
    /// The request itself, when nothing of it was sent.
    unsent: Option<Request<UpstreamBody>>,
}

impl Failure {
    /// A connect error sent nothing, so any request may go elsewhere; after a broken
    /// exchange only idempotent requests may (RFC 9110, 9.2.2). A timeout used up the
    /// request's time.
    fn may_resend(&self, method: &Method) -> bool {
        match self.kind {
            FailureKind::Connect => true,
            FailureKind::Other => {
                matches!(
                    *method,
                    Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
                )
            }
            FailureKind::Timeout => false,
        }
    }
}

fn hashed(table: &Table, key: &[u8], set_cookie: Option<HeaderValue>) -> Decision {
    Decision { track: track::assign(&table.salt, key, table.canary_share), set_cookie }
}

/// The value of the cookie `name` among the `Cookie` headers (`a=1; b=2`), unquoted.
fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(header::COOKIE).iter().flat_map(|value| value.as_bytes().split(|&b| b == b';')).find_map(|pair| {
        let pair = crate::baggage::trim_ows(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        if crate::baggage::trim_ows(&pair[..eq]) != name.as_bytes() {
            return None;
        }
        let value = crate::baggage::trim_ows(&pair[eq + 1..]);
        let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
        (!value.is_empty()).then_some(value)
    })
}

/// Fills `out` with random lowercase hex digits.
fn random_hex(out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for chunk in out.chunks_mut(16) {
        let mut bits = crate::rng::next_u64();
        for digit in chunk {
            *digit = DIGITS[(bits & 15) as usize];
            bits >>= 4;
        }
    }
}

/// Removes the headers that describe one connection rather than the message (RFC 9110,
/// 7.6.1), including any named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    // Most messages have none: one look at each name is cheaper than a lookup per kind.
    let hop_by_hop = |name: &HeaderName| {
        name == header::CONNECTION
            || name == header::TE
            || name == header::TRAILER
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
    };
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .filter_map(|name| HeaderName::from_bytes(crate::baggage::trim_ows(name)).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION, header::TE, header::TRAILER, header::TRANSFER_ENCODING, header::UPGRADE]
    {
        if headers.contains_key(&name) {
            headers.remove(name);
        }
    }
}

fn local_response(
    status: StatusCode,
    text: &'static str,
    track: Option<Track>,
    set_cookie: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(track) = track {
        headers.insert(TRACK_HEADER, track.header_value());
    }
    if let Some(cookie) = set_cookie {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_several_headers_and_unquoted() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; rollwave_keyx=no"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2;  rollwave_key=\"abc\" ; c=3"));
        assert_eq!(find_cookie(&headers, "rollwave_key"), Some(&b"abc"[..]));
        assert_eq!(find_cookie(&headers, "missing"), None);
        headers.insert(header::COOKIE, HeaderValue::from_static("rollwave_key="));
        assert_eq!(find_cookie(&headers, "rollwave_key"), None);
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn random_keys_are_hex() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        random_hex(&mut a);
        random_hex(&mut b);
        assert!(a.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }
}
