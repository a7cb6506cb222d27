//! Direct depthwise 2-D convolution of 16 planes at once, one channel per vector lane: the
//! path for small planes (the 14×14 and 7×7 maps at the end of mobilenet / efficientnet).
//!
//! The plane-at-a-time kernel (`depthwise::depthwise_plane`) puts output positions in the
//! lanes, which wastes most of a 64-lane block on a 7×7 plane and pays its per-plane costs
//! (padded copy, tap table, block copies) for only 49 outputs. Here a group's 16 planes are
//! first interleaved into a padded scratch (`[padded row][padded column][16 lanes]`), so every
//! tap of every output is one 16-lane load, and its weights one vector per tap.
//! Four output positions are accumulated together (independent FMA chains), and the group's
//! outputs are de-interleaved back into the 16 planes as they are stored.

use crate::depthwise::PlaneGeometry;
#[cfg(target_arch = "aarch64")]
use crate::gemm::simd::Neon;
#[cfg(target_arch = "x86_64")]
use crate::gemm::simd::{Avx2, Avx512};
use crate::gemm::simd::{Portable, Simd};
use crate::isa::{isa, Isa};

/// Planes (channels) per group: one per lane of an AVX-512 vector, two AVX2 vectors.
pub const LANES: usize = 16;
/// Output positions accumulated together.
const POSITIONS: usize = 4;

type Lanes = [f32; LANES];

/// A thread's reusable interleaved, padded copy of one group of planes.
///
/// The padding cells are the same for every group of one geometry, so they are zeroed only
/// when the geometry changes; each group then overwrites only the input's rectangle.
#[derive(Debug, Default)]
pub struct LanesScratch {
    buf: Vec<Lanes>,
    filled_for: Option<PlaneGeometry>,
    /// The group's weights, one vector per tap, and the taps' cell offsets.
    weights: Vec<Lanes>,
    taps: Vec<usize>,
}

impl LanesScratch {
    pub const fn new() -> Self {
        LanesScratch {
            buf: Vec::new(),
            filled_for: None,
            weights: Vec::new(),
            taps: Vec::new(),
        }
    }
}

/// One group of up to 16 depthwise planes: for each plane `c < planes`,
/// `y[c] = bias[c] + Σ_taps w[c · KH·KW + tap] · x_padded[c]`, clamped as `Activation::Clip`
/// does when `clamp` is given.
///
/// `x` holds `planes` input planes of `H·W` floats back to back, `w` their `KH·KW` weights
/// each, `bias` one value per plane, and `y` receives `planes` output planes of `OH·OW`.
///
/// # Panics
/// If `planes` is 0 or above 16, or a slice is shorter than the geometry says (a caller bug:
/// the convolution op checks shapes before it gets here).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_planes(
    g: &PlaneGeometry,
    planes: usize,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    y: &mut [f32],
    scratch: &mut LanesScratch,
) {
    assert!((1..=LANES).contains(&planes), "1 to 16 planes per group");
    let [h, wd] = g.input;
    let [oh_n, ow_n] = g.output;
    let taps_n = g.kernel[0] * g.kernel[1];
    assert!(x.len() >= planes * h * wd, "input planes too short");
    assert!(w.len() >= planes * taps_n, "depthwise weights too short");
    assert!(bias.len() >= planes, "bias too short");
    assert!(y.len() >= planes * oh_n * ow_n, "output planes too short");
    if oh_n == 0 || ow_n == 0 {
        return;
    }
    fill_interleaved(g, planes, x, scratch);
    // Weights as one vector per tap (lanes past `planes` are zero and never stored).
    scratch.weights.clear();
    scratch.weights.resize(taps_n, [0.0; LANES]);
    for (c, wc) in w.chunks_exact(taps_n).take(planes).enumerate() {
        for (t, &v) in wc.iter().enumerate() {
            scratch.weights[t][c] = v;
        }
    }
    tap_offsets_into(g, &mut scratch.taps);
    let mut b = [0.0; LANES];
    b[..planes].copy_from_slice(&bias[..planes]);
    let args = Args {
        g,
        planes,
        buf: &scratch.buf,
        taps: &scratch.taps,
        wt: &scratch.weights,
        bias: b,
        clamp,
    };
    match isa() {
        // SAFETY: `Portable` needs no CPU feature; `args` was built consistent above.
        Isa::Portable => unsafe { compute::<Portable>(&args, y) },
        // SAFETY (all arms below): `isa()` picked the arm only after detecting its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { compute_avx2(&args, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { compute_avx512(&args, y) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { compute_neon(&args, y) },
    }
}

/// Padded width of the interleaved scratch: the columns the outputs reach.
fn padded_width(g: &PlaneGeometry) -> usize {
    (g.output[1] - 1) * g.stride[1] + (g.kernel[1].max(1) - 1) * g.dilation[1] + 1
}

/// Padded height: the rows the outputs reach.
fn padded_height(g: &PlaneGeometry) -> usize {
    (g.output[0] - 1) * g.stride[0] + (g.kernel[0].max(1) - 1) * g.dilation[0] + 1
}

/// Interleaves the group's planes into `scratch` (padding zero), rewriting the padding only
/// when the geometry differs from the last fill's.
fn fill_interleaved(g: &PlaneGeometry, planes: usize, x: &[f32], scratch: &mut LanesScratch) {
    let [h, wd] = g.input;
    let (ph, pw) = (padded_height(g), padded_width(g));
    if scratch.filled_for != Some(*g) {
        scratch.buf.clear();
        scratch.buf.resize(ph * pw, [0.0; LANES]);
        scratch.filled_for = Some(*g);
    }
    let [pad_top, pad_left] = g.pad;
    // Rows and columns of the input that fall inside the padded area.
    let rows = 0..h.min(ph.saturating_sub(pad_top));
    let cols = 0..wd.min(pw.saturating_sub(pad_left));
    for r in rows {
        let dst = &mut scratch.buf[(r + pad_top) * pw + pad_left..][..cols.len()];
        // Lanes past `planes` keep whatever an earlier, fuller group left: their weights
        // are zero and their outputs are never stored.
        for (c, plane) in x.chunks_exact(h * wd).take(planes).enumerate() {
            let src = &plane[r * wd..][..cols.len()];
            for (d, &v) in dst.iter_mut().zip(src) {
                d[c] = v;
            }
        }
    }
}

/// For each tap (kh, kw), its cell offset in the scratch relative to the window's corner.
fn tap_offsets_into(g: &PlaneGeometry, taps: &mut Vec<usize>) {
    let pw = padded_width(g);
    taps.clear();
    for kh in 0..g.kernel[0] {
        for kw in 0..g.kernel[1] {
            taps.push(kh * g.dilation[0] * pw + kw * g.dilation[1]);
        }
    }
}

/// Everything `compute` reads.
struct Args<'a> {
    g: &'a PlaneGeometry,
    planes: usize,
    buf: &'a [Lanes],
    taps: &'a [usize],
    wt: &'a [Lanes],
    bias: Lanes,
    clamp: Option<(f32, f32)>,
}

/// The group's outputs, `POSITIONS` at a time, on `S`'s vectors (`LANES / S::LANES` per
/// position).
///
/// # Safety
/// The CPU supports `S`'s ISA; `a` is consistent (`buf` holds the padded geometry's cells,
/// `wt` one vector per tap) and `y` holds `a.planes` output planes.
#[inline(always)]
unsafe fn compute<S: Simd>(a: &Args, y: &mut [f32]) {
    let [oh_n, ow_n] = a.g.output;
    let positions = oh_n * ow_n;
    let pw = padded_width(a.g);
    let nv = LANES / S::LANES;
    let taps = a.taps.len().min(a.wt.len());
    // SAFETY (whole body): the ISA is the caller's; every cell read is `corner + tap offset`,
    // inside the padded geometry the scratch was filled for (checked in debug builds), and
    // vector `v` of a cell reads its floats `v·S::LANES..(v+1)·S::LANES`, all below 16.
    unsafe {
        let buf = a.buf.as_ptr().cast::<f32>();
        // Plain loops, no closures: everything here must inline into the ISA's function.
        // The window corner (in floats) of each output position, in order: counters, not
        // divisions (one per position cost as much as a small plane's taps).
        let (row_step, col_step) = (a.g.stride[0] * pw * LANES, a.g.stride[1] * LANES);
        let (mut oh, mut ow) = (0, 0);
        let mut next_corner = || {
            let corner = oh * row_step + ow * col_step;
            ow += 1;
            if ow == ow_n {
                (oh, ow) = (oh + 1, 0);
            }
            corner
        };
        let mut p = 0;
        while p < positions {
            let n = POSITIONS.min(positions - p);
            // A short last group repeats its last position (computed, not stored).
            let mut bases = [0usize; POSITIONS];
            for base in &mut bases[..n] {
                *base = next_corner();
            }
            let last = bases[n - 1];
            bases[n..].fill(last);
            let mut acc = [[S::zero(); 4]; POSITIONS];
            for row in acc.iter_mut() {
                for (v, x) in row.iter_mut().enumerate().take(nv) {
                    *x = S::load(a.bias.as_ptr().add(v * S::LANES));
                }
            }
            // Column `v` of every position's accumulators per step: an index loop reads best.
            #[allow(clippy::needless_range_loop)]
            for t in 0..taps {
                let off = a.taps[t] * LANES;
                let w = a.wt[t].as_ptr();
                for v in 0..nv {
                    let wv = S::load(w.add(v * S::LANES));
                    for j in 0..POSITIONS {
                        debug_assert!(bases[j] + off + LANES <= a.buf.len() * LANES);
                        let xv = S::load(buf.add(bases[j] + off + v * S::LANES));
                        acc[j][v] = S::mul_add(acc[j][v], xv, wv);
                    }
                }
            }
            let mut lanes = [0.0f32; LANES];
            for (j, row) in acc.iter().enumerate().take(n) {
                for (v, &x) in row.iter().enumerate().take(nv) {
                    let x = match a.clamp {
                        Some((lo, hi)) => S::min(S::splat(hi), S::max(S::splat(lo), x)),
                        None => x,
                    };
                    S::store(lanes.as_mut_ptr().add(v * S::LANES), x);
                }
                // A full group stores all 16 without a bound per lane.
                let stored = if a.planes == LANES {
                    &lanes[..]
                } else {
                    &lanes[..a.planes]
                };
                for (c, &value) in stored.iter().enumerate() {
                    y[c * positions + p + j] = value;
                }
            }
            p += n;
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn compute_avx2(a: &Args, y: &mut [f32]) {
    // SAFETY: the features are enabled on this function; `a` is consistent (caller).
    unsafe { compute::<Avx2>(a, y) }
}

/// # Safety
/// The CPU has AVX-512F (which implies AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn compute_avx512(a: &Args, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { compute::<Avx512>(a, y) }
}

/// # Safety
/// None beyond aarch64 itself (NEON is baseline).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn compute_neon(a: &Args, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { compute::<Neon>(a, y) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::depthwise::{depthwise_plane, PlaneScratch};

    #[test]
    fn groups_match_the_plane_kernel() {
        let mut lanes = LanesScratch::new();
        let mut plane = PlaneScratch::new();
        // (H, W, K, stride, dilation, pad, planes): the zoo's small maps and odd ones; the
        // scratch is reused across cases, as a thread reuses it across layers.
        let cases = [
            (7, 7, 5, 1, 1, 2, 16),
            (7, 7, 3, 1, 1, 1, 16),
            (14, 14, 5, 2, 1, 2, 16),
            (14, 14, 3, 1, 1, 1, 5),
            (13, 17, 3, 2, 1, 1, 16),
            (9, 6, 3, 1, 2, 2, 7),
            (5, 3, 3, 1, 1, 0, 1),
            (7, 7, 5, 1, 1, 2, 3),
        ];
        for (h, wd, k, s, d, p, planes) in cases {
            let out = |n: usize| (n + 2 * p - (k - 1) * d - 1) / s + 1;
            let g = PlaneGeometry {
                input: [h, wd],
                output: [out(h), out(wd)],
                kernel: [k, k],
                stride: [s, s],
                dilation: [d, d],
                pad: [p, p],
            };
            let x: Vec<f32> = (0..planes * h * wd)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0)
                .collect();
            let w: Vec<f32> = (0..planes * k * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
                .collect();
            let bias: Vec<f32> = (0..planes).map(|c| c as f32 / 4.0 - 1.0).collect();
            let n = g.output[0] * g.output[1];
            for clamp in [None, Some((0.0, 1.5))] {
                let mut y = vec![f32::NAN; planes * n];
                depthwise_planes(&g, planes, &x, &w, &bias, clamp, &mut y, &mut lanes);
                for c in 0..planes {
                    let mut want = vec![f32::NAN; n];
                    depthwise_plane(
                        &g,
                        &x[c * h * wd..(c + 1) * h * wd],
                        &w[c * k * k..(c + 1) * k * k],
                        bias[c],
                        clamp,
                        &mut want,
                        &mut plane,
                    );
                    for (i, (a, b)) in y[c * n..(c + 1) * n].iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5,
                            "{g:?} plane {c} output {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
