//! Soak benchmark for the `serve` example: starts the server in-process on a free loopback
//! port, sends requests from several client threads, checks every response against a direct
//! `Session::run`, and prints latency, throughput and resident memory. Exits non-zero on a
//! wrong response or if memory grew past `--max-rss-growth-mib` after the warm-up.
//!
//! ```text
//! cargo run --release --example soak -- --requests 2000 --clients 8
//! ```

#[path = "serve/client.rs"]
mod client;
#[path = "serve/http.rs"]
mod http;
#[path = "serve/soak.rs"]
mod soak;

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// The model (default: the bundled example CNN).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/models/example/tiny_cnn.onnx"))]
    model: PathBuf,
    /// Its one input, as .npy.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/models/example/input.npy"))]
    input: PathBuf,
    /// Requests measured.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Requests sent first, not measured.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Client threads.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Server worker threads.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Threads of the session's pool (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Largest resident-memory growth allowed after the warm-up, in MiB.
    #[arg(long, default_value_t = 8)]
    max_rss_growth_mib: u64,
}

fn main() {
    let args = Args::parse();
    let soak = soak::Soak {
        model: args.model,
        input: args.input,
        requests: args.requests,
        warmup: args.warmup,
        clients: args.clients,
        server: http::Config {
            workers: args.workers,
            ..http::Config::default()
        },
        session_threads: args.threads,
        max_rss_growth: args.max_rss_growth_mib << 20,
    };
    match soak::run(&soak) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("soak failed: {e}");
            std::process::exit(1);
        }
    }
}
