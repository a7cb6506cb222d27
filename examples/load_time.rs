//! Loads and plans one model N times in one process and prints the first time (a fresh
//! process: what `infer bench` reports as load + plan) and the median and minimum of all: the
//! later loads reuse pages the first one faulted in, so the gap between the two is what
//! mapping memory costs.
//!
//! `cargo run --release --example load_time -- MODEL [THREADS] [LOADS]` (defaults 1 and 15).
//! `perf record --call-graph dwarf` over it profiles planning without a run mixed in.

use infer::Session;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(model) = args.get(1) else {
        return Err("usage: load_time MODEL [THREADS] [LOADS]".into());
    };
    let threads: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let loads: usize = args.get(3).map_or(Ok(15), |s| s.parse())?.max(1);
    let mut times = Vec::with_capacity(loads);
    for _ in 0..loads {
        let start = Instant::now();
        let session = Session::builder().threads(threads).build_from_file(model)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        drop(session);
    }
    let first = times[0];
    times.sort_by(f64::total_cmp);
    println!(
        "first {first:.1} median {:.1} min {:.1} ms",
        times[times.len() / 2],
        times[0]
    );
    Ok(())
}
