//! The one checked path for tensor storage whose size comes from data.
//!
//! Shapes read from a model or computed from input values (Expand, ConstantOfShape, Tile,
//! Pad, Resize, ...) can ask for any number of elements. Every such allocation goes through
//! [`filled_vec`], which refuses, with an error instead of an abort:
//! - an element count or byte size that overflows `usize`;
//! - more bytes than the calling thread's tensor limit ([`max_tensor_bytes`]);
//! - a reservation the allocator refuses.
//!
//! The limit is per thread: [`DEFAULT_MAX_TENSOR_BYTES`] on every thread, and on the
//! threads of a session's rayon pool the session's `max_tensor_bytes`, set once when the
//! pool starts each thread. Kernels run on their session's pool (nested `par_iter` tasks too),
//! so they see their session's limit without it being passed around.
//!
//! The sum of the tensors live at once in one run is bounded too ([`RunBytes`], the
//! session's `max_total_bytes`): the executor charges every value it stores and credits it
//! when the value's last reader has run.

use crate::error::{Error, Result};
use std::cell::Cell;

/// Default limit on one tensor's bytes: 16 GiB.
pub const DEFAULT_MAX_TENSOR_BYTES: usize = 16 << 30;

/// Default limit on the bytes live at once in one run: 32 GiB.
///
/// A fixed number rather than a share of physical memory, so that a model that runs on one
/// machine is not refused on another with the same settings, and because the memory a
/// service can spare depends on what else it runs, which only its author knows. Twice the
/// tensor limit, so that one largest tensor and an output of the same size fit together.
/// It turns a runaway model into an error; set it to what the process can spare.
pub const DEFAULT_MAX_TOTAL_BYTES: usize = 32 << 30;

thread_local! {
    static MAX_TENSOR_BYTES: Cell<usize> = const { Cell::new(DEFAULT_MAX_TENSOR_BYTES) };
    static MAX_TOTAL_BYTES: Cell<usize> = const { Cell::new(DEFAULT_MAX_TOTAL_BYTES) };
    /// Bytes held by the runs that enclose the code running on this thread: a subgraph's
    /// run (an If branch, a Loop body) counts on top of its parent's.
    static ENCLOSING_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// The largest tensor, in bytes, that code on this thread may allocate.
pub fn max_tensor_bytes() -> usize {
    MAX_TENSOR_BYTES.with(Cell::get)
}

/// A session's limits on the current thread: its tensor limit for the checked allocation
/// path, and the total limit for the runs it executes. The previous limits come back when
/// this is dropped (a one-thread session runs on its caller's thread, which other sessions
/// may use too).
#[must_use = "the limits hold only while the guard lives"]
pub(crate) struct ThreadLimits {
    saved: (usize, usize),
}

impl ThreadLimits {
    /// Sets this thread's limits until the guard drops.
    pub(crate) fn enter(max_tensor_bytes: usize, max_total_bytes: usize) -> ThreadLimits {
        let saved = (
            MAX_TENSOR_BYTES.with(|c| c.replace(max_tensor_bytes)),
            MAX_TOTAL_BYTES.with(|c| c.replace(max_total_bytes)),
        );
        ThreadLimits { saved }
    }

    /// Sets this thread's limits for good (a session pool's thread start handler).
    pub(crate) fn set_for_thread(max_tensor_bytes: usize, max_total_bytes: usize) {
        std::mem::forget(Self::enter(max_tensor_bytes, max_total_bytes));
    }
}

impl Drop for ThreadLimits {
    fn drop(&mut self) {
        MAX_TENSOR_BYTES.with(|c| c.set(self.saved.0));
        MAX_TOTAL_BYTES.with(|c| c.set(self.saved.1));
    }
}

/// The bytes of the tensors live in one run (a plan's execution), bounded by the session's
/// `max_total_bytes`.
///
/// Each run has its own: concurrent runs of one session do not share a budget, and nothing
/// carries over from one run to the next (it is dropped with the run). A subgraph's run
/// starts from the bytes of the runs enclosing it on the same thread (the executor runs a
/// subgraph synchronously, on the thread of the step that calls it), published through a
/// thread-local that every run restores when it ends — so a top-level run that rayon
/// happens to start on a thread inside another run's kernel still starts from zero.
///
/// Tensors are counted as if each owned its storage: outputs that share their input's
/// buffer (Reshape, Identity) count twice, so the bound errs on the safe side. It is checked
/// as each kernel returns, so a run overshoots by at most one step's outputs, each of which
/// the tensor limit bounds.
pub(crate) struct RunBytes {
    limit: usize,
    /// Bytes of the enclosing runs.
    base: usize,
    live: usize,
    /// `ENCLOSING_BYTES` when this run started, restored when it ends.
    saved: usize,
}

impl RunBytes {
    /// The accounting of a session's run: it starts from zero.
    pub(crate) fn top_level() -> RunBytes {
        Self::starting_from(0)
    }

    /// The accounting of a subgraph's run: it starts from what its enclosing runs hold.
    pub(crate) fn nested() -> RunBytes {
        Self::starting_from(ENCLOSING_BYTES.with(Cell::get))
    }

    fn starting_from(base: usize) -> RunBytes {
        let saved = ENCLOSING_BYTES.with(|c| c.replace(base));
        RunBytes {
            limit: MAX_TOTAL_BYTES.with(Cell::get),
            base,
            live: 0,
            saved,
        }
    }

    /// Counts `bytes` more as live, or refuses them when the total would exceed the limit.
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<()> {
        let total = self.base.saturating_add(self.live).saturating_add(bytes);
        if total > self.limit {
            return Err(Error::Op(format!(
                "{bytes} more bytes would bring the run's live tensors to {total} bytes, over \
                 the {}-byte total limit (SessionBuilder::max_total_bytes)",
                self.limit
            )));
        }
        self.live += bytes;
        self.publish();
        Ok(())
    }

    /// Counts `bytes` (charged earlier) as freed.
    pub(crate) fn release(&mut self, bytes: usize) {
        self.live = self.live.saturating_sub(bytes);
        self.publish();
    }

    fn publish(&self) {
        ENCLOSING_BYTES.with(|c| c.set(self.base + self.live));
    }
}

impl Drop for RunBytes {
    fn drop(&mut self) {
        ENCLOSING_BYTES.with(|c| c.set(self.saved));
    }
}

/// Checks that `n` elements of `elem_size` bytes fit this thread's limit.
pub fn check_tensor_bytes(n: usize, elem_size: usize) -> Result<()> {
    let limit = max_tensor_bytes();
    match n.checked_mul(elem_size) {
        Some(bytes) if bytes <= limit => Ok(()),
        Some(bytes) => Err(Error::Op(format!(
            "a tensor of {n} elements ({bytes} bytes) exceeds the {limit}-byte tensor limit"
        ))),
        None => Err(Error::Op(format!(
            "a tensor of {n} elements of {elem_size} bytes has more bytes than fit in memory"
        ))),
    }
}

/// A vector of `n` copies of `v`, or an error (instead of an abort) when `n` is over this
/// thread's tensor limit or the allocator refuses it.
pub(crate) fn filled_vec<T: Clone>(n: usize, v: T) -> Result<Vec<T>> {
    check_tensor_bytes(n, std::mem::size_of::<T>())?;
    // Probe with a fallible reservation, then build with `vec!`, which for a zero fill of a
    // primitive type takes already-zeroed pages from the allocator instead of writing them.
    Vec::<T>::new().try_reserve_exact(n).map_err(|_| {
        Error::Op(format!(
            "cannot allocate {n} elements of {} bytes",
            std::mem::size_of::<T>()
        ))
    })?;
    Ok(vec![v; n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_over_the_limit_or_overflowing_are_errors() {
        assert!(filled_vec(usize::MAX, 0u8).is_err());
        assert!(filled_vec(usize::MAX / 2, 0f32).is_err());
        assert!(filled_vec(DEFAULT_MAX_TENSOR_BYTES / 4 + 1, 0f32).is_err());
        assert_eq!(filled_vec(3, 7i64).unwrap(), vec![7, 7, 7]);
    }

    #[test]
    fn the_limit_is_per_thread() {
        std::thread::spawn(|| {
            {
                let _limits = ThreadLimits::enter(16, DEFAULT_MAX_TOTAL_BYTES);
                assert!(filled_vec(4, 0f32).is_ok());
                let err = filled_vec(5, 0f32).unwrap_err().to_string();
                assert!(err.contains("20 bytes") && err.contains("16-byte"), "{err}");
            }
            // The guard gives the thread its previous limit back.
            assert_eq!(max_tensor_bytes(), DEFAULT_MAX_TENSOR_BYTES);
        })
        .join()
        .unwrap();
        assert_eq!(max_tensor_bytes(), DEFAULT_MAX_TENSOR_BYTES);
    }

    #[test]
    fn a_run_is_bounded_on_top_of_its_enclosing_runs_and_restores_them() {
        std::thread::spawn(|| {
            ThreadLimits::set_for_thread(DEFAULT_MAX_TENSOR_BYTES, 100);
            let mut outer = RunBytes::top_level();
            outer.charge(60).unwrap();
            {
                // A subgraph starts from its parent's 60 bytes.
                let mut inner = RunBytes::nested();
                inner.charge(40).unwrap();
                let err = inner.charge(1).unwrap_err().to_string();
                assert!(
                    err.contains("101 bytes") && err.contains("100-byte"),
                    "{err}"
                );
                // A top-level run started here (rayon work-stealing) starts from zero.
                let mut other = RunBytes::top_level();
                other.charge(100).unwrap();
            }
            // Both ended: the parent is back to its own 60 bytes.
            assert_eq!(ENCLOSING_BYTES.with(Cell::get), 60);
            outer.release(60);
            outer.charge(100).unwrap();
            drop(outer);
            assert_eq!(ENCLOSING_BYTES.with(Cell::get), 0);
        })
        .join()
        .unwrap();
    }
}
