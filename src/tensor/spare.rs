//! Storage of dead activations, reused for later outputs.
//!
//! When a value's last reader has run, the executor hands its tensor here; a kernel that
//! overwrites every element of its output (Conv, MatMul, Gemm) asks [`f32_output`] for a buffer
//! and gets such a spare instead of a fresh zero-filled allocation. A fresh multi-megabyte
//! buffer costs a memset (or a page fault per 4 KiB) on every step, and a spare from two steps
//! ago is often still in cache.
//!
//! Each session owns one [`SparePool`], kept between its runs (as onnxruntime's arena is), so
//! a steady stream of runs allocates nothing large; it is freed with the session. It is
//! current while the session's plan is built too: the temporary decoded copies of misaligned
//! weights ([`decoded_f32`]) come from it, so they stop costing fresh pages for each weight,
//! and the first run finds the buffers already faulted in. A run makes
//! its session's pool current on its thread for its duration ([`RunScope`]): the executor runs
//! a plan's steps, and any subgraph's, on that thread. Only uniquely owned `f32` storage is
//! taken (a tensor that shares its buffer, say with a Reshape output still alive, is simply
//! dropped), and a pool is bounded in count and bytes.

use super::alloc::{check_tensor_bytes, filled_vec};
use super::{Storable, Tensor};
use crate::error::Result;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// Smaller buffers are not worth keeping: the allocator serves them well.
const MIN_BYTES: usize = 64 << 10;
/// Growing a spare by at least this many bytes of zeros is split across the pool.
const PARALLEL_FILL_BYTES: usize = 256 << 10;
/// At most this many spares …
const MAX_SPARES: usize = 16;
/// … of at most this many bytes in all, per session.
const MAX_TOTAL_BYTES: usize = 64 << 20;

/// One session's spare buffers.
#[derive(Debug, Default)]
pub(crate) struct SparePool(Mutex<Vec<Vec<f32>>>);

impl SparePool {
    /// Runs `f` on the spares; a pool poisoned by a panic elsewhere is just not used.
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Vec<f32>>) -> Option<R>) -> Option<R> {
        self.0.lock().ok().and_then(|mut spares| f(&mut spares))
    }
}

thread_local! {
    /// The pool of the run in progress on this thread, if any.
    static CURRENT: RefCell<Option<Arc<SparePool>>> = const { RefCell::new(None) };
}

/// Makes a session's pool current on this thread until dropped (restoring the previous one:
/// rayon may start another run of the session on a thread that waits inside a run).
pub(crate) struct RunScope(Option<Arc<SparePool>>);

impl RunScope {
    pub(crate) fn enter(pool: Arc<SparePool>) -> RunScope {
        RunScope(CURRENT.with(|c| c.replace(Some(pool))))
    }
}

impl Drop for RunScope {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// The pool current on this thread, if any.
pub(crate) fn current() -> Option<Arc<SparePool>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Keeps `t`'s storage for reuse when it is a uniquely owned `f32` buffer worth keeping and a
/// run is in progress; otherwise just drops it.
pub(crate) fn give_back(t: Tensor) {
    if let Some(v) = t.into_unique_f32() {
        give_back_vec(v);
    }
}

/// Keeps a kernel's scratch buffer for reuse, as [`give_back`] does a dead tensor's.
pub(crate) fn give_back_vec(v: Vec<f32>) {
    let Some(pool) = current() else {
        return;
    };
    let bytes = v.capacity() * std::mem::size_of::<f32>();
    if !(MIN_BYTES..=MAX_TOTAL_BYTES).contains(&bytes) {
        return;
    }
    pool.with(|spares| {
        let held =
            |spares: &Vec<Vec<f32>>| -> usize { spares.iter().map(|v| v.capacity() * 4).sum() };
        // The oldest spares go first to make room.
        while !spares.is_empty()
            && (spares.len() >= MAX_SPARES || held(spares) + bytes > MAX_TOTAL_BYTES)
        {
            spares.remove(0);
        }
        spares.push(v);
        Some(())
    });
}

/// A kernel's output buffer: `len` elements to write (all of them: the old contents are
/// unspecified), over storage that may be longer. A spare handed out for a smaller tensor keeps
/// its initialized tail this way, through the tensor and back to the pool, so that a later,
/// larger output need not write zeros over it (megabytes a run on a convolutional network,
/// whose activations shrink and grow block by block).
#[derive(Debug)]
pub(crate) struct Output<T> {
    storage: Vec<T>,
    len: usize,
}

impl<T: Storable> Output<T> {
    /// The tensor of `shape` (which has `len` elements) over this storage.
    pub(crate) fn into_tensor(self, shape: Vec<usize>) -> Result<Tensor> {
        let n = crate::tensor::checked_numel(&shape)?;
        if n != self.len {
            return Err(crate::error::Error::Op(format!(
                "shape {shape:?} needs {n} elements, the output holds {}",
                self.len
            )));
        }
        Tensor::from_storage(shape, self.storage)
    }
}

impl<T> Output<T> {
    /// Exactly the `len` elements (the tail goes, and the pool will write it again).
    pub(crate) fn into_vec(mut self) -> Vec<T> {
        self.storage.truncate(self.len);
        self.storage
    }
}

impl Output<f32> {
    /// Returns a temporary buffer (with its tail) to the current pool.
    pub(crate) fn give_back(self) {
        give_back_vec(self.storage);
    }
}

impl<T> std::ops::Deref for Output<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.storage[..self.len]
    }
}

impl<T> std::ops::DerefMut for Output<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.storage[..self.len]
    }
}

/// A buffer of `n` floats whose contents are unspecified (a spare's old values, or zeros): for
/// kernels that write every element. Errors as `filled_vec` when `n` is over the tensor limit.
pub(crate) fn f32_output(n: usize) -> Result<Output<f32>> {
    check_tensor_bytes(n, std::mem::size_of::<f32>())?;
    let pool = current().filter(|_| n * std::mem::size_of::<f32>() >= MIN_BYTES);
    // The smallest spare that holds `n`, however much larger: activations shrink and grow
    // along a network (a block's expansion is 6× its input), and a larger buffer handed out
    // now comes back when its tensor dies. The pool's bounds cap what this holds.
    let spare = pool.and_then(|pool| {
        pool.with(|spares| {
            // The one that needs the fewest new elements (growing a shorter one within its
            // capacity writes zeros over the difference), then the smallest.
            let best = spares
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= n)
                .min_by_key(|(_, v)| (n.saturating_sub(v.len()), v.capacity()))
                .map(|(i, _)| i)?;
            Some(spares.swap_remove(best))
        })
    });
    let storage = match spare {
        Some(mut v) => {
            // Grows within the capacity when the spare is shorter (only the new tail is
            // written; by the whole pool when large: a serial fill kept a 2-thread run's first
            // layers from scaling at all); a longer one keeps its tail.
            let grow = n.saturating_sub(v.len());
            if grow * std::mem::size_of::<f32>() >= PARALLEL_FILL_BYTES
                && infer_kernels::parallel::threads() > 1
            {
                #[allow(clippy::disallowed_methods)] // Not reached inline: one thread.
                {
                    use rayon::prelude::*;
                    v.par_extend(rayon::iter::repeat_n(0.0, grow));
                }
            } else if grow > 0 {
                v.resize(n, 0.0);
            }
            v
        }
        None => filled_vec(n, 0.0)?,
    };
    Ok(Output { storage, len: n })
}

/// Puts one spare able to hold `n` floats, its pages mapped in at once (see
/// `infer_kernels::huge_pages::mapped_vec`), into the current pool: called before a plan is
/// built with its largest misaligned weight, so that [`decoded_f32`] never grows a buffer
/// (a fresh page per 4 KiB, and a copy of the old contents, weight after weight). Nothing when
/// no pool is current or the pool would not keep it.
pub(crate) fn reserve_for_decoding(n: usize) {
    let bytes = n.saturating_mul(std::mem::size_of::<f32>());
    if current().is_none() || !(MIN_BYTES..=MAX_TOTAL_BYTES).contains(&bytes) {
        return;
    }
    if check_tensor_bytes(n, std::mem::size_of::<f32>()).is_ok() {
        if let Some(v) = infer_kernels::huge_pages::mapped_vec(n) {
            give_back_vec(v);
        }
    }
}

/// Little-endian `f32` bytes (a whole number of them) decoded into a buffer that comes from,
/// and should go back to, the current pool: for temporary copies of misaligned weights.
pub(crate) fn decoded_f32(bytes: &[u8]) -> Result<Vec<f32>> {
    let n = bytes.len() / 4;
    check_tensor_bytes(n, std::mem::size_of::<f32>())?;
    // The smallest spare that holds them (see `reserve_for_decoding`), else a new buffer with
    // its pages mapped in at once: growing a smaller spare would copy contents about to be
    // overwritten, and fault its new pages in one by one.
    let spare = current().and_then(|pool| {
        pool.with(|spares| {
            let i = (0..spares.len())
                .filter(|&i| spares[i].capacity() >= n)
                .min_by_key(|&i| spares[i].capacity())?;
            Some(spares.swap_remove(i))
        })
    });
    let mut v = match spare {
        Some(v) => v,
        None => infer_kernels::huge_pages::mapped_vec(n).ok_or_else(|| {
            crate::error::Error::Op(format!("cannot allocate {n} floats for a weight"))
        })?,
    };
    // Written once, straight from the bytes: no zero fill first.
    v.clear();
    v.extend(le_f32s(bytes));
    Ok(v)
}

/// The `f32`s of little-endian bytes (a trailing partial element is ignored).
pub(crate) fn le_f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// [`f32_output`] for any element type: a spare for `f32`, a fresh default-filled vector for
/// the others. For kernels that write every element.
pub(crate) fn output<T: Clone + Default + 'static>(n: usize) -> Result<Output<T>> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        let v: Box<dyn std::any::Any> = Box::new(f32_output(n)?);
        if let Ok(v) = v.downcast::<Output<T>>() {
            return Ok(*v);
        }
    }
    Ok(Output {
        storage: filled_vec(n, T::default())?,
        len: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_buffer_is_reused_while_its_pool_is_current() {
        let n = MIN_BYTES; // floats: four times the minimum bytes
        let scope = RunScope::enter(Arc::default());
        let t = Tensor::from_vec(vec![n], vec![1.5f32; n]).unwrap();
        give_back(t);
        let v = f32_output(n - 10).unwrap();
        assert_eq!(v.len(), n - 10);
        assert!(v.iter().all(|&x| x == 1.5), "the spare's storage came back");
        // Nothing left: the next one is fresh and zeroed.
        assert!(f32_output(n).unwrap().iter().all(|&x| x == 0.0));
        give_back(v.into_tensor(vec![n - 10]).unwrap());
        drop(scope);
        // No pool current: a fresh buffer.
        assert!(f32_output(n - 10).unwrap().iter().all(|&x| x == 0.0));
    }

    #[test]
    fn shared_or_out_of_run_buffers_are_not_kept_and_the_best_fit_is_used() {
        let n = MIN_BYTES;
        // Outside a run: dropped.
        give_back(Tensor::from_vec(vec![n], vec![2.0f32; n]).unwrap());
        let _scope = RunScope::enter(Arc::default());
        assert!(f32_output(n).unwrap().iter().all(|&x| x == 0.0));
        // Shared storage: the other owner keeps it.
        let t = Tensor::from_vec(vec![n], vec![3.0f32; n]).unwrap();
        let other = t.clone();
        give_back(t);
        assert!(f32_output(n).unwrap().iter().all(|&x| x == 0.0));
        assert_eq!(other.as_slice::<f32>().unwrap()[0], 3.0);
        // The smallest that fits is handed out.
        give_back(Tensor::from_vec(vec![4 * n], vec![4.0f32; 4 * n]).unwrap());
        give_back(Tensor::from_vec(vec![2 * n], vec![5.0f32; 2 * n]).unwrap());
        assert!(f32_output(n).unwrap().iter().all(|&x| x == 5.0));
        assert!(f32_output(3 * n).unwrap().iter().all(|&x| x == 4.0));
    }

    #[test]
    fn a_spare_keeps_its_tail_through_a_smaller_tensor() {
        let n = MIN_BYTES;
        let _scope = RunScope::enter(Arc::default());
        give_back(Tensor::from_vec(vec![4 * n], vec![1.5f32; 4 * n]).unwrap());
        let small = f32_output(n).unwrap();
        assert_eq!(small.len(), n);
        let t = small.into_tensor(vec![n / 2, 2]).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap().len(), n);
        assert_eq!(t.as_bytes().len(), 4 * n);
        assert_eq!(t.clone().into_vec::<f32>().unwrap().len(), n);
        give_back(t);
        let v = f32_output(4 * n).unwrap();
        assert!(v.iter().all(|&x| x == 1.5), "the tail came back as it was");
    }

    #[test]
    fn a_truncated_spare_grows_back_with_zeros() {
        let n = MIN_BYTES;
        let _scope = RunScope::enter(Arc::default());
        // Grown by 3n floats (over PARALLEL_FILL_BYTES: the pool writes them), then by 100.
        for (fill, grow) in [(1.5f32, 3 * n), (2.5, 100)] {
            give_back(Tensor::from_vec(vec![n + grow], vec![fill; n + grow]).unwrap());
            // Taken out as exactly its elements (as in-place kernels take their input): the
            // tail is forgotten.
            let truncated = f32_output(n).unwrap().into_vec();
            give_back(Tensor::from_vec(vec![n], truncated).unwrap());
            let v = f32_output(n + grow).unwrap();
            assert_eq!(v.len(), n + grow);
            assert!(
                v[..n].iter().all(|&x| x == fill),
                "the spare's storage came back"
            );
            assert!(
                v[n..].iter().all(|&x| x == 0.0),
                "its forgotten tail is zeros"
            );
        }
    }

    #[test]
    fn weights_decode_into_the_reserved_spare_without_growing_it() {
        let n = MIN_BYTES;
        let bytes = |k: usize| -> Vec<u8> {
            (0..k)
                .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
                .collect()
        };
        let _scope = RunScope::enter(Arc::default());
        reserve_for_decoding(2 * n);
        let reserved = decoded_f32(&bytes(n)).unwrap();
        let at = reserved.as_ptr();
        assert!(reserved.capacity() >= 2 * n);
        assert_eq!(reserved.len(), n);
        assert!(reserved
            .iter()
            .enumerate()
            .all(|(i, &x)| x == i as f32 * 0.5));
        give_back_vec(reserved);
        // The same buffer again for the largest weight, then a fresh one for a larger one.
        let again = decoded_f32(&bytes(2 * n)).unwrap();
        assert_eq!(again.as_ptr(), at);
        assert!(again.iter().enumerate().all(|(i, &x)| x == i as f32 * 0.5));
        let larger = decoded_f32(&bytes(3 * n)).unwrap();
        assert_ne!(larger.as_ptr(), at);
        assert_eq!(larger.len(), 3 * n);
        assert!(larger.iter().enumerate().all(|(i, &x)| x == i as f32 * 0.5));
    }
}
