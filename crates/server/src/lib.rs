//! The control plane: `rollwave server`. It runs the rollout engine against the real
//! clock, makes every input and decision durable in an event log before acting on it,
//! and serves the HTTP/JSON API, whose wire types and client live in `rollwave-api`
//! ([`api`] and [`client`] re-export them).

pub mod api;
pub mod auth;
pub mod client;
pub mod clock;
mod dashboard;
pub mod error;
mod exec;
mod functions;
pub mod http;
pub mod listen;
pub mod log;
mod monitors;
pub mod notify;
pub mod signals;
pub use http::MAX_BODY;
pub mod leader;
pub mod metrics;
pub mod node;
pub mod openapi;
pub mod records;
pub mod release;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
pub mod views;

#[cfg(test)]
mod fault_tests;

pub use node::{Config, Driver, Node};

use std::sync::Arc;

/// A server started in this process, for tests and the demo.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub node: Arc<Node>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts a server on `config.listen` (port 0 picks a free one) inside the current
/// runtime and returns once it accepts connections.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with(config, listen::Limits::default()).await
}

/// [`start`], serving connections within `limits`.
pub async fn start_with(config: Config, limits: listen::Limits) -> anyhow::Result<Running> {
    start_clocked(config, limits, clock::system()).await
}

/// [`start_with`], every decision reading the time from `clock` (a virtual one in tests).
pub async fn start_clocked(
    config: Config,
    limits: listen::Limits,
    clock: Arc<dyn clock::Clock>,
) -> anyhow::Result<Running> {
    let store = rollwave_store::Store::open(&config.db).await?;
    if let Some(t) = &config.bootstrap_token {
        store.bootstrap_token(&rollwave_store::hash_secret(t), "admin").await?;
    }
    let listener = listen::bind(config.listen)?;
    let addr = listener.local_addr()?;
    let node = Node::with_clock(store, config, clock);
    tokio::spawn(Arc::clone(&node).run());
    let app = new_app(&node);
    let task = tokio::spawn(listen::serve(listener, http::router(app), limits, std::future::pending()));
    Ok(Running { addr, node, task })
}

/// Opens the store, replays the log, and serves within `limits` until Ctrl-C or SIGTERM.
pub async fn serve(config: Config, limits: listen::Limits) -> anyhow::Result<()> {
    let store = rollwave_store::Store::open(&config.db).await?;
    let secret = match &config.bootstrap_token {
        Some(t) => t.clone(),
        None => auth::new_secret().map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    if store.bootstrap_token(&rollwave_store::hash_secret(&secret), "admin").await? && config.bootstrap_token.is_none()
    {
        // Shown once: only its hash is kept.
        println!("rollwave: admin token (shown once, store it safely): {secret}");
    }
    let listener = listen::bind(config.listen)?;
    let node = Node::new(store, config);
    tokio::spawn(Arc::clone(&node).run());
    let app = new_app(&node);
    println!("rollwave: serving on http://{}", listener.local_addr()?);
    listen::serve(listener, http::router(app), limits, shutdown()).await;
    if let Some(lease) = node.lease.borrow().clone() {
        // Let another replica take over at once.
        let _ = node.store.release_lease(&lease).await;
    }
    Ok(())
}

/// The API's shared state, with the task that writes tokens' last-used times.
fn new_app(node: &Arc<Node>) -> Arc<http::App> {
    let tokens = auth::Tokens::with_clock(Arc::clone(&node.clock));
    let app = Arc::new(http::App { node: Arc::clone(node), tokens });
    let flusher = Arc::downgrade(&app);
    let clock = Arc::clone(&node.clock);
    tokio::spawn(async move {
        loop {
            clock.sleep(auth::LAST_USED_FLUSH).await;
            let Some(app) = flusher.upgrade() else { return };
            app.tokens.flush_last_used(&app.node.store).await;
        }
    });
    app
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs [`serve`] on a runtime of its own, for the CLI.
pub fn serve_blocking(config: Config, limits: listen::Limits) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(config, limits))
}
