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

use crate::error::{Error, Result};
use std::cell::Cell;

/// Default limit on one tensor's bytes: 16 GiB.
pub const DEFAULT_MAX_TENSOR_BYTES: usize = 16 << 30;

thread_local! {
    static MAX_TENSOR_BYTES: Cell<usize> = const { Cell::new(DEFAULT_MAX_TENSOR_BYTES) };
}

/// The largest tensor, in bytes, that code on this thread may allocate.
pub fn max_tensor_bytes() -> usize {
    MAX_TENSOR_BYTES.with(Cell::get)
}

/// Sets this thread's tensor limit (called by a session pool's thread start handler).
pub(crate) fn set_thread_max_tensor_bytes(bytes: usize) {
    MAX_TENSOR_BYTES.with(|c| c.set(bytes));
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
            set_thread_max_tensor_bytes(16);
            assert!(filled_vec(4, 0f32).is_ok());
            let err = filled_vec(5, 0f32).unwrap_err().to_string();
            assert!(err.contains("20 bytes") && err.contains("16-byte"), "{err}");
        })
        .join()
        .unwrap();
        assert_eq!(max_tensor_bytes(), DEFAULT_MAX_TENSOR_BYTES);
    }
}
