//! `infer bench`: load + plan time, then timed runs. The last line is the stable contract
//! `median_ms=<x> min_ms=<y> max_ms=<z>`.

use super::inputs::{self, Given};
use infer::ir::Dim;
use infer::{DType, Profile, Session, Tensor};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

pub fn bench(
    model: &Path,
    input_args: &[String],
    session_args: super::SessionArgs,
    iters: usize,
    warmup: usize,
    dims: &[String],
    profile: Option<usize>,
) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let session = super::session(model, session_args)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let given = if input_args.is_empty() {
        Given::Named(random_inputs(&session, &parse_dims(dims)?)?)
    } else {
        inputs::load(input_args)?
    };
    println!("model: {}", model.display());
    println!("threads: {}", session.threads());
    // Which microkernel ran matters when comparing machines (and under INFER_MAX_ISA).
    println!("sgemm kernel: {}", infer_kernels::gemm::kernel_name());
    if session_args.int8 {
        println!("int8 matmul: on");
    }
    println!(
        "load+plan: {load_ms:.1} ms ({} steps)",
        session.plan().num_steps()
    );
    for _ in 0..warmup {
        given.run(&session)?;
    }
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        given.run(&session)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    if let Some(slowest) = profile {
        print_profile(&session, &given, iters.max(1), slowest)?;
    }
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS: {rss:.1} MiB");
    }
    println!(
        "median_ms={median:.3} min_ms={:.3} max_ms={:.3}",
        times[0],
        times[times.len() - 1]
    );
    Ok(())
}

/// Kernel time per operator type and the `slowest` nodes over `runs` extra runs (timed apart from the runs above, so
/// the per-step clock reads do not touch the reported latency).
fn print_profile(
    session: &Session,
    given: &Given,
    runs: usize,
    slowest: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut profile = Profile::new();
    for _ in 0..runs {
        given.run_profiled(session, &mut profile)?;
    }
    let total = profile.total().as_secs_f64();
    let per_run = |d: std::time::Duration| d.as_secs_f64() * 1e3 / runs as f64;
    println!("profile over {runs} runs (kernel time per run):");
    println!(
        "  {:<28} {:>10} {:>7} {:>9}",
        "op type", "ms/run", "share", "steps/run"
    );
    for op in profile.by_op_type() {
        println!(
            "  {:<28} {:>10.3} {:>6.1}% {:>9}",
            op.op_type,
            per_run(op.total),
            100.0 * op.total.as_secs_f64() / total.max(f64::MIN_POSITIVE),
            op.calls / runs
        );
    }
    println!("  {:<28} {:>10.3}", "all kernels", per_run(profile.total()));
    println!("slowest nodes (median kernel time per run):");
    for node in profile.by_node().iter().take(slowest) {
        println!(
            "  {:>8.3} ms  {:<14} {:<28} {}",
            node.median_per_run().as_secs_f64() * 1e3,
            node.op_type,
            node.node,
            node.input_shapes
        );
    }
    Ok(())
}

fn parse_dims(dims: &[String]) -> Result<HashMap<String, usize>, Box<dyn std::error::Error>> {
    dims.iter()
        .map(|d| {
            let (k, v) = d
                .split_once('=')
                .ok_or_else(|| format!("--dim expects NAME=VALUE, got '{d}'"))?;
            let v: usize = v
                .parse()
                .map_err(|_| format!("--dim {k}: '{v}' is not a size"))?;
            Ok((k.to_string(), v))
        })
        .collect()
}

/// Random inputs of the declared shapes (unknown dims: `--dim` or 1). Integer inputs get 0/1,
/// valid as token ids, masks and segment ids alike.
fn random_inputs(
    session: &Session,
    dims: &HashMap<String, usize>,
) -> infer::Result<Vec<(String, Tensor)>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    session
        .inputs()
        .into_iter()
        .map(|io| {
            let shape: Vec<usize> = io
                .ty
                .shape
                .unwrap_or_default()
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => *n,
                    Dim::Symbol(s) => dims.get(s).copied().unwrap_or(1),
                    Dim::Any => 1,
                })
                .collect();
            let n: usize = shape.iter().product();
            let dtype = io.ty.dtype.unwrap_or(DType::F32);
            let t = if dtype.is_float() {
                let v: Vec<f32> = (0..n)
                    .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
                    .collect();
                Tensor::from_vec(shape, v)?.cast(dtype)?
            } else {
                let v: Vec<i64> = (0..n).map(|_| (next() >> 63) as i64).collect();
                Tensor::from_vec(shape, v)?.cast(dtype)?
            };
            Ok((io.name, t))
        })
        .collect()
}

/// Peak resident set size of this process (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
