//! Direct depthwise 2-D convolution of one plane, accumulating every tap in registers.
//!
//! The plane is first copied into a padded, zero-filled scratch buffer, with its columns split
//! into `stride` phases (column `c` goes to phase `c % stride`, position `c / stride`), so that
//! padding needs no bounds tests and every tap of a strided kernel reads contiguous memory.
//! Outputs are then computed in blocks of `BLOCK` lanes, each block summing all
//! `kernel_h × kernel_w` taps before one store: the output is written once instead of once per
//! tap, which is what bounds a row-by-row `axpy` formulation.
//!
//! Stride-1 planes are processed as one flat row (output pitch = padded width), so narrow
//! planes (7×7, 14×14) still fill whole blocks; the few extra columns are computed and dropped.

use crate::isa::{isa, Isa};

/// Where one depthwise plane's outputs read their inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneGeometry {
    /// Input height and width.
    pub input: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Zero rows above and columns left of the input (the far side follows from `output`).
    pub pad: [usize; 2],
}

impl PlaneGeometry {
    /// Width of one phase row of the padded buffer.
    fn phase_len(&self) -> usize {
        self.padded_width().div_ceil(self.stride[1].max(1))
    }

    /// Columns of padded input the outputs reach.
    fn padded_width(&self) -> usize {
        (self.output[1].max(1) - 1) * self.stride[1]
            + (self.kernel[1].max(1) - 1) * self.dilation[1]
            + 1
    }

    /// Rows of padded input the outputs reach.
    fn padded_height(&self) -> usize {
        (self.output[0].max(1) - 1) * self.stride[0]
            + (self.kernel[0].max(1) - 1) * self.dilation[0]
            + 1
    }
}

/// A thread's reusable padded copy of one plane (see the module docs).
///
/// It remembers the layout it was last filled for: planes of the same geometry (the channels of
/// one convolution) differ only inside the input's rectangle, so for them only that is copied
/// and the padding, already in place, is not written again.
#[derive(Debug, Default)]
pub struct PlaneScratch {
    buf: Vec<f32>,
    /// Geometry, block and padding value (as bits) of the last fill.
    filled_for: Option<(PlaneGeometry, usize, u32)>,
}

impl PlaneScratch {
    pub const fn new() -> Self {
        PlaneScratch {
            buf: Vec::new(),
            filled_for: None,
        }
    }
}

/// `y = bias + Σ_{kh,kw} w[kh·KW + kw] · x_padded[oh·sh + kh·dh][ow·sw + kw·dw]` for one plane,
/// clamped to `clamp = Some((lo, hi))` as `Activation::Clip` does (a fused Relu / Relu6,
/// applied in registers before the store rather than in a pass over the plane).
///
/// `x` holds `H·W` inputs, `w` the `KH·KW` weights and `y` receives `OH·OW` outputs;
/// `scratch` is reused between calls (one per thread).
///
/// # Panics
/// If a slice is shorter than the geometry says (a caller bug: the convolution op checks
/// shapes before it gets here).
pub fn depthwise_plane(
    g: &PlaneGeometry,
    x: &[f32],
    w: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    y: &mut [f32],
    scratch: &mut PlaneScratch,
) {
    assert!(
        w.len() >= g.kernel[0] * g.kernel[1],
        "depthwise weights too short"
    );
    plane(g, x, w, bias, clamp, y, scratch);
}

fn plane(
    g: &PlaneGeometry,
    x: &[f32],
    w: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    y: &mut [f32],
    scratch: &mut PlaneScratch,
) {
    let [oh_n, ow_n] = g.output;
    if oh_n == 0 || ow_n == 0 {
        return;
    }
    assert!(x.len() >= g.input[0] * g.input[1], "plane input too short");
    assert!(y.len() >= oh_n * ow_n, "plane output too short");
    let block = if ow_n <= 16 && g.stride != [1, 1] {
        SMALL_BLOCK
    } else {
        BLOCK
    };
    fill_padded(g, x, block, 0.0, scratch);
    let scratch = &scratch.buf;
    // Tap offsets on the stack for the usual kernels (up to 8×8): this runs once per plane.
    let mut stack = [0usize; 64];
    let heap;
    let taps: &[usize] = if g.kernel[0] * g.kernel[1] <= stack.len() {
        let taps = &mut stack[..g.kernel[0] * g.kernel[1]];
        tap_offsets_into(g, taps);
        taps
    } else {
        heap = tap_offsets(g);
        &heap
    };
    let out = Out { y, clamp, block };
    match isa() {
        Isa::Portable => compute::<false>(g, scratch, taps, w, bias, out),
        // SAFETY (all arms below): `isa()` picked the arm only after detecting its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { compute_avx2(g, scratch, taps, w, bias, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { compute_avx512(g, scratch, taps, w, bias, out) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { compute_neon(g, scratch, taps, w, bias, out) },
    }
}

/// Where `compute` stores a plane: the outputs, their clamp, and the lanes per block.
struct Out<'a> {
    y: &'a mut [f32],
    clamp: Option<(f32, f32)>,
    block: usize,
}

/// Applies `Activation::Clip`'s rule (a NaN stays NaN) to a block of accumulators.
#[inline(always)]
fn clamp_block(acc: &mut [f32], clamp: Option<(f32, f32)>) {
    if let Some((lo, hi)) = clamp {
        for a in acc {
            let v = if *a < lo { lo } else { *a };
            *a = if v > hi { hi } else { v };
        }
    }
}

/// Lanes per block: 64 floats are 8 AVX2 / 4 AVX-512 accumulators, enough independent FMA
/// chains to hide their latency.
const BLOCK: usize = 64;
/// Lanes per block for narrow strided planes, where 64 would mostly compute dropped lanes.
const SMALL_BLOCK: usize = 16;

/// Copies the plane into `scratch` as `padded_height` rows of `stride_w` phase rows each, `pad`
/// outside the input, plus one block of slack at the end so the last block may read past
/// the plane. The padding is written only when the layout differs from the last fill's.
fn fill_padded(g: &PlaneGeometry, x: &[f32], block: usize, pad: f32, scratch: &mut PlaneScratch) {
    let [h, w] = g.input;
    let sw = g.stride[1].max(1);
    let len = g.phase_len();
    let rows = g.padded_height();
    let slack = block + g.kernel[1] * g.dilation[1] + len * g.kernel[0] * g.dilation[0] * sw;
    let key = (*g, block, pad.to_bits());
    let buf = &mut scratch.buf;
    if scratch.filled_for != Some(key) {
        buf.clear();
        buf.resize(rows * sw * len + slack, pad);
        scratch.filled_for = Some(key);
    }
    // Below, only positions inside the input's rectangle are written: the same ones for every
    // plane of this layout, so everything else keeps the padding written above.
    let [pad_top, pad_left] = g.pad;
    let input_rows = pad_top.min(rows)..(pad_top + h).min(rows);
    if sw == 1 {
        // Columns pad_left.. of each padded row hold the input row (clipped to the width).
        let lo = pad_left.min(len);
        let n = w.min(len - lo);
        for r in input_rows {
            let src = &x[(r - pad_top) * w..(r - pad_top) * w + n];
            buf[r * len + lo..r * len + lo + n].copy_from_slice(src);
        }
        return;
    }
    for p in 0..sw {
        // Phase positions j whose input column j·sw + p - pad_left lies in 0..w: the same for
        // every row, so worked out once (divisions cost as much as a small plane's copy).
        let lo = pad_left.saturating_sub(p).div_ceil(sw).min(len);
        let hi = (pad_left + w).saturating_sub(p).div_ceil(sw).clamp(lo, len);
        if lo == hi {
            continue;
        }
        for r in input_rows.clone() {
            let src = &x[(r - pad_top) * w..(r - pad_top + 1) * w];
            let dst = &mut buf[(r * sw + p) * len + lo..(r * sw + p) * len + hi];
            let src = &src[lo * sw + p - pad_left..];
            match isa() {
                // SAFETY: `isa()` picked AVX2 (or AVX-512, which implies it) after detecting it.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::Avx512 => unsafe { copy_strided_avx2(dst, src, sw) },
                _ => copy_strided(dst, src, sw),
            }
        }
    }
}

/// `copy_strided` with 8-lane shuffles (the baseline build de-interleaves 4 lanes at a time).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_strided_avx2(dst: &mut [f32], src: &[f32], stride: usize) {
    copy_strided(dst, src, stride)
}

/// `dst[j] = src[j · stride]`, in a form the compiler vectorizes for the common strides
/// (`src` must hold `(dst.len() - 1) · stride + 1` floats).
#[inline(always)]
pub(crate) fn copy_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    #[inline(always)]
    fn by<const S: usize>(dst: &mut [f32], src: &[f32]) {
        // All but the last through whole chunks (an interleaved load the compiler turns into
        // shuffles); the last may have fewer than `S` inputs after it.
        let Some((last, head)) = dst.split_last_mut() else {
            return;
        };
        for (d, c) in head.iter_mut().zip(src.chunks_exact(S)) {
            *d = c[0];
        }
        *last = src[head.len() * S];
    }
    match stride {
        2 => by::<2>(dst, src),
        3 => by::<3>(dst, src),
        4 => by::<4>(dst, src),
        _ => dst
            .iter_mut()
            .zip(src.iter().step_by(stride))
            .for_each(|(d, &v)| *d = v),
    }
}

/// For each tap (kh, kw), its offset in the padded buffer relative to output (0, 0).
fn tap_offsets(g: &PlaneGeometry) -> Vec<usize> {
    let mut taps = vec![0; g.kernel[0] * g.kernel[1]];
    tap_offsets_into(g, &mut taps);
    taps
}

/// `tap_offsets` into `taps`, which holds `kernel_h · kernel_w` entries.
fn tap_offsets_into(g: &PlaneGeometry, taps: &mut [usize]) {
    let sw = g.stride[1].max(1);
    let len = g.phase_len();
    // Nested loops rather than t / kernel_w: per-tap divisions cost as much as a small plane.
    let mut taps = taps.iter_mut();
    for kh in 0..g.kernel[0] {
        for kw in 0..g.kernel[1] {
            let col = kw * g.dilation[1];
            if let Some(tap) = taps.next() {
                *tap = (kh * g.dilation[0] * sw + col % sw) * len + col / sw;
            }
        }
    }
}

#[inline(always)]
fn compute<const FMA: bool>(
    g: &PlaneGeometry,
    buf: &[f32],
    taps: &[usize],
    w: &[f32],
    bias: f32,
    out: Out,
) {
    let Out { y, clamp, block } = out;
    let [oh_n, ow_n] = g.output;
    let len = g.phase_len();
    if g.stride == [1, 1] {
        // One flat row: output (oh, ow) is at oh·len + ow, and every tap offset is constant.
        let flat = oh_n * len;
        let (mut at, mut oh, mut ow) = (0, 0, 0);
        while at < flat {
            let mut acc = [bias; BLOCK];
            accumulate::<FMA, BLOCK>(&mut acc, buf, taps, w, at);
            clamp_block(&mut acc, clamp);
            // Copy the block out as runs along output rows, dropping the padding columns.
            let mut i = 0;
            let n = BLOCK.min(flat - at);
            while i < n {
                let run = (len - ow).min(n - i);
                if ow < ow_n {
                    let keep = run.min(ow_n - ow);
                    y[oh * ow_n + ow..oh * ow_n + ow + keep].copy_from_slice(&acc[i..i + keep]);
                }
                i += run;
                ow += run;
                if ow == len {
                    (oh, ow) = (oh + 1, 0);
                }
            }
            at += BLOCK;
        }
        return;
    }
    let row_pitch = g.stride[0] * g.stride[1].max(1) * len;
    for oh in 0..oh_n {
        let out = &mut y[oh * ow_n..(oh + 1) * ow_n];
        let mut ow = 0;
        while ow < ow_n {
            let n = (ow_n - ow).min(block);
            if block == SMALL_BLOCK {
                let mut acc = [bias; SMALL_BLOCK];
                accumulate::<FMA, SMALL_BLOCK>(&mut acc, buf, taps, w, oh * row_pitch + ow);
                clamp_block(&mut acc[..n], clamp);
                out[ow..ow + n].copy_from_slice(&acc[..n]);
            } else {
                let mut acc = [bias; BLOCK];
                accumulate::<FMA, BLOCK>(&mut acc, buf, taps, w, oh * row_pitch + ow);
                clamp_block(&mut acc[..n], clamp);
                out[ow..ow + n].copy_from_slice(&acc[..n]);
            }
            ow += n;
        }
    }
}

/// `acc[i] += w[t] · buf[base + taps[t] + i]` over the taps `t`: fixed-size so the compiler
/// keeps `acc` in vector registers.
#[inline(always)]
fn accumulate<const FMA: bool, const N: usize>(
    acc: &mut [f32; N],
    buf: &[f32],
    taps: &[usize],
    w: &[f32],
    base: usize,
) {
    for (&off, &wt) in taps.iter().zip(w) {
        let src: &[f32; N] = buf[base + off..base + off + N]
            .try_into()
            .expect("a slice of N elements");
        for (a, &x) in acc.iter_mut().zip(src) {
            *a = if FMA { x.mul_add(wt, *a) } else { *a + wt * x };
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn compute_avx2(
    g: &PlaneGeometry,
    buf: &[f32],
    taps: &[usize],
    w: &[f32],
    bias: f32,
    out: Out,
) {
    compute::<true>(g, buf, taps, w, bias, out)
}

/// # Safety
/// The CPU has AVX-512F (which implies AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn compute_avx512(
    g: &PlaneGeometry,
    buf: &[f32],
    taps: &[usize],
    w: &[f32],
    bias: f32,
    out: Out,
) {
    compute::<true>(g, buf, taps, w, bias, out)
}

/// # Safety
/// None beyond aarch64 itself (NEON is baseline).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn compute_neon(
    g: &PlaneGeometry,
    buf: &[f32],
    taps: &[usize],
    w: &[f32],
    bias: f32,
    out: Out,
) {
    compute::<true>(g, buf, taps, w, bias, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time, with explicit bounds tests for the padding.
    fn reference(g: &PlaneGeometry, x: &[f32], w: &[f32], bias: f32) -> Vec<f32> {
        let [h, wd] = g.input;
        let mut y = vec![0.0; g.output[0] * g.output[1]];
        for oh in 0..g.output[0] {
            for ow in 0..g.output[1] {
                let mut s = bias as f64;
                for kh in 0..g.kernel[0] {
                    for kw in 0..g.kernel[1] {
                        let ih =
                            (oh * g.stride[0] + kh * g.dilation[0]) as isize - g.pad[0] as isize;
                        let iw =
                            (ow * g.stride[1] + kw * g.dilation[1]) as isize - g.pad[1] as isize;
                        if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd {
                            s += w[kh * g.kernel[1] + kw] as f64
                                * x[ih as usize * wd + iw as usize] as f64;
                        }
                    }
                }
                y[oh * g.output[1] + ow] = s as f32;
            }
        }
        y
    }

    fn output_len(n: usize, k: usize, s: usize, d: usize, pad_total: usize) -> usize {
        (n + pad_total - (k - 1) * d - 1) / s + 1
    }

    #[test]
    fn matches_the_definition_across_shapes_strides_and_padding() {
        let mut scratch = PlaneScratch::new();
        let mut pool_scratch = crate::max_pool::MaxPoolScratch::new();
        // (H, W, K, stride, dilation, pad each side): mobilenet/efficientnet shapes and odd ones.
        let cases = [
            (7, 7, 3, 1, 1, 1),
            (14, 14, 5, 2, 1, 2),
            (13, 17, 3, 2, 1, 1),
            (9, 70, 3, 1, 2, 2),
            (5, 3, 3, 1, 1, 0),
            (1, 40, 1, 3, 1, 0),
            (112, 112, 3, 2, 1, 1),
            (6, 6, 5, 1, 1, 2),
        ];
        for (h, wd, k, s, d, p) in cases {
            let oh = output_len(h, k, s, d, 2 * p);
            let ow = output_len(wd, k, s, d, 2 * p);
            let g = PlaneGeometry {
                input: [h, wd],
                output: [oh, ow],
                kernel: [k, k],
                stride: [s, s],
                dilation: [d, d],
                pad: [p, p],
            };
            let x: Vec<f32> = (0..h * wd)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0)
                .collect();
            let w: Vec<f32> = (0..k * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
                .collect();
            let mut y = vec![f32::NAN; oh * ow];
            depthwise_plane(&g, &x, &w, 0.25, None, &mut y, &mut scratch);
            let want = reference(&g, &x, &w, 0.25);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-5, "{g:?} output {i}: {a} vs {b}");
            }
            let mut z = vec![f32::NAN; oh * ow];
            fill_padded(&g, &x, BLOCK, 0.0, &mut scratch);
            let out = Out {
                y: &mut z,
                clamp: None,
                block: BLOCK,
            };
            compute::<false>(&g, &scratch.buf, &tap_offsets(&g), &w, 0.25, out);
            for (a, b) in z.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5, "portable {g:?}: {a} vs {b}");
            }
            // Max pooling over the same windows: the largest input inside each.
            let mut m = vec![f32::NAN; oh * ow];
            crate::max_pool::max_pool_plane(&g, &x, &mut m, &mut pool_scratch);
            for oh_i in 0..oh {
                for ow_i in 0..ow {
                    let mut best = f32::NEG_INFINITY;
                    for kh in 0..k {
                        for kw in 0..k {
                            let ih = (oh_i * s + kh * d) as isize - p as isize;
                            let iw = (ow_i * s + kw * d) as isize - p as isize;
                            if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd {
                                best = best.max(x[ih as usize * wd + iw as usize]);
                            }
                        }
                    }
                    assert_eq!(m[oh_i * ow + ow_i], best, "max {g:?} at ({oh_i}, {ow_i})");
                }
            }
        }
    }

    /// Deterministic pseudo-random numbers (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        /// Values in [-1, 1) on a 1/64 grid: exact in f32, and ties for max pooling.
        fn values(&mut self, n: usize) -> Vec<f32> {
            (0..n)
                .map(|_| self.below(128) as f32 / 64.0 - 1.0)
                .collect()
        }
    }

    #[test]
    fn planes_of_one_layout_reuse_the_padding_but_not_the_data() {
        // Consecutive planes of one geometry skip the padding fill: the second plane's result
        // must not see the first's values.
        let mut rng = Rng(77);
        let mut scratch = PlaneScratch::new();
        for (h, wd, k, s, p) in [(9, 11, 3, 1, 1), (12, 10, 3, 2, 1), (7, 7, 5, 2, 2)] {
            let o = |n: usize| (n + 2 * p - k) / s + 1;
            let g = PlaneGeometry {
                input: [h, wd],
                output: [o(h), o(wd)],
                kernel: [k, k],
                stride: [s, s],
                dilation: [1, 1],
                pad: [p, p],
            };
            let w = rng.values(k * k);
            for _ in 0..3 {
                let x = rng.values(h * wd);
                let mut y = vec![f32::NAN; o(h) * o(wd)];
                depthwise_plane(&g, &x, &w, 0.5, None, &mut y, &mut scratch);
                for (a, b) in y.iter().zip(reference(&g, &x, &w, 0.5)) {
                    assert!((a - b).abs() <= 1e-5, "{g:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn random_geometries_match_the_definition() {
        let mut rng = Rng(0x0dd_5eed_u64 << 8 | 1);
        // One scratch buffer for every case, as a thread reuses it: what a larger plane left
        // in it must not leak into a smaller one.
        let mut scratch = PlaneScratch::new();
        let mut pool_scratch = crate::max_pool::MaxPoolScratch::new();
        for case in 0..300 {
            let (h, wd) = (1 + rng.below(20), 1 + rng.below(20));
            let kernel = [1 + rng.below(5), 1 + rng.below(5)];
            let stride = [1 + rng.below(3), 1 + rng.below(3)];
            let dilation = [1 + rng.below(3), 1 + rng.below(3)];
            // Asymmetric padding: `pad` is the near side, the far side follows from `output`.
            let pad = [rng.below(kernel[0]), rng.below(kernel[1])];
            let far = [rng.below(kernel[0]), rng.below(kernel[1])];
            let extent = |n: usize, a: usize| n + pad[a] + far[a];
            let reach = |a: usize| (kernel[a] - 1) * dilation[a] + 1;
            if extent(h, 0) < reach(0) || extent(wd, 1) < reach(1) {
                continue;
            }
            let output = [
                (extent(h, 0) - reach(0)) / stride[0] + 1,
                (extent(wd, 1) - reach(1)) / stride[1] + 1,
            ];
            let g = PlaneGeometry {
                input: [h, wd],
                output,
                kernel,
                stride,
                dilation,
                pad,
            };
            // Every slice one element past an allocation's start: unaligned.
            let x_store = rng.values(h * wd + 1);
            let w_store = rng.values(kernel[0] * kernel[1] + 1);
            let (x, w) = (&x_store[1..], &w_store[1..]);
            let n = output[0] * output[1];
            let bias = rng.values(1)[0];
            // Every other case with a fused Relu6-like clamp (values here lie in -1..1).
            let clamp = (case % 2 == 1).then_some((-0.25, 0.5));
            let mut want = reference(&g, x, w, bias);
            if let Some((lo, hi)) = clamp {
                want.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
            }

            let mut y_store = vec![f32::NAN; n + 1];
            depthwise_plane(&g, x, w, bias, clamp, &mut y_store[1..], &mut scratch);
            let mut portable = vec![f32::NAN; n];
            fill_padded(&g, x, BLOCK, 0.0, &mut scratch);
            let out = Out {
                y: &mut portable,
                clamp,
                block: BLOCK,
            };
            compute::<false>(&g, &scratch.buf, &tap_offsets(&g), w, bias, out);
            for (i, ((a, b), c)) in y_store[1..].iter().zip(&portable).zip(&want).enumerate() {
                assert!(
                    (a - c).abs() <= 1e-5 && (b - c).abs() <= 1e-5,
                    "case {case} {g:?} output {i}: {a} (portable {b}) vs {c}"
                );
            }

            // Max pooling over the same windows: the largest input inside each (a window of
            // padding only gives -inf).
            let mut m = vec![f32::NAN; n];
            crate::max_pool::max_pool_plane(&g, x, &mut m, &mut pool_scratch);
            for oh in 0..output[0] {
                for ow in 0..output[1] {
                    let mut best = f32::NEG_INFINITY;
                    for kh in 0..kernel[0] {
                        for kw in 0..kernel[1] {
                            let ih = (oh * stride[0] + kh * dilation[0]).checked_sub(pad[0]);
                            let iw = (ow * stride[1] + kw * dilation[1]).checked_sub(pad[1]);
                            if let (Some(ih), Some(iw)) = (ih, iw) {
                                if ih < h && iw < wd {
                                    best = best.max(x[ih * wd + iw]);
                                }
                            }
                        }
                    }
                    assert_eq!(
                        m[oh * output[1] + ow],
                        best,
                        "case {case} {g:?} max ({oh}, {ow})"
                    );
                }
            }
        }
    }
}
