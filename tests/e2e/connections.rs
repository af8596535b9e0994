//! `rollwave server`'s connection limits over real sockets, against the binary: a
//! half-sent or dribbled request head is closed after the head timeout; over the
//! connection ceiling a connection is answered 503 and closed while `/healthz` still
//! answers; and 10,000 idle connections held leave `/healthz` answering.

use crate::kit::{BIN, Server};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A server with these environment variables, its log shown.
fn start(env: &[(&str, &str)]) -> Server {
    env.iter().fold(Server::builder().show_log(), |b, (k, v)| b.env(k, v)).start()
}

fn addr(server: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port))
}

/// A GET on a connection of its own.
fn get(server: &Server, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr(server)).unwrap();
    request(&mut stream, path, true).unwrap()
}

/// Sends a GET and reads its answer (status and body, by Content-Length), leaving the
/// connection open unless `close`.
fn request(stream: &mut TcpStream, path: &str, close: bool) -> std::io::Result<(u16, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let connection = if close { "close" } else { "keep-alive" };
    let token = Server::ADMIN;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: {connection}\r\n\r\n"
    )?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                return Ok((status, body.to_owned()));
            }
        }
        match stream.read(&mut buf)? {
            0 => return Err(std::io::Error::new(ErrorKind::UnexpectedEof, format!("closed after {text:?}"))),
            n => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the server closed `stream` before `deadline`, sending `dribble` a byte at a
/// time (one every 200 ms of silence) meanwhile.
fn closed_before(stream: &mut TcpStream, deadline: Instant, dribble: &[u8]) -> bool {
    let mut dribble = dribble.iter();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an error answer before the close
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if let Some(&byte) = dribble.next()
                    && stream.write_all(&[byte]).is_err()
                {
                    return true;
                }
            }
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_half_sent_or_dribbled_request_head_is_closed_after_the_head_timeout() {
    let server = start(&[("ROLLWAVE_HEADER_TIMEOUT", "1s")]);
    let mut silent = TcpStream::connect(addr(&server)).unwrap();
    let mut half_sent = TcpStream::connect(addr(&server)).unwrap();
    half_sent.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").unwrap();
    let mut dribbled = TcpStream::connect(addr(&server)).unwrap();
    let slow_head = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ".to_owned() + &"a".repeat(200);

    let deadline = Instant::now() + Duration::from_secs(15);
    assert!(closed_before(&mut dribbled, deadline, slow_head.as_bytes()), "a dribbled head is closed");
    assert!(closed_before(&mut half_sent, deadline, b""), "a half-sent head is closed");
    assert!(closed_before(&mut silent, deadline, b""), "a connection that sends nothing is closed");
    assert_eq!(get(&server, "/healthz"), (200, "ok\n".to_owned()), "whole requests are still served");
}

#[test]
fn over_the_ceiling_a_connection_is_answered_503_and_healthz_still_answers() {
    let server = start(&[("ROLLWAVE_MAX_CONNECTIONS", "3"), ("ROLLWAVE_HEADER_TIMEOUT", "60s")]);
    let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr(&server)).unwrap()).collect();

    // A connect returns once the kernel has it; the server counts it once it has taken
    // it from the backlog, which a loaded machine may do after the next request arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let answer = get(&server, "/v1/services");
        if answer.0 == 503 || Instant::now() >= deadline {
            break answer;
        }
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"too_many_connections\""), "{body}");
    assert_eq!(get(&server, "/healthz"), (200, "ok\n".to_owned()));

    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&server, "/v1/services").0 != 200 {
        assert!(Instant::now() < deadline, "a freed place is never served again");
    }
}

#[test]
fn healthz_answers_while_10000_idle_connections_are_held() {
    const HELD: usize = 10_000;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let needed = HELD as u64 + 200;
    if soft < needed {
        assert!(hard >= needed, "this test holds {HELD} connections: the open-file limit ({hard}) is too low");
        rlimit::setrlimit(rlimit::Resource::NOFILE, needed, hard).unwrap();
    }
    // One place more than held: /healthz is first served among them, then over the ceiling.
    let ceiling = (HELD + 1).to_string();
    let server = start(&[("ROLLWAVE_MAX_CONNECTIONS", &ceiling), ("ROLLWAVE_HEADER_TIMEOUT", "60s")]);
    let held: Vec<TcpStream> = (0..HELD).map(|_| TcpStream::connect(addr(&server)).unwrap()).collect();

    let mut last_place = TcpStream::connect(addr(&server)).unwrap();
    assert_eq!(request(&mut last_place, "/healthz", false).unwrap(), (200, "ok\n".to_owned()));
    assert_eq!(request(&mut last_place, "/v1/services", false).unwrap().0, 200, "served like any connection");

    assert_eq!(get(&server, "/healthz"), (200, "ok\n".to_owned()), "over the ceiling /healthz answers");
    assert_eq!(get(&server, "/v1/services").0, 503, "over the ceiling anything else is refused");
    drop(held);
}

#[test]
fn a_ceiling_the_open_file_limit_cannot_honour_is_refused() {
    let out = Command::new(BIN)
        .args(["server", "--db", "sqlite::memory:", "--listen", "127.0.0.1:0", "--max-connections", "100000000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--max-connections 100000000: the limit on open files"), "{stderr}");
    let out = Command::new(BIN).args(["server", "--listen", "127.0.0.1:0", "--header-timeout", "0s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a timeout must be longer than 0"), "{stderr}");
}
