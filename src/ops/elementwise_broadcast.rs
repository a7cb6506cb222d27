//! Loops for elementwise kernels: unary maps and numpy-broadcast binary and ternary zips,
//! split across the rayon pool for large outputs.
//!
//! Broadcasting is planned once per call as rows: the output dims are merged wherever every
//! operand either spans both or repeats along both, so that the innermost merged dim is as
//! long as possible and each operand walks it either contiguously or not at all. Bias adds
//! ([N, C] + [C]) become one contiguous row per N, per-channel scales (NCHW * [C, 1, 1])
//! one splat row per (N, C), and same-shape or scalar operands a single row.

use super::super::util::broadcast_all;
use crate::error::Result;
use crate::tensor::{Storable, Tensor};
use infer_kernels::parallel;
use rayon::prelude::*;

/// Outputs at least this long are computed in parallel.
const PAR_MIN_LEN: usize = 1 << 15;
/// Elements per parallel task.
const PAR_CHUNK: usize = 1 << 14;

/// `out[i] = f(x[i])` over a whole tensor.
pub(crate) fn map<T: Storable, O: Storable>(
    x: &Tensor,
    f: impl Fn(T) -> O + Sync,
) -> Result<Tensor> {
    let src = x.as_slice::<T>()?;
    // Every element is written by `map_slice`.
    let mut out = crate::tensor::spare::output::<O>(src.len())?;
    map_slice(src, &mut out, f);
    out.into_tensor(x.shape().to_vec())
}

/// `out[i] = f(x[i])`; `out` is as long as `x`.
pub(crate) fn map_slice<T: Copy + Sync, O: Send>(
    x: &[T],
    out: &mut [O],
    f: impl Fn(T) -> O + Sync,
) {
    let run = |x: &[T], out: &mut [O]| {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f(v);
        }
    };
    if x.len() >= PAR_MIN_LEN {
        parallel::for_each(
            out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)),
            |(o, x)| run(x, o),
        );
    } else {
        run(x, out);
    }
}

/// `out = f(a, b)` with numpy broadcasting.
pub(crate) fn binary<A: Storable, B: Storable, O: Storable>(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(A, B) -> O + Sync,
) -> Result<Tensor> {
    let (xa, xb) = (a.as_slice::<A>()?, b.as_slice::<B>()?);
    let rows = Rows::new([a.shape(), b.shape()])?;
    let [full_a, full_b] = rows.inner_full;
    let out = rows.fill(|dst, [ia, ib]| {
        let n = dst.len();
        if !full_a {
            let x = xa[ia];
            for (d, &y) in dst.iter_mut().zip(&xb[ib..ib + n]) {
                *d = f(x, y);
            }
        } else if !full_b {
            let y = xb[ib];
            for (d, &x) in dst.iter_mut().zip(&xa[ia..ia + n]) {
                *d = f(x, y);
            }
        } else {
            for ((d, &x), &y) in dst.iter_mut().zip(&xa[ia..ia + n]).zip(&xb[ib..ib + n]) {
                *d = f(x, y);
            }
        }
    })?;
    out.into_tensor(rows.out_shape)
}

/// `out = f(a, b, c)` with numpy broadcasting (for Where).
pub(crate) fn ternary<A: Storable, B: Storable, C: Storable, O: Storable>(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    f: impl Fn(A, B, C) -> O + Sync,
) -> Result<Tensor> {
    let (xa, xb, xc) = (a.as_slice::<A>()?, b.as_slice::<B>()?, c.as_slice::<C>()?);
    let rows = Rows::new([a.shape(), b.shape(), c.shape()])?;
    let [fa, fb, fc] = rows.inner_full;
    let out = rows.fill(|dst, [ia, ib, ic]| {
        let n = dst.len();
        let row = |full: bool, at: usize| at..at + if full { n } else { 1 };
        let (ra, rb, rc) = (&xa[row(fa, ia)], &xb[row(fb, ib)], &xc[row(fc, ic)]);
        // One loop per pattern of walking and repeated operands, so that each is a plain
        // vectorizable loop.
        macro_rules! by_pattern {
            ($(($a:literal, $b:literal, $c:literal)),*) => {
                match (fa, fb, fc) {
                    $(($a, $b, $c) => zip3::<$a, $b, $c, _, _, _, _>(dst, ra, rb, rc, &f),)*
                }
            };
        }
        by_pattern!(
            (true, true, true),
            (true, true, false),
            (true, false, true),
            (true, false, false),
            (false, true, true),
            (false, true, false),
            (false, false, true),
            (false, false, false)
        );
    })?;
    out.into_tensor(rows.out_shape)
}

/// `dst[i] = f(a[i], b[i], c[i])`, where an operand that is not `FULL` has one element that
/// stands for all.
#[inline(always)]
fn zip3<const FA: bool, const FB: bool, const FC: bool, A: Copy, B: Copy, C: Copy, O>(
    dst: &mut [O],
    a: &[A],
    b: &[B],
    c: &[C],
    f: &impl Fn(A, B, C) -> O,
) {
    for (i, d) in dst.iter_mut().enumerate() {
        let at = |full: bool| if full { i } else { 0 };
        *d = f(a[at(FA)], b[at(FB)], c[at(FC)]);
    }
}

/// The output of a broadcast, as rows over merged dims.
struct Rows<const N: usize> {
    out_shape: Vec<usize>,
    /// Merged dims, outermost first; the last is the row. Never empty.
    dims: Vec<usize>,
    /// Each operand's element stride along each merged dim (0 where it is broadcast).
    strides: [Vec<usize>; N],
    /// Whether each operand spans the row (else it repeats one element along it).
    inner_full: [bool; N],
}

impl<const N: usize> Rows<N> {
    fn new(shapes: [&[usize]; N]) -> Result<Self> {
        let out_shape = broadcast_all(shapes)?;
        let rank = out_shape.len();
        // Per output dim of size > 1, which operands span it; runs of equal patterns merge.
        let mut dims: Vec<usize> = Vec::new();
        let mut spans: Vec<[bool; N]> = Vec::new();
        for (d, &len) in out_shape.iter().enumerate() {
            if len == 1 {
                continue;
            }
            let span = shapes.map(|s| {
                let pad = rank - s.len();
                d >= pad && s[d - pad] == len
            });
            match (dims.last_mut(), spans.last()) {
                (Some(last), Some(&prev)) if prev == span => *last *= len,
                _ => {
                    dims.push(len);
                    spans.push(span);
                }
            }
        }
        if dims.is_empty() {
            // A single element: one row of length 1 that every operand spans.
            dims.push(1);
            spans.push([true; N]);
        }
        let strides = std::array::from_fn(|k| {
            let mut stride = vec![0; dims.len()];
            let mut step = 1;
            for d in (0..dims.len()).rev() {
                if spans[d][k] {
                    stride[d] = step;
                    step *= dims[d];
                }
            }
            stride
        });
        let inner_full = spans[spans.len() - 1];
        Ok(Rows {
            out_shape,
            dims,
            strides,
            inner_full,
        })
    }

    fn row_len(&self) -> usize {
        self.dims[self.dims.len() - 1]
    }

    /// Each operand's offset at the start of row `row` (rows counted over the outer dims).
    fn row_offsets(&self, mut row: usize) -> [usize; N] {
        let mut offsets = [0; N];
        for d in (0..self.dims.len() - 1).rev() {
            let i = row % self.dims[d];
            row /= self.dims[d];
            for (o, s) in offsets.iter_mut().zip(&self.strides) {
                *o += i * s[d];
            }
        }
        offsets
    }

    /// Allocates the output and calls `seg(dst, offsets)` for each stretch of it that lies in
    /// one row, with each operand's offset at the stretch's first element; in parallel for
    /// large outputs.
    /// The output, each row segment written by `seg` (which must write all of it).
    fn fill<O: Storable>(
        &self,
        seg: impl Fn(&mut [O], [usize; N]) + Sync,
    ) -> Result<crate::tensor::spare::Output<O>> {
        let n = crate::tensor::checked_numel(&self.dims)?;
        if n == 0 {
            // Some dim is 0, possibly the row: nothing to compute, nor to divide by.
            return crate::tensor::spare::output(0);
        }
        // Checked against the tensor limit (a broadcast can be far larger than its operands);
        // a spare buffer for f32, as every element is written below.
        let mut out = crate::tensor::spare::output::<O>(n)?;
        let chunk = |dst: &mut [O], start: usize| {
            let row_len = self.row_len();
            let mut pos = start;
            for part in split_rows(dst, start, row_len) {
                let (row, col) = (pos / row_len, pos % row_len);
                let mut offsets = self.row_offsets(row);
                for (o, &full) in offsets.iter_mut().zip(&self.inner_full) {
                    *o += if full { col } else { 0 };
                }
                pos += part.len();
                seg(part, offsets);
            }
        };
        if n >= PAR_MIN_LEN {
            parallel::for_each(out.par_chunks_mut(PAR_CHUNK).enumerate(), |(i, dst)| {
                chunk(dst, i * PAR_CHUNK)
            });
        } else {
            chunk(&mut out, 0);
        }
        Ok(out)
    }
}

/// Splits `dst`, which starts at flat position `start`, at every multiple of `row_len`.
fn split_rows<O>(dst: &mut [O], start: usize, row_len: usize) -> impl Iterator<Item = &mut [O]> {
    let first = (row_len - start % row_len).min(dst.len());
    let (head, tail) = dst.split_at_mut(first);
    std::iter::once(head)
        .filter(|h| !h.is_empty())
        .chain(tail.chunks_mut(row_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    fn seq(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32).collect()
    }

    #[test]
    fn merges_dims_into_rows() {
        let r = Rows::new([&[2, 3, 4][..], &[3, 4][..]]).unwrap();
        assert_eq!(
            (r.dims.clone(), r.strides.clone()),
            (vec![2, 12], [vec![12, 1], vec![0, 1]])
        );
        let r = Rows::new([&[2, 3, 5, 5][..], &[3, 1, 1][..]]).unwrap();
        assert_eq!(r.dims, vec![2, 3, 25]);
        assert_eq!(r.strides, [vec![75, 25, 1], vec![0, 1, 0]]);
        assert_eq!(r.inner_full, [true, false]);
        let r = Rows::new([&[1, 1][..], &[][..]]).unwrap();
        assert_eq!((r.out_shape.clone(), r.dims.clone()), (vec![1, 1], vec![1]));
    }

    #[test]
    fn binary_broadcasts_like_numpy() {
        // np.arange(6).reshape(2,3,1) + np.array([10, 20]) (shape [2]) -> [2, 3, 2]
        let a = t(&[2, 3, 1], seq(6));
        let b = t(&[2], vec![10.0, 20.0]);
        let y = binary(&a, &b, |x: f32, y: f32| x + y).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2]);
        let want = [10., 20., 11., 21., 12., 22., 13., 23., 14., 24., 15., 25.];
        assert_eq!(y.as_slice::<f32>().unwrap(), want);
        // [3, 1] - [1, 4]: outer difference.
        let a = t(&[3, 1], vec![0.0, 1.0, 2.0]);
        let b = t(&[1, 4], seq(4));
        let y = binary(&a, &b, |x: f32, y: f32| x - y).unwrap();
        let want = [0., -1., -2., -3., 1., 0., -1., -2., 2., 1., 0., -1.];
        assert_eq!(y.as_slice::<f32>().unwrap(), want);
        // Scalar on the left, empty tensors (the row or an outer dim of length 0),
        // incompatible shapes.
        let mul = |x: f32, y: f32| x * y;
        let y = binary(&t(&[], vec![2.0]), &t(&[3], seq(3)), mul).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), [0.0, 2.0, 4.0]);
        let y = binary(&t(&[0, 3], vec![]), &t(&[3], seq(3)), mul).unwrap();
        assert_eq!(y.shape(), &[0, 3]);
        let y = binary(&t(&[3, 0], vec![]), &t(&[1], seq(1)), mul).unwrap();
        assert_eq!(y.shape(), &[3, 0]);
        assert!(binary(&t(&[2], seq(2)), &t(&[3], seq(3)), mul).is_err());
    }

    #[test]
    fn large_broadcasts_match_the_sequential_result() {
        // [N, C, HW] * [C, 1] across parallel chunks that start mid-row.
        let (n, c, hw) = (3, 7, 3001);
        let a = t(&[n, c, hw], seq(n * c * hw));
        let s = t(&[c, 1], seq(c));
        let y = binary(&a, &s, |x: f32, y: f32| x * y).unwrap();
        let got = y.as_slice::<f32>().unwrap();
        for (i, &v) in got.iter().enumerate() {
            assert_eq!(v, i as f32 * ((i / hw) % c) as f32, "at {i}");
        }
    }

    #[test]
    fn ternary_broadcasts_all_three() {
        // np.where([[True], [False]], [1, 2, 3], 0.5) -> [[1, 2, 3], [.5, .5, .5]]
        let c = Tensor::from_vec(vec![2, 1], vec![true, false]).unwrap();
        let x = t(&[3], vec![1.0, 2.0, 3.0]);
        let y = t(&[], vec![0.5]);
        let select = |c: bool, x: f32, y: f32| if c { x } else { y };
        let out = ternary(&c, &x, &y, select).unwrap();
        assert_eq!(out.shape(), &[2, 3]);
        let want = [1.0, 2.0, 3.0, 0.5, 0.5, 0.5];
        assert_eq!(out.as_slice::<f32>().unwrap(), want);
        // Same shapes: every operand walks the row.
        let c = Tensor::from_vec(vec![3], vec![false, true, false]).unwrap();
        let y = t(&[3], vec![-1.0, -2.0, -3.0]);
        let out = ternary(&c, &x, &y, select).unwrap();
        assert_eq!(out.as_slice::<f32>().unwrap(), [-1.0, 2.0, -3.0]);
    }
}
