//! The listener's idle timeout over real sockets: it closes a stalled upload, and it
//! never cuts an answer being made (a long poll, a stream with pauses longer than it).

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use rollwave_server::listen::{self, Limits};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const IDLE: Duration = Duration::from_millis(150);
/// Longer than the idle timeout: the pauses of the answers below.
const PAUSE: Duration = Duration::from_millis(400);

fn app() -> Router {
    Router::new()
        .route(
            "/poll",
            get(|| async {
                tokio::time::sleep(PAUSE).await;
                "changed\n"
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
                tokio::spawn(async move {
                    for n in 0..3 {
                        if n > 0 {
                            tokio::time::sleep(PAUSE).await;
                        }
                        let _ = tx.send(Ok(format!("event {n}\n"))).await;
                    }
                });
                Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            }),
        )
        .route("/upload", post(|body: String| async move { format!("{} bytes\n", body.len()) }))
}

/// Serves [`app`] within short timeouts on a runtime of its own.
fn serve() -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let limits = Limits { max_connections: 16, header_timeout: IDLE, idle_timeout: IDLE };
    let listener = runtime.block_on(async { listen::bind("127.0.0.1:0".parse().unwrap()) }).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(listen::serve(listener, app(), limits, std::future::pending()));
    (runtime, addr)
}

/// Everything the server sends until it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_long_poll_and_a_pausing_stream_outlast_the_idle_timeout() {
    let (_runtime, addr) = serve();
    let ask = |path: &'static str| {
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            read_to_close(&mut stream)
        })
    };
    // Side by side: each connection has its own timeouts.
    let asked = [("/poll", ask("/poll"), "changed\n"), ("/stream", ask("/stream"), "event 2\n")];
    for (path, answer, expected) in asked {
        let answer = answer.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(answer.contains(expected), "{path} was cut: {answer:?}");
    }
}

#[test]
fn a_stalled_upload_is_closed_after_the_idle_timeout() {
    let (_runtime, addr) = serve();
    let mut whole = TcpStream::connect(addr).unwrap();
    write!(whole, "POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    assert!(read_to_close(&mut whole).contains("5 bytes"));

    let mut stalled = TcpStream::connect(addr).unwrap();
    write!(stalled, "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten..").unwrap();
    stalled.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => panic!("the stalled upload was answered: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(Instant::now() < deadline, "a stalled upload is never closed");
            }
            Err(_) => break,
        }
    }
}
