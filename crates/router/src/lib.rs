//! `rollwave router`: an L7 proxy that splits traffic between a stable and a canary track.

use clap::Args;

/// Options of `rollwave router`.
#[derive(Args, Debug, Clone)]
pub struct RouterArgs {
    /// Address to listen on for proxied traffic.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
}

/// Runs the router until it is stopped.
pub fn main(args: RouterArgs) -> anyhow::Result<()> {
    anyhow::bail!("the router is not built yet (would listen on {})", args.listen)
}
