//! Direct convolution of an image with few channels into channel blocks (NCHW16c): a
//! network's stem (a 3×3 or 7×7 stride-2 layer on RGB input).
//!
//! With three input channels the im2col product has a tiny depth (27 for 3×3, 147 for 7×7),
//! so gathering the patches and packing them for the GEMM cost as much as the product
//! (MobileNet-v2's and SqueezeNet's stems ran at ~2× onnxruntime's time that way). Here the
//! image is read nearly where it lies: the input rows under one output row are copied, with
//! their padding, into a small buffer, and a register tile holds a run of output positions
//! of that row by up to 64 output channels; every tap broadcasts one input value per position
//! and multiplies it by the tap's weight vectors.
//!
//! Weights are laid out `[M/16][taps][16]`, every tap's 16 channels of a block one vector,
//! small enough to stay in L1 while a row is computed (`MAX_TAPS`).

use crate::depthwise::PlaneGeometry;
use crate::elementwise::apply_activation_rows;
use crate::gemm::Activation;
use crate::isa::{isa, Isa};
use crate::parallel;
use rayon::prelude::*;
use std::cell::Cell;

/// Channels per output block.
pub const BLOCK: usize = 16;

/// Most taps (`C·KH·KW`) a stem kernel takes: four blocks' weights (`4·16·taps` floats, 40 KB
/// at this bound) stay in the 48 KB L1 data cache beside a few input rows. ResNet-50's 7×7
/// stem has 147.
pub const MAX_TAPS: usize = 160;

/// Most input channels: more are a layer inside a network, which the GEMM serves better.
pub const MAX_CHANNELS: usize = 4;

/// Weights of a stem of `M` output channels (a multiple of [`BLOCK`]) as the kernel reads
/// them.
#[derive(Clone, Debug)]
pub struct StemWeights {
    taps: usize,
    blocks: usize,
    /// `[blocks][taps][BLOCK]`.
    data: Vec<f32>,
}

impl StemWeights {
    /// From weights stored `[M, taps]` row-major; `None` where the kernel does not take them
    /// (`M` not a multiple of [`BLOCK`], or more than [`MAX_TAPS`] taps).
    pub fn new(w: &[f32], m: usize, taps: usize) -> Option<StemWeights> {
        if m == 0 || !m.is_multiple_of(BLOCK) || taps == 0 || taps > MAX_TAPS || w.len() != m * taps
        {
            return None;
        }
        let blocks = m / BLOCK;
        let mut data = vec![0.0; m * taps];
        for (b, block) in data.chunks_exact_mut(taps * BLOCK).enumerate() {
            for (t, cell) in block.chunks_exact_mut(BLOCK).enumerate() {
                for (lane, v) in cell.iter_mut().enumerate() {
                    *v = w[(b * BLOCK + lane) * taps + t];
                }
            }
        }
        Some(StemWeights { taps, blocks, data })
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        self.blocks * BLOCK
    }

    /// Taps per output channel.
    pub fn taps(&self) -> usize {
        self.taps
    }
}

/// Whether this CPU has a stem kernel (AVX-512F, or AVX2 with FMA); elsewhere stems go
/// through the GEMM.
pub fn available() -> bool {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => true,
        _ => false,
    }
}

/// Whether a convolution of `channels` input channels and `taps` taps per output channel
/// suits the stem kernel.
pub fn suits(channels: usize, taps: usize) -> bool {
    channels <= MAX_CHANNELS && taps <= MAX_TAPS
}

/// Convolves one image: `x` holds its `channels` planes of `g.input`, `y` the output as
/// `[M/16][OH][OW][16]`, every element written (bias added, then `activation`). Returns
/// `false`, writing nothing, where this CPU has no stem kernel ([`available`]) or the input
/// is empty.
///
/// # Panics
/// If the slices do not fit the geometry and weights.
#[allow(clippy::too_many_arguments)]
pub fn stem_image(
    g: &PlaneGeometry,
    channels: usize,
    x: &[f32],
    w: &StemWeights,
    bias: Option<&[f32]>,
    activation: Option<Activation>,
    y: &mut [f32],
) -> bool {
    let [h, wd] = g.input;
    let [oh, ow] = g.output;
    check_args(g, channels, x, w, bias);
    assert_eq!(y.len(), w.blocks * oh * ow * BLOCK, "output does not fit");
    if !available() || h * wd == 0 {
        return false;
    }
    stem_image_on(isa(), g, channels, x, w, bias, activation, y);
    true
}

/// The checks [`stem_image`] and [`StemRows::new`] share: the weights fit the geometry, the
/// input holds its planes, the bias has one value per output channel.
fn check_args(
    g: &PlaneGeometry,
    channels: usize,
    x: &[f32],
    w: &StemWeights,
    bias: Option<&[f32]>,
) {
    let [h, wd] = g.input;
    assert_eq!(
        channels * g.kernel[0] * g.kernel[1],
        w.taps,
        "weights' taps do not fit the geometry"
    );
    assert!(
        x.len() >= channels * h * wd,
        "input shorter than its planes"
    );
    assert!(bias.is_none_or(|b| b.len() == w.channels()), "bias length");
}

/// [`stem_image`] with the kernels of `isa` (AVX-512 or AVX2), which the CPU has.
#[allow(clippy::too_many_arguments)]
fn stem_image_on(
    isa: Isa,
    g: &PlaneGeometry,
    channels: usize,
    x: &[f32],
    w: &StemWeights,
    bias: Option<&[f32]>,
    activation: Option<Activation>,
    y: &mut [f32],
) {
    let [oh, ow] = g.output;
    if oh * ow == 0 {
        return;
    }
    let plan = RowPlan::new(isa, g, channels, w.blocks);
    // Rows a task computes: a few tasks per thread, so an uneven split evens out.
    let band = oh.div_ceil(4 * parallel::threads()).max(1);
    let mut bands: Vec<Vec<&mut [f32]>> = (0..oh.div_ceil(band)).map(|_| Vec::new()).collect();
    for block in y.chunks_exact_mut(oh * ow * BLOCK) {
        for (i, rows) in block.chunks_mut(band * ow * BLOCK).enumerate() {
            bands[i].push(rows);
        }
    }
    parallel::for_each(bands.into_par_iter().enumerate(), |(i, rows)| {
        let first = i * band;
        plan.rows(first..oh.min(first + band), x, w, bias, activation, rows);
    });
}

/// One image's stem, computed a few output rows at a time on the calling thread: for a
/// caller that consumes the rows while they are in cache (a max pool fused after the stem).
pub struct StemRows<'a> {
    plan: RowPlan,
    x: &'a [f32],
    w: &'a StemWeights,
    bias: Option<&'a [f32]>,
    activation: Option<Activation>,
}

impl<'a> StemRows<'a> {
    /// The stem of one image, as for [`stem_image`]; `None` where that would return `false`
    /// (no stem kernel on this CPU, or an empty input).
    ///
    /// # Panics
    /// If the slices do not fit the geometry and weights.
    pub fn new(
        g: &PlaneGeometry,
        channels: usize,
        x: &'a [f32],
        w: &'a StemWeights,
        bias: Option<&'a [f32]>,
        activation: Option<Activation>,
    ) -> Option<StemRows<'a>> {
        let [h, wd] = g.input;
        check_args(g, channels, x, w, bias);
        (available() && h * wd > 0).then(|| StemRows {
            plan: RowPlan::new(isa(), g, channels, w.blocks),
            x,
            w,
            bias,
            activation,
        })
    }

    /// Output rows `rows` into `blocks`: one slice per channel block, each holding the rows'
    /// `rows.len() · OW` cells of 16 floats.
    ///
    /// # Panics
    /// If `rows` runs past the output or the slices do not fit it.
    pub fn compute(&self, rows: std::ops::Range<usize>, blocks: Vec<&mut [f32]>) {
        let ow = self.plan.g.output[1];
        assert!(rows.end <= self.plan.g.output[0], "rows past the output");
        assert_eq!(blocks.len(), self.w.blocks, "one slice per block");
        assert!(
            blocks.iter().all(|b| b.len() == rows.len() * ow * BLOCK),
            "output rows do not fit"
        );
        if !rows.is_empty() && ow > 0 {
            let (x, w, bias, act) = (self.x, self.w, self.bias, self.activation);
            self.plan.rows(rows, x, w, bias, act, blocks);
        }
    }
}

thread_local! {
    static SCRATCH: Cell<Scratch> = const { Cell::new(Scratch::new()) };
}

/// A row's padded input and, for rows narrower than a tile, its outputs; kept between calls.
#[derive(Default)]
struct Scratch {
    rows: Vec<f32>,
    out: Vec<f32>,
}

impl Scratch {
    const fn new() -> Self {
        Scratch {
            rows: Vec::new(),
            out: Vec::new(),
        }
    }
}

/// Where a row's outputs read their inputs: the input rows under the row's windows, copied
/// with their padding into `[C][KH][width]` (the rows of every channel, each `width` wide),
/// so that every window lies inside the copy and the tiles read it without a bound check.
/// The copy is a few KB, read back from L1, against ~100 FMAs per copied float.
struct RowPlan {
    /// The kernels' ISA: AVX-512 or AVX2, which the CPU has.
    isa: Isa,
    g: PlaneGeometry,
    channels: usize,
    /// Columns of a padded row: those the outputs reach, and at least a widest tile's worth.
    width: usize,
    /// Offset of every tap (channel, kernel row, kernel column) from a window's origin in the
    /// copy.
    taps: Vec<usize>,
    /// The block groups every row is computed in (`block_groups`).
    groups: Vec<(usize, usize)>,
}

impl RowPlan {
    fn new(isa: Isa, g: &PlaneGeometry, channels: usize, blocks: usize) -> RowPlan {
        let [kh, kw] = g.kernel;
        let cols = g.output[1].max(MAX_POSITIONS);
        let width = (cols - 1) * g.stride[1] + (kw - 1) * g.dilation[1] + 1;
        let mut taps = Vec::with_capacity(channels * kh * kw);
        for c in 0..channels {
            for i in 0..kh {
                for j in 0..kw {
                    taps.push((c * kh + i) * width + j * g.dilation[1]);
                }
            }
        }
        RowPlan {
            isa,
            g: *g,
            channels,
            width,
            taps,
            groups: block_groups(isa, blocks),
        }
    }

    /// Computes output rows `rows` into `blocks`, each block's rows in turn (`rows.len()`
    /// rows of `OW` cells a block), on this thread's scratch.
    fn rows(
        &self,
        rows: std::ops::Range<usize>,
        x: &[f32],
        w: &StemWeights,
        bias: Option<&[f32]>,
        activation: Option<Activation>,
        mut blocks: Vec<&mut [f32]>,
    ) {
        let ow = self.g.output[1];
        // Relu and Clip clamp the accumulators before they are stored; any other activation
        // runs over each finished row.
        let (clamp, activation) = match activation {
            Some(Activation::Relu) => (Some((0.0, f32::INFINITY)), None),
            Some(Activation::Clip(lo, hi)) => (Some((lo, hi)), None),
            other => (None, other),
        };
        SCRATCH.with(|cell| {
            let mut scratch = cell.take();
            for (r, row) in rows.enumerate() {
                let mut out: Vec<&mut [f32]> = blocks
                    .iter_mut()
                    .map(|b| &mut b[r * ow * BLOCK..][..ow * BLOCK])
                    .collect();
                self.row(row, x, w, bias, clamp, &mut out, &mut scratch);
                if let Some(act) = activation {
                    apply_activation_rows(act, out.iter_mut().map(|b| &mut **b));
                }
            }
            cell.set(scratch);
        })
    }

    /// Copies the input under output row `row`'s windows into `rows`, zeros in the padding.
    fn fill(&self, row: usize, x: &[f32], rows: &mut Vec<f32>) {
        let g = &self.g;
        let [h, wd] = g.input;
        let kh = g.kernel[0];
        rows.clear();
        rows.resize(self.channels * kh * self.width, 0.0);
        // Input columns that land inside the copy, and where they start in it.
        let first = g.pad[1].min(self.width);
        let cols = wd.min(self.width - first);
        for (c, plane) in x.chunks_exact(h * wd).take(self.channels).enumerate() {
            for i in 0..kh {
                let r = (row * g.stride[0] + i * g.dilation[0]).checked_sub(g.pad[0]);
                if let Some(r) = r.filter(|&r| r < h) {
                    let dst = &mut rows[(c * kh + i) * self.width + first..][..cols];
                    dst.copy_from_slice(&plane[r * wd..][..cols]);
                }
            }
        }
    }

    /// Computes output row `row` of every block into `out` (one `OW·16` slice per block), bias
    /// included, clamped to `clamp`'s bounds.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        row: usize,
        x: &[f32],
        w: &StemWeights,
        bias: Option<&[f32]>,
        clamp: Option<(f32, f32)>,
        out: &mut [&mut [f32]],
        scratch: &mut Scratch,
    ) {
        let ow = self.g.output[1];
        self.fill(row, x, &mut scratch.rows);
        for &(b0, nb) in &self.groups {
            let positions = positions(self.isa, nb);
            let group = Group {
                weights: &w.data[b0 * w.taps * BLOCK..][..nb * w.taps * BLOCK],
                bias: bias.map(|b| &b[b0 * BLOCK..][..nb * BLOCK]),
                clamp,
            };
            let out = &mut out[b0..b0 + nb];
            let tile = |col: usize| {
                let x = scratch.rows[col * self.g.stride[1]..].as_ptr();
                group.tile(x, self.g.stride[1], &self.taps)
            };
            if ow >= positions {
                // Tiles of `positions`, the last one overlapping its neighbour rather than
                // short.
                let mut col = 0;
                loop {
                    let col_end = (col + positions).min(ow);
                    let first = col_end - positions;
                    // SAFETY: the copy is `width` wide, so the windows of outputs
                    // `first..col_end` (`col_end ≤ OW`) lie inside it; the group's weights and
                    // bias; `positions` cells of each block's row from `first`.
                    unsafe { run_tile(self.isa, &tile(first), nb, &out_ptrs(out, first)) };
                    if col_end == ow {
                        break;
                    }
                    col = col_end;
                }
            } else {
                // Narrower than a tile: computed into the scratch and copied out.
                let mut cells = std::mem::take(&mut scratch.out);
                cells.resize(nb * positions * BLOCK, 0.0);
                let mut blocks: Vec<&mut [f32]> =
                    cells.chunks_exact_mut(positions * BLOCK).collect();
                // SAFETY: the copy is wide enough for `MAX_POSITIONS ≥ positions` outputs;
                // `positions` cells of each scratch block.
                unsafe { run_tile(self.isa, &tile(0), nb, &out_ptrs(&mut blocks, 0)) };
                for (dst, src) in out.iter_mut().zip(&blocks) {
                    dst.copy_from_slice(&src[..ow * BLOCK]);
                }
                scratch.out = cells;
            }
        }
    }
}

/// The block groups a row is computed in: `(first block, blocks)`, four at a time with
/// AVX-512, one (two vectors) with AVX2.
fn block_groups(isa: Isa, blocks: usize) -> Vec<(usize, usize)> {
    let widest = if is_avx512(isa) { 4 } else { 1 };
    let mut groups = Vec::new();
    let mut b = 0;
    while b < blocks {
        let nb = [4, 2, 1]
            .into_iter()
            .find(|&n| n <= widest && b + n <= blocks)
            .unwrap_or(1);
        groups.push((b, nb));
        b += nb;
    }
    groups
}

fn is_avx512(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa == Isa::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// Most output positions a tile computes (see `positions`).
const MAX_POSITIONS: usize = 14;

/// Output positions per tile for a group of `nb` blocks. The compiler issues a step's
/// broadcasts before its FMAs, so accumulators, broadcasts and weight vectors must all fit
/// the registers (`nb·P + P + nb ≤ 32` with AVX-512, `2P + P + 2 ≤ 16` with AVX2): with six
/// positions of four blocks the accumulators went to the stack and the tile ran at a third
/// of the speed.
fn positions(isa: Isa, nb: usize) -> usize {
    if is_avx512(isa) {
        match nb {
            4 => 5,
            2 => 8,
            _ => 14,
        }
    } else {
        4
    }
}

/// Where each block of the group writes the tile's first position.
fn out_ptrs(out: &mut [&mut [f32]], col: usize) -> [*mut f32; 4] {
    let mut ptrs = [std::ptr::null_mut(); 4];
    for (p, block) in ptrs.iter_mut().zip(out.iter_mut()) {
        *p = block[col * BLOCK..].as_mut_ptr();
    }
    ptrs
}

/// What every tile of a block group shares.
struct Group<'a> {
    /// `[blocks][taps][16]`.
    weights: &'a [f32],
    bias: Option<&'a [f32]>,
    clamp: Option<(f32, f32)>,
}

impl<'a> Group<'a> {
    fn tile(&self, x: *const f32, step: usize, taps: &'a [usize]) -> Tile<'a> {
        Tile {
            x,
            step,
            taps,
            w: self.weights.as_ptr(),
            bias: self.bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
            clamp: self.clamp,
        }
    }
}

/// One register tile's operands.
struct Tile<'a> {
    /// The first position's window origin; position `p`'s is `step·p` further.
    x: *const f32,
    step: usize,
    /// Each tap's offset from a window origin.
    taps: &'a [usize],
    /// The group's weights, `[blocks][taps][16]`.
    w: *const f32,
    /// The group's bias (`blocks·16`), or null.
    bias: *const f32,
    /// Bounds the outputs are clamped to.
    clamp: Option<(f32, f32)>,
}

/// Runs the tile kernel for a group of `nb` blocks.
///
/// # Safety
/// The CPU has `isa`, AVX-512 or AVX2; the tile reads `x[step·p + taps[t]]` for every position
/// `p < positions(nb)` and tap `t`, `nb·taps.len()·16` weights and (if not null) `nb·16`
/// biases, and writes `positions(nb)·16` floats from each of `y[..nb]`.
unsafe fn run_tile(isa: Isa, t: &Tile, nb: usize, y: &[*mut f32; 4]) {
    match isa {
        // SAFETY: the caller's contract.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            match nb {
                4 => avx512_stem_4x5(t, y),
                2 => avx512_stem_2x8(t, y),
                _ => avx512_stem_1x14(t, y),
            }
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2_stem_2x4(t, y) },
        _ => unreachable!("stem kernels run only where `available()`"),
    }
}

#[cfg(target_arch = "x86_64")]
use crate::gemm::simd::{Avx2, Avx512};

/// One compiled instance of `tile` per ISA and shape, each a function of its own so that
/// `check_codegen.py` finds its loop by name.
macro_rules! tile_instance {
    ($(#[$doc:meta])* $name:ident, $features:literal, $simd:ty, $nv:literal, $p:literal) => {
        $(#[$doc])*
        /// # Safety
        /// The CPU has the features enabled here; `run_tile`'s contract for this shape.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(t: &Tile, y: &[*mut f32; 4]) {
            // SAFETY: this function's contract.
            unsafe { tile::<$simd, $nv, $p>(t, y) }
        }
    };
}

tile_instance!(
    /// Four blocks by 5 positions.
    avx512_stem_4x5, "avx512f,avx2,fma", Avx512, 4, 5
);
tile_instance!(
    /// Two blocks by 8 positions.
    avx512_stem_2x8, "avx512f,avx2,fma", Avx512, 2, 8
);
tile_instance!(
    /// One block by 14 positions.
    avx512_stem_1x14, "avx512f,avx2,fma", Avx512, 1, 14
);
tile_instance!(
    /// One block (two vectors) by 4 positions.
    avx2_stem_2x4, "avx2,fma", Avx2, 2, 4
);

/// `P` positions × `NV` vectors of channels (`NV·LANES/16` blocks): for every tap, `NV`
/// weight loads and `P` broadcasts feed `NV·P` FMAs.
///
/// # Safety
/// The CPU supports `S`'s ISA; `run_tile`'s contract for the group of `NV·S::LANES/16`
/// blocks and `P` positions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile<S: crate::gemm::simd::Simd, const NV: usize, const P: usize>(
    t: &Tile,
    y: &[*mut f32; 4],
) {
    let taps = t.taps.len();
    // Vector `v` covers lanes `(v·LANES) % 16 ..` of block `v·LANES / 16`.
    let block_of = |v: usize| v * S::LANES / BLOCK;
    let lane_of = |v: usize| v * S::LANES % BLOCK;
    // SAFETY (whole body): the ISA is there (caller); every address is one the contract
    // lets the tile read or write.
    unsafe {
        let mut acc = [[S::zero(); NV]; P];
        if !t.bias.is_null() {
            let mut b = [S::zero(); NV];
            for (v, bv) in b.iter_mut().enumerate() {
                *bv = S::load(t.bias.add(block_of(v) * BLOCK + lane_of(v)));
            }
            acc = [b; P];
        }
        let mut w = [std::ptr::null::<f32>(); NV];
        for (v, wv) in w.iter_mut().enumerate() {
            *wv = t.w.add(block_of(v) * taps * BLOCK + lane_of(v));
        }
        for (k, &off) in t.taps.iter().enumerate() {
            let mut wv = [S::zero(); NV];
            for v in 0..NV {
                wv[v] = S::load(w[v].add(k * BLOCK));
            }
            let xk = t.x.add(off);
            for (p, row) in acc.iter_mut().enumerate() {
                let xv = S::splat(*xk.add(p * t.step));
                for v in 0..NV {
                    row[v] = S::mul_add(row[v], xv, wv[v]);
                }
            }
        }
        if let Some((lo, hi)) = t.clamp {
            let (lo, hi) = (S::splat(lo), S::splat(hi));
            for row in acc.iter_mut() {
                for a in row.iter_mut() {
                    *a = S::min(S::max(*a, lo), hi);
                }
            }
        }
        for (p, row) in acc.iter().enumerate() {
            for (v, &a) in row.iter().enumerate() {
                S::store(y[block_of(v)].add(p * BLOCK + lane_of(v)), a);
            }
        }
    }
}

#[cfg(test)]
mod tests;
