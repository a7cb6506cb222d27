//! Microkernels: one generic register-tile loop, instantiated per ISA, and the run-time choice
//! among them.
//!
//! # Microkernel contract
//!
//! A microkernel computes one `MR × NR` tile of `C` from one packed micro-panel of `A` and one
//! of `B` (see `pack.rs` for the layouts):
//!
//! * `a` points to `kc * MR` floats: for each `p` in `0..kc`, the `MR` values `A[i, p]`.
//! * `b` points to `kc` depth steps `b_stride` floats apart: for each `p` in `0..kc`, the `NR`
//!   values `B[p, j]`. Rows and columns past the edge of the matrix are zero in both packed
//!   panels (`b_stride = NR`), so the kernel always computes the full tile. A B read in place
//!   (`b_stride` its row stride) is read only for whole panels, all `NR` columns inside B.
//! * `c` points to the tile's top-left element; rows are `ldc` floats apart. Columns come in
//!   blocks of [`COL_BLOCK`], contiguous inside a block, consecutive blocks `block_stride`
//!   floats apart (`COL_BLOCK` for an ordinary row-major C; more for a channel-blocked
//!   activation, whose row is one position). The tile's first column is column `lead` of its
//!   block, so the tile's column `j` is `col_offset(t, j)` floats from `c`. Only the
//!   `rows × cols` corner (`rows ≤ MR`, `cols ≤ NR`) is read or written, so tiles at the
//!   matrix edge never touch memory outside `C`. Vectors never straddle blocks: every ISA's
//!   lane count divides `COL_BLOCK`, and tiles start on a multiple of it.
//! * With `accumulate` the tile is added to `C`, else it overwrites `C` (which is then not
//!   read, so it may hold garbage such as NaN).
//! * A non-null `row_bias` points at `rows` floats, one per row of the tile, that start the
//!   accumulators (the driver passes it only with the first depth block, so it is added once).
//! * A non-null `col_bias` points at `NR` floats, one per column of the tile (zero past
//!   `cols`), that start the accumulators likewise; a tile has at most one of the two biases.
//! * A non-null `residual` points at the residual's element for the tile's top-left; its rows
//!   are `ldr` floats apart and columns contiguous (unblocked: a residual comes only with
//!   `block_stride == COL_BLOCK`), and only its `rows × cols` corner is read.
//!   It is added to the finished tile (after `accumulate`, before `clamp`): the driver passes
//!   it only with the last depth block.
//! * With `clamp = Some((lo, hi))` every value is clamped as `Activation::Clip` does (a NaN stays
//!   NaN) before it is stored: the driver passes it only with the last depth block.
//! * A half-width kernel (`KernelSpec::run_half`) computes only the tile's first `NR / 2`
//!   columns (`cols ≤ NR / 2`) from the same `NR`-wide B micro-panel: a product's last
//!   column panel is often that narrow (7×7 feature maps have 49 columns, a 14×14 map's
//!   Winograd GEMMs 16), and a full tile would compute the zero columns too.
//! * A thin-tail kernel (`KernelSpec::run_thin`) computes a tile of at most [`THIN_COLS`]
//!   columns with its accumulators along the rows (one vector of `MR` rows per column) from a
//!   B micro-panel that may start inside an `NR`-wide one (`b` points at its first column, the
//!   next depth step is `NR` floats on): a 49-column product is a full panel, a half panel and
//!   one such column, instead of two full panels.
//! * A blocked-A kernel (`KernelSpec::run_blocked_a`, `run_blocked_a_half`) reads `A` straight
//!   from channel blocks instead of a packed panel: row `i`'s value for depth step `p` is at
//!   `a + i·COL_BLOCK + (p / COL_BLOCK)·a_block_stride + p % COL_BLOCK` (an NCHW16c activation
//!   with the positions as rows), `kc` is a multiple of `COL_BLOCK` and the tile has all `MR`
//!   rows. Such a kernel is the full- or half-width one in every other respect.
//! * A non-null `b_prefetch` points at the next packed B micro-panel; the tile kernels only
//!   prefetch from it (into L2), so any address is sound.
//! * The tile kernels (full, half-width, blocked-A; not the thin-tail ones) compute `tiles`
//!   tiles as a strip (`strip`), only the first of which prefetches `b_prefetch`. Down:
//!   one under the other with the same B panel, each with all `MR` rows when `tiles > 1`;
//!   tile `r` reads A at `a + r·step`, and its C, residual and row bias start `r·MR` rows
//!   down. Across: side by side with the same A panel, each with all `NR` columns when
//!   `tiles > 1` (a full-width kernel); tile `r` reads B at `b + r·step`, and its C,
//!   residual and column bias start `r·NR` columns on. One call per tile,
//!   with a `Tile` built by the driver for each, was measurably slower, most in shallow
//!   products (Emerald Rapids VM, 1 thread, strips ÷ one call per tile, paired:
//!   1024×256×196 0.82, 3136×64×64 0.84, 2048×512×49 0.90; SqueezeNet 0.88, ResNet-50 0.94;
//!   across, in products walked rows first: 512×128×784 0.74, 256×64×3136 0.76, 512³ 0.88;
//!   ResNet-50 0.94 again).
//! * No alignment is assumed anywhere (packed panels happen to be 64-byte aligned, which only
//!   helps speed). `kc` may be 0 (the tile is then zero).

use super::simd::{Portable, Simd};
use std::sync::OnceLock;

/// Largest `MR * NR` of any kernel: the size of the stack buffer for edge tiles.
const MAX_TILE: usize = 8 * 32;

/// Rows of the few-rows kernels (`KernelSpec::run_few`).
pub(super) const FEW_ROWS: usize = 4;

/// Most columns a thin-tail kernel computes.
pub(super) const THIN_COLS: usize = 4;

/// Columns of C are stored in blocks of this many (see the module docs): the channel block of
/// an NCHW16c activation, and a multiple of every kernel's vector width.
pub const COL_BLOCK: usize = 16;

/// Arguments of one microkernel call; see the module docs for the contract.
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub kc: usize,
    pub a: *const f32,
    pub b: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
    pub block_stride: usize,
    pub lead: usize,
    pub rows: usize,
    pub cols: usize,
    pub accumulate: bool,
    pub row_bias: *const f32,
    pub col_bias: *const f32,
    pub residual: *const f32,
    pub ldr: usize,
    pub clamp: Option<(f32, f32)>,
    /// Floats between consecutive depth blocks of a blocked A (blocked-A kernels only).
    pub a_block_stride: usize,
    /// Floats between consecutive depth steps of B: `NR` for a packed micro-panel, B's row
    /// stride for one read in place (tile kernels only; thin kernels read packed panels).
    pub b_stride: usize,
    /// Null, or the next B micro-panel (`kc` steps of `b_stride` floats, packed): the tile
    /// kernels prefetch it step by step alongside their own (tile kernels only).
    pub b_prefetch: *const f32,
    /// Tiles computed as a strip (tile kernels only; else 1), and how they follow each other.
    pub tiles: usize,
    pub strip: Strip,
}

/// How the tiles of a strip follow each other (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(super) enum Strip {
    /// One under the other; `step` floats of A from one to the next.
    Down { step: usize },
    /// Side by side; `step` floats of B from one to the next.
    Across { step: usize },
}

/// A microkernel with its tile shape and the cache blocking tuned for it.
#[derive(Debug)]
pub struct KernelSpec {
    /// For logs and tests, e.g. "avx512f 8x32".
    pub name: &'static str,
    /// Rows of the register tile (of `A`'s micro-panels).
    pub mr: usize,
    /// Columns of the register tile (of `B`'s micro-panels).
    pub nr: usize,
    /// Depth of one packed block: a `kc × NR` panel of `B` stays in L1.
    pub kc: usize,
    /// Rows of `A` packed at once: an `mc × kc` block of `A` stays in L2.
    pub mc: usize,
    /// Columns of `B` packed at once: a `kc × nc` block of `B` stays in L3.
    pub nc: usize,
    pub(super) run: unsafe fn(&Tile),
    /// The same kernel for a single row (`MR = 1`, A panels of width 1): products with only a
    /// few rows (a vector times a matrix) would waste most of a full tile on padding rows.
    pub(super) run_row: unsafe fn(&Tile),
    /// The same kernel for [`FEW_ROWS`] rows (A panels of that width), for products of 2 to
    /// `mr / 2` rows: a row at a time keeps only `NR / LANES` accumulators, too few to cover
    /// the FMA latency (a batch-3 MLP ran at 1.6× onnxruntime's time).
    pub(super) run_few: Option<unsafe fn(&Tile)>,
    /// The same kernel for the first `nr / 2` columns only (see the module docs), where the
    /// tile has an even number of vectors.
    pub(super) run_half: Option<unsafe fn(&Tile)>,
    /// The thin-tail kernel (see the module docs) for the last `THIN_COLS` or fewer columns of
    /// a panel, where even a half-width tile would mostly compute zero columns.
    pub(super) run_thin: Option<unsafe fn(&Tile)>,
    /// The full- and half-width kernels reading a blocked A directly (see the module docs):
    /// a convolution over an NCHW16c input skips packing it.
    pub(super) run_blocked_a: Option<unsafe fn(&Tile)>,
    pub(super) run_blocked_a_half: Option<unsafe fn(&Tile)>,
}

/// Where the tile's column `j` is, in floats from `t.c` along a row (see the module docs).
#[inline(always)]
fn col_offset(t: &Tile, j: usize) -> usize {
    let j = t.lead + j;
    j / COL_BLOCK * t.block_stride + j % COL_BLOCK - t.lead
}

/// One k step: `MR` values of A (broadcast) times `NV` vectors of B into the accumulators.
///
/// A function rather than a closure so that `inline(always)` holds: a step left out of line
/// would take the accumulators through memory and its intrinsics through calls.
///
/// Row `i`'s value of A is `a[i · A_ROW]`: packed panels hold a step's rows together
/// (`A_ROW = 1`), channel blocks one position's 16 channels (`A_ROW = COL_BLOCK`).
///
/// # Safety
/// As for `tile`; `a` and `b` point at `(MR - 1) · A_ROW + 1` and `NV · LANES` readable floats.
#[inline(always)]
unsafe fn step<S: Simd, const MR: usize, const NV: usize, const A_ROW: usize>(
    acc: &mut [[S::V; NV]; MR],
    a: *const f32,
    b: *const f32,
) {
    // SAFETY: the caller guarantees the ISA and the readable ranges.
    unsafe {
        // Plain loops, no closures: everything here must inline into the kernel.
        let mut bv = [S::zero(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = S::load(b.add(v * S::LANES));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = S::splat(*a.add(i * A_ROW));
            for (x, &bj) in row.iter_mut().zip(&bv) {
                *x = S::mul_add(*x, ai, bj);
            }
        }
    }
}

/// How far ahead of its reads a packed A stream is prefetched, in floats (4 KiB: the next
/// micro-panel's first lines near the end of this one, which follows it in a packed block).
/// Weights are A in convolutions, and in a whole network they come from DRAM: a 7×7 layer
/// (2048×512 weights · 49 columns) uses each A panel for two B panels only, too little
/// arithmetic to hide the misses the hardware prefetcher leaves. Paired runs on an Emerald
/// Rapids VM, 1 thread, A cold (one process cycling through 400 MB of packed copies, with and
/// without the prefetch alternately): 2048×512×49 0.75–0.87×
/// the time, 512×4608×49 0.75–0.83×, 1024×256×196 0.90×; hot A unchanged; ResNet-50 0.93×.
/// Distances of 2 and 8 KiB measured the same within noise.
const A_PREFETCH_FLOATS: usize = 1024;

/// `count` iterations of `UNROLL` k steps, on accumulators taken and returned by value; with
/// `PREFETCH`, each iteration also prefetches the lines of A it will read
/// `A_PREFETCH_FLOATS` on (prefetches never fault, so running past A's end is harmless), and
/// with `PREFETCH_B` the same depth steps of the next B micro-panel at `next_b`, into L2.
///
/// The B prefetch is for weights on the right (a MatMul's or a blocked pointwise layer's):
/// each prepacked panel is read by every row tile, the first of which would wait on DRAM.
/// The driver asks for it in a panel's first tile only, and into L2, as the panel in use
/// fills most of L1 (into L1 it made the MLP 2 % slower). Paired runs on an Emerald Rapids
/// VM, whole models, 1 thread: MiniLM 0.94× the time (0.96× at 2 threads), MobileNet-v2
/// 0.97×, EfficientNet-B0 0.98×, the MLP and SqueezeNet unchanged.
///
/// # Safety
/// As for `step`, for every step.
#[inline(always)]
unsafe fn steps<
    S: Simd,
    const MR: usize,
    const NV: usize,
    const UNROLL: usize,
    const PREFETCH: bool,
    const PREFETCH_B: bool,
>(
    mut acc: [[S::V; NV]; MR],
    mut a: *const f32,
    mut b: *const f32,
    mut next_b: *const f32,
    panel: usize,
    count: usize,
) -> [[S::V; NV]; MR] {
    // One prefetch per 64-byte line an iteration consumes (at least one).
    let a_lines = (UNROLL * MR).div_ceil(16);
    let b_lines = (UNROLL * NV * S::LANES).div_ceil(16);
    // SAFETY: the caller's guarantees; prefetches never fault, whatever the address.
    unsafe {
        for _ in 0..count {
            if PREFETCH {
                for l in 0..a_lines {
                    S::prefetch(a.wrapping_add(A_PREFETCH_FLOATS + 16 * l));
                }
            }
            if PREFETCH_B {
                for l in 0..b_lines {
                    S::prefetch_l2(next_b.wrapping_add(16 * l));
                }
                next_b = next_b.wrapping_add(UNROLL * panel);
            }
            for u in 0..UNROLL {
                step::<S, MR, NV, 1>(&mut acc, a.add(u * MR), b.add(u * panel));
            }
            a = a.add(UNROLL * MR);
            b = b.add(UNROLL * panel);
        }
    }
    acc
}

/// `blocks` depth blocks of `COL_BLOCK` steps from a blocked A (see the module docs), on
/// accumulators taken and returned by value as in `steps`.
///
/// # Safety
/// As for `step`, for every step of every block.
#[inline(always)]
unsafe fn blocked_steps<S: Simd, const MR: usize, const NV: usize, const PREFETCH_B: bool>(
    mut acc: [[S::V; NV]; MR],
    mut a: *const f32,
    mut b: *const f32,
    mut next_b: *const f32,
    panel: usize,
    blocks: usize,
    a_block_stride: usize,
) -> [[S::V; NV]; MR] {
    let b_lines = (NV * S::LANES).div_ceil(16);
    // SAFETY: the caller's guarantees; prefetches never fault, whatever the address.
    unsafe {
        for _ in 0..blocks {
            for p in 0..COL_BLOCK {
                if PREFETCH_B {
                    for l in 0..b_lines {
                        S::prefetch_l2(next_b.wrapping_add(p * panel + 16 * l));
                    }
                }
                step::<S, MR, NV, COL_BLOCK>(&mut acc, a.add(p), b.add(p * panel));
            }
            next_b = next_b.wrapping_add(COL_BLOCK * panel);
            a = a.add(a_block_stride);
            b = b.add(COL_BLOCK * panel);
        }
    }
    acc
}

/// The register-tile loop shared by every ISA: a strip of `t.tiles` tiles (module docs) of
/// `MR` rows by `NV` vectors of `S::LANES`, from
/// B micro-panels whose depth steps are `t.b_stride` floats apart (`NR` when packed, also for
/// a half-width kernel; B's row stride when read in place), A packed or (`BLOCKED_A`) read
/// from channel blocks.
///
/// # Safety
/// The CPU supports `S`'s ISA and `t` satisfies the module's microkernel contract (for a
/// blocked-A kernel with `BLOCKED_A`).
#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize, const NV: usize, const BLOCKED_A: bool>(t: &Tile) {
    // Wrapping: past the last tile these point outside the operands, never read.
    let nonnull_add = |p: *const f32, n: usize| if p.is_null() { p } else { p.wrapping_add(n) };
    let mut one = Tile { tiles: 1, ..*t };
    for _ in 0..t.tiles {
        // SAFETY: the caller's guarantees, for each tile of the strip (module docs).
        unsafe { one_tile::<S, MR, NV, BLOCKED_A>(&one) };
        match t.strip {
            Strip::Down { step } => {
                debug_assert!(t.tiles == 1 || t.rows == MR);
                one.a = one.a.wrapping_add(step);
                one.c = one.c.wrapping_add(MR * t.ldc);
                one.row_bias = nonnull_add(one.row_bias, MR);
                one.residual = nonnull_add(one.residual, MR * t.ldr);
            }
            Strip::Across { step } => {
                debug_assert!(t.tiles == 1 || t.cols == NV * S::LANES);
                one.b = one.b.wrapping_add(step);
                one.c = one.c.wrapping_add(col_offset(&one, NV * S::LANES));
                one.lead = (one.lead + NV * S::LANES) % COL_BLOCK;
                one.col_bias = nonnull_add(one.col_bias, NV * S::LANES);
                one.residual = nonnull_add(one.residual, NV * S::LANES);
            }
        }
        one.b_prefetch = std::ptr::null();
    }
}

/// One tile of `tile`'s strip.
///
/// # Safety
/// As for `tile`, with `t.tiles == 1`.
#[inline(always)]
unsafe fn one_tile<S: Simd, const MR: usize, const NV: usize, const BLOCKED_A: bool>(t: &Tile) {
    const {
        assert!(
            MR * NV * S::LANES <= MAX_TILE,
            "tile larger than the edge buffer"
        )
    };
    let nr = NV * S::LANES;
    // A run-time stride costs nothing measurable here (an address register more).
    // Not necessarily NR or more: a B read in place has its row stride here, which may be
    // smaller (a single depth step, or a broadcast B whose rows overlap).
    let panel = t.b_stride;
    debug_assert!(t.rows <= MR && t.cols <= nr);
    // SAFETY (whole body): the ISA is available (caller), and every pointer stays inside the
    // panels (`kc` steps of MR / NR floats) or the `rows × cols` corner of C, per the contract.
    unsafe {
        // C is read (when accumulating) and written after the k loop; start fetching its rows
        // now so the misses overlap the arithmetic.
        let last_col = col_offset(t, t.cols.max(1) - 1);
        for i in 0..t.rows {
            S::prefetch(t.c.add(i * t.ldc));
            S::prefetch(t.c.add(i * t.ldc + last_col));
        }
        let mut acc = [[S::zero(); NV]; MR];
        if !t.row_bias.is_null() {
            for (i, row) in acc.iter_mut().enumerate().take(t.rows) {
                *row = [S::splat(*t.row_bias.add(i)); NV];
            }
        }
        if !t.col_bias.is_null() {
            // Element by element: assigning `acc` whole kept it in memory, a store after
            // every FMA (2.4× slower products, bias or not).
            for row in acc.iter_mut() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = S::load(t.col_bias.add(v * S::LANES));
                }
            }
        }
        // Unrolled by 4 to cut loop overhead against the FMA stream, then the rest. Each loop
        // is its own function taking and returning the accumulators by value: written inline
        // (two loops on one array), the compiler at times kept the accumulators in memory, a
        // store after every FMA (products 2.4× slower), depending only on how the crate was
        // split into codegen units, so unrelated edits flipped it. `kernels/check_codegen.py`
        // checks a build (CI runs it).
        let acc = if BLOCKED_A {
            debug_assert!(t.kc.is_multiple_of(COL_BLOCK) && t.rows == MR);
            let blocks = t.kc / COL_BLOCK;
            let (a, b, stride) = (t.a, t.b, t.a_block_stride);
            if t.b_prefetch.is_null() {
                blocked_steps::<S, MR, NV, false>(acc, a, b, b, panel, blocks, stride)
            } else {
                blocked_steps::<S, MR, NV, true>(acc, a, b, t.b_prefetch, panel, blocks, stride)
            }
        } else {
            let quads = t.kc / 4;
            let acc = if t.b_prefetch.is_null() {
                steps::<S, MR, NV, 4, true, false>(acc, t.a, t.b, t.b, panel, quads)
            } else {
                steps::<S, MR, NV, 4, true, true>(acc, t.a, t.b, t.b_prefetch, panel, quads)
            };
            let (a, b) = (t.a.add(4 * quads * MR), t.b.add(4 * quads * panel));
            steps::<S, MR, NV, 1, false, false>(acc, a, b, b, panel, t.kc % 4)
        };
        if t.rows == MR && t.cols == nr {
            // A `match`, not `Option::map`: a closure would not inherit the target features.
            #[allow(clippy::manual_map)]
            let clamp = match t.clamp {
                Some((lo, hi)) => Some((S::splat(lo), S::splat(hi))),
                None => None,
            };
            // A loop, not `array::from_fn`: everything here must inline into the kernel.
            let mut offsets = [0; NV];
            for (v, o) in offsets.iter_mut().enumerate() {
                *o = col_offset(t, v * S::LANES);
            }
            for (i, row) in acc.iter().enumerate() {
                let c = t.c.add(i * t.ldc);
                for (v, &x) in row.iter().enumerate() {
                    let p = c.add(offsets[v]);
                    let mut x = if t.accumulate {
                        S::add(S::load(p), x)
                    } else {
                        x
                    };
                    if !t.residual.is_null() {
                        x = S::add(S::load(t.residual.add(i * t.ldr + v * S::LANES)), x);
                    }
                    if let Some((lo, hi)) = clamp {
                        x = S::min(hi, S::max(lo, x));
                    }
                    S::store(p, x);
                }
            }
        } else {
            // Edge tile: spill the registers, then touch only the valid corner of C.
            // Left uninitialized (zeroing it cost a memset per edge tile): every float read
            // below is stored from the registers first.
            let mut buf = [std::mem::MaybeUninit::<f32>::uninit(); MAX_TILE];
            let spill = buf.as_mut_ptr().cast::<f32>();
            for (i, row) in acc.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    S::store(spill.add(i * nr + v * S::LANES), x);
                }
            }
            // Vector by vector: a vector's columns are contiguous in C (module docs).
            for i in 0..t.rows {
                for j in (0..t.cols).step_by(S::LANES) {
                    let len = S::LANES.min(t.cols - j);
                    let dst = t.c.add(i * t.ldc + col_offset(t, j));
                    let dst = std::slice::from_raw_parts_mut(dst, len);
                    let src = std::slice::from_raw_parts_mut(spill.add(i * nr + j), len);
                    if t.accumulate {
                        src.iter_mut().zip(&*dst).for_each(|(s, d)| *s += d);
                    }
                    if !t.residual.is_null() {
                        let r = std::slice::from_raw_parts(t.residual.add(i * t.ldr + j), len);
                        src.iter_mut().zip(r).for_each(|(s, r)| *s += r);
                    }
                    if let Some((lo, hi)) = t.clamp {
                        src.iter_mut().for_each(|s| *s = clamp(*s, lo, hi));
                    }
                    dst.copy_from_slice(src);
                }
            }
        }
    }
}

/// A thin tile (see the module docs): `MR = S::LANES` rows as one vector per column, `COLS`
/// columns (at least `t.cols`) of a B panel `PANEL` floats wide.
///
/// # Safety
/// The CPU supports `S`'s ISA and `t` satisfies the thin-tail kernel's contract.
#[inline(always)]
unsafe fn thin<S: Simd, const COLS: usize, const PANEL: usize>(t: &Tile) {
    const { assert!(COLS <= THIN_COLS && S::LANES <= 16) };
    debug_assert!(t.rows <= S::LANES && t.cols <= COLS && t.tiles == 1);
    // SAFETY (whole body): the ISA is available (caller); `a` holds `kc` steps of `LANES`
    // floats, `b` `kc` steps `PANEL` apart with `COLS` readable floats each (inside the
    // micro-panel), and only the `rows × cols` corner of C (and of the residual) is touched.
    unsafe {
        // Two chains over alternate depth steps: one would wait out the FMA latency each step.
        let mut acc = [[S::zero(); COLS]; 2];
        if !t.row_bias.is_null() {
            let mut bias = [0.0f32; 16];
            bias[..t.rows].copy_from_slice(std::slice::from_raw_parts(t.row_bias, t.rows));
            acc[0] = [S::load(bias.as_ptr()); COLS];
        }
        if !t.col_bias.is_null() {
            for (j, x) in acc[0].iter_mut().enumerate().take(t.cols) {
                *x = S::splat(*t.col_bias.add(j));
            }
        }
        let (mut a, mut b) = (t.a, t.b);
        for _ in 0..t.kc / 2 {
            for (u, chain) in acc.iter_mut().enumerate() {
                let av = S::load(a.add(u * S::LANES));
                for (j, x) in chain.iter_mut().enumerate() {
                    *x = S::mul_add(*x, av, S::splat(*b.add(u * PANEL + j)));
                }
            }
            a = a.add(2 * S::LANES);
            b = b.add(2 * PANEL);
        }
        if t.kc % 2 == 1 {
            let av = S::load(a);
            for (j, x) in acc[0].iter_mut().enumerate() {
                *x = S::mul_add(*x, av, S::splat(*b.add(j)));
            }
        }
        let mut spill = [0.0f32; 16 * THIN_COLS];
        for (j, (&x, &y)) in acc[0].iter().zip(&acc[1]).enumerate() {
            S::store(spill.as_mut_ptr().add(j * S::LANES), S::add(x, y));
        }
        for i in 0..t.rows {
            for j in 0..t.cols {
                let p = t.c.add(i * t.ldc + col_offset(t, j));
                let mut x = spill[j * S::LANES + i];
                if t.accumulate {
                    x += *p;
                }
                if !t.residual.is_null() {
                    x += *t.residual.add(i * t.ldr + j);
                }
                if let Some((lo, hi)) = t.clamp {
                    x = clamp(x, lo, hi);
                }
                *p = x;
            }
        }
    }
}

/// `Activation::Clip`'s scalar rule, which the vector path reproduces with `max`/`min`.
#[inline(always)]
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    let y = if x < lo { lo } else { x };
    if y > hi {
        hi
    } else {
        y
    }
}

/// # Safety
/// `t` satisfies the microkernel contract.
unsafe fn portable_4x8(t: &Tile) {
    // SAFETY: `Portable` needs no CPU feature; the caller upholds the tile contract.
    unsafe { tile::<Portable, 4, 1, false>(t) }
}

/// # Safety
/// `t` satisfies the microkernel contract for MR = 1.
unsafe fn portable_1x8(t: &Tile) {
    // SAFETY: as above.
    unsafe { tile::<Portable, 1, 1, false>(t) }
}

/// The portable fallback, also used by tests as the baseline every ISA must agree with.
pub(super) static PORTABLE: KernelSpec = KernelSpec {
    name: "portable 4x8",
    mr: 4,
    nr: 8,
    kc: 256,
    mc: 128,
    nc: 4096,
    run: portable_4x8,
    run_row: portable_1x8,
    run_few: None,
    run_half: None,
    run_thin: None,
    run_blocked_a: None,
    run_blocked_a_half: None,
};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::simd::{Avx2, Avx512};
    use super::{thin, tile, KernelSpec, Tile};

    /// # Safety
    /// The CPU has AVX2 and FMA, and `t` satisfies the microkernel contract.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_6x16(t: &Tile) {
        // SAFETY: features enabled on this function; contract upheld by the caller.
        unsafe { tile::<Avx2, 6, 2, false>(t) }
    }

    /// # Safety
    /// As for `avx2_6x16`, with MR = 1.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_1x16(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx2, 1, 2, false>(t) }
    }

    /// # Safety
    /// As for `avx2_6x16`, with MR = 4.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_4x16(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx2, 4, 2, false>(t) }
    }

    /// # Safety
    /// As for `avx2_6x16`, computing the first 8 columns only.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_6x8(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx2, 6, 1, false>(t) }
    }

    /// # Safety
    /// As for `avx2_6x16`, reading A from channel blocks (a blocked-A kernel).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_6x16_blocked_a(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx2, 6, 2, true>(t) }
    }

    /// # Safety
    /// As for `avx2_6x8`, reading A from channel blocks (a blocked-A kernel).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_6x8_blocked_a(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx2, 6, 1, true>(t) }
    }

    /// 6×16: 12 accumulators + 2 B vectors + 1 broadcast fill the 16 ymm registers.
    /// kc = 256 keeps a 16 KiB B micro-panel in L1; a 240×256 A block is 240 KiB of L2.
    pub(in crate::gemm) static AVX2: KernelSpec = KernelSpec {
        name: "avx2+fma 6x16",
        mr: 6,
        nr: 16,
        kc: 256,
        mc: 240,
        nc: 4096,
        run: avx2_6x16,
        run_row: avx2_1x16,
        run_few: Some(avx2_4x16),
        run_half: Some(avx2_6x8),
        // MR = 6 is no vector width.
        run_thin: None,
        run_blocked_a: Some(avx2_6x16_blocked_a),
        run_blocked_a_half: Some(avx2_6x8_blocked_a),
    };

    /// # Safety
    /// The CPU has AVX-512F, and `t` satisfies the microkernel contract.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_8x32(t: &Tile) {
        // SAFETY: feature enabled on this function; contract upheld by the caller.
        unsafe { tile::<Avx512, 8, 2, false>(t) }
    }

    /// # Safety
    /// As for `avx512_8x32`, with MR = 1.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_1x32(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx512, 1, 2, false>(t) }
    }

    /// # Safety
    /// As for `avx512_8x32`, with MR = 4.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_4x32(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx512, 4, 2, false>(t) }
    }

    /// # Safety
    /// As for `avx512_8x32`, computing the first 16 columns only.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_8x16(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx512, 8, 1, false>(t) }
    }

    /// # Safety
    /// As for `avx512_8x32`, reading A from channel blocks (a blocked-A kernel).
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_8x32_blocked_a(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx512, 8, 2, true>(t) }
    }

    /// # Safety
    /// As for `avx512_8x16`, reading A from channel blocks (a blocked-A kernel).
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_8x16_blocked_a(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Avx512, 8, 1, true>(t) }
    }

    /// # Safety
    /// The CPU has AVX-512F, and `t` satisfies the thin-tail kernel's contract for MR = 8,
    /// NR = 32.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512_thin(t: &Tile) {
        // SAFETY: as above; each instance covers `t.cols` columns.
        unsafe {
            match t.cols {
                1 => thin::<Avx2, 1, 32>(t),
                2 => thin::<Avx2, 2, 32>(t),
                3 => thin::<Avx2, 3, 32>(t),
                _ => thin::<Avx2, 4, 32>(t),
            }
        }
    }

    /// 8×32: 16 zmm accumulators cover the FMA latency × 2 pipes of Zen 4/5 and Intel cores,
    /// and each k step costs 2 vector loads + 8 broadcasts for 16 FMAs (FMA-bound). MR = 8
    /// wastes nothing on the power-of-two channel counts of convolutions. kc = 192 keeps the
    /// 24 KiB B micro-panel in a 32 KiB L1 (`fit_to_l1` deepens it to 256 on a 48 KiB one);
    /// a 384×192 A block is 288 KiB of a 1 MiB L2, 384 KiB at kc = 256 (Zen 4, 4 runs each
    /// of `sgemm_gflops`, medians against mc = 256: 512³ 105.9 vs 92, 1024³ 98.7 vs 95,
    /// 2048³ 97.7 vs 95, 3136×64×64 96 vs 90 GFLOP/s).
    pub(in crate::gemm) static AVX512: KernelSpec = KernelSpec {
        name: "avx512f 8x32",
        mr: 8,
        nr: 32,
        kc: 192,
        mc: 384,
        nc: 4096,
        run: avx512_8x32,
        run_row: avx512_1x32,
        run_few: Some(avx512_4x32),
        run_half: Some(avx512_8x16),
        // 8 rows are one ymm: 256-bit FMAs issue on both of Zen 4's pipes.
        run_thin: Some(avx512_thin),
        run_blocked_a: Some(avx512_8x32_blocked_a),
        run_blocked_a_half: Some(avx512_8x16_blocked_a),
    };
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::super::simd::Neon;
    use super::{tile, KernelSpec, Tile};

    /// # Safety
    /// `t` satisfies the microkernel contract (NEON is baseline on aarch64).
    #[target_feature(enable = "neon")]
    unsafe fn neon_8x12(t: &Tile) {
        // SAFETY: NEON is enabled; contract upheld by the caller.
        unsafe { tile::<Neon, 8, 3, false>(t) }
    }

    /// # Safety
    /// As for `neon_8x12`, with MR = 1.
    #[target_feature(enable = "neon")]
    unsafe fn neon_1x12(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Neon, 1, 3, false>(t) }
    }

    /// # Safety
    /// As for `neon_8x12`, with MR = 4.
    #[target_feature(enable = "neon")]
    unsafe fn neon_4x12(t: &Tile) {
        // SAFETY: as above.
        unsafe { tile::<Neon, 4, 3, false>(t) }
    }

    /// 8×12: 24 accumulators + 3 B vectors + 1 broadcast of the 32 q registers.
    pub(in crate::gemm) static NEON: KernelSpec = KernelSpec {
        name: "neon 8x12",
        mr: 8,
        nr: 12,
        kc: 256,
        mc: 128,
        nc: 4096,
        run: neon_8x12,
        run_row: neon_1x12,
        run_few: Some(neon_4x12),
        run_half: None,
        run_thin: None,
        run_blocked_a: None,
        run_blocked_a_half: None,
    };
}

/// Every kernel this CPU can run (under `INFER_MAX_ISA`), best first, its depth block fitted
/// to this CPU's L1 data cache (`fit_to_l1`); listed once per process, so that an operand
/// packed for one of them is always used with the same one.
pub fn available() -> Vec<&'static KernelSpec> {
    static FITTED: OnceLock<Vec<&'static KernelSpec>> = OnceLock::new();
    FITTED
        .get_or_init(|| {
            let l1 = crate::cache::l1d_bytes();
            runnable()
                .into_iter()
                .map(|spec| fit_to_l1(spec, l1))
                .collect()
        })
        .clone()
}

/// Deepest depth block (`kc`) a kernel is given.
const MAX_KC: usize = 256;

/// `spec` with its depth block as deep as two thirds of an L1 data cache of `l1_bytes` hold
/// in B micro-panels (`kc × NR` floats; the rest is for the A panel and C), between the
/// spec's own `kc`, tuned for a 32 KiB L1, and [`MAX_KC`]. A deeper block means fewer passes
/// over C (a 256-deep product makes one instead of two) and fewer loads and stores of the
/// accumulators per FMA. With AVX-512 on a 48 KiB L1 (an Emerald Rapids VM; `sgemm_gflops`,
/// 1 thread, 4 processes each way alternated, best of 21 rounds, kc 256 against 192):
/// 3136×256×64 130.6 vs 118.4 GFLOP/s, 512³ 154.9 vs 150.4, 1024³ 150.0 vs 146.6,
/// 128×768×3072 146.2 vs 142.8 (BENCHMARKS.md section 1).
pub(super) fn fit_to_l1(spec: &'static KernelSpec, l1_bytes: usize) -> &'static KernelSpec {
    let panel_bytes = spec.nr * std::mem::size_of::<f32>();
    let kc = (l1_bytes * 2 / 3 / panel_bytes / 16 * 16).clamp(spec.kc, MAX_KC.max(spec.kc));
    if kc == spec.kc {
        spec
    } else {
        // Once per kernel and process (`available` keeps the list): a bounded leak that
        // gives the fitted spec the `'static` life every packed operand refers to.
        Box::leak(Box::new(KernelSpec { kc, ..*spec }))
    }
}

/// Every kernel this CPU can run (under `INFER_MAX_ISA`), best first, as tuned.
fn runnable() -> Vec<&'static KernelSpec> {
    let mut v: Vec<&'static KernelSpec> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use crate::isa::{x86_has, X86Level};
        if x86_has(X86Level::Avx512) {
            v.push(&x86::AVX512);
        }
        if x86_has(X86Level::Avx2) {
            v.push(&x86::AVX2);
        }
    }
    #[cfg(target_arch = "aarch64")]
    v.push(&arm::NEON);
    v.push(&PORTABLE);
    v
}

/// The best kernel for this CPU, detected once.
pub fn best() -> &'static KernelSpec {
    static BEST: OnceLock<&'static KernelSpec> = OnceLock::new();
    BEST.get_or_init(|| available()[0])
}
