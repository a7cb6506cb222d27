//! The blocked loops around the microkernel (Goto/BLIS order: nc → kc → mc → nr → mr, or
//! nc → kc → mc → mr → nr for outputs too large for cache, see `walks_rows_first`) and the
//! split of one product across threads.

use super::blocked_rhs::BlockedRhs;
use super::kernel::{KernelSpec, Strip, Tile, COL_BLOCK, FEW_ROWS, THIN_COLS};
use super::pack::{pack, AlignedBuf, Packed};
use super::{Epilogue, MatRef, PanelSource};
use crate::parallel;
use rayon::prelude::*;
use std::cell::Cell;
use std::ops::Range;

/// Products with fewer multiply-adds than this (~2 MFLOP, tens of microseconds) run on the
/// calling thread: below it, waking other threads costs more than it saves.
pub(super) const PARALLEL_MIN_WORK: usize = 1 << 20;

/// An operand in panel-major form (see `pack.rs`): `A` itself, or `Bᵀ`.
#[derive(Clone, Copy)]
pub(super) enum Src<'a> {
    /// Packed block by block during the product.
    Mat(MatRef<'a>),
    /// Packed ahead of time for the kernel in use.
    Packed(&'a Packed),
    /// Packed block by block by its producer, which sees the panel-major view's rows as its
    /// columns (for `Bᵀ`, that is `B`'s columns; for `A`, its rows).
    Source(&'a dyn PanelSource),
    /// `A` only: a channel-blocked image with the positions as rows, read straight from its
    /// blocks by the kernel's blocked-A variants (packed like a source where a tile has none).
    Blocked(&'a BlockedRhs<'a>),
    /// `Bᵀ` only, with `B`'s rows contiguous (`Bᵀ`'s row stride 1): read in place by the tile
    /// kernels, `NR` columns of a row at each depth step; only a last, partial column panel is
    /// packed (see `reads_b_in_place`).
    InPlace(MatRef<'a>),
}

impl Src<'_> {
    /// The operand as a source to pack panels from, if it is one.
    fn source(&self) -> Option<&dyn PanelSource> {
        match *self {
            Src::Source(s) => Some(s),
            Src::Blocked(s) => Some(s),
            Src::Mat(_) | Src::Packed(_) | Src::InPlace(_) => None,
        }
    }
}

/// Most rows of `A` for which a `B` with contiguous rows is read in place rather than packed.
/// Packing streams all of `B` once more (a read and a write, per thread when split along m),
/// which only the reuse of each panel by `m / MR` row tiles pays back; read in place, a
/// panel's depth steps are a row stride apart, which costs L1 misses once reused. On Zen 4
/// (`sgemm_gflops`, `SGEMM_PACKED=a`, 1 thread, in place vs packed): 16×128×3025
/// 0.12 vs 0.17 ms, 64×256×4096 1.57 vs 1.88, 128×128×3136 0.94 vs 1.07, 256×256×784 0.93
/// vs 0.98; packing wins from a few hundred rows (2000³ 167 vs 180 ms, 384×768×768 4.43 vs
/// 4.54). Row strides that are multiples of 4 KiB (all depth steps in a few L1 sets) still
/// read in place faster than they pack (64×256×4096 above).
const IN_PLACE_B_MAX_ROWS: usize = 256;

/// On Intel cores, B's rows at least this many floats apart are packed after all, once `A`
/// has `FAR_ROWS_PACKED_FROM` rows and the product `FAR_ROWS_MIN_DEPTH` depth steps: there a
/// depth step read in place costs more than on Zen 4, where the numbers above were taken. On
/// an Emerald Rapids VM (1 thread, both ways run alternately in one process, median time
/// ratio packed ÷ in place): 64×256×3136 0.74, 128×256×3136 0.74, 128×128×3136 0.80,
/// 64×64×3136 0.89, 64×256×2048 0.87, 64×256×4096 0.90, 32×256×3136 0.83, but 64×256×1568
/// 1.01, 64×256×1800 1.00, 256×256×784 1.03, 8×256×3136 1.07, 16×64×3136 1.15, 64×16×3025
/// 1.03. Those are hot; in a network B was just written by the layer before and is partly
/// out of L2, where a depth step read in place (a row 12 KB on, a line no prefetcher
/// follows) waits on L3. SqueezeNet's 16-row squeeze layers (16×64 and 16×128 × 3025, after
/// a fire module's Concat), paired in-process, packed ÷ in place: 0.73 and 0.95 of the node
/// time at 1 thread, 0.82 and 0.79 at 2; the whole model 0.999 and 0.971.
const FAR_ROWS_FLOATS: usize = 2000;
const FAR_ROWS_PACKED_FROM: usize = 16;
const FAR_ROWS_MIN_DEPTH: usize = 64;

/// `bt` as read by the product: an unpacked `B` with contiguous rows is read in place when
/// `A` has at most `IN_PLACE_B_MAX_ROWS` rows (and, on Intel, unless its rows are far apart
/// and `A` has enough rows to pay for packing).
fn reads_b_in_place<'a>(bt: Src<'a>, m: usize) -> Src<'a> {
    match bt {
        Src::Mat(x) if x.row_stride == 1 && m <= IN_PLACE_B_MAX_ROWS => {
            let far = x.col_stride >= FAR_ROWS_FLOATS
                && m >= FAR_ROWS_PACKED_FROM
                && x.cols >= FAR_ROWS_MIN_DEPTH;
            if far && crate::isa::is_intel() {
                bt
            } else {
                Src::InPlace(x)
            }
        }
        other => other,
    }
}

/// The output matrix, shared by the threads of one product: element `(i, j)` is at
/// `i·ldc + (j / COL_BLOCK)·block_stride + j % COL_BLOCK` (see `MatMut`).
#[derive(Clone, Copy)]
pub(super) struct COut {
    pub ptr: *mut f32,
    pub ldc: usize,
    pub block_stride: usize,
}

// SAFETY: `COut` is only handed to the tasks of one product, and those write disjoint sets of
// rows or columns of C (see `run`), while the `MatMut` it came from stays borrowed.
unsafe impl Send for COut {}
// SAFETY: as above.
unsafe impl Sync for COut {}

impl COut {
    fn offset(self, i: usize, j: usize) -> usize {
        i * self.ldc + j / COL_BLOCK * self.block_stride + j % COL_BLOCK
    }

    fn blocked(self) -> bool {
        self.block_stride != COL_BLOCK
    }

    /// The contiguous runs of the `rows × cols` block of C: one per row when unblocked, one
    /// per column block when blocked (whose rows are then contiguous; `cols` starts and ends
    /// on block boundaries, as `MatMut::column_blocked` makes every product's columns). Each
    /// run comes with its first element's `(i, j)`.
    ///
    /// # Safety
    /// The block lies inside C and no other live reference covers it while the runs live.
    unsafe fn runs<'c>(
        self,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> impl Iterator<Item = (&'c mut [f32], usize, usize)> {
        let blocked = self.blocked();
        debug_assert!(
            !blocked
                || (cols.start.is_multiple_of(COL_BLOCK) && cols.len().is_multiple_of(COL_BLOCK))
        );
        let count = if blocked {
            cols.len() / COL_BLOCK
        } else {
            rows.len()
        };
        (0..count).map(move |r| {
            let (i, j, len) = if blocked {
                (
                    rows.start,
                    cols.start + r * COL_BLOCK,
                    rows.len() * COL_BLOCK,
                )
            } else {
                (rows.start + r, cols.start, cols.len())
            };
            // SAFETY: the runs are disjoint parts of the block (caller's guarantee), contiguous
            // as the layout makes a block's rows and a row's columns.
            let run =
                unsafe { std::slice::from_raw_parts_mut(self.ptr.add(self.offset(i, j)), len) };
            (run, i, j)
        })
    }
}

/// Largest `B` (in floats, `k·n`) packed whole before a product split along m: 16 MiB.
const SHARED_B_MAX_FLOATS: usize = 4 << 20;

thread_local! {
    /// The calling thread's buffer for a `B` packed whole, kept between products.
    static SHARED_B: Cell<AlignedBuf> = Cell::new(AlignedBuf::default());
}

/// Per-thread packing buffers, kept between products to avoid re-allocating.
#[derive(Default)]
struct PackBufs {
    a: AlignedBuf,
    b: AlignedBuf,
    /// One A panel of a blocked A that cannot be read in place (its last rows).
    edge: AlignedBuf,
    /// One B panel of a B read in place that is packed after all (its last columns).
    edge_b: AlignedBuf,
}

thread_local! {
    static PACK_BUFS: Cell<PackBufs> = Cell::new(PackBufs::default());
}

/// `C[m × n] = epilogue(A[m × k] · B[k × n])`, with `a` and `bt` (= Bᵀ) in panel-major form,
/// split across the rayon pool when `parallel` and large enough.
///
/// # Safety
/// `c` addresses an `m × n` matrix (row stride `ldc >= n`) that nothing else accesses during
/// the call; operand and epilogue shapes were validated; packed operands were packed for `spec`.
pub(super) unsafe fn run(
    spec: &KernelSpec,
    (m, n, k): (usize, usize, usize),
    a: Src,
    bt: Src,
    c: COut,
    epi: &Epilogue,
    parallel: bool,
) {
    // A few rows of a not-yet-packed A run as one tile of `FEW_ROWS` rows where the kernel
    // has it, else a row at a time (see `KernelSpec::run_few` and `run_row`).
    let few = |mr: usize, run: unsafe fn(&Tile)| TileKernel {
        mr,
        run,
        run_half: None,
        run_thin: None,
        run_blocked_a: None,
        run_blocked_a_half: None,
    };
    let tile = match spec.run_few {
        _ if !matches!(a, Src::Mat(_)) || m > spec.mr / 2 => TileKernel {
            mr: spec.mr,
            run: spec.run,
            run_half: spec.run_half,
            run_thin: spec.run_thin,
            run_blocked_a: spec.run_blocked_a,
            run_blocked_a_half: spec.run_blocked_a_half,
        },
        Some(run) if m > 1 && m <= FEW_ROWS => few(FEW_ROWS, run),
        _ => few(1, spec.run_row),
    };
    let bt = reads_b_in_place(bt, m);
    let threads = if parallel { parallel::threads() } else { 1 };
    // A product of a few rows is bound by reading B, as a 4-row one is: counted as one (a
    // batch-3 MLP's 3×512×512 layer split in two: 0.052 → 0.034 ms at 2 threads).
    let work = m.max(FEW_ROWS) * n * k;
    if threads < 2 || work < PARALLEL_MIN_WORK {
        // SAFETY: the whole of C, owned by this call (caller's guarantee).
        return unsafe { serial(spec, tile, k, a, bt, c, 0..m, 0..n, epi) };
    }
    // One contiguous range of panels per thread. Splitting along n makes every task stream all
    // of A (reading it, and writing it too when it still needs packing), splitting along m
    // does that with B: split so that the operand every task goes through is the smaller.
    let (m_panels, n_panels) = (m.div_ceil(spec.mr), n.div_ceil(spec.nr));
    let traffic = |len: usize, src: &Src| match src {
        Src::Packed(_) | Src::Blocked(_) | Src::InPlace(_) => len,
        Src::Mat(_) | Src::Source(_) => 2 * len,
    };
    let split_n = if m_panels >= threads && n_panels >= threads {
        traffic(m, &a) <= traffic(n, &bt)
    } else {
        n_panels >= m_panels
    };
    let (panels, width, len) = if split_n {
        (n_panels, spec.nr, n)
    } else {
        (m_panels, spec.mr, m)
    };
    let tasks = threads.min(panels);
    let grid = TaskGrid::new(
        (panels, width, len),
        if split_n {
            (m_panels, spec.mr, m)
        } else {
            (n_panels, spec.nr, n)
        },
        tasks,
    );
    // Split along m, each task would pack all of a not-yet-packed B for itself: the same
    // panels `tasks` times over, a serial part of the product (ResNet-50's last-stage 3×3
    // layers, whose patches are packed: 1.73 → 1.51–1.59 ms at 2 threads once shared).
    // Pack it once, all threads together, first.
    let shared =
        (!split_n && matches!(bt, Src::Mat(_) | Src::Source(_)) && k * n <= SHARED_B_MAX_FLOATS)
            .then(|| {
                Packed::par_new(
                    SHARED_B.take(),
                    n,
                    k,
                    spec.nr,
                    spec.kc,
                    |dst, cols, depth| {
                        match (bt, bt.source()) {
                            (Src::Mat(m), _) => {
                                pack(dst, m, cols, depth, spec.nr);
                            }
                            (_, Some(s)) => s.pack(dst, depth, cols, spec.nr),
                            // Excluded above.
                            (_, None) => {}
                        }
                    },
                )
            });
    let bt = shared.as_ref().map_or(bt, Src::Packed);
    parallel::for_each((0..tasks).into_par_iter(), |t| {
        for (along, across) in grid.pieces(t) {
            let (rows, cols) = if split_n {
                (across, along)
            } else {
                (along, across)
            };
            // SAFETY: the tasks' pieces are disjoint blocks of C, each starting on a panel
            // boundary in both directions, as packed operands require.
            unsafe { serial(spec, tile, k, a, bt, c, rows, cols, epi) };
        }
    });
    if let Some(buf) = shared.and_then(Packed::into_buf) {
        SHARED_B.set(buf);
    }
}

/// How the tasks of a product split C: into `panels` along the split direction and, when
/// those do not divide evenly among the tasks, each panel also into `parts` across it. The
/// units (panel, part) are numbered panel by panel and each task takes a contiguous run of
/// them, so that every task gets the same number of units. Five column panels on two threads
/// were 3 : 2 (a 7×7 projection to 160 channels, 49×960×160: 1.29× at 2 threads instead of
/// the 1.9× of ten panels); as ten units, 5 : 5.
struct TaskGrid {
    /// Panels along the split direction: count, width, and the extent they cover.
    along: (usize, usize, usize),
    /// The same across it.
    across: (usize, usize, usize),
    tasks: usize,
    parts: usize,
}

impl TaskGrid {
    fn new(along: (usize, usize, usize), across: (usize, usize, usize), tasks: usize) -> Self {
        let panels = along.0;
        // The fewest parts that make the units a multiple of the tasks, where there are
        // enough panels across to cut them into and whole panels alone would leave a task
        // more than a tenth over its share (25 panels on 2 threads, 13 : 12, are left whole).
        let parts = tasks / gcd(panels, tasks);
        let uneven = 10 * panels.div_ceil(tasks) * tasks > 11 * panels;
        let parts = if parts > 1 && uneven && across.0 >= parts {
            parts
        } else {
            1
        };
        TaskGrid {
            along,
            across,
            tasks,
            parts,
        }
    }

    /// Task `t`'s blocks of C: (range along, range across), whole panels merged.
    fn pieces(&self, t: usize) -> Vec<(Range<usize>, Range<usize>)> {
        let (panels, parts) = (self.along.0, self.parts);
        let units = panels * parts;
        let (mut u, end) = (units * t / self.tasks, units * (t + 1) / self.tasks);
        let span = |(_, width, len): (usize, usize, usize), from: usize, to: usize| {
            (from * width).min(len)..(to * width).min(len)
        };
        let across = |a: usize, b: usize| {
            let count = self.across.0;
            span(self.across, count * a / parts, count * b / parts)
        };
        let mut pieces = Vec::new();
        while u < end {
            let (panel, part) = (u / parts, u % parts);
            if part == 0 && end - u >= parts {
                let whole = (end - u) / parts;
                pieces.push((span(self.along, panel, panel + whole), across(0, parts)));
                u += whole * parts;
            } else {
                let last = parts.min(part + end - u);
                pieces.push((span(self.along, panel, panel + 1), across(part, last)));
                u += last - part;
            }
        }
        pieces
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A blocked A's last rows, when at most this many, are computed one by one by the one-row
/// kernel (about an eighth of a full tile's time each) instead of as one full tile (49 rows ×
/// 960 → 320, a 7×7 projection: 0.319 → 0.300 ms; 51 rows break even).
const EDGE_ROWS_ONE_BY_ONE: usize = 3;

/// Columns of `C` the epilogue covers at once: a block's rows × this many floats stay in L2.
const EPILOGUE_COLS: usize = 128;

/// Least output size, in bytes, walked rows first (see `walks_rows_first`): a quarter of L2.
pub(super) fn rows_first_min_bytes() -> usize {
    crate::cache::l2_bytes() / 4
}

/// Least column panels of a block walked rows first.
const ROWS_FIRST_MIN_PANELS: usize = 8;

/// Whether `serial` takes each row tile across the whole column block, rather than each
/// column panel down the block's rows (the BLIS order, which keeps one B panel in L1).
/// Row-major C makes the panel order walk C (and a residual) in 128-byte pieces of rows
/// kilobytes apart, one piece per row per panel: no hardware prefetcher follows that, so
/// where C is not already in cache every piece is a miss of its own. Taken a row tile at a
/// time, each row is one sequential stream. It costs re-reading the block's B panels from L2
/// for every row tile, so it is kept to outputs too large to stay in cache and wide enough to
/// stream: on an Emerald Rapids VM (1 thread, C and residual cycled through 64 MB of copies,
/// both orders alternated in one process, median time ratio rows first ÷ panels first), with
/// a residual: 256×64×3136 0.43, 512×128×784 0.66, 64×64×3136 0.50, 512³ 0.91,
/// 128×768×3072 0.91; B read in place: 256×64×1568 0.50, 128×32×3136 0.42; prepacked B
/// without one: 1024³ 0.85, 128×384×1152 0.84; but 1024×256×196 (7 panels) 1.03,
/// 2048×1024×49 1.04, 128×1536×384 (C in L2) 1.02. ResNet-50 whole: 0.945 at 1 thread,
/// 0.95 at 2 (its three 56×56 layers with residuals: 3.5 → 1.3, 2.0 → 1.2, 1.7 → 1.2 ms).
///
/// Not where B is read in place `in_place_depth` deep, deeper than
/// `ROWS_FIRST_MAX_IN_PLACE_DEPTH`: every row tile then steps through the block's B rows
/// again, a line a row stride apart per depth step that no prefetcher follows, while C is
/// written only once per deep block. On Zen 3 (512 KiB L2; 1 thread, both orders alternated
/// in one process, panels first ÷ rows first, B hot / cycled through 64 MB of copies):
/// 64×256×3136 0.82 / 0.76, 128×256×3136 0.79 / 0.77, 256×256×784 0.90 / 0.82, 16×128×3025
/// 1.05 / 0.88; ResNet-50 whole 0.987 (its 256 → 64 and 256 → 128 layers on 56×56).
fn walks_rows_first(
    spec: &KernelSpec,
    rows: usize,
    cols: usize,
    blocked_c: bool,
    in_place_depth: Option<usize>,
) -> bool {
    // A column-blocked C is contiguous down its rows: the panel order already streams it.
    !blocked_c
        && cols >= ROWS_FIRST_MIN_PANELS * spec.nr
        && rows * cols * std::mem::size_of::<f32>() > rows_first_min_bytes()
        && in_place_depth.is_none_or(|k| k <= ROWS_FIRST_MAX_IN_PLACE_DEPTH)
}

/// Deepest B read in place that is walked rows first (see `walks_rows_first`).
const ROWS_FIRST_MAX_IN_PLACE_DEPTH: usize = 64;

/// Columns of `B` in one block. A prepacked `B` is only read, so its blocks can be as wide as
/// the kernel's `nc`; a `B` packed during the product is written and then read back by every
/// row block of `A` — and any `B` by every row tile when the block is walked rows first — so
/// its `kc × nc` block is kept to half the L2, where those reads hit.
fn block_cols(spec: &KernelSpec, bt: &Src, rows_first: bool) -> usize {
    match bt {
        Src::Packed(_) | Src::InPlace(_) if !rows_first => spec.nc,
        _ => {
            let fit = crate::cache::l2_bytes() / 2 / (spec.kc * std::mem::size_of::<f32>());
            (fit / spec.nr * spec.nr).clamp(4 * spec.nr, spec.nc)
        }
    }
}

/// One column panel of B's current block as the tile kernels read it: its first element, the
/// floats between its depth steps, and the next panel of a prepacked B (else null) for the
/// first row tile to prefetch.
#[derive(Clone, Copy)]
struct BPanel {
    first: *const f32,
    stride: usize,
    next: *const f32,
}

/// The register tile used for one product: the kernel's own, or its one-row variant; and
/// for column panels at most half full, its half-width variant if it has one, for the last
/// few columns of a panel, its thin-tail variant if it has one.
#[derive(Clone, Copy)]
struct TileKernel {
    mr: usize,
    run: unsafe fn(&Tile),
    run_half: Option<unsafe fn(&Tile)>,
    run_thin: Option<unsafe fn(&Tile)>,
    run_blocked_a: Option<unsafe fn(&Tile)>,
    run_blocked_a_half: Option<unsafe fn(&Tile)>,
}

/// Which kernel of a `TileKernel` covers a piece of a column panel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Piece {
    Full,
    Half,
    Thin,
}

impl TileKernel {
    /// The kernels that cover a column panel with `cols` of its `nr` columns, each with the
    /// columns (of the panel) it computes: a full or half-width tile over the first ones, a
    /// thin tile over at most `THIN_COLS` past the last half panel.
    fn pieces(&self, cols: usize, nr: usize) -> impl Iterator<Item = (Piece, Range<usize>)> {
        let half = nr / 2;
        let tail = cols % half.max(1);
        let thin = self.run_thin.is_some() && cols < nr && (1..=THIN_COLS).contains(&tail);
        let wide_cols = if thin { cols - tail } else { cols };
        let wide = if self.run_half.is_some() && wide_cols <= half {
            Piece::Half
        } else {
            Piece::Full
        };
        let wide = (wide_cols > 0).then_some((wide, 0..wide_cols));
        wide.into_iter()
            .chain(thin.then_some((Piece::Thin, wide_cols..cols)))
    }

    /// The kernel for `piece`, reading A packed or (`blocked_a`) from channel blocks; `None`
    /// where there is no such variant.
    fn kernel(&self, piece: Piece, blocked_a: bool) -> Option<unsafe fn(&Tile)> {
        match (piece, blocked_a) {
            (Piece::Full, false) => Some(self.run),
            (Piece::Half, false) => self.run_half,
            (Piece::Thin, false) => self.run_thin,
            (Piece::Full, true) => self.run_blocked_a,
            (Piece::Half, true) => self.run_blocked_a_half,
            (Piece::Thin, true) => None,
        }
    }
}

/// The product restricted to `rows × cols` of C, on the calling thread.
///
/// # Safety
/// As for `run`, for the `rows × cols` block of C, whose starts are multiples of MR / NR;
/// `tile` is one of `spec`'s kernels, and the one-row variant only with an unpacked A.
#[allow(clippy::too_many_arguments)]
unsafe fn serial(
    spec: &KernelSpec,
    tile: TileKernel,
    k: usize,
    a: Src,
    bt: Src,
    c: COut,
    rows: Range<usize>,
    cols: Range<usize>,
    epi: &Epilogue,
) {
    if k == 0 {
        for i in rows {
            for j in (cols.clone()).step_by(COL_BLOCK) {
                let len = COL_BLOCK.min(cols.end - j);
                // SAFETY: inside this call's block of C (caller's guarantee); contiguous,
                // as a block's columns are.
                let run = unsafe { std::slice::from_raw_parts_mut(c.ptr.add(c.offset(i, j)), len) };
                run.fill(0.0);
                epi.apply_row(run, i, j);
            }
        }
        return;
    }
    // Taken out rather than borrowed, so that even a re-entrant product on this thread (say,
    // an activation that uses rayon) finds a usable, if empty, slot.
    let mut bufs = PACK_BUFS.take();
    let (mr, nr) = (tile.mr, spec.nr);
    // A blocked A is read in place when the kernel can and its depth blocks are whole (a
    // depth block of the product then never starts inside a channel block).
    let direct_a = match a {
        Src::Blocked(x)
            if tile.run_blocked_a.is_some()
                && x.whole_blocks()
                && spec.kc.is_multiple_of(COL_BLOCK) =>
        {
            Some(x)
        }
        _ => None,
    };
    // Out of `bufs` for the loop, whose A blocks borrow `bufs.a`.
    let mut edge_panel = std::mem::take(&mut bufs.edge);
    // Which row tiles of the current block of a blocked A are packed in `edge_panel` (tile
    // `t` at `t · MR · kc`): each is packed once per block, not once per column panel (the
    // register transposes of a one-row edge tile, repeated for every panel, took a 49-row
    // product from 0.27 to 0.37 ms, against 48 rows).
    let mut edge_packed: Vec<bool> = Vec::new();
    let mut edge_b = std::mem::take(&mut bufs.edge_b);
    let in_place_depth = matches!(bt, Src::InPlace(_)).then_some(k);
    let rows_first = walks_rows_first(spec, rows.len(), cols.len(), c.blocked(), in_place_depth);
    let nc = block_cols(spec, &bt, rows_first);
    let in_kernel = epi.in_kernel();
    let row_bias = in_kernel.and_then(|e| e.row_bias);
    // The kernels load a whole panel's column bias: zero-padded past the last column, so an
    // edge tile needs no branch or copy of its own.
    let col_bias: Option<Vec<f32>> = in_kernel.and_then(|e| e.col_bias).map(|b| {
        let mut padded = Vec::with_capacity(b.len() + nr);
        padded.extend_from_slice(b);
        padded.resize(b.len() + nr, 0.0);
        padded
    });
    let residual = in_kernel.and_then(|e| e.residual);
    // What is left of the epilogue for a pass over each finished block after the kernels'
    // part: all of it, only an activation, or nothing.
    let pass_needed = match in_kernel {
        Some(e) => e.after.is_some(),
        None => !epi.is_identity(),
    };
    for jc in cols.clone().step_by(nc) {
        let nc_len = nc.min(cols.end - jc);
        for pc in (0..k).step_by(spec.kc) {
            let kc_len = spec.kc.min(k - pc);
            let last_k = pc + kc_len == k;
            let bp: &[f32] = match (bt, bt.source()) {
                // Read in place; a partial last panel is packed below.
                (Src::InPlace(_), _) => &[],
                (Src::Packed(p), _) => p.block(jc, pc, kc_len),
                (Src::Mat(m), _) => {
                    let dst = bufs.b.get_mut(nc_len.div_ceil(nr) * nr * kc_len);
                    pack(dst, m, jc..jc + nc_len, pc..pc + kc_len, nr);
                    dst
                }
                (_, Some(s)) => {
                    let dst = bufs.b.get_mut(nc_len.div_ceil(nr) * nr * kc_len);
                    s.pack(dst, pc..pc + kc_len, jc..jc + nc_len, nr);
                    dst
                }
                (_, None) => unreachable!("every operand is packed, a matrix or a source"),
            };
            for ic in rows.clone().step_by(spec.mc) {
                let mc_len = spec.mc.min(rows.end - ic);
                let ap: &[f32] = match (a, a.source()) {
                    // Read in place; the few panels that cannot be are packed one by one below.
                    (Src::Blocked(_), _) if direct_a.is_some() => &[],
                    (Src::Packed(p), _) => p.block(ic, pc, kc_len),
                    (Src::Mat(m), _) => {
                        let dst = bufs.a.get_mut(mc_len.div_ceil(mr) * mr * kc_len);
                        pack(dst, m, ic..ic + mc_len, pc..pc + kc_len, mr);
                        dst
                    }
                    (_, Some(s)) => {
                        let dst = bufs.a.get_mut(mc_len.div_ceil(mr) * mr * kc_len);
                        s.pack(dst, pc..pc + kc_len, ic..ic + mc_len, mr);
                        dst
                    }
                    (_, None) => unreachable!("every operand is packed, a matrix or a source"),
                };
                if direct_a.is_some() {
                    edge_packed.clear();
                    edge_packed.resize(mc_len.div_ceil(mr), false);
                }
                // Column panel `jr` of the block (a B read in place has its partial last
                // panel packed here, once per block: `edge_b_panel` says which is packed).
                let mut edge_b_panel = None;
                let mut panel = |jr: usize| -> BPanel {
                    let j = jc + jr;
                    let panel_cols = nr.min(nc_len - jr);
                    let (b_panel, b_stride): (*const f32, usize) = match bt {
                        Src::InPlace(x) if panel_cols == nr => (
                            x.data[j * x.row_stride + pc * x.col_stride..].as_ptr(),
                            x.col_stride,
                        ),
                        Src::InPlace(x) => {
                            let dst = edge_b.get_mut(nr * kc_len);
                            if edge_b_panel != Some(jr) {
                                pack(dst, x, j..j + panel_cols, pc..pc + kc_len, nr);
                                edge_b_panel = Some(jr);
                            }
                            (dst.as_ptr(), nr)
                        }
                        _ => (bp[jr * kc_len..(jr + nr) * kc_len].as_ptr(), nr),
                    };
                    let next_b_panel: *const f32 = match bt {
                        Src::Packed(_) if jr + nr < nc_len => bp[(jr + nr) * kc_len..].as_ptr(),
                        _ => std::ptr::null(),
                    };
                    BPanel {
                        first: b_panel,
                        stride: b_stride,
                        next: next_b_panel,
                    }
                };
                // Whether the row tiles of column panel `jr` can run as strips: A is packed,
                // or blocked and read in place by every piece's kernel.
                let strip_ok = |jr: usize| {
                    let panel_cols = nr.min(nc_len - jr);
                    direct_a.is_none()
                        || tile
                            .pieces(panel_cols, nr)
                            .all(|(piece, _)| tile.kernel(piece, true).is_some())
                };
                // Floats of B from one column panel to the next.
                let b_panel_step = match bt {
                    Src::InPlace(x) => nr * x.row_stride,
                    _ => nr * kc_len,
                };
                // Row tile `ir` of column panel `jr`, whose B panel `panel(jr)` gave; or
                // `count` tiles as a strip: down, whole row tiles (only where `strip_ok(jr)`),
                // or across, whole column panels (only where `strip_ok(jr)` too, and A is not
                // a blocked one's last few rows).
                let mut tile_job = |jr: usize, ir: usize, count: usize, across: bool, b: BPanel| {
                    let BPanel {
                        first: b_panel,
                        stride: b_stride,
                        next: next_b_panel,
                    } = b;
                    let j = jc + jr;
                    let panel_cols = nr.min(nc_len - jr);
                    // One call of the tile kernel over rows `i..i + rows` of the tile, its A
                    // panel at `a`, for the panel's columns `part` (see `pieces`).
                    let tile_at = |i: usize, rows: usize, a: *const f32, part: Range<usize>| {
                        let j = j + part.start;
                        Tile {
                            tiles: 1,
                            strip: Strip::Down { step: 0 },
                            kc: kc_len,
                            a,
                            // SAFETY: `part` lies inside the panel's NR columns, which
                            // `b_panel` starts (packed: NR floats per depth step; in place:
                            // a whole panel of a row of B).
                            b: unsafe { b_panel.add(part.start) },
                            // SAFETY: (i, j) is inside this call's block of C.
                            c: unsafe { c.ptr.add(c.offset(i, j)) },
                            ldc: c.ldc,
                            block_stride: c.block_stride,
                            lead: j % COL_BLOCK,
                            rows,
                            cols: part.len(),
                            accumulate: pc > 0,
                            // `check_epilogue` made the bias m long, and rows i.. of this
                            // tile are below m.
                            row_bias: match row_bias {
                                Some(b) if pc == 0 => b[i..].as_ptr(),
                                _ => std::ptr::null(),
                            },
                            // Likewise n long, and columns j.. are below n.
                            col_bias: match &col_bias {
                                Some(b) if pc == 0 => b[j..].as_ptr(),
                                _ => std::ptr::null(),
                            },
                            // `check_epilogue` made the residual m × n, and `in_kernel` its
                            // columns contiguous: the tile's corner lies inside it.
                            residual: match residual {
                                Some(r) if last_k => r.data[i * r.row_stride + j..].as_ptr(),
                                _ => std::ptr::null(),
                            },
                            ldr: residual.map_or(0, |r| r.row_stride),
                            clamp: in_kernel.filter(|_| last_k).and_then(|e| e.clamp),
                            a_block_stride: direct_a.map_or(0, BlockedRhs::block_stride),
                            b_stride,
                            b_prefetch: if i == ic {
                                next_b_panel
                            } else {
                                std::ptr::null()
                            },
                        }
                    };
                    let i = ic + ir;
                    let rows_here = mr.min(mc_len - ir);
                    let row_tiles = if across { 1 } else { count };
                    let t = ir / mr;
                    // A blocked A's last few rows, packed one by one for the one-row
                    // kernel: a full tile would compute MR rows for them.
                    if let Some(x) = direct_a.filter(|_| rows_here <= EDGE_ROWS_ONE_BY_ONE) {
                        debug_assert!(!across, "a strip across of one-row tiles");
                        let all = edge_panel.get_mut(edge_packed.len() * mr * kc_len);
                        let rows = &mut all[t * mr * kc_len..][..rows_here * kc_len];
                        if !edge_packed[t] {
                            for (q, row) in rows.chunks_exact_mut(kc_len).enumerate() {
                                x.pack(row, pc..pc + kc_len, i + q..i + q + 1, 1);
                            }
                            edge_packed[t] = true;
                        }
                        for (q, row) in rows.chunks_exact(kc_len).enumerate() {
                            let t = tile_at(i + q, 1, row.as_ptr(), 0..panel_cols);
                            // SAFETY: as below, for the one-row kernel and a row of A
                            // packed `kc` long.
                            unsafe { (spec.run_row)(&t) };
                        }
                        return;
                    }
                    // Straight from the blocks where the tile is whole and every piece of
                    // it has a blocked-A kernel; else this one panel is packed.
                    let in_place = direct_a.filter(|_| {
                        rows_here == mr
                            && tile
                                .pieces(panel_cols, nr)
                                .all(|(piece, _)| tile.kernel(piece, true).is_some())
                    });
                    let (a_panel, a_tile_stride): (*const f32, usize) = match (in_place, direct_a) {
                        (Some(x), _) => (x.cell(i, pc), mr * COL_BLOCK),
                        (None, Some(x)) => {
                            let all = edge_panel.get_mut(edge_packed.len() * mr * kc_len);
                            let dst = &mut all[t * mr * kc_len..(t + 1) * mr * kc_len];
                            if !edge_packed[t] {
                                x.pack(dst, pc..pc + kc_len, i..i + rows_here, mr);
                                edge_packed[t] = true;
                            }
                            (dst.as_ptr(), 0)
                        }
                        (None, None) => (
                            ap[ir * kc_len..(ir + row_tiles * mr) * kc_len].as_ptr(),
                            mr * kc_len,
                        ),
                    };
                    for (piece, part) in tile.pieces(panel_cols, nr) {
                        let Some(run) = tile.kernel(piece, in_place.is_some()) else {
                            unreachable!("pieces come only with the kernels that exist");
                        };
                        // The thin-tail kernel takes one row tile per call (and a strip
                        // across has whole panels only, so no thin piece).
                        debug_assert!(!across || piece != Piece::Thin);
                        let (calls, tiles) = match piece {
                            Piece::Thin => (count, 1),
                            _ => (1, count),
                        };
                        let strip = if across {
                            Strip::Across { step: b_panel_step }
                        } else {
                            Strip::Down {
                                step: a_tile_stride,
                            }
                        };
                        for q in 0..calls {
                            let t = Tile {
                                tiles,
                                strip,
                                ..tile_at(
                                    i + q * mr,
                                    rows_here,
                                    a_panel.wrapping_add(q * a_tile_stride),
                                    part.clone(),
                                )
                            };
                            // SAFETY: `spec` came from `kernel::available`, so the CPU runs
                            // it; the panels hold kc·MR floats for each of the `tiles` row
                            // tiles, `a_tile_stride` apart (packed: sliced above; blocked:
                            // whole tiles of this block, so rows inside A), and kc·NR floats
                            // (a B read in place only for whole panels, whose kc rows of NR
                            // columns lie inside it by `MatRef`'s invariant); every tile's
                            // valid corner lies inside this call's block of C (for the
                            // half-width and thin kernels, no more columns than they take,
                            // starting inside the B panel as they require), and a strip's
                            // tiles are whole, as the tile kernels require of one.
                            unsafe { run(&t) };
                        }
                    }
                };
                // The part of the epilogue left for a pass over a finished `rows × cols`
                // part of C, while it is still in cache.
                let finish = |rows: Range<usize>, cols: Range<usize>| {
                    // SAFETY: the part just written, inside our block; no other reference
                    // to it is live.
                    let runs = || unsafe { c.runs(rows.clone(), cols.clone()) };
                    if in_kernel.is_none() {
                        // Only unblocked C gets here (`MatMut::column_blocked`), so each
                        // run is a row segment.
                        runs().for_each(|(run, i, j)| epi.apply_linear(run, i, j));
                    }
                    let activation = match in_kernel {
                        Some(e) => e.after,
                        None => epi.activation,
                    };
                    if let Some(act) = activation {
                        let runs = runs().map(|(run, _, _)| run);
                        crate::elementwise::apply_activation_rows(act, runs);
                    }
                };
                if rows_first {
                    let whole_panels = nc_len / nr;
                    for ir in (0..mc_len).step_by(mr) {
                        let edge_rows =
                            direct_a.is_some() && mr.min(mc_len - ir) <= EDGE_ROWS_ONE_BY_ONE;
                        if whole_panels > 1 && strip_ok(0) && !edge_rows {
                            tile_job(0, ir, whole_panels, true, panel(0));
                            let jr = whole_panels * nr;
                            if jr < nc_len {
                                tile_job(jr, ir, 1, false, panel(jr));
                            }
                        } else {
                            for jr in (0..nc_len).step_by(nr) {
                                tile_job(jr, ir, 1, false, panel(jr));
                            }
                        }
                        if last_k && pass_needed {
                            let rows_here = mr.min(mc_len - ir);
                            finish(ic + ir..ic + ir + rows_here, jc..jc + nc_len);
                        }
                    }
                    continue;
                }
                // Columns of this block whose epilogue is still to run.
                let mut epi_from = 0;
                let whole_tiles = mc_len / mr;
                for jr in (0..nc_len).step_by(nr) {
                    let b = panel(jr);
                    if strip_ok(jr) && whole_tiles > 1 {
                        tile_job(jr, 0, whole_tiles, false, b);
                        if !mc_len.is_multiple_of(mr) {
                            tile_job(jr, whole_tiles * mr, 1, false, b);
                        }
                    } else {
                        for ir in (0..mc_len).step_by(mr) {
                            tile_job(jr, ir, 1, false, b);
                        }
                    }
                    let strip_end = jr + nr.min(nc_len - jr);
                    if last_k
                        && pass_needed
                        && (strip_end - epi_from >= EPILOGUE_COLS || strip_end == nc_len)
                    {
                        // The strips of C just finished (this block's rows), still in cache:
                        // the epilogue in one pass over row segments long enough that reading
                        // a residual streams (one short segment per row would miss on each).
                        finish(ic..ic + mc_len, jc + epi_from..jc + strip_end);
                        epi_from = strip_end;
                    }
                }
            }
        }
    }
    bufs.edge = edge_panel;
    bufs.edge_b = edge_b;
    PACK_BUFS.set(bufs);
}

#[cfg(test)]
mod tests {
    use super::{rows_first_min_bytes, walks_rows_first, TaskGrid};

    /// Only outputs over a quarter of L2, at least 8 panels wide and not column-blocked, are
    /// walked rows first.
    #[test]
    fn large_wide_unblocked_outputs_walk_rows_first() {
        let spec = crate::gemm::kernel::available()[0];
        let rows = rows_first_min_bytes() / 4 / (8 * spec.nr) + 1;
        assert!(walks_rows_first(spec, rows, 8 * spec.nr, false, None));
        assert!(walks_rows_first(spec, rows, 8 * spec.nr, false, Some(64)));
        assert!(
            !walks_rows_first(spec, rows, 8 * spec.nr, false, Some(65)),
            "B read in place, deep"
        );
        assert!(
            !walks_rows_first(spec, rows, 8 * spec.nr, true, None),
            "column-blocked"
        );
        assert!(
            !walks_rows_first(spec, rows - 1, 8 * spec.nr, false, None),
            "in cache"
        );
        assert!(
            !walks_rows_first(spec, 100 * rows, 8 * spec.nr - 1, false, None),
            "narrow"
        );
    }

    /// Every element of a `len_along × len_across` C is in exactly one task's pieces, the
    /// pieces start on panel boundaries, and no task has more than its share of units.
    #[test]
    fn task_grids_cover_c_once_in_even_shares() {
        for (along, across, tasks) in [
            ((5, 32, 160), (7, 8, 49), 2),
            ((3, 32, 96), (25, 8, 196), 2),
            ((25, 8, 196), (3, 32, 96), 2),
            ((7, 8, 50), (1, 32, 20), 2),
            ((5, 32, 150), (4, 8, 30), 3),
            ((9, 8, 70), (6, 32, 190), 4),
            ((4, 8, 32), (9, 32, 288), 4),
        ] {
            let grid = TaskGrid::new(along, across, tasks);
            let mut hits = vec![0u8; along.2 * across.2];
            let mut shares = Vec::new();
            for t in 0..tasks {
                let mut share = 0;
                for (a, b) in grid.pieces(t) {
                    assert_eq!(a.start % along.1, 0, "{along:?} {across:?} {tasks}");
                    assert_eq!(b.start % across.1, 0, "{along:?} {across:?} {tasks}");
                    share += a.len() * b.len();
                    for i in a {
                        for j in b.clone() {
                            hits[i * across.2 + j] += 1;
                        }
                    }
                }
                shares.push(share);
            }
            assert!(hits.iter().all(|&h| h == 1), "{along:?} {across:?} {tasks}");
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            // Within a panel of each other, or within the tenth that whole panels may leave.
            let panel = along.1 * across.2;
            assert!(
                hi - lo <= panel || 10 * hi <= 11 * along.2 * across.2 / tasks + panel,
                "{along:?} {across:?} {tasks}: shares {shares:?}"
            );
        }
    }
}
