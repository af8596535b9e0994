//! HTTP/1.1 to a host, done on the task that serves the client: the request head (and
//! body) written straight to the host's socket, the response head parsed from the bytes
//! read, and the response body read from the socket only as the client's connection asks
//! for it. No task, channel or copy stands between the two sides; a body's bytes go out
//! as slices of the buffer they were read into.
//!
//! A response is framed as RFC 9112 (6.3) says: no body after `HEAD`, `1xx`, `204` and
//! `304`; else `Transfer-Encoding: chunked`; else `Content-Length`; else until the host
//! closes (and the connection is not reused). Interim `1xx` responses are skipped.

use crate::body::{BoxError, UpstreamBody};
use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use tokio::net::TcpStream;

/// Longest response head accepted from a host.
const MAX_HEAD: usize = 64 * 1024;

/// Most header lines in a response head.
const MAX_HEADERS: usize = 128;

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Longest chunk-size line or trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// An open connection to a host, between requests or carrying one.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// Bytes read from the host and not yet consumed.
    read: BytesMut,
    /// Scratch space for the request head.
    head: Vec<u8>,
}

/// Why an exchange gave no response.
#[derive(Debug)]
pub enum ExchangeError {
    /// Not a byte of the request reached the connection: here it is, whole.
    Unsent(Box<Request<UpstreamBody>>),
    /// The connection failed, or the host answered something that is not HTTP/1.
    Failed,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn { stream, read: BytesMut::with_capacity(READ_CHUNK), head: Vec::with_capacity(1024) }
    }

    /// Whether an idle connection may take a request: nothing has arrived on it since
    /// its last response (neither the host closing it nor stray bytes). Costs no system
    /// call unless the socket was flagged readable.
    pub fn is_idle(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // The flag may be stale (the last read took exactly what there was).
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends `request` and reads the response head. The response's body reads the rest
    /// and hands the connection back through [`ResponseBody::finish`].
    pub async fn exchange(mut self, request: Request<UpstreamBody>) -> Result<Response<ResponseBody>, ExchangeError> {
        let (parts, mut body) = request.into_parts();
        let has_body = !body.is_end_stream();
        let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
        encode_head(&mut self.head, &parts.method, &parts.uri, &parts.headers, chunked);
        match write_all(&self.stream, &self.head).await {
            Ok(()) => {}
            Err(0) => return Err(ExchangeError::Unsent(Box::new(Request::from_parts(parts, body)))),
            Err(_) => return Err(ExchangeError::Failed),
        }
        // The host may answer before it has taken the whole body (a 413, a 401): then
        // the rest is not sent, the answer is passed on, and the connection is not reused.
        let (mut answer, mut body_cut) = (None, false);
        if has_body {
            let (stream, read, scratch) = (&self.stream, &mut self.read, &mut self.head);
            let sending = send_body(stream, scratch, &mut body, chunked);
            tokio::pin!(sending);
            loop {
                tokio::select! {
                    biased;
                    sent = &mut sending => match sent {
                        Ok(()) => break,
                        Err(BodyFailure::Client) => return Err(ExchangeError::Failed),
                        Err(BodyFailure::Host) => {
                            body_cut = true;
                            break;
                        }
                    },
                    filled = std::future::poll_fn(|cx| poll_fill(stream, read, cx)) => {
                        if !matches!(filled, Ok(n) if n > 0) || read.len() >= MAX_HEAD {
                            body_cut = true;
                            break;
                        }
                        // An interim answer lets the body go on; a final one ends it.
                        if let Some(parsed) = parse_head(read).map_err(|()| ExchangeError::Failed)?
                            && !parsed.status.is_informational()
                        {
                            answer = Some(parsed);
                            body_cut = true;
                            break;
                        }
                    }
                }
            }
        }
        drop(body);
        let Parsed { status, headers, framing, keep_alive } = match answer {
            Some(parsed) => parsed,
            None => self.read_head().await?,
        };
        let framing =
            if parts.method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                Framing::Done
            } else {
                framing
            };
        let keep_alive = keep_alive && !body_cut && !matches!(framing, Framing::UntilClose);
        let mut response = Response::new(ResponseBody { conn: Some(self), framing, keep_alive });
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// Reads up to the final response head, skipping interim (`1xx`) ones.
    async fn read_head(&mut self) -> Result<Parsed, ExchangeError> {
        loop {
            if let Some(parsed) = parse_head(&mut self.read).map_err(|()| ExchangeError::Failed)? {
                if parsed.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(ExchangeError::Failed);
                }
                if !parsed.status.is_informational() {
                    return Ok(parsed);
                }
                continue;
            }
            if self.read.len() >= MAX_HEAD {
                return Err(ExchangeError::Failed);
            }
            let n = std::future::poll_fn(|cx| poll_fill(&self.stream, &mut self.read, cx))
                .await
                .map_err(|_| ExchangeError::Failed)?;
            if n == 0 {
                return Err(ExchangeError::Failed);
            }
        }
    }
}

/// Which side stopped a request body on its way.
enum BodyFailure {
    /// The client's body broke off.
    Client,
    /// The host's connection would not take more.
    Host,
}

/// Streams the client's body to the host, chunked or as it is (its length was sent).
async fn send_body(
    stream: &TcpStream,
    scratch: &mut Vec<u8>,
    body: &mut UpstreamBody,
    chunked: bool,
) -> Result<(), BodyFailure> {
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let Ok(data) = frame.map_err(|_| BodyFailure::Client)?.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if chunked {
            scratch.clear();
            let _ = write!(scratch, "{:x}\r\n", data.len());
            scratch.extend_from_slice(&data);
            scratch.extend_from_slice(b"\r\n");
            write_all(stream, scratch).await.map_err(|_| BodyFailure::Host)?;
        } else {
            write_all(stream, &data).await.map_err(|_| BodyFailure::Host)?;
        }
    }
    if chunked {
        write_all(stream, b"0\r\n\r\n").await.map_err(|_| BodyFailure::Host)?;
    }
    Ok(())
}

/// The request head: origin-form target, the headers as they are (names in lower case,
/// which HTTP allows), `Expect` left out (the router answers it to the client itself).
fn encode_head(out: &mut Vec<u8>, method: &Method, uri: &http::Uri, headers: &HeaderMap, chunked: bool) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::EXPECT {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes all of `data`; on failure, how much had been written.
async fn write_all(stream: &TcpStream, data: &[u8]) -> Result<(), usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.try_write(&data[written..]) {
            Ok(0) => return Err(written),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stream.writable().await.map_err(|_| written)?;
            }
            Err(_) => return Err(written),
        }
    }
    Ok(())
}

/// Reads what the socket has into `buf`; `Ok(0)` when the host closed the connection.
fn poll_fill(stream: &TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    loop {
        ready!(stream.poll_read_ready(cx))?;
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

struct Parsed {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Takes one response head off the front of `buf`: `Ok(None)` until it is whole.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Parsed>, ()> {
    // The lines, as (start, end) offsets without their line ends, found in one pass;
    // the head ends at the first empty line.
    let mut lines = [(0usize, 0usize); MAX_HEADERS + 1];
    let mut count = 0;
    let mut at = 0;
    let end = loop {
        let Some(newline) = find_newline(&buf[at..]) else {
            return Ok(None);
        };
        let line_end = at + newline;
        let content_end = if line_end > at && buf[line_end - 1] == b'\r' { line_end - 1 } else { line_end };
        if content_end == at {
            if count == 0 {
                return Err(());
            }
            break line_end + 1;
        }
        *lines.get_mut(count).ok_or(())? = (at, content_end);
        count += 1;
        at = line_end + 1;
    };
    let head = buf.split_to(end).freeze();
    let (minor, status) = parse_status_line(&head[lines[0].0..lines[0].1])?;
    let mut headers = HeaderMap::with_capacity(count);
    let mut keep_alive = minor == 1;
    let (mut transfer_encoding, mut chunked, mut length) = (false, false, None);
    for &(start, end) in &lines[1..count] {
        let line = &head[start..end];
        let colon = line.iter().position(|&b| b == b':').ok_or(())?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| ())?;
        let value_start = start + colon + 1 + leading_ows(&line[colon + 1..]);
        let value_end = end - trailing_ows(&head[value_start..end]);
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end)).map_err(|_| ())?;
        if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',').map(crate::baggage::trim_ows) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    keep_alive = true;
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
            let last = value.as_bytes().rsplit(|&b| b == b',').next().map(crate::baggage::trim_ows);
            chunked = last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(value.as_bytes()).ok().filter(|s| s.bytes().all(|b| b.is_ascii_digit()));
            let n: u64 = n.and_then(|s| s.parse().ok()).ok_or(())?;
            if length.is_some_and(|before| before != n) {
                return Err(());
            }
            length = Some(n);
        }
        headers.append(name, value);
    }
    let framing = match (transfer_encoding, chunked, length) {
        (true, true, _) => Framing::Chunked(Chunked::Size { value: 0, digits: 0, seen: 0 }),
        (true, false, _) => Framing::UntilClose,
        (false, _, Some(0)) => Framing::Done,
        (false, _, Some(n)) => Framing::Length(n),
        (false, _, None) => Framing::UntilClose,
    };
    Ok(Some(Parsed { status, headers, framing, keep_alive }))
}

/// The first `\n` in `haystack`, eight bytes at a time.
fn find_newline(haystack: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = haystack.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // A zero byte of `x` is a newline; the lowest flagged byte is always exact.
        let x = u64::from_le_bytes(word) ^ NEWLINES;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(offset + found.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    chunks.remainder().iter().position(|&b| b == b'\n').map(|i| offset + i)
}

/// `HTTP/1.1 200 OK`: the minor version and the status.
fn parse_status_line(line: &[u8]) -> Result<(u8, StatusCode), ()> {
    let minor = match line.get(..9) {
        Some(b"HTTP/1.1 ") => 1,
        Some(b"HTTP/1.0 ") => 0,
        _ => return Err(()),
    };
    let code = line.get(9..12).ok_or(())?;
    if line.len() > 12 && line[12] != b' ' {
        return Err(());
    }
    Ok((minor, StatusCode::from_bytes(code).map_err(|_| ())?))
}

fn leading_ows(text: &[u8]) -> usize {
    text.iter().take_while(|&&b| b == b' ' || b == b'\t').count()
}

fn trailing_ows(text: &[u8]) -> usize {
    text.iter().rev().take_while(|&&b| b == b' ' || b == b'\t').count()
}

/// How the rest of a response body is delimited.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// Where a chunked body's decoder is.
#[derive(Debug)]
enum Chunked {
    /// Reading a chunk-size line; `seen` counts its bytes, for the line limit.
    Size {
        value: u64,
        digits: u32,
        seen: usize,
    },
    /// In the chunk's extensions, up to the line end.
    Extension {
        value: u64,
        seen: usize,
    },
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk; `line` counts the current line's bytes.
    Trailers {
        line: usize,
        seen: usize,
    },
}

/// What one step of the chunked decoder got.
enum Decoded {
    Data(Bytes),
    End,
    NeedMore,
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ()> {
        loop {
            if buf.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            match self {
                Chunked::Size { value, digits, seen } => {
                    let b = buf[0];
                    buf.advance(1);
                    *seen += 1;
                    if *seen > MAX_CHUNK_LINE {
                        return Err(());
                    }
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            *digits += 1;
                            if *digits > 15 {
                                return Err(());
                            }
                            let digit = (b as char).to_digit(16).ok_or(())?;
                            *value = *value * 16 + u64::from(digit);
                        }
                        b';' | b' ' | b'\t' if *digits > 0 => {
                            *self = Chunked::Extension { value: *value, seen: *seen };
                        }
                        b'\r' if *digits > 0 => *self = Chunked::Extension { value: *value, seen: *seen },
                        b'\n' if *digits > 0 => *self = Chunked::after_size(*value),
                        _ => return Err(()),
                    }
                }
                Chunked::Extension { value, seen } => {
                    let nl = buf.iter().position(|&b| b == b'\n');
                    let take = nl.map_or(buf.len(), |i| i + 1);
                    *seen += take;
                    if *seen > MAX_CHUNK_LINE {
                        return Err(());
                    }
                    buf.advance(take);
                    if nl.is_some() {
                        *self = Chunked::after_size(*value);
                    }
                }
                Chunked::Data(left) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Chunked::DataEnd;
                    }
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    match buf[0] {
                        b'\r' => buf.advance(1),
                        b'\n' => {
                            buf.advance(1);
                            *self = Chunked::Size { value: 0, digits: 0, seen: 0 };
                        }
                        _ => return Err(()),
                    }
                    if buf.first() == Some(&b'\n') {
                        buf.advance(1);
                        *self = Chunked::Size { value: 0, digits: 0, seen: 0 };
                    }
                }
                Chunked::Trailers { line, seen } => {
                    let b = buf[0];
                    buf.advance(1);
                    *seen += 1;
                    if *seen > MAX_CHUNK_LINE * 16 {
                        return Err(());
                    }
                    match b {
                        b'\n' if *line == 0 => return Ok(Decoded::End),
                        b'\n' => *line = 0,
                        b'\r' => {}
                        _ => *line += 1,
                    }
                }
            }
        }
    }

    fn after_size(size: u64) -> Chunked {
        if size == 0 { Chunked::Trailers { line: 0, seen: 0 } } else { Chunked::Data(size) }
    }
}

/// The host's response body ended early or was not valid HTTP/1.
#[derive(Debug)]
struct BodyError(&'static str);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyError {}

/// A response body read from the host's connection as it is polled.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
}

impl ResponseBody {
    /// Once the body has ended: the connection, if it may carry another request.
    pub fn finish(&mut self) -> Option<Conn> {
        if !matches!(self.framing, Framing::Done) || !self.keep_alive {
            return None;
        }
        let conn = self.conn.take().filter(|conn| conn.read.is_empty())?;
        // The last read took what the socket had; forget its readable flag so that
        // [`Conn::is_idle`] needs no read to see that nothing came since. (A close by
        // the host is kept by the flag all the same: tokio never clears that.)
        let _ = conn.stream.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(std::io::Error::from(std::io::ErrorKind::WouldBlock))
        });
        Some(conn)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match &mut this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) if !conn.read.is_empty() => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(conn.read.len());
                    let data = conn.read.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        this.framing = Framing::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose if !conn.read.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(conn.read.split().freeze()))));
                }
                Framing::Chunked(state) => match state.decode(&mut conn.read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End) => {
                        this.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(()) => {
                        return Poll::Ready(Some(Err(Box::new(BodyError("invalid chunked body from the host")))));
                    }
                },
                Framing::Length(_) | Framing::UntilClose => {}
            }
            match ready!(poll_fill(&conn.stream, &mut conn.read, cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(Box::new(BodyError("the host closed the connection mid-body"))))),
                Ok(_) => {}
                Err(err) => return Poll::Ready(Some(Err(Box::new(err)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done) || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<Parsed>, ()> {
        parse_head(&mut BytesMut::from(text.as_bytes()))
    }

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let p = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Backend:  s1 \r\n\r\nok\n").unwrap().unwrap();
        assert_eq!(p.status, 200);
        assert_eq!(p.headers["x-backend"], "s1");
        assert!(matches!(p.framing, Framing::Length(3)) && p.keep_alive);

        let p =
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(matches!(p.framing, Framing::Chunked(_)) && !p.keep_alive);
        let p = parse("HTTP/1.0 200 OK\nConnection: keep-alive\n\n").unwrap().unwrap();
        assert!(matches!(p.framing, Framing::UntilClose) && p.keep_alive);
        let p = parse("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap();
        assert!(matches!(p.framing, Framing::Done));

        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n").unwrap().is_none());
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n").is_err());
        assert!(parse("HTTP/2 200\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nbad header\r\n\r\n").is_err());
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "a: 1\r\n".repeat(MAX_HEADERS + 1));
        assert!(parse(&many).is_err());
    }

    #[test]
    fn newlines_are_found_wherever_they_are() {
        for len in 0..40 {
            for at in 0..len {
                let mut text = vec![b'a'; len];
                text[at] = b'\n';
                if at + 1 < len {
                    text[len - 1] = b'\n';
                }
                assert_eq!(find_newline(&text), Some(at), "{len} {at}");
            }
            assert_eq!(find_newline(&vec![0x8a; len]), None);
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_however_they_are_cut() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        for cut in 1..wire.len() {
            let mut state = Chunked::Size { value: 0, digits: 0, seen: 0 };
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut ended = false;
            for piece in [&wire[..cut], &wire[cut..]] {
                buf.extend_from_slice(piece);
                while !ended {
                    match state.decode(&mut buf).unwrap() {
                        Decoded::Data(d) => out.extend_from_slice(&d),
                        Decoded::End => ended = true,
                        Decoded::NeedMore => break,
                    }
                }
            }
            assert!(ended, "cut at {cut}");
            assert_eq!(out, b"hello world", "cut at {cut}");
            assert_eq!(&buf[..], b"NEXT", "cut at {cut}");
        }
    }

    #[test]
    fn bad_chunk_sizes_are_refused() {
        for wire in [&b"x\r\n"[..], b"\r\n", b"12345678901234567\r\n", b"5\r\nhelloXX"] {
            let mut state = Chunked::Size { value: 0, digits: 0, seen: 0 };
            let mut buf = BytesMut::from(wire);
            let result = loop {
                match state.decode(&mut buf) {
                    Ok(Decoded::Data(_)) => continue,
                    other => break other,
                }
            };
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
    }
}

#[cfg(test)]
mod fuzz;
