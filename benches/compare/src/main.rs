//! Zoo comparison: for each model and thread count, infer and tract run in-process and
//! onnxruntime through `benches/ort_bench.py`, back to back on the same inputs, and the
//! medians go into a markdown table (BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release -p infer-compare -- --zoo .cache/zoo/current --out BENCHMARKS.md
//! ```

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use infer::{npy, DType, Session, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tract_onnx::prelude::*;

#[derive(Parser)]
struct Args {
    /// The zoo folder (models/build_zoo.sh prints it).
    #[arg(long, default_value = ".cache/zoo/current")]
    zoo: PathBuf,
    #[arg(long, default_value = "mlp,squeezenet1_1,mobilenet_v2,efficientnet_b0,resnet50,vit_b_16,minilm,bert_base,gpt2")]
    models: String,
    #[arg(long, default_value = "1,2")]
    threads: String,
    #[arg(long, default_value_t = 20)]
    iters: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Python with onnxruntime.
    #[arg(long, default_value = ".cache/venv/bin/python")]
    python: PathBuf,
    /// Skip tract (it needs minutes to optimize the big transformers).
    #[arg(long)]
    no_tract: bool,
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One runtime's figures for one model and thread count.
#[derive(Default, Clone)]
struct Timing {
    median_ms: Option<f64>,
    load_ms: Option<f64>,
    error: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_runs(iters: usize, warmup: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}

fn bench_infer(model: &Path, inputs: &[(String, Tensor)], threads: usize, a: &Args) -> Timing {
    let t0 = Instant::now();
    let session = match Session::builder().threads(threads).build_from_file(model) {
        Ok(s) => s,
        Err(e) => return Timing { error: Some(e.to_string()), ..Default::default() },
    };
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let run = || {
        session
            .run(inputs.iter().map(|(n, t)| (n.as_str(), t.clone())))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match time_runs(a.iters, a.warmup, run) {
        Ok(m) => Timing { median_ms: Some(m), load_ms: Some(load_ms), error: None },
        Err(e) => Timing { error: Some(e), ..Default::default() },
    }
}

fn to_tract(t: &Tensor) -> Result<TValue, String> {
    let shape = t.shape().to_vec();
    let tensor = match t.dtype() {
        DType::F32 => tract_ndarray::ArrayD::from_shape_vec(shape, t.as_slice::<f32>().map_err(|e| e.to_string())?.to_vec())
            .map_err(|e| e.to_string())?
            .into_tensor(),
        DType::I64 => tract_ndarray::ArrayD::from_shape_vec(shape, t.as_slice::<i64>().map_err(|e| e.to_string())?.to_vec())
            .map_err(|e| e.to_string())?
            .into_tensor(),
        d => return Err(format!("no tract conversion for {d}")),
    };
    Ok(tensor.into_tvalue())
}

fn bench_tract(model: &Path, inputs: &[(String, Tensor)], a: &Args) -> Timing {
    let t0 = Instant::now();
    let plan = (|| -> TractResult<_> {
        let mut m = tract_onnx::onnx().model_for_path(model)?;
        for (i, (_, t)) in inputs.iter().enumerate() {
            let dt = if t.dtype() == DType::F32 { f32::datum_type() } else { i64::datum_type() };
            m = m.with_input_fact(i, InferenceFact::dt_shape(dt, t.shape()))?;
        }
        m.into_optimized()?.into_runnable()
    })();
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return Timing { error: Some(format!("{e}")), ..Default::default() },
    };
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let values: Result<TVec<TValue>, String> = inputs.iter().map(|(_, t)| to_tract(t)).collect();
    let values = match values {
        Ok(v) => v,
        Err(e) => return Timing { error: Some(e), ..Default::default() },
    };
    let run = || plan.run(values.clone()).map(|_| ()).map_err(|e| format!("{e}"));
    match time_runs(a.iters, a.warmup, run) {
        Ok(m) => Timing { median_ms: Some(m), load_ms: Some(load_ms), error: None },
        Err(e) => Timing { error: Some(e), ..Default::default() },
    }
}

fn bench_ort(model: &Path, inputs_npz: &Path, threads: usize, a: &Args) -> Timing {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ort_bench.py");
    let out = Command::new(&a.python)
        .arg(script)
        .arg(model)
        .arg(inputs_npz)
        .args(["--threads", &threads.to_string(), "--iters", &a.iters.to_string(), "--warmup", &a.warmup.to_string()])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => return Timing { error: Some(String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("failed").to_string()), ..Default::default() },
        Err(e) => return Timing { error: Some(e.to_string()), ..Default::default() },
    };
    let field = |key: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let load = out
        .lines()
        .find_map(|l| l.strip_prefix("load+plan: "))
        .and_then(|l| l.trim_end_matches(" ms").parse().ok());
    Timing { median_ms: field("median_ms="), load_ms: load, error: None }
}

fn cell(t: &Timing) -> String {
    match (t.median_ms, &t.error) {
        (Some(m), _) => format!("{m:.2}"),
        (None, Some(e)) => format!("error: {}", e.chars().take(50).collect::<String>()),
        _ => "-".into(),
    }
}

fn ratio(a: &Timing, b: &Timing) -> String {
    match (a.median_ms, b.median_ms) {
        (Some(x), Some(y)) => format!("{:.2}", x / y),
        _ => "-".into(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let models: Vec<&str> = a.models.split(',').collect();
    let threads: Vec<usize> = a.threads.split(',').map(|t| t.parse()).collect::<Result<_, _>>()?;
    let bar = ProgressBar::new((models.len() * threads.len()) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")?);
    let mut rows = Vec::new();
    let mut log_ratios: Vec<(usize, f64)> = Vec::new();
    for name in &models {
        let dir = a.zoo.join(name);
        let model = dir.join("model.onnx");
        let mut cases: Vec<PathBuf> = std::fs::read_dir(dir.join("cases"))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        cases.sort();
        let case = cases.first().ok_or_else(|| format!("{name}: no cases"))?;
        let npz = case.join("inputs.npz");
        let inputs = npy::read_npz(&npz)?;
        // tract is single-threaded unless built with its multithread feature: time it once.
        let tract = if a.no_tract { Timing::default() } else {
            bar.set_message(format!("{name}: tract"));
            bench_tract(&model, &inputs, &a)
        };
        for &t in &threads {
            bar.set_message(format!("{name}: infer, {t} threads"));
            let ours = bench_infer(&model, &inputs, t, &a);
            bar.set_message(format!("{name}: onnxruntime, {t} threads"));
            let ort = bench_ort(&model, &npz, t, &a);
            if let (Some(x), Some(y)) = (ours.median_ms, ort.median_ms) {
                log_ratios.push((t, (x / y).ln()));
            }
            rows.push(format!(
                "| {name} | {t} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                cell(&ours), cell(&ort), cell(&tract), ratio(&ours, &ort), ratio(&ours, &tract),
                ours.load_ms.unwrap_or(f64::NAN), ort.load_ms.unwrap_or(f64::NAN), tract.load_ms.unwrap_or(f64::NAN),
            ));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut md = String::from("| model | threads | infer ms | onnxruntime ms | tract ms (1 thread) | infer/ort | infer/tract | infer load ms | ort load ms | tract load ms |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        md.push_str(&r);
        md.push('\n');
    }
    for &t in &threads {
        let rs: Vec<f64> = log_ratios.iter().filter(|(n, _)| *n == t).map(|(_, r)| *r).collect();
        if !rs.is_empty() {
            md.push_str(&format!("\nGeometric mean infer/onnxruntime at {t} thread(s): {:.2} ({} models)\n", (rs.iter().sum::<f64>() / rs.len() as f64).exp(), rs.len()));
        }
    }
    print!("{md}");
    if let Some(out) = &a.out {
        let cmd: Vec<String> = std::env::args().collect();
        std::fs::write(out, format!("# Zoo benchmark\n\nMedians of {} runs after {} warm-up runs, same inputs, same machine, one run of:\n`{}`\n\n{md}", a.iters, a.warmup, cmd.join(" ")))?;
    }
    Ok(())
}
