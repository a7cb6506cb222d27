//! Materializing strided views: the one copy engine behind Transpose, Slice, Expand,
//! DepthToSpace/SpaceToDepth and axis-moving reductions.
//!
//! A view names, for each output element in row-major order, the source element
//! `src[base + Σ index[d] * strides[d]]`. Strides may be zero (broadcast) or negative (reversed
//! slices). The view is validated once against the source length, which is what makes the
//! unchecked reads in the copy loops sound. Dimensions that are contiguous with each other are
//! merged first, then each row is copied with the loop that fits its innermost stride:
//! `copy_from_slice` when contiguous, a fill when broadcast, cache-sized tiles when another
//! dimension is the source's faster one (transposes), and a strided gather otherwise.

use super::PAR_THRESHOLD;
use crate::error::Result;
use crate::tensor::{checked_numel, Storable, Tensor};
use crate::{ensure, with_dtype};
use infer_kernels::parallel;
use rayon::prelude::*;

/// A validated strided view over a source of a known length.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// Simplified dimensions: no size-1 dimensions, contiguous neighbours merged.
    dims: Vec<usize>,
    strides: Vec<isize>,
    base: usize,
    src_len: usize,
    numel: usize,
}

impl View {
    /// A view of `shape` over a source of `src_len` elements; an error if any element it names
    /// lies outside the source.
    pub fn new(shape: &[usize], strides: &[isize], base: usize, src_len: usize) -> Result<View> {
        ensure!(
            shape.len() == strides.len(),
            "view shape {shape:?} and strides {strides:?} differ in rank"
        );
        let numel = checked_numel(shape)?;
        if numel > 0 {
            let (mut lo, mut hi) = (base as i128, base as i128);
            for (&n, &s) in shape.iter().zip(strides) {
                let span = (n as i128 - 1) * s as i128;
                if span < 0 {
                    lo += span;
                } else {
                    hi += span;
                }
            }
            ensure!(
                lo >= 0 && hi < src_len as i128,
                "view {shape:?} with strides {strides:?} from {base} reaches outside {src_len} elements"
            );
        }
        let (dims, strides) = simplify(shape, strides);
        Ok(View {
            dims,
            strides,
            base,
            src_len,
            numel,
        })
    }

    /// The whole of a row-major tensor of `shape`, its axes reordered: output axis `i` is
    /// input axis `perm[i]`.
    pub fn permuted(shape: &[usize], perm: &[usize]) -> Result<View> {
        ensure!(
            perm.len() == shape.len(),
            "permutation {perm:?} does not match rank {}",
            shape.len()
        );
        let mut seen = vec![false; perm.len()];
        for &p in perm {
            ensure!(
                p < perm.len() && !seen[p],
                "{perm:?} is not a permutation of the axes"
            );
            seen[p] = true;
        }
        let in_strides = super::super::util::strides_of(shape);
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let strides: Vec<isize> = perm.iter().map(|&p| in_strides[p] as isize).collect();
        View::new(&out_shape, &strides, 0, checked_numel(shape)?)
    }

    /// Whether the view is the whole source in order, so copying it would change nothing.
    pub fn is_identity(&self) -> bool {
        self.base == 0
            && self.numel == self.src_len
            && match (self.dims.as_slice(), self.strides.as_slice()) {
                ([], _) => true,
                ([_], [s]) => *s == 1,
                _ => false,
            }
    }

    /// Copies the viewed elements of `src` into a new row-major vector.
    pub fn materialize<T: Copy + Default + Send + Sync + 'static>(
        &self,
        src: &[T],
    ) -> Result<Vec<T>> {
        ensure!(
            src.len() == self.src_len,
            "view expects {} source elements, got {}",
            self.src_len,
            src.len()
        );
        // Every element is copied below, so a spare buffer's old contents never show.
        let mut out = crate::tensor::spare::output::<T>(self.numel)?;
        if self.numel > 0 {
            copy_par(&mut out, src, self.base, &self.dims, &self.strides);
        }
        Ok(out.into_vec())
    }
}

/// The view of `x` as a tensor of `shape`: `x` itself (no copy) when the view is the identity.
pub(crate) fn view_tensor(x: &Tensor, view: &View, shape: Vec<usize>) -> Result<Tensor> {
    if view.is_identity() {
        return x.reshape(shape);
    }
    with_dtype!(x.dtype(), T, { materialize_as::<T>(x, view, shape) })
}

fn materialize_as<T: Storable + Send + Sync>(
    x: &Tensor,
    view: &View,
    shape: Vec<usize>,
) -> Result<Tensor> {
    Tensor::from_vec(shape, view.materialize(x.as_slice::<T>()?)?)
}

/// Drops size-1 dimensions and merges neighbours where the outer one steps exactly over the
/// inner one, so a transpose of merged blocks becomes a low-rank copy.
fn simplify(shape: &[usize], strides: &[isize]) -> (Vec<usize>, Vec<isize>) {
    let mut dims: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out: Vec<isize> = Vec::with_capacity(shape.len());
    for (&n, &s) in shape.iter().zip(strides) {
        if n == 1 {
            continue;
        }
        match (dims.last_mut(), out.last_mut()) {
            (Some(ln), Some(ls)) if *ls == s * n as isize => {
                *ln *= n;
                *ls = s;
            }
            _ => {
                dims.push(n);
                out.push(s);
            }
        }
    }
    (dims, out)
}

/// Calls `f(src_offset, dst_offset)` for every index of `dims` in row-major order, the offsets
/// being the bases plus the index dotted with the respective strides.
pub(crate) fn for_each_offset(
    dims: &[usize],
    src_strides: &[isize],
    src_base: isize,
    dst_strides: &[usize],
    mut f: impl FnMut(isize, usize),
) {
    if dims.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; dims.len()];
    let (mut so, mut d_off) = (src_base, 0usize);
    loop {
        f(so, d_off);
        let mut d = dims.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            so += src_strides[d];
            d_off += dst_strides[d];
            if idx[d] < dims[d] {
                break;
            }
            so -= src_strides[d] * dims[d] as isize;
            d_off -= dst_strides[d] * dims[d];
            idx[d] = 0;
        }
    }
}

/// Splits the copy over rayon tasks along the leading dimensions, in blocks of rows so the
/// tiles of a transpose stay whole.
fn copy_par<T: Copy + Send + Sync>(
    dst: &mut [T],
    src: &[T],
    base: usize,
    dims: &[usize],
    strides: &[isize],
) {
    if dst.len() < PAR_THRESHOLD || dims.is_empty() {
        return copy_serial(dst, src, base, dims, strides);
    }
    let tasks = 4 * parallel::threads();
    let (n0, s0) = (dims[0], strides[0]);
    let row = dst.len() / n0;
    let at = |i: usize| (base as isize + i as isize * s0) as usize;
    if n0 >= tasks || dims.len() == 1 {
        let rows = n0.div_ceil(tasks);
        parallel::for_each(dst.par_chunks_mut(rows * row).enumerate(), |(c, chunk)| {
            let mut sub = dims.to_vec();
            sub[0] = chunk.len() / row;
            copy_serial(chunk, src, at(c * rows), &sub, strides);
        });
    } else {
        parallel::for_each(dst.par_chunks_mut(row).enumerate(), |(i, chunk)| {
            copy_par(chunk, src, at(i), &dims[1..], &strides[1..])
        });
    }
}

/// Side of the square tiles a transpose is copied in: one cache line of elements.
fn tile<T>() -> usize {
    (64 / std::mem::size_of::<T>().max(1)).max(8)
}

/// Copies one (sub)view; `dst` holds exactly its elements and every offset it names lies in
/// `src` (checked by `View::new` for the whole view, which contains this one).
fn copy_serial<T: Copy>(dst: &mut [T], src: &[T], base: usize, dims: &[usize], strides: &[isize]) {
    let Some((&n_a, outer)) = dims.split_last() else {
        dst[0] = src[base];
        return;
    };
    let r = dims.len();
    let s_a = strides[r - 1];
    let dst_strides = super::super::util::strides_of(dims);
    // A transpose: some outer dimension walks the source faster than the inner one does.
    let partner = (0..r - 1)
        .filter(|&d| strides[d] != 0)
        .min_by_key(|&d| strides[d].unsigned_abs())
        .filter(|&d| s_a != 0 && strides[d].unsigned_abs() < s_a.unsigned_abs());
    match partner {
        Some(b) => copy_tiled(dst, src, base, dims, strides, &dst_strides, b),
        None => for_each_offset(
            outer,
            &strides[..r - 1],
            base as isize,
            &dst_strides[..r - 1],
            |so, d_off| {
                let row = &mut dst[d_off..d_off + n_a];
                let so = so as usize;
                match s_a {
                    1 => row.copy_from_slice(&src[so..so + n_a]),
                    0 => row.fill(src[so]),
                    s => {
                        for (j, d) in row.iter_mut().enumerate() {
                            // SAFETY: `so + j*s` for j < n_a is an element of the view, inside
                            // `src` as validated by `View::new`.
                            *d = unsafe {
                                *src.get_unchecked((so as isize + j as isize * s) as usize)
                            };
                        }
                    }
                }
            },
        ),
    }
}

/// Copies a view whose innermost dimension `a` is strided while dimension `b` is the source's
/// faster one, in square tiles over (b, a) so both source and destination lines are reused
/// while in cache.
fn copy_tiled<T: Copy>(
    dst: &mut [T],
    src: &[T],
    base: usize,
    dims: &[usize],
    strides: &[isize],
    dst_strides: &[usize],
    b: usize,
) {
    let r = dims.len();
    let (n_a, s_a) = (dims[r - 1], strides[r - 1]);
    let (n_b, s_b, d_b) = (dims[b], strides[b], dst_strides[b]);
    let others: Vec<usize> = (0..r - 1).filter(|&d| d != b).collect();
    let o_dims: Vec<usize> = others.iter().map(|&d| dims[d]).collect();
    let o_src: Vec<isize> = others.iter().map(|&d| strides[d]).collect();
    let o_dst: Vec<usize> = others.iter().map(|&d| dst_strides[d]).collect();
    let t = tile::<T>();
    for_each_offset(&o_dims, &o_src, base as isize, &o_dst, |so, d_off| {
        for i0 in (0..n_b).step_by(t) {
            for j0 in (0..n_a).step_by(t) {
                let j1 = (j0 + t).min(n_a);
                for i in i0..(i0 + t).min(n_b) {
                    let row = d_off + i * d_b;
                    let s = so + i as isize * s_b;
                    for (j, d) in (j0..j1).zip(&mut dst[row + j0..row + j1]) {
                        // SAFETY: (i, j) indexes the view, whose elements all lie inside `src`
                        // as validated by `View::new`.
                        *d = unsafe { *src.get_unchecked((s + j as isize * s_a) as usize) };
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(n: usize) -> Vec<i32> {
        (0..n as i32).collect()
    }

    #[test]
    fn transpose_2d_matches_hand_result() {
        // [[0,1,2],[3,4,5]] transposed.
        let v = View::permuted(&[2, 3], &[1, 0]).unwrap();
        assert_eq!(v.materialize(&iota(6)).unwrap(), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn large_transposes_match_naive_index_math() {
        // Tiled and parallel paths against a direct evaluation of out[i,j,k] = in[perm].
        for (shape, perm) in [
            (vec![67usize, 300, 5], vec![1usize, 0, 2]),
            (vec![300, 67, 5], vec![2, 0, 1]),
            (vec![3, 129, 257], vec![0, 2, 1]),
            (vec![33, 17, 70], vec![2, 1, 0]),
        ] {
            let n = shape.iter().product();
            let src = iota(n);
            let out = View::permuted(&shape, &perm)
                .unwrap()
                .materialize(&src)
                .unwrap();
            let os: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let ist = crate::ops::util::strides_of(&shape);
            let mut k = 0;
            for i in 0..os[0] {
                for j in 0..os[1] {
                    for l in 0..os[2] {
                        let idx = [i, j, l];
                        let mut off = 0;
                        for d in 0..3 {
                            off += idx[d] * ist[perm[d]];
                        }
                        assert_eq!(out[k], src[off], "shape {shape:?} perm {perm:?} at {idx:?}");
                        k += 1;
                    }
                }
            }
        }
    }

    #[test]
    fn negative_and_zero_strides() {
        // Reverse of [0..5), then a broadcast of element 2 three times.
        let rev = View::new(&[5], &[-1], 4, 5).unwrap();
        assert_eq!(rev.materialize(&iota(5)).unwrap(), vec![4, 3, 2, 1, 0]);
        let bc = View::new(&[2, 3], &[0, 0], 2, 5).unwrap();
        assert_eq!(bc.materialize(&iota(5)).unwrap(), vec![2; 6]);
    }

    #[test]
    fn views_reaching_outside_the_source_are_rejected() {
        assert!(View::new(&[3], &[2], 0, 5).is_ok());
        assert!(View::new(&[3], &[2], 1, 5).is_err());
        assert!(View::new(&[2], &[-1], 0, 5).is_err());
        assert!(View::permuted(&[2, 3], &[0, 0]).is_err());
    }

    #[test]
    fn merged_identity_is_detected() {
        assert!(View::permuted(&[4, 1, 5], &[1, 0, 2])
            .unwrap()
            .is_identity());
        assert!(!View::permuted(&[4, 5], &[1, 0]).unwrap().is_identity());
    }
}
