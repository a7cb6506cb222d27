//! One row times an unpacked matrix (`1 × k · k × n`: a vector-matrix product, such as
//! attention over a key/value cache while decoding). Packing would copy all of B to use it
//! once; instead B is read in place, once, by rows (axpy) or by columns (dot products),
//! whichever is contiguous.

use super::driver::PARALLEL_MIN_WORK;
use super::{Epilogue, MatRef};
use crate::parallel;
use rayon::prelude::*;

/// `y = epilogue(a · b)` for a 1-row `a`; `y` is the output row (`b.cols` values). Split
/// across threads when `parallel` and large enough.
pub(super) fn row_times_matrix(
    a: MatRef,
    b: MatRef,
    y: &mut [f32],
    epi: &Epilogue,
    parallel: bool,
) {
    let k = a.cols;
    let x: Vec<f32> = (0..k).map(|p| a.data[p * a.col_stride]).collect();
    let n = y.len();
    let threads = if parallel { parallel::threads() } else { 1 };
    let chunk = if threads > 1 && n * k >= PARALLEL_MIN_WORK {
        n.div_ceil(threads)
    } else {
        n
    };
    parallel::for_each(y.par_chunks_mut(chunk.max(1)).enumerate(), |(t, y)| {
        let j0 = t * chunk;
        columns(&x, b, j0, y);
        epi.apply_row(y, 0, j0);
    });
}

/// `y[j] = x · b[:, j0 + j]`.
fn columns(x: &[f32], b: MatRef, j0: usize, y: &mut [f32]) {
    let (rs, cs) = (b.row_stride, b.col_stride);
    if x.is_empty() {
        y.fill(0.0);
    } else if cs == 1 {
        // Rows of B are contiguous: accumulate scaled rows.
        y.fill(0.0);
        for (p, &w) in x.iter().enumerate() {
            let row = &b.data[p * rs + j0..p * rs + j0 + y.len()];
            y.iter_mut().zip(row).for_each(|(y, b)| *y += w * b);
        }
    } else if rs == 1 {
        // Columns of B are contiguous (B is a transposed matrix): dot products.
        for (j, y) in y.iter_mut().enumerate() {
            let start = (j0 + j) * cs;
            *y = dot(x, &b.data[start..start + x.len()]);
        }
    } else {
        for (j, y) in y.iter_mut().enumerate() {
            let col = (j0 + j) * cs;
            *y = x
                .iter()
                .enumerate()
                .map(|(p, w)| w * b.data[p * rs + col])
                .sum();
        }
    }
}

/// Dot product in 8 independent lanes, so it vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}
