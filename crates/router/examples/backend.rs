//! A tiny, fast HTTP/1.1 responder for benchmarks: answers every request with `200 ok`
//! and an `x-backend` header naming itself.
//!
//! ```text
//! cargo run --release -p rollwave-router --example backend -- 9001 stable
//! ```

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().ok_or("usage: backend PORT [NAME]")?.parse()?;
    let name = HeaderValue::from_str(&args.next().unwrap_or_else(|| format!("backend-{port}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let name = name.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                    response.headers_mut().insert("x-backend", name.clone());
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
