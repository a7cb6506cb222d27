//! Where a session's runs (and its planning) execute: inline on the caller's thread for one
//! thread, else on the session's own rayon pool.
//!
//! One thread runs inline, as onnxruntime runs its one-thread sessions: a pool of one worker
//! costs a hand-off to the worker and a wake-up of the caller on every run (~60 µs on the
//! 2-core VM, 7 % of a 64-row MLP), and an OS thread per session. Inline, the kernels' loops
//! go through `infer_kernels::parallel` in its inline mode, and the caller's thread carries
//! the session's allocation limits for the run. What stays on the caller's thread after a
//! run: the kernels' per-thread scratch (packing buffers, ~1 MiB), as any BLAS keeps.

use super::run_slots::RunSlots;
use super::Limits;
use crate::error::{Error, Result};
use crate::tensor::alloc::ThreadLimits;
use infer_kernels::parallel;

pub(super) enum Runner {
    Inline {
        limits: Limits,
    },
    Pool {
        pool: rayon::ThreadPool,
        slots: RunSlots,
    },
}

impl Runner {
    pub(super) fn new(threads: usize, limits: Limits) -> Result<Runner> {
        if threads <= 1 {
            return Ok(Runner::Inline { limits });
        }
        let slots = RunSlots::for_threads(threads);
        let Limits {
            max_tensor_bytes,
            max_total_bytes,
            ..
        } = limits;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("infer-{i}"))
            // Runs nest on a waiting worker's stack (see `run_slots`).
            .stack_size(slots.stack_bytes())
            // Every kernel, its nested rayon tasks included, runs on this pool: each of its
            // threads carries the session's tensor limit for the checked allocation path, and
            // the total limit for the runs it executes.
            .start_handler(move |_| {
                ThreadLimits::set_for_thread(max_tensor_bytes, max_total_bytes);
            })
            .build()
            .map_err(|e| Error::Input(format!("cannot start {threads} threads: {e}")))?;
        Ok(Runner::Pool { pool, slots })
    }

    /// Runs `f` where this session's work runs, with the session's limits.
    pub(super) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self {
            Runner::Inline { limits } => {
                let _inline = parallel::Inline::enter();
                let _limits = ThreadLimits::enter(limits.max_tensor_bytes, limits.max_total_bytes);
                f()
            }
            Runner::Pool { pool, slots } => {
                let _slot = slots.acquire();
                pool.install(f)
            }
        }
    }
}
