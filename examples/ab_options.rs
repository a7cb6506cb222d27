//! Runs one model under two session configurations alternately, run by run, in one process,
//! and prints each one's median and the median of the paired ratios: an A/B that the VM's
//! drift between processes and over minutes does not bias.
//!
//! `cargo run --release --example ab_options -- MODEL INPUTS.npz OPTION [THREADS] [RUNS]`,
//! where OPTION (`channels-last`, `winograd`, `blocked`) is on in A and off in B, or is
//! `threads`: A runs on THREADS threads, B on one (thread scaling, node by node).

use infer::{npy, Profile, Session, SessionBuilder};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, inputs, option, rest @ ..] = &args[..] else {
        return Err("usage: ab_options MODEL INPUTS.npz OPTION [THREADS] [RUNS]".into());
    };
    let threads: usize = rest.first().map_or(Ok(1), |s| s.parse())?;
    let runs: usize = rest.get(1).map_or(Ok(200), |s| s.parse())?;
    let with = |on: bool| -> Result<Session, Box<dyn std::error::Error>> {
        let scaling = option == "threads";
        let b: SessionBuilder =
            Session::builder().threads(if scaling && !on { 1 } else { threads });
        let b = match option.as_str() {
            "threads" => b,
            "channels-last" => b.channels_last(on),
            "winograd" => b.winograd(on),
            "blocked" => b.blocked_layout(on),
            other => return Err(format!("unknown option {other}").into()),
        };
        Ok(b.build_from_file(model)?)
    };
    let (a, b) = (with(true)?, with(false)?);
    let feeds = npy::read_npz(Path::new(inputs))?;
    let run = |s: &Session| -> Result<f64, Box<dyn std::error::Error>> {
        let t = Instant::now();
        s.run(feeds.iter().map(|(n, t)| (n.as_str(), t.clone())))?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..5 {
        run(&a)?;
        run(&b)?;
    }
    let (mut ta, mut tb, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternate which goes first, so neither always runs on the other's warm caches.
        let (x, y) = if i % 2 == 0 {
            let x = run(&a)?;
            (x, run(&b)?)
        } else {
            let y = run(&b)?;
            (run(&a)?, y)
        };
        ta.push(x);
        tb.push(y);
        ratio.push(x / y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{option} on {:.3} ms, off {:.3} ms, on/off {:.3} (medians of {runs} paired runs)",
        median(&mut ta),
        median(&mut tb),
        median(&mut ratio)
    );
    // Kernel time per node, both profiled alternately: the nodes that differ most.
    let (mut pa, mut pb) = (Profile::new(), Profile::new());
    for _ in 0..runs {
        a.run_profiled(feeds.iter().map(|(n, t)| (n.as_str(), t.clone())), &mut pa)?;
        b.run_profiled(feeds.iter().map(|(n, t)| (n.as_str(), t.clone())), &mut pb)?;
    }
    let per_run = |d: std::time::Duration| d.as_secs_f64() * 1e3 / runs as f64;
    let off: HashMap<String, f64> = pb
        .by_node()
        .into_iter()
        .map(|n| (n.node, per_run(n.total)))
        .collect();
    let mut diffs: Vec<(f64, f64, f64, String)> = pa
        .by_node()
        .into_iter()
        .filter_map(|n| {
            let (x, y) = (per_run(n.total), *off.get(&n.node)?);
            Some((x - y, x, y, format!("{} {}", n.node, n.input_shapes)))
        })
        .collect();
    diffs.sort_by(|p, q| p.0.abs().total_cmp(&q.0.abs()).reverse());
    println!("kernel ms/run, on − off, largest differences first:");
    for (d, x, y, name) in diffs.iter().take(20) {
        println!("  {d:+.3}  {x:.3} {y:.3}  {name}");
    }
    println!(
        "  all kernels: on {:.3}, off {:.3}",
        per_run(pa.total()),
        per_run(pb.total())
    );
    Ok(())
}
