//! A generated fleet for benchmarks: writes its inventory file and serves
//! its metrics as an emulated Prometheus query API on loopback.
//!
//! ```text
//! cargo run --release --example fleet -- --variants 10000 --pods-per-variant 10 \
//!     --inventory-out /tmp/fleet.yaml --listen 127.0.0.1:9091
//! ```
//!
//! Prints `listening on ADDR` once the inventory is written and the API is
//! up, then serves until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use wva_metrics_server::emulator::fleet::Fleet;
use wva_metrics_server::emulator::prometheus_api;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    variants: usize,
    #[arg(long, default_value_t = 10)]
    pods_per_variant: usize,
    /// Where to write the inventory (multi-document file for `--inventory file:PATH`).
    #[arg(long)]
    inventory_out: Option<PathBuf>,
    /// Address of the emulated Prometheus API (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fleet = Fleet::new(args.variants, args.pods_per_variant);
    if let Some(path) = &args.inventory_out {
        std::fs::write(path, fleet.inventory_file())?;
    }
    let api = prometheus_api::start(args.listen, fleet).await?;
    println!("listening on {}", api.addr());
    tokio::signal::ctrl_c().await?;
    println!("answered {} queries", api.queries());
    Ok(())
}
