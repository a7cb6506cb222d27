//! An HTTP prediction endpoint over one shared `Session`:
//!
//! ```text
//! cargo run --example serve -- models/example/tiny_cnn.onnx --addr 127.0.0.1:8080
//! curl --data-binary @models/example/input.npy http://127.0.0.1:8080/predict -o out.npy
//! curl http://127.0.0.1:8080/health
//! ```
//!
//! `examples/soak.rs` load-tests it; the server itself is in `http.rs`.

mod http;

use clap::Parser;
use infer::Session;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
struct Args {
    /// The model: ONNX, Keras (.keras, .h5) or a Hugging Face folder.
    model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Worker threads (connections served at once).
    #[arg(long, default_value_t = http::Config::default().workers)]
    workers: usize,
    /// Threads of the session's pool (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 64)]
    max_body_mib: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut builder = Session::builder();
    if let Some(n) = args.threads {
        builder = builder.threads(n);
    }
    let session = Arc::new(builder.build_from_file(&args.model)?);
    let config = http::Config {
        workers: args.workers,
        max_body_bytes: args.max_body_mib << 20,
    };
    let server = http::Server::start(&args.addr, session, config)?;
    eprintln!(
        "serving {} on http://{}",
        args.model.display(),
        server.addr()
    );
    // Serve until the process is stopped.
    loop {
        std::thread::park();
    }
}
