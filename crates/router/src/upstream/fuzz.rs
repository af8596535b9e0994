//! Property tests of what a host sends: response heads and chunked bodies, whole, cut
//! at random read boundaries, well formed and not. Nothing panics, every step makes
//! progress (so nothing spins), and cutting never changes what is read.

use super::*;
use proptest::prelude::*;

/// Cuts `wire` at the given fractions of its length (sorted, deduplicated).
fn pieces(wire: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for end in at.into_iter().chain([wire.len()]) {
        out.push(wire[start..end].to_vec());
        start = end;
    }
    out
}

/// What is left in `buf` followed by the pieces not read yet.
fn unread(buf: &[u8], later: &[Vec<u8>]) -> Vec<u8> {
    let mut rest = buf.to_vec();
    later.iter().for_each(|piece| rest.extend_from_slice(piece));
    rest
}

/// What decoding a chunked body fed in `pieces` gave: the data, whether it ended, and
/// what was left after its end (or the error). Every call to the decoder either returns
/// data (at least a byte), the end, an error, or asks for more having used up the
/// buffer: the number of calls is bounded by the input's length.
fn decode_chunked(pieces: &[Vec<u8>]) -> (Vec<u8>, Result<Option<Vec<u8>>, ()>) {
    let total: usize = pieces.iter().map(Vec::len).sum();
    let mut state = Chunked::Size { value: 0, digits: 0, seen: 0 };
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut calls = 0;
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        loop {
            calls += 1;
            assert!(calls <= 2 * total + 2 * pieces.len() + 2, "the decoder makes no progress");
            let before = buf.len();
            match state.decode(&mut buf) {
                Ok(Decoded::Data(d)) => {
                    assert!(!d.is_empty() && buf.len() + d.len() <= before, "data is taken off the buffer");
                    data.extend_from_slice(&d);
                }
                Ok(Decoded::End) => return (data, Ok(Some(unread(&buf, &pieces[i + 1..])))),
                Ok(Decoded::NeedMore) => {
                    assert!(buf.is_empty(), "more is asked for only when the buffer is used up");
                    break;
                }
                Err(()) => return (data, Err(())),
            }
        }
    }
    (data, Ok(None))
}

/// A chunk extension, a trailer field or nothing, from a small vocabulary.
fn extension() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", ";a", ";a=b", "; name=\"quoted value\"", " ;x=1", "\t;y"]).prop_map(str::to_owned)
}

/// A body as chunks of random sizes, then its trailers and what follows on the wire.
#[derive(Debug, Clone)]
struct ChunkedBody {
    body: Vec<u8>,
    sizes: Vec<usize>,
    extensions: Vec<String>,
    upper_hex: bool,
    bare_lf: bool,
    trailers: Vec<String>,
    next: Vec<u8>,
}

impl ChunkedBody {
    fn wire(&self) -> Vec<u8> {
        let eol: &[u8] = if self.bare_lf { b"\n" } else { b"\r\n" };
        let mut wire = Vec::new();
        let mut rest = &self.body[..];
        let mut sizes = self.sizes.iter().cycle();
        let mut extensions = self.extensions.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            let size = if self.upper_hex { format!("{n:X}") } else { format!("{n:x}") };
            wire.extend_from_slice(size.as_bytes());
            wire.extend_from_slice(extensions.next().map_or("", String::as_str).as_bytes());
            wire.extend_from_slice(eol);
            wire.extend_from_slice(&rest[..n]);
            wire.extend_from_slice(eol);
            rest = &rest[n..];
        }
        wire.extend_from_slice(b"0");
        wire.extend_from_slice(extensions.next().map_or("", String::as_str).as_bytes());
        wire.extend_from_slice(eol);
        for trailer in &self.trailers {
            wire.extend_from_slice(trailer.as_bytes());
            wire.extend_from_slice(eol);
        }
        wire.extend_from_slice(eol);
        wire.extend_from_slice(&self.next);
        wire
    }
}

fn chunked_body() -> impl Strategy<Value = ChunkedBody> {
    (
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(1usize..300, 1..8),
        prop::collection::vec(extension(), 1..4),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec("[a-z-]{1,12}: [ -~]{0,20}", 0..3),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(body, sizes, extensions, upper_hex, bare_lf, trailers, next)| ChunkedBody {
            body,
            sizes,
            extensions,
            upper_hex,
            bare_lf,
            trailers,
            next,
        })
}

/// A response head from pieces that may or may not make a valid one.
fn head_text() -> impl Strategy<Value = String> {
    let status = prop::sample::select(vec![
        "HTTP/1.1 200 OK",
        "HTTP/1.0 200 OK",
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 100 Continue",
        "HTTP/1.1 503",
        "HTTP/1.1 999 Odd",
        "HTTP/1.1 20 Short",
        "HTTP/2 200",
        "HTTP/1.1 200OK",
        "",
    ]);
    let header = prop::sample::select(vec![
        "Content-Length: 5",
        "content-length: 0",
        "Content-Length: 18446744073709551616",
        "Content-Length: -1",
        "Content-Length: 5, 5",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked, gzip",
        "Connection: close",
        "Connection: keep-alive, Upgrade",
        "X-Backend:  s1 \t",
        "X-Empty:",
        "Bad Header: x",
        "NoColon",
        ": empty name",
        "X-Obs: caf\u{e9}",
    ]);
    (status, prop::collection::vec(header, 0..8), any::<bool>()).prop_map(|(status, headers, bare_lf)| {
        let eol = if bare_lf { "\n" } else { "\r\n" };
        let mut text = format!("{status}{eol}");
        for h in headers {
            text.push_str(h);
            text.push_str(eol);
        }
        text.push_str(eol);
        text
    })
}

/// A parse result in a form that compares (the head's framing and fields).
fn summary(parsed: &Result<Option<Parsed>, ()>) -> String {
    match parsed {
        Ok(Some(p)) => format!("{} {:?} {:?} {}", p.status, p.headers, p.framing, p.keep_alive),
        Ok(None) => "incomplete".into(),
        Err(()) => "invalid".into(),
    }
}

/// Feeds `pieces` to the head parser as reads would: it is asked again after each read,
/// until it decides. Returns its decision and what it left in the buffer.
fn parse_in_pieces(pieces: &[Vec<u8>]) -> (String, Vec<u8>) {
    let mut buf = BytesMut::new();
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        let parsed = parse_head(&mut buf);
        if !matches!(parsed, Ok(None)) {
            return (summary(&parsed), unread(&buf, &pieces[i + 1..]));
        }
    }
    ("incomplete".into(), buf.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_chunked_body_decodes_to_its_bytes_however_it_is_chunked_and_cut(
        body in chunked_body(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let wire = body.wire();
        let (data, end) = decode_chunked(&pieces(&wire, &cuts));
        prop_assert_eq!(data, body.body);
        prop_assert_eq!(end, Ok(Some(body.next)));
    }

    #[test]
    fn any_bytes_as_a_chunked_body_end_in_data_an_end_or_an_error_whatever_the_cuts(
        wire in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = decode_chunked(std::slice::from_ref(&wire));
        let cut = decode_chunked(&pieces(&wire, &cuts));
        prop_assert_eq!(cut, whole);
    }

    #[test]
    fn a_mangled_chunked_body_never_panics_and_never_gives_more_than_it_got(
        body in chunked_body(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = body.wire();
        for (at, byte) in flips {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        let (data, _) = decode_chunked(&pieces(&wire, &cuts));
        prop_assert!(data.len() <= wire.len());
    }

    #[test]
    fn a_response_head_parses_the_same_however_it_is_cut(
        head in head_text(),
        rest in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut wire = head.into_bytes();
        wire.extend_from_slice(&rest);
        let mut whole_buf = BytesMut::from(&wire[..]);
        let whole = parse_head(&mut whole_buf);
        if let Ok(Some(_)) = &whole {
            prop_assert_eq!(&whole_buf[..], &rest[..], "a head is taken off the front, the rest is left");
        }
        let (cut, left) = parse_in_pieces(&pieces(&wire, &cuts));
        prop_assert_eq!(&cut, &summary(&whole));
        if cut != "invalid" {
            prop_assert_eq!(&left[..], &whole_buf[..]);
        }
    }

    #[test]
    fn any_bytes_as_a_response_head_never_panic_and_parse_the_same_however_cut(
        wire in prop::collection::vec(prop::sample::select(b"HTP/1.0 2:\r\n\t,ack-lengthcoseudi\x80\xff".to_vec()), 0..300),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let whole = parse_head(&mut BytesMut::from(&wire[..]));
        let (cut, _) = parse_in_pieces(&pieces(&wire, &cuts));
        prop_assert_eq!(cut, summary(&whole));
    }
}

/// How a generated response delimits its body.
#[derive(Clone, Debug)]
enum Delimited {
    Length,
    Chunked(ChunkedBody),
    UntilClose,
}

/// A whole response as a host sends it, and the body a client should get from it.
fn response() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let delimited = prop_oneof![
        Just(Delimited::Length),
        chunked_body().prop_map(|mut c| {
            c.next.clear();
            Delimited::Chunked(c)
        }),
        Just(Delimited::UntilClose),
    ];
    (prop::collection::vec(any::<u8>(), 0..3000), delimited, any::<bool>()).prop_map(|(body, delimited, interim)| {
        let mut wire = Vec::new();
        if interim {
            wire.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let (framing, payload, body) = match delimited {
            Delimited::Length => (format!("content-length: {}\r\n", body.len()), body.clone(), body),
            Delimited::Chunked(c) => ("transfer-encoding: chunked\r\n".to_owned(), c.wire(), c.body),
            Delimited::UntilClose => ("connection: close\r\n".to_owned(), body.clone(), body),
        };
        wire.extend_from_slice(format!("HTTP/1.1 200 OK\r\nx-test: 1\r\n{framing}\r\n").as_bytes());
        wire.extend_from_slice(&payload);
        (wire, body)
    })
}

/// One exchange over a real socket with a host that writes `pieces` one by one (each
/// flushed), then closes: the response's status and body, or why it failed.
fn exchange_with(pieces: Vec<Vec<u8>>) -> Result<(u16, Vec<u8>), String> {
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let host = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                request.push(byte[0]);
            }
            for piece in pieces {
                if socket.write_all(&piece).await.is_err() || socket.flush().await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let request = Request::builder().uri("/").body(UpstreamBody::Empty).unwrap();
        let outcome = match Conn::new(stream).exchange(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.into_body().collect().await {
                    Ok(body) => Ok((status, body.to_bytes().to_vec())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(ExchangeError::Failed) => Err("failed".to_owned()),
            Err(ExchangeError::Unsent(_)) => Err("unsent".to_owned()),
        };
        let _ = host.await;
        outcome
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_response_read_from_a_socket_in_random_writes_gives_its_body(
        (wire, body) in response(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        prop_assert_eq!(exchange_with(pieces(&wire, &cuts)), Ok((200, body)));
    }

    #[test]
    fn a_response_cut_short_by_the_host_ends_and_gives_at_most_a_start_of_its_body(
        (wire, body) in response(),
        keep in any::<prop::sample::Index>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let kept = &wire[..keep.index(wire.len())];
        // Whatever the host managed to send, the exchange ends (the host's close ends
        // it), and what a client gets is never more than, nor other than, what was sent.
        if let Ok((status, got)) = exchange_with(pieces(kept, &cuts)) {
            prop_assert_eq!(status, 200);
            prop_assert!(body.starts_with(&got), "{} bytes that are not the body's start", got.len());
        }
    }
}
