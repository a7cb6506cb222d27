//! Winograd F(4×4, 3×3) transforms for 3×3 stride-1 convolutions (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2015).
//!
//! Each 6×6 input tile `d` (a 4×4 output tile plus the kernel's halo; neighbours overlap by
//! 2) becomes `V = Bᵀ·d·B`, each 3×3 kernel `U = G·g·Gᵀ`, and each output tile
//! `Aᵀ·(Σ_c U ⊙ V)·A`. The sum over channels of the elementwise products is one GEMM per
//! tile point (36 of them), which the caller runs; this module holds the transforms on either
//! side.
//!
//! The transforms work on whole rows of tiles so that their inner loops run over consecutive
//! tiles and vectorize: an input row is first split into 4 phases, `phase[q][k] =
//! row[4k + q]`, after which tap `s` of every tile along the row is the contiguous run
//! `phase[s % 4][s / 4..]`. The loops are compiled per instruction set (AVX-512, AVX2 and the
//! target's baseline) and chosen at run time, as the depthwise kernels are.
//!
//! Accuracy: the transforms scale values by up to 8 (`Aᵀ`) and 1/24 (`G`), so results carry
//! a few more rounding errors than a direct sum: within 2e-5 of the largest output on
//! ResNet-50 against onnxruntime, where im2col gives 1e-5.

#[cfg(target_arch = "x86_64")]
use crate::gemm::simd::{Avx2, Avx512};
use crate::gemm::simd::{Portable, Simd};
use crate::isa::{isa, Isa};

/// Tile points: the 6×6 transformed tile.
pub const POINTS: usize = 36;

/// The 4×4 output tiles covering one output plane of a 3×3 stride-1 convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileGrid {
    /// Input plane `[height, width]`.
    input: [usize; 2],
    /// Output plane `[height, width]`.
    output: [usize; 2],
    /// Padding before the first row and column.
    pad: [usize; 2],
    /// Tile rows and columns.
    rows: usize,
    cols: usize,
}

impl TileGrid {
    /// The grid of a convolution from `input` to `output` (both `[height, width]`) whose
    /// padding before the first row and column is `pad`.
    pub fn new(input: [usize; 2], output: [usize; 2], pad: [usize; 2]) -> Self {
        TileGrid {
            input,
            output,
            pad,
            rows: output[0].div_ceil(4),
            cols: output[1].div_ceil(4),
        }
    }

    /// Tiles per plane.
    pub fn tiles(&self) -> usize {
        self.rows * self.cols
    }

    /// Length of one phase row: the tiles along a row plus one (taps 4 and 5 of the last tile
    /// are the next tile's taps 0 and 1).
    fn phase_len(&self) -> usize {
        self.cols + 1
    }
}

/// Weights `[m, c, 3, 3]` (row-major) in the Winograd domain: `[36, m, c]`, one `[m, c]`
/// matrix per tile point.
///
/// # Panics
/// If `w` does not hold `m · c · 9` values.
pub fn transform_weights(w: &[f32], m: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; POINTS * m * c];
    transform_weights_into(w, m, c, &mut u);
    u
}

/// [`transform_weights`] into `u` (`36 · m · c` values): a caller that packs the matrices
/// right away can pass a reused buffer, whose pages are already there.
///
/// # Panics
/// If `w` does not hold `m · c · 9` values or `u` not `36 · m · c`.
pub fn transform_weights_into(w: &[f32], m: usize, c: usize, u: &mut [f32]) {
    assert_eq!(w.len(), m * c * 9, "3x3 weights of {m}x{c} channels");
    assert_eq!(
        u.len(),
        POINTS * m * c,
        "Winograd weights of {m}x{c} channels"
    );
    match isa() {
        // SAFETY: `isa()` reports an ISA only when the CPU has it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { weights_avx512(w, m, c, u) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { weights_avx2(w, m, c, u) },
        _ => weights(w, m, c, u),
    }
}

/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn weights_avx2(w: &[f32], m: usize, c: usize, u: &mut [f32]) {
    weights(w, m, c, u)
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn weights_avx512(w: &[f32], m: usize, c: usize, u: &mut [f32]) {
    weights(w, m, c, u)
}

/// [`transform_weights_into`]'s loops, compiled for each ISA (wider vectors: the transform
/// is a tenth of loading ResNet-50). No FMA is enabled: products and sums round as written,
/// so every ISA gives the same weights.
#[inline(always)]
fn weights(w: &[f32], m: usize, c: usize, u: &mut [f32]) {
    let plane = m * c;
    // Kernels are transformed a block at a time, in f64 so rounding happens once. Within a
    // block every step runs across the block's kernels (one array per tap, per `G·g` value,
    // per point), so the loops vectorize; each point's values are then copied out as one run
    // (scattering every kernel's 36 values over 36 matrices is what made this slow once, and
    // a kernel at a time, in scalar code, made it a fifth of loading a CNN).
    const BLOCK: usize = 256;
    let mut taps = vec![[0.0f64; BLOCK]; 9];
    // `cols[j][r]`: row `r` of `G·g` for kernel column `j`; `points[i][j]`: point `6i + j`.
    let mut cols = vec![[[0.0f64; BLOCK]; 6]; 3];
    let mut points = vec![[[0.0f32; BLOCK]; 6]; 6];
    for (b, kernels) in w.chunks(9 * BLOCK).enumerate() {
        let n = kernels.len() / 9;
        for (k, g) in kernels.chunks_exact(9).enumerate() {
            for (tap, &v) in taps.iter_mut().zip(g) {
                tap[k] = v as f64;
            }
        }
        // G·g: column j of the kernel is taps j, 3 + j and 6 + j.
        for (j, out) in cols.iter_mut().enumerate() {
            g_times(&taps[j], &taps[3 + j], &taps[6 + j], out, n, |v| v);
        }
        // (G·g)·Gᵀ: row i of G·g (value i of each column) gives points 6i..6i + 6.
        for (i, out) in points.iter_mut().enumerate() {
            g_times(&cols[0][i], &cols[1][i], &cols[2][i], out, n, |v| v as f32);
        }
        for (p, values) in points.iter().flatten().enumerate() {
            u[p * plane + b * BLOCK..p * plane + b * BLOCK + n].copy_from_slice(&values[..n]);
        }
    }
}

/// `G · [a, b, c]ᵀ` for the first `n` kernels of a block at once: `out[r][k]` is row `r` of
/// `G · [a[k], b[k], c[k]]ᵀ`, stored through `store`. `G` has rows 1/4,0,0 /
/// -1/6,-1/6,-1/6 / -1/6,1/6,-1/6 / 1/24,1/12,1/6 / 1/24,-1/12,1/6 / 0,0,1; its entries
/// are multiplied as f64 reciprocals, which differ from dividing by at most an f64 ulp.
#[inline(always)]
fn g_times<T, const BLOCK: usize>(
    a: &[f64; BLOCK],
    b: &[f64; BLOCK],
    c: &[f64; BLOCK],
    out: &mut [[T; BLOCK]; 6],
    n: usize,
    store: impl Fn(f64) -> T,
) {
    const QUARTER: f64 = 1.0 / 4.0;
    const SIXTH: f64 = 1.0 / 6.0;
    const TWELFTH: f64 = 1.0 / 12.0;
    const TWENTY_FOURTH: f64 = 1.0 / 24.0;
    let [o0, o1, o2, o3, o4, o5] = out;
    for k in 0..n.min(BLOCK) {
        let (a, b, c) = (a[k], b[k], c[k]);
        let (even, odd) = (a * TWENTY_FOURTH + c * SIXTH, b * TWELFTH);
        o0[k] = store(a * QUARTER);
        o1[k] = store(-(a + b + c) * SIXTH);
        o2[k] = store(-(a - b + c) * SIXTH);
        o3[k] = store(even + odd);
        o4[k] = store(even - odd);
        o5[k] = store(c);
    }
}

/// Buffers the transforms reuse from plane to plane.
#[derive(Debug, Default)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Floats a row of the input transform's output must have past its last tile, and the
/// products past the last one. The transforms work in runs of a whole number of vectors (a
/// scalar tail would cost more than the vectors), so they read past a row's end, and the input
/// transform writes past it: onto the next row of tiles before that is written, and here after
/// the last one. (16: the widest vector, AVX-512's.)
pub const ROW_SLACK: usize = 16;

/// Transforms every tile of one input plane into `v` (`[36][stride]`): point `p` of tile `t`
/// goes to `v[p · stride + dst + t]`. Tiles are written in order and the `ROW_SLACK` floats
/// after the plane's last one are overwritten, so the planes that share rows of `v` are
/// transformed first to last.
///
/// # Panics
/// If `plane` is not `input[0] · input[1]` long or `v` is too short (caller bugs).
pub fn input_transform(
    grid: &TileGrid,
    plane: &[f32],
    v: &mut [f32],
    stride: usize,
    dst: usize,
    scratch: &mut Scratch,
) {
    assert_eq!(plane.len(), grid.input[0] * grid.input[1], "input plane");
    assert!(
        dst + grid.tiles() + ROW_SLACK <= stride && v.len() >= POINTS * stride,
        "transform buffer"
    );
    match isa() {
        // SAFETY: `isa()` reports an ISA only when the CPU has it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { input_avx512(grid, plane, v, stride, dst, scratch) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { input_avx2(grid, plane, v, stride, dst, scratch) },
        // SAFETY: portable code needs no CPU feature.
        _ => unsafe { input_tiles::<Portable>(grid, plane, v, stride, dst, scratch) },
    }
}

/// Transforms the products of one output plane back into it: point `p` of tile `t` is
/// `products[p · stride + src + t]`, and `ROW_SLACK` floats past the last point's tiles are
/// read (and ignored).
///
/// # Panics
/// If `y` is not `output[0] · output[1]` long or `products` is too short (caller bugs).
pub fn output_transform(
    grid: &TileGrid,
    products: &[f32],
    stride: usize,
    src: usize,
    y: &mut [f32],
    scratch: &mut Scratch,
) {
    assert_eq!(y.len(), grid.output[0] * grid.output[1], "output plane");
    let run = grid.tiles().next_multiple_of(ROW_SLACK);
    assert!(
        src + grid.tiles() <= stride && products.len() >= (POINTS - 1) * stride + src + run,
        "products buffer"
    );
    match isa() {
        // SAFETY: `isa()` reports an ISA only when the CPU has it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { output_avx512(grid, products, stride, src, y, scratch) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { output_avx2(grid, products, stride, src, y, scratch) },
        // SAFETY: portable code needs no CPU feature.
        _ => unsafe { output_tiles::<Portable>(grid, products, stride, src, y, scratch) },
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_avx2(g: &TileGrid, x: &[f32], v: &mut [f32], s: usize, d: usize, b: &mut Scratch) {
    // SAFETY: the CPU has the ISA (this function's contract).
    unsafe { input_tiles::<Avx2>(g, x, v, s, d, b) }
}

/// # Safety
/// The CPU has AVX-512F (which implies AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn input_avx512(
    g: &TileGrid,
    x: &[f32],
    v: &mut [f32],
    s: usize,
    d: usize,
    b: &mut Scratch,
) {
    // SAFETY: the CPU has the ISA (this function's contract).
    unsafe { input_tiles::<Avx512>(g, x, v, s, d, b) }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_avx2(g: &TileGrid, p: &[f32], s: usize, o: usize, y: &mut [f32], b: &mut Scratch) {
    // SAFETY: the CPU has the ISA (this function's contract).
    unsafe { output_tiles::<Avx2>(g, p, s, o, y, b) }
}

/// # Safety
/// The CPU has AVX-512F (which implies AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn output_avx512(
    g: &TileGrid,
    p: &[f32],
    s: usize,
    o: usize,
    y: &mut [f32],
    b: &mut Scratch,
) {
    // SAFETY: the CPU has the ISA (this function's contract).
    unsafe { output_tiles::<Avx512>(g, p, s, o, y, b) }
}

/// # Safety
/// The CPU supports `S`. Slices are as `input_transform` checked.
#[inline(always)]
unsafe fn input_tiles<S: Simd>(
    grid: &TileGrid,
    plane: &[f32],
    v: &mut [f32],
    stride: usize,
    dst: usize,
    scratch: &mut Scratch,
) {
    let len = grid.phase_len();
    // One padded input row's 4 phases, and the zeros that pad them to whole runs.
    let row_len = (4 * len).next_multiple_of(ROW_SLACK);
    let run = grid.cols.next_multiple_of(ROW_SLACK);
    let (phases, rows) = (&mut scratch.a, &mut scratch.b);
    // Every input row the tiles read (4 per tile row, plus the last tile row's halo of 2),
    // split into phases, zero outside the input.
    let padded_rows = 4 * grid.rows + 2;
    phases.clear();
    phases.resize(padded_rows * row_len, 0.0);
    let [h, w] = grid.input;
    let [top, left] = grid.pad;
    for (r, dst_row) in phases.chunks_exact_mut(row_len).enumerate() {
        let Some(iy) = r.checked_sub(top).filter(|&iy| iy < h) else {
            continue;
        };
        let src = &plane[iy * w..(iy + 1) * w];
        split_phases(src, left, split4_strided(dst_row, 0, len, len));
    }
    // Bᵀ along the columns of each tile row (6 input rows → 6 rows, over all phases at
    // once), then Bᵀ along each row (the 6 taps of every tile → 6 points). The rows have a
    // tail of `ROW_SLACK` that the last runs read (finite values, reaching only excess tiles).
    let rows_stride = row_len + ROW_SLACK;
    rows.resize(6 * rows_stride, 0.0);
    for ty in 0..grid.rows {
        let d = &phases[4 * ty * row_len..(4 * ty + 6) * row_len];
        let d: [&[f32]; 6] = six(|r| &d[r * row_len..(r + 1) * row_len]);
        // SAFETY: the ISA is the caller's; the rows are `row_len`, a whole number of runs.
        unsafe { input_1d::<S>(d, split6_strided(rows, 0, rows_stride, row_len)) };
        for i in 0..6 {
            let t = &rows[i * rows_stride..(i + 1) * rows_stride];
            let taps: [&[f32]; 6] = six(|s| {
                let start = (s % 4) * len + s / 4;
                &t[start..start + run]
            });
            let out = &mut v[i * 6 * stride..(i + 1) * 6 * stride];
            let at = dst + ty * grid.cols;
            // SAFETY: as above, runs of `run` floats.
            unsafe { input_1d::<S>(taps, split6_strided(out, at, stride, run)) };
        }
    }
}

/// # Safety
/// The CPU supports `S`. Slices are as `output_transform` checked.
#[inline(always)]
unsafe fn output_tiles<S: Simd>(
    grid: &TileGrid,
    products: &[f32],
    stride: usize,
    src: usize,
    y: &mut [f32],
    scratch: &mut Scratch,
) {
    let n = grid.tiles();
    let run = n.next_multiple_of(ROW_SLACK);
    let [oh, ow] = grid.output;
    // Every element is written before it is read: what a previous plane left can stay.
    scratch.a.resize(40 * run, 0.0);
    let (cols, outs) = scratch.a.split_at_mut(24 * run);
    // Aᵀ down each tile column j (points i·6 + j, i = 0..6) → 4 rows a, stored at
    // cols[(a·6 + j)·run..]. Each step runs over all the plane's tiles at once.
    for j in 0..6 {
        let m: [&[f32]; 6] = six(|i| {
            let p = i * 6 + j;
            &products[p * stride + src..p * stride + src + run]
        });
        // SAFETY: the ISA is the caller's; every row is `run` long.
        unsafe { output_1d::<S>(m, split4_strided(cols, j * run, 6 * run, run)) };
    }
    // Aᵀ along each row a → outs[(a·4 + b)·run..]: output (4ty + a, 4k + b) of tile (ty, k).
    for a in 0..4 {
        let m: [&[f32]; 6] = six(|j| &cols[(a * 6 + j) * run..(a * 6 + j + 1) * run]);
        // SAFETY: as above.
        unsafe { output_1d::<S>(m, split4_strided(outs, a * 4 * run, run, run)) };
    }
    for (oy, y_row) in y.chunks_exact_mut(ow).take(oh).enumerate() {
        let (ty, a) = (oy / 4, oy % 4);
        let first = a * 4 * run + ty * grid.cols;
        let o: [&[f32]; 4] = four(|b| &outs[first + b * run..first + b * run + grid.cols]);
        interleave4(o, y_row);
    }
}

/// `o = Bᵀ·d` elementwise over rows (`Bᵀ` has rows 4,0,-5,0,1,0 / 0,-4,-4,1,1,0 /
/// 0,4,-4,-1,1,0 / 0,-2,-1,2,1,0 / 0,2,-1,-2,1,0 / 0,4,0,-5,0,1), with its common terms
/// shared, one vector of `S` at a time.
///
/// # Safety
/// The CPU supports `S`.
///
/// # Panics
/// Unless every row is at least `o[0].len()` long, a multiple of `S::LANES`.
#[inline(always)]
unsafe fn input_1d<S: Simd>(d: [&[f32]; 6], mut o: [&mut [f32]; 6]) {
    let n = check_rows::<S>(&d, &o);
    // SAFETY: the ISA is the caller's; `k + LANES <= n <=` every row's length (checked).
    // (No closures here, not even through `array::map`: closures do not inherit the caller's
    // target features, so the intrinsics inside them would become calls.)
    unsafe {
        let (m1, m2, m4, m5) = (
            S::splat(-1.0),
            S::splat(-2.0),
            S::splat(-4.0),
            S::splat(-5.0),
        );
        let four = S::splat(4.0);
        for k in (0..n).step_by(S::LANES) {
            let [d0, d1, d2, d3, d4, d5] = load6::<S>(&d, k);
            let t0 = S::mul_add(d4, d2, m4);
            let t1 = S::mul_add(d3, d1, m4);
            let t2 = S::mul_add(d4, d2, m1);
            let t3 = S::mul_add(S::add(d3, d3), d1, m2);
            let y = [
                S::mul_add(S::mul_add(d4, d0, four), d2, m5),
                S::add(t0, t1),
                S::mul_add(t0, t1, m1),
                S::add(t2, t3),
                S::mul_add(t2, t3, m1),
                S::mul_add(S::mul_add(d5, d1, four), d3, m5),
            ];
            for (row, y) in o.iter_mut().zip(y) {
                S::store(row.as_mut_ptr().add(k), y);
            }
        }
    }
}

/// `o = Aᵀ·m` elementwise over rows (`Aᵀ` has rows 1,1,1,1,1,0 / 0,1,-1,2,-2,0 /
/// 0,1,1,4,4,0 / 0,1,-1,8,-8,1), one vector of `S` at a time.
///
/// # Safety
/// The CPU supports `S`.
///
/// # Panics
/// As `input_1d`.
#[inline(always)]
unsafe fn output_1d<S: Simd>(m: [&[f32]; 6], mut o: [&mut [f32]; 4]) {
    let n = check_rows::<S>(&m, &o);
    // SAFETY: as in `input_1d`.
    unsafe {
        let (minus1, two) = (S::splat(-1.0), S::splat(2.0));
        let (four, eight) = (S::splat(4.0), S::splat(8.0));
        for k in (0..n).step_by(S::LANES) {
            let [m0, m1, m2, m3, m4, m5] = load6::<S>(&m, k);
            let (sum12, diff12) = (S::add(m1, m2), S::mul_add(m1, m2, minus1));
            let (sum34, diff34) = (S::add(m3, m4), S::mul_add(m3, m4, minus1));
            let y = [
                S::add(S::add(m0, sum12), sum34),
                S::mul_add(diff12, diff34, two),
                S::mul_add(sum12, sum34, four),
                S::mul_add(S::add(diff12, m5), diff34, eight),
            ];
            for (row, y) in o.iter_mut().zip(y) {
                S::store(row.as_mut_ptr().add(k), y);
            }
        }
    }
}

/// One vector from each of six rows at `k`: a function, not a closure, so that it inlines
/// into the transforms with their target features.
///
/// # Safety
/// The CPU supports `S`; every row has `k + S::LANES` readable floats.
#[inline(always)]
unsafe fn load6<S: Simd>(rows: &[&[f32]; 6], k: usize) -> [S::V; 6] {
    // SAFETY: the caller's guarantees.
    unsafe {
        [
            S::load(rows[0].as_ptr().add(k)),
            S::load(rows[1].as_ptr().add(k)),
            S::load(rows[2].as_ptr().add(k)),
            S::load(rows[3].as_ptr().add(k)),
            S::load(rows[4].as_ptr().add(k)),
            S::load(rows[5].as_ptr().add(k)),
        ]
    }
}

/// The length of the output rows, after checking that it is a whole number of vectors and
/// that no row is shorter.
#[inline(always)]
fn check_rows<S: Simd>(d: &[&[f32]], o: &[&mut [f32]]) -> usize {
    let n = o[0].len();
    assert!(
        n.is_multiple_of(S::LANES)
            && d.iter().all(|r| r.len() >= n)
            && o.iter().all(|r| r.len() >= n),
        "transform rows"
    );
    n
}

/// `phase[q][k] = row[4k + q − left]`, zero where that is outside `row` (the phases are
/// `len` long, zero on entry).
#[inline(always)]
fn split_phases(row: &[f32], left: usize, phase: [&mut [f32]; 4]) {
    let len = phase[0].len();
    // Entries whose four columns are all inside the row: one 4-float chunk each.
    let inner = left.div_ceil(4).min(len)..((row.len() + left) / 4).min(len);
    let inner = inner.start..inner.end.max(inner.start);
    let [p0, p1, p2, p3] = phase;
    // Iterators rather than indices: no bounds checks, so LLVM vectorizes the 4-way
    // de-interleave.
    let chunks = match inner.is_empty() {
        true => [].chunks_exact(4),
        false => row[4 * inner.start - left..4 * inner.end - left].chunks_exact(4),
    };
    let phases = p0[inner.clone()]
        .iter_mut()
        .zip(&mut p1[inner.clone()])
        .zip(&mut p2[inner.clone()])
        .zip(&mut p3[inner.clone()]);
    for (s, (((a, b), c), d)) in chunks.zip(phases) {
        (*a, *b, *c, *d) = (s[0], s[1], s[2], s[3]);
    }
    let mut phase = [p0, p1, p2, p3];
    for k in (0..inner.start).chain(inner.end..len) {
        for (q, p) in phase.iter_mut().enumerate() {
            if let Some(&v) = (4 * k + q).checked_sub(left).and_then(|col| row.get(col)) {
                p[k] = v;
            }
        }
    }
}

/// `y[4k + b] = o[b][k]`, as far as `y` reaches (its last group may be partial).
#[inline(always)]
fn interleave4(o: [&[f32]; 4], y: &mut [f32]) {
    let whole = y.len() / 4;
    let [o0, o1, o2, o3] = o.map(|r| &r[..whole]);
    for (k, y4) in y.chunks_exact_mut(4).enumerate() {
        y4.copy_from_slice(&[o0[k], o1[k], o2[k], o3[k]]);
    }
    let tail = y.chunks_exact_mut(4).into_remainder();
    for (b, v) in tail.iter_mut().enumerate() {
        *v = o[b][whole];
    }
}

/// `[f(0), …, f(5)]`, in that order: `std::array::from_fn` (and `array::map`) stay out of
/// line in the transforms, a call per tile row and plane (2 % of resnet50's time).
#[inline(always)]
fn six<T>(mut f: impl FnMut(usize) -> T) -> [T; 6] {
    [f(0), f(1), f(2), f(3), f(4), f(5)]
}

/// `[f(0), …, f(3)]`, as `six`.
#[inline(always)]
fn four<T>(mut f: impl FnMut(usize) -> T) -> [T; 4] {
    [f(0), f(1), f(2), f(3)]
}

/// Four disjoint `len`-long slices of `buf` starting at `first`, `first + step`, …
/// (`step >= len`).
#[inline(always)]
fn split4_strided(buf: &mut [f32], first: usize, step: usize, len: usize) -> [&mut [f32]; 4] {
    let mut rest = &mut buf[first..];
    four(|_| next_strided(&mut rest, step, len))
}

/// Six such slices, as `split4_strided`.
#[inline(always)]
fn split6_strided(buf: &mut [f32], first: usize, step: usize, len: usize) -> [&mut [f32]; 6] {
    let mut rest = &mut buf[first..];
    six(|_| next_strided(&mut rest, step, len))
}

/// The first `len` floats of `rest` (fewer at its end), leaving `rest` at `step` past them.
#[inline(always)]
fn next_strided<'a>(rest: &mut &'a mut [f32], step: usize, len: usize) -> &'a mut [f32] {
    let taken = std::mem::take(rest);
    let (row, tail) = taken.split_at_mut(len.min(taken.len()));
    *rest = tail.get_mut(step - len..).unwrap_or_default();
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (the kernels crate has no dependencies to pull one
    /// from).
    struct Lcg(u64);

    impl Lcg {
        fn values(&mut self, n: usize) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    self.0 = self
                        .0
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        }
    }

    /// One output plane of a 3×3 stride-1 convolution of `c` planes, in f64.
    fn direct(x: &[f32], w: &[f32], c: usize, grid: &TileGrid) -> Vec<f64> {
        let ([h, wd], [oh, ow], [top, left]) = (grid.input, grid.output, grid.pad);
        let mut y = vec![0.0; oh * ow];
        for (o, y) in y.iter_mut().enumerate() {
            let (oy, ox) = (o / ow, o % ow);
            for ch in 0..c {
                for t in 0..9 {
                    let (iy, ix) = (
                        (oy + t / 3).checked_sub(top),
                        (ox + t % 3).checked_sub(left),
                    );
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        if iy < h && ix < wd {
                            *y += x[ch * h * wd + iy * wd + ix] as f64 * w[ch * 9 + t] as f64;
                        }
                    }
                }
            }
        }
        y
    }

    /// `(plane, v, stride, scratch)`.
    type InputTransform<'a> = dyn Fn(&[f32], &mut [f32], usize, &mut Scratch) + 'a;
    /// `(products, stride, y, scratch)`.
    type OutputTransform<'a> = dyn Fn(&[f32], usize, &mut [f32], &mut Scratch) + 'a;

    /// Transforms, per-point products (plain loops in place of the GEMM) and the inverse
    /// transform for one output channel, with `input`/`output` the transforms under test.
    fn winograd_plane(
        x: &[f32],
        w: &[f32],
        c: usize,
        grid: &TileGrid,
        input: &InputTransform,
        output: &OutputTransform,
    ) -> Vec<f32> {
        let tiles = grid.tiles();
        let stride = tiles + ROW_SLACK;
        let plane_len = grid.input[0] * grid.input[1];
        let mut scratch = Scratch::default();
        // Stale values in the buffers must not matter.
        let mut v = vec![f32::NAN; c * POINTS * stride];
        for ch in 0..c {
            let v_ch = &mut v[ch * POINTS * stride..(ch + 1) * POINTS * stride];
            input(
                &x[ch * plane_len..(ch + 1) * plane_len],
                v_ch,
                stride,
                &mut scratch,
            );
        }
        let u = transform_weights(w, 1, c);
        let mut products = vec![0.0f32; POINTS * tiles + ROW_SLACK];
        for p in 0..POINTS {
            for t in 0..tiles {
                products[p * tiles + t] = (0..c)
                    .map(|ch| u[p * c + ch] * v[(ch * POINTS + p) * stride + t])
                    .sum();
            }
        }
        let mut y = vec![f32::NAN; grid.output[0] * grid.output[1]];
        output(&products, tiles, &mut y, &mut scratch);
        y
    }

    #[test]
    fn weight_transform_is_g_g_gt_for_every_kernel() {
        // G as written in the paper; U = G·g·Gᵀ per kernel, summed in f64.
        let g_rows: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        let mut rng = Lcg(11);
        // Kernels: fewer than, exactly and over one transform block (256), with a partial one.
        for (m, c) in [(1, 3), (16, 16), (7, 50)] {
            let w = rng.values(m * c * 9);
            let u = transform_weights(&w, m, c);
            for kernel in 0..m * c {
                let g = &w[kernel * 9..kernel * 9 + 9];
                for i in 0..6 {
                    for j in 0..6 {
                        let mut want = 0.0f64;
                        for r in 0..3 {
                            for s in 0..3 {
                                want += g_rows[i][r] * g[r * 3 + s] as f64 * g_rows[j][s];
                            }
                        }
                        let got = u[(i * 6 + j) * m * c + kernel];
                        assert!(
                            (got as f64 - want).abs() <= 1e-7 * want.abs().max(1e-3),
                            "{m}x{c} kernel {kernel} point {i},{j}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn transforms_compute_the_convolution_on_odd_shapes_and_padding() {
        let mut rng = Lcg(7);
        // (input [h, w], padding [top, left, bottom, right], channels)
        let cases = [
            ([6, 6], [0, 0, 0, 0], 1),
            ([7, 9], [1, 1, 1, 1], 3),
            ([13, 5], [2, 0, 1, 3], 5),
            ([2, 3], [1, 1, 1, 1], 2),
            ([1, 1], [1, 1, 1, 1], 4),
            ([23, 37], [1, 2, 1, 0], 17),
            ([5, 4], [5, 6, 4, 7], 3),
        ];
        for ([h, w], [top, left, bottom, right], c) in cases {
            let output = [h + top + bottom - 2, w + left + right - 2];
            let grid = TileGrid::new([h, w], output, [top, left]);
            let x = rng.values(c * h * w);
            let wt = rng.values(c * 9);
            let want = direct(&x, &wt, c, &grid);
            let best = winograd_plane(
                &x,
                &wt,
                c,
                &grid,
                &|x, v, s, b| input_transform(&grid, x, v, s, 0, b),
                &|p, s, y, b| output_transform(&grid, p, s, 0, y, b),
            );
            // SAFETY: portable code needs no CPU feature; slices as the public wrappers check.
            let portable = winograd_plane(
                &x,
                &wt,
                c,
                &grid,
                &|x, v, s, b| unsafe { input_tiles::<Portable>(&grid, x, v, s, 0, b) },
                &|p, s, y, b| unsafe { output_tiles::<Portable>(&grid, p, s, 0, y, b) },
            );
            for got in [best, portable] {
                for (g, e) in got.iter().zip(&want) {
                    let tol = 1e-5 * (1.0 + e.abs()) * c as f64;
                    assert!(
                        (*g as f64 - e).abs() < tol,
                        "{h}x{w} c={c}: got {g}, want {e}"
                    );
                }
            }
        }
    }
}
