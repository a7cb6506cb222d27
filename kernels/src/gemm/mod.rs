//! Packed single-precision GEMM with fused epilogues.
//!
//! `C[m × n] = epilogue(A[m × k] · B[k × n])` where `A` and `B` are strided views (so transposed
//! operands need no copy) or operands packed once ahead of time (`PackedA`, `PackedB`: constant
//! weights, packed at plan time), and the epilogue (scale, bias, residual, activation) is
//! applied to each tile of `C` while it is still in cache.
//!
//! The design is Goto/BLIS: operands are packed block by block into panels (`pack.rs`), a
//! register-tile microkernel (`kernel.rs`, one generic loop instantiated for AVX-512F,
//! AVX2+FMA, NEON and portable code) runs over them, and the blocked loops and the split across
//! rayon threads live in `driver.rs`. The kernel is chosen once per process from the CPU's
//! features. A single row times an unpacked matrix skips packing altogether (`gemv.rs`), a
//! prepacked operand times a single row or column reads its panels once (`packed_gemv.rs`), and
//! `axpy_taps` (rows of direct convolutions) is dispatched the same way.

mod axpy;
mod blocked_rhs;
mod driver;
mod epilogue;
mod gemv;
mod kernel;
mod pack;
mod pack_stream;
mod packed_gemv;
pub(crate) mod simd;

pub use axpy::{axpy_taps, Tap};
pub use blocked_rhs::BlockedRhs;
pub use epilogue::{Activation, Bias, Epilogue};
pub use kernel::{KernelSpec, COL_BLOCK};

use crate::parallel;
use driver::{COut, Src};
use pack::Packed;
use rayon::prelude::*;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

/// A shape or layout error in a GEMM call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GemmError(String);

impl fmt::Display for GemmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GemmError {}

pub(crate) fn err(msg: String) -> GemmError {
    GemmError(msg)
}

/// Index of the last element of a strided `rows × cols` layout, `None` when empty.
fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Option<usize>, GemmError> {
    if rows == 0 || cols == 0 {
        return Ok(None);
    }
    (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
        .map(Some)
        .ok_or_else(|| {
            err(format!(
                "{rows}x{cols} matrix with strides ({rs}, {cs}) overflows"
            ))
        })
}

/// A read-only strided matrix view: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
///
/// Invariant (checked by `new`): every element of the `rows × cols` matrix lies in `data`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, GemmError> {
        if let Some(last) = last_index(rows, cols, row_stride, col_stride)? {
            if last >= data.len() {
                return Err(err(format!(
                    "{rows}x{cols} matrix with strides ({row_stride}, {col_stride}) needs {} \
                     elements, slice has {}",
                    last + 1,
                    data.len()
                )));
            }
        }
        Ok(MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A contiguous row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, GemmError> {
        MatRef::new(data, rows, cols, cols, 1)
    }

    /// The transpose, as a view of the same data.
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i < rows` as a slice, when its elements are contiguous.
    pub(crate) fn contiguous_row(&self, i: usize) -> Option<&'a [f32]> {
        assert!(i < self.rows, "row {i} of a {}-row matrix", self.rows);
        let start = i * self.row_stride;
        (self.col_stride == 1).then(|| &self.data[start..start + self.cols])
    }

    /// Element `(i, j)`, inside the matrix.
    pub(crate) fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "({i}, {j}) out of range");
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// The output: a row-major matrix with row stride `row_stride >= cols` (rows never overlap), or
/// a column-blocked one (`column_blocked`): element `(i, j)` at
/// `i·row_stride + (j / COL_BLOCK)·block_stride + j % COL_BLOCK` — for a plain matrix
/// `block_stride` is `COL_BLOCK`, and that is `i·row_stride + j`.
///
/// Like `&mut [f32]` it grants exclusive access, but only to its own elements, so it can be
/// split into column blocks that interleave in memory (`split_at_col`) and filled in parallel.
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Element (0, 0); with the invariant below, every `(i, j)` of the matrix is inside the
    /// borrowed slice and belongs to this view alone.
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    row_stride: usize,
    block_stride: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `MatMut` is an exclusive borrow of its elements, like `&mut [f32]`, which is Send.
unsafe impl Send for MatMut<'_> {}
// SAFETY: shared references to a `MatMut` allow no access to its elements at all.
unsafe impl Sync for MatMut<'_> {}

impl<'a> MatMut<'a> {
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Result<Self, GemmError> {
        if rows > 1 && row_stride < cols {
            return Err(err(format!(
                "row stride {row_stride} < {cols} columns: rows overlap"
            )));
        }
        if let Some(last) = last_index(rows, cols, row_stride, 1)? {
            if last >= data.len() {
                return Err(err(format!(
                    "{rows}x{cols} output with row stride {row_stride} does not fit in {} elements",
                    data.len()
                )));
            }
        }
        Ok(MatMut {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            row_stride,
            block_stride: COL_BLOCK,
            _borrow: PhantomData,
        })
    }

    /// A column-blocked output: the `rows × cols` matrix stored as `cols / COL_BLOCK` blocks,
    /// `block_stride` floats apart, each `rows × COL_BLOCK` row-major. With rows as the
    /// positions of a feature map and columns as its channels, that is the NCHW16c layout of
    /// one image (`block_stride = rows · COL_BLOCK`). `cols` must be a multiple of
    /// `COL_BLOCK`; the product's epilogue may not have a scale, a scalar bias or a residual
    /// (see `Epilogue`), which the microkernels cannot apply to this layout.
    pub fn column_blocked(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        block_stride: usize,
    ) -> Result<Self, GemmError> {
        if !cols.is_multiple_of(COL_BLOCK) {
            return Err(err(format!(
                "{cols} columns are not whole blocks of {COL_BLOCK}"
            )));
        }
        if cols > COL_BLOCK && block_stride < rows * COL_BLOCK {
            return Err(err(format!(
                "block stride {block_stride} < {rows} rows of {COL_BLOCK}: blocks overlap"
            )));
        }
        if let Some(last) = last_index(rows, cols / COL_BLOCK, COL_BLOCK, block_stride)? {
            if last + COL_BLOCK > data.len() {
                return Err(err(format!(
                    "{rows}x{cols} blocked output with block stride {block_stride} does not fit in {} elements",
                    data.len()
                )));
            }
        }
        Ok(MatMut {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            row_stride: COL_BLOCK,
            block_stride,
            _borrow: PhantomData,
        })
    }

    fn blocked(&self) -> bool {
        self.block_stride != COL_BLOCK
    }

    /// A contiguous row-major output.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, GemmError> {
        MatMut::new(data, rows, cols, cols)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i < rows`, borrowed from the view.
    pub(crate) fn row_mut(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows, "row {i} of a {}-row matrix", self.rows);
        // SAFETY: as in `row`; the view stays mutably borrowed while the row lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.row_stride), self.cols) }
    }

    /// Row `i < rows`.
    fn row(self, i: usize) -> &'a mut [f32] {
        assert!(i < self.rows, "row {i} of a {}-row matrix", self.rows);
        // SAFETY: by the type's invariant the row's `cols` elements lie in the borrowed slice
        // and belong to this view alone, which is consumed here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.row_stride), self.cols) }
    }

    /// Splits into columns `..j` and `j..` (`j` is clamped to the width).
    /// For a column-blocked view, `j` must be a multiple of `COL_BLOCK` (or past the width).
    pub fn split_at_col(self, j: usize) -> (MatMut<'a>, MatMut<'a>) {
        let j = j.min(self.cols);
        assert!(
            !self.blocked() || j.is_multiple_of(COL_BLOCK) || j == self.cols,
            "split inside a column block"
        );
        let right = MatMut {
            // Wrapping: for an empty view the pointer may dangle; it is then never dereferenced.
            ptr: self
                .ptr
                .wrapping_add(j / COL_BLOCK * self.block_stride + j % COL_BLOCK),
            cols: self.cols - j,
            ..self
        };
        let left = MatMut { cols: j, ..self };
        (left, right)
    }
}

/// `A`, packed ahead of time for the kernel chosen on this CPU.
#[derive(Clone)]
pub struct PackedA {
    spec: &'static KernelSpec,
    rows: usize,
    cols: usize,
    packed: Packed,
}

impl PackedA {
    pub fn new(a: MatRef) -> Self {
        Self::for_kernel(kernel::best(), a)
    }

    fn for_kernel(spec: &'static KernelSpec, a: MatRef) -> Self {
        PackedA {
            spec,
            rows: a.rows,
            cols: a.cols,
            packed: Packed::new(a, spec.mr, spec.kc),
        }
    }

    /// `A` (`rows × cols`) packed from its rows made a block at a time, in parallel on the
    /// rayon pool: [`PackedA::stack_from_rows`] of one matrix.
    pub fn from_rows<E, F>(rows: usize, cols: usize, fill: F) -> Result<PackedA, E>
    where
        E: Send,
        F: Fn(Range<usize>, &mut [f32]) -> Result<(), E> + Sync,
    {
        let mut one = Self::stack_from_rows(1, rows, cols, fill)?;
        Ok(one.swap_remove(0))
    }

    /// `count` matrices of `rows × cols` packed into one buffer that they share, from rows
    /// made a block at a time, in parallel on the rayon pool: `fill(r0..r1, dst)` writes rows
    /// `r0..r1` of every matrix into `dst`, row-major, matrix after matrix. For weights decoded
    /// or transformed as they are packed (the 36 tile points of a Winograd kernel, the groups
    /// of a grouped convolution), with no temporary the size of them all. Each matrix
    /// multiplies as a [`PackedA::new`] of it would; the first error of `fill` is returned.
    pub fn stack_from_rows<E, F>(
        count: usize,
        rows: usize,
        cols: usize,
        fill: F,
    ) -> Result<Vec<PackedA>, E>
    where
        E: Send,
        F: Fn(Range<usize>, &mut [f32]) -> Result<(), E> + Sync,
    {
        let spec = kernel::best();
        let packs = pack::pack_rows(count, rows, cols, spec.mr, spec.kc, fill)?;
        Ok(packs
            .into_iter()
            .map(|packed| PackedA {
                spec,
                rows,
                cols,
                packed,
            })
            .collect())
    }
}

impl fmt::Debug for PackedA {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PackedA({}x{}, {})",
            self.rows, self.cols, self.spec.name
        )
    }
}

/// `B`, packed ahead of time for the kernel chosen on this CPU.
#[derive(Clone)]
pub struct PackedB {
    spec: &'static KernelSpec,
    rows: usize,
    cols: usize,
    packed: Packed,
}

impl PackedB {
    pub fn new(b: MatRef) -> Self {
        Self::for_kernel(kernel::best(), b)
    }

    /// `B` (`rows × cols`) packed from its columns made a block at a time, in parallel on the
    /// rayon pool: `fill(j0..j1, dst)` writes columns `j0..j1` into `dst`, each as a run of
    /// `rows` values (rows `j0..j1` of `Bᵀ`, row-major). For weights stored as `Bᵀ` that are
    /// decoded as they are packed; the first error of `fill` is returned.
    pub fn from_columns<E, F>(rows: usize, cols: usize, fill: F) -> Result<PackedB, E>
    where
        E: Send,
        F: Fn(Range<usize>, &mut [f32]) -> Result<(), E> + Sync,
    {
        let spec = kernel::best();
        let mut packs = pack::pack_rows(1, cols, rows, spec.nr, spec.kc, fill)?;
        Ok(PackedB {
            spec,
            rows,
            cols,
            packed: packs.remove(0),
        })
    }

    /// Columns of `B`.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn for_kernel(spec: &'static KernelSpec, b: MatRef) -> Self {
        PackedB {
            spec,
            rows: b.rows,
            cols: b.cols,
            packed: Packed::new(b.t(), spec.nr, spec.kc),
        }
    }
}

impl fmt::Debug for PackedB {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PackedB({}x{}, {})",
            self.rows, self.cols, self.spec.name
        )
    }
}

/// The left operand.
#[derive(Clone, Copy, Debug)]
pub enum Lhs<'a> {
    Mat(MatRef<'a>),
    Packed(&'a PackedA),
    /// `A = Sᵀ` for a source `S[k × m]`, produced block by block straight into `A`'s panels
    /// (a convolution's patches with the output positions as rows).
    Source(&'a dyn PanelSource),
    /// `A[HW, C] = Xᵀ` for a channel-blocked image `X[C, HW]` (the positions as rows): a 1×1
    /// convolution from blocks into blocks. Read straight from the blocks where the kernel
    /// has blocked-A variants (no packing), packed from them elsewhere.
    Blocked(&'a BlockedRhs<'a>),
}

/// The right operand.
#[derive(Clone, Copy, Debug)]
pub enum Rhs<'a> {
    Mat(MatRef<'a>),
    Packed(&'a PackedB),
    /// Produced block by block, straight into panel form (see `PanelSource`).
    Source(&'a dyn PanelSource),
}

/// A right operand `B[k × n]` that is never materialized: the product asks for each block of it
/// already packed. A convolution packs its input patches this way, skipping the im2col matrix
/// (one write and one read of `k × n` floats) and the tiling that kept that matrix in cache.
pub trait PanelSource: Sync + fmt::Debug {
    /// `(k, n)`: rows and columns of `B`.
    fn shape(&self) -> (usize, usize);

    /// Writes the block `depth × cols` of `B` as panels of `width` columns: panel `q` holds,
    /// for each `p` in `depth` in turn, the `width` values `B[p, cols.start + q·width + j]`,
    /// zero where that column is past `cols.end`. `dst` holds exactly
    /// `cols.len().div_ceil(width) · width · depth.len()` floats; the ranges lie inside `B`.
    fn pack(&self, dst: &mut [f32], depth: Range<usize>, cols: Range<usize>, width: usize);
}

impl<'a> From<MatRef<'a>> for Lhs<'a> {
    fn from(m: MatRef<'a>) -> Self {
        Lhs::Mat(m)
    }
}

impl<'a> From<&'a PackedA> for Lhs<'a> {
    fn from(p: &'a PackedA) -> Self {
        Lhs::Packed(p)
    }
}

impl<'a> From<MatRef<'a>> for Rhs<'a> {
    fn from(m: MatRef<'a>) -> Self {
        Rhs::Mat(m)
    }
}

impl<'a> From<&'a PackedB> for Rhs<'a> {
    fn from(p: &'a PackedB) -> Self {
        Rhs::Packed(p)
    }
}

/// Whether this CPU's microkernel reads a blocked left operand (`Lhs::Blocked`) in place;
/// elsewhere that operand is packed from its blocks like any source.
pub fn reads_blocked_lhs() -> bool {
    kernel::best().run_blocked_a.is_some()
}

/// Name of the microkernel this CPU uses, e.g. "avx512f 8x32".
pub fn kernel_name() -> &'static str {
    kernel::best().name
}

/// `C = epilogue(A · B)`; multithreaded on the current rayon pool when large enough.
pub fn gemm<'a>(
    a: impl Into<Lhs<'a>>,
    b: impl Into<Rhs<'a>>,
    c: MatMut,
    epilogue: &Epilogue,
) -> Result<(), GemmError> {
    gemm_with(kernel::best(), a.into(), b.into(), c, epilogue, true)
}

/// `gemm` on the calling thread only, for callers that already keep every thread busy with
/// independent products (nested splits would only add synchronization).
pub fn gemm_serial<'a>(
    a: impl Into<Lhs<'a>>,
    b: impl Into<Rhs<'a>>,
    c: MatMut,
    epilogue: &Epilogue,
) -> Result<(), GemmError> {
    gemm_with(kernel::best(), a.into(), b.into(), c, epilogue, false)
}

/// `gemm` with a given kernel (which packed operands must have been packed for), split across
/// threads or not.
fn gemm_with(
    spec: &'static KernelSpec,
    a: Lhs,
    b: Rhs,
    c: MatMut,
    epi: &Epilogue,
    parallel: bool,
) -> Result<(), GemmError> {
    let ((m, ka), a) = match a {
        Lhs::Mat(x) => ((x.rows, x.cols), Src::Mat(x)),
        Lhs::Packed(p) => {
            ensure_kernel(p.spec, spec)?;
            ((p.rows, p.cols), Src::Packed(&p.packed))
        }
        Lhs::Source(s) => {
            let (k, m) = s.shape();
            ((m, k), Src::Source(s))
        }
        Lhs::Blocked(x) => {
            let (k, m) = x.shape();
            ((m, k), Src::Blocked(x))
        }
    };
    let ((kb, n), bt) = match b {
        Rhs::Mat(x) => ((x.rows, x.cols), Src::Mat(x.t())),
        Rhs::Packed(p) => {
            ensure_kernel(p.spec, spec)?;
            ((p.rows, p.cols), Src::Packed(&p.packed))
        }
        Rhs::Source(s) => (s.shape(), Src::Source(s)),
    };
    if ka != kb || c.rows != m || c.cols != n {
        return Err(err(format!(
            "cannot multiply {m}x{ka} by {kb}x{n} into {}x{}",
            c.rows, c.cols
        )));
    }
    check_epilogue(epi, m, n)?;
    if c.blocked()
        && (epi.alpha != 1.0 || matches!(epi.bias, Bias::Scalar(_)) || epi.residual.is_some())
    {
        return Err(err(
            "a column-blocked output takes no scale, scalar bias or residual".to_string(),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // The single-row and single-column shortcuts write plain rows; a column-blocked C goes
    // through the driver's tiles, which handle the layout.
    if !c.blocked() {
        if let (1, Src::Mat(a), Src::Mat(bt)) = (m, a, bt) {
            gemv::row_times_matrix(a, bt.t(), c.row(0), epi, parallel);
            return Ok(());
        }
        if let (1, Src::Mat(a), Src::Packed(b)) = (m, a, bt) {
            let x: Vec<f32> = (0..ka).map(|p| a.data[p * a.col_stride]).collect();
            let y = c.row(0);
            packed_gemv::panels_times_vector(b, spec.nr, spec.kc, &x, y, parallel);
            epi.apply_row(y, 0, 0);
            return Ok(());
        }
        if let (1, Src::Packed(a)) = (n, a) {
            let mut x = vec![0.0; ka];
            match bt {
                Src::Mat(bt) | Src::InPlace(bt) => x.iter_mut().enumerate().for_each(|(p, x)| {
                    *x = bt.data[p * bt.col_stride];
                }),
                Src::Packed(b) => packed_gemv::first_row(b, spec.nr, spec.kc, &mut x),
                Src::Source(s) => s.pack(&mut x, 0..ka, 0..1, 1),
                Src::Blocked(s) => s.pack(&mut x, 0..ka, 0..1, 1),
            }
            let mut y = vec![0.0; m];
            packed_gemv::panels_times_vector(a, spec.mr, spec.kc, &x, &mut y, parallel);
            epi.apply_col(&mut y, 0, 0);
            let mut c = c;
            for (i, y) in y.into_iter().enumerate() {
                c.row_mut(i)[0] = y;
            }
            return Ok(());
        }
    }
    let out = COut {
        ptr: c.ptr,
        ldc: c.row_stride,
        block_stride: c.block_stride,
    };
    // SAFETY: `c` (validated by `MatMut::new`, or split from such a view: m×n, non-overlapping
    // rows, inside its slice, no element shared with another view) is exclusively borrowed for
    // the call; shapes and the kernel of packed operands are checked.
    unsafe { driver::run(spec, (m, n, ka), a, bt, out, epi, parallel) };
    Ok(())
}

fn ensure_kernel(packed: &KernelSpec, used: &KernelSpec) -> Result<(), GemmError> {
    if std::ptr::eq(packed, used) {
        Ok(())
    } else {
        Err(err(format!(
            "operand packed for kernel {} used with {}",
            packed.name, used.name
        )))
    }
}

pub(crate) fn check_epilogue(epi: &Epilogue, m: usize, n: usize) -> Result<(), GemmError> {
    let bias_ok = match epi.bias {
        Bias::None | Bias::Scalar(_) => true,
        Bias::PerRow(b) => b.len() == m,
        Bias::PerCol(b) => b.len() == n,
    };
    if !bias_ok {
        return Err(err(format!(
            "bias {:?} does not fit a {m}x{n} output",
            epi.bias
        )));
    }
    if let Some(r) = epi.residual {
        if (r.rows, r.cols) != (m, n) {
            return Err(err(format!(
                "residual is {}x{}, output is {m}x{n}",
                r.rows, r.cols
            )));
        }
    }
    Ok(())
}

/// `count` independent products into consecutive `m × n` row-major blocks of `c`
/// (e.g. attention's per-head matmuls); `item(i)` gives the operands and epilogue of block `i`
/// (or the error that making them hit). Blocks run in parallel; when there are fewer blocks
/// than threads, each large one is itself split across threads.
pub fn gemm_batched<'a, F>(
    c: &mut [f32],
    (m, n): (usize, usize),
    count: usize,
    item: F,
) -> Result<(), GemmError>
where
    F: Fn(usize) -> Result<(Lhs<'a>, Rhs<'a>, Epilogue<'a>), GemmError> + Sync,
{
    let size = m
        .checked_mul(n)
        .filter(|s| s.checked_mul(count) == Some(c.len()))
        .ok_or_else(|| {
            err(format!(
                "{count} outputs of {m}x{n} do not fill {} elements",
                c.len()
            ))
        })?;
    if size == 0 {
        // Still validate the operands, which may be inconsistent even when C is empty.
        return (0..count).try_for_each(|i| {
            let (a, b, e) = item(i)?;
            gemm(a, b, MatMut::row_major(&mut [], m, n)?, &e)
        });
    }
    // With at least one block per thread, the blocks alone keep every thread busy.
    let split_each = count < parallel::threads();
    parallel::try_for_each(c.par_chunks_mut(size).enumerate(), |(i, ci)| {
        let (a, b, e) = item(i)?;
        let (spec, c) = (kernel::best(), MatMut::row_major(ci, m, n)?);
        gemm_with(spec, a, b, c, &e, split_each)
    })
}

#[cfg(test)]
pub(crate) mod tests;
