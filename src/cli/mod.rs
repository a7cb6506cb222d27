//! Argument parsing and the three subcommands.

mod bench;
mod inputs;
mod inspect;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "infer",
    version,
    about = "A CPU inference runtime for ONNX models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on inputs and print or save its outputs.
    Run {
        /// The model file.
        model: PathBuf,
        /// Inputs: `PATH.npy` (bound in the model's input order), `NAME=PATH.npy`, or one `.npz`.
        inputs: Vec<String>,
        /// Write each output to `DIR/<output name>.npy` instead of printing it.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        #[command(flatten)]
        session: SessionArgs,
        /// The Keras architecture (config.json) of a `.weights.h5` model file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show a model's opset, inputs, outputs, operators and parameters, or every tensor of a
    /// weights file (safetensors, PyTorch checkpoint, Hugging Face folder).
    Inspect {
        /// The model file, weights file or Hugging Face model folder.
        model: PathBuf,
    },
    /// Time a model: load + plan, then repeated runs.
    Bench {
        /// The model file.
        model: PathBuf,
        /// Inputs as for `run`; without any, random data of the declared shapes is used.
        inputs: Vec<String>,
        #[command(flatten)]
        session: SessionArgs,
        /// Timed runs.
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// Untimed runs before timing.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Value of a symbolic dimension for random inputs, e.g. `--dim batch=8`.
        #[arg(long = "dim", value_name = "NAME=VALUE")]
        dims: Vec<String>,
        /// Also print kernel time per operator type and the N slowest nodes (25 without
        /// a value), over `iters` extra runs.
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "25")]
        profile: Option<usize>,
    },
}

/// How `run` and `bench` build their session.
#[derive(clap::Args, Clone, Copy, Debug)]
struct SessionArgs {
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Run MatMul/Gemm with constant weights on the dynamically quantized int8 GEMM
    /// (approximate; fp32 by default).
    #[arg(long)]
    int8: bool,
    /// Let idle worker threads sleep between steps instead of spinning (less CPU while a
    /// run waits on serial steps, more latency; see `SessionBuilder::spin_wait`).
    #[arg(long)]
    no_spin: bool,
    /// Run 3×3 stride-1 convolutions on the im2col GEMM instead of Winograd F(4×4, 3×3)
    /// (see `SessionBuilder::winograd`).
    #[arg(long)]
    no_winograd: bool,
    /// Hand NCHW tensors between convolutions instead of channel blocks of 16 (see
    /// `SessionBuilder::blocked_layout`).
    #[arg(long)]
    no_blocked: bool,
    /// Hand pointwise outputs to depthwise convolutions channels last (see
    /// `SessionBuilder::channels_last`; off by default).
    #[arg(long)]
    channels_last: bool,
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            model,
            inputs,
            out_dir,
            session,
            config,
        } => run::run(
            &model,
            &inputs,
            out_dir.as_deref(),
            session,
            config.as_deref(),
        ),
        Command::Inspect { model } => inspect::inspect(&model),
        Command::Bench {
            model,
            inputs,
            session,
            iters,
            warmup,
            dims,
            profile,
        } => bench::bench(&model, &inputs, session, iters, warmup, &dims, profile),
    }
}

/// A session builder as the command line asks.
fn builder(args: SessionArgs) -> infer::SessionBuilder {
    let b = infer::Session::builder()
        .int8_matmul(args.int8)
        .spin_wait(!args.no_spin)
        .winograd(!args.no_winograd)
        .blocked_layout(!args.no_blocked)
        .channels_last(args.channels_last);
    match args.threads {
        Some(n) => b.threads(n),
        None => b,
    }
}

/// Builds a session as the command line asks.
fn session(model: &std::path::Path, args: SessionArgs) -> infer::Result<infer::Session> {
    builder(args).build_from_file(model)
}
