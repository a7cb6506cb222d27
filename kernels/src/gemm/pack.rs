//! Packing operands into the panel layout the microkernels read.
//!
//! Both operands are packed by the same routine, seen as a "panel-major" matrix `P` of shape
//! `width_dim × k`: for `A` that is `A` itself (panels of `MR` rows), for `B` it is `Bᵀ`
//! (panels of `NR` columns). A block `rows r0..r1, depth p0..p1` is laid out panel after panel;
//! panel `q` holds, for each `p` in the depth range, the `width` values `P[r0 + q·width + i, p]`,
//! zero past `r1`. A whole prepacked matrix is the concatenation over depth blocks of `kc`,
//! so the panel covering row `r` (a multiple of `width`) of the block starting at depth `p0`
//! begins at `p0 · padded_rows + r · block_depth`.

use super::{err, GemmError, MatRef};
use crate::parallel;
use crate::weight_arena::{self, Carved};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// One cache line of floats; vectors of these give 64-byte aligned buffers without unsafe
/// allocation code.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable, 64-byte aligned float buffer: a vector of its own, or a prepacked operand's
/// carve of the plan's weight arena (see `weight_arena`).
#[derive(Default)]
pub(super) struct AlignedBuf(Storage);

enum Storage {
    Heap(Vec<Line>),
    Carved(Carved),
}

impl Default for Storage {
    fn default() -> Self {
        Storage::Heap(Vec::new())
    }
}

impl AlignedBuf {
    /// Zero-filled buffer of at least `len` floats, for a prepacked operand: carved from the
    /// weight arena while a plan is built, or a mapping of its own if large, its pages mapped
    /// in with one call either way (see `huge_pages`).
    pub fn zeroed(len: usize) -> Self {
        let lines = len.div_ceil(16);
        let carved =
            weight_arena::carve(lines * 16).or_else(|| weight_arena::own_mapping(lines * 16));
        if let Some(carved) = carved {
            return AlignedBuf(Storage::Carved(carved));
        }
        let mut v: Vec<Line> = Vec::with_capacity(lines);
        let bytes = lines * std::mem::size_of::<Line>();
        crate::huge_pages::populate(v.as_mut_ptr().cast(), bytes);
        v.resize(lines, Line([0.0; 16]));
        AlignedBuf(Storage::Heap(v))
    }

    /// The first `len` floats, growing the buffer when needed (contents are unspecified).
    pub fn get_mut(&mut self, len: usize) -> &mut [f32] {
        let lines = len.div_ceil(16);
        if matches!(&self.0, Storage::Carved(carved) if carved.len() < len) {
            // A carve cannot grow: a vector of its own from now on.
            self.0 = Storage::Heap(Vec::new());
        }
        let v = match &mut self.0 {
            Storage::Carved(carved) => return &mut carved.as_mut_slice()[..len],
            Storage::Heap(v) => v,
        };
        if v.len() < lines {
            v.resize(lines, Line([0.0; 16]));
        }
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]` with no padding (64 bytes, align 64),
        // so `lines` lines are `16 * lines >= len` initialized, exclusively borrowed floats.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), len) }
    }

    /// Floats held.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn as_slice(&self) -> &[f32] {
        match &self.0 {
            // SAFETY: as in `get_mut`: the lines are `16 * len` initialized floats.
            Storage::Heap(v) => unsafe {
                std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len() * 16)
            },
            Storage::Carved(carved) => carved.as_slice(),
        }
    }
}

/// Packs the block `rows × depth` of `src` (panel-major view, see module docs) into `dst`, in
/// panels of `width` rows, zero-padding the last panel. Returns the number of floats written:
/// `rows.len().div_ceil(width) * width * depth.len()`.
pub(super) fn pack(
    dst: &mut [f32],
    src: MatRef,
    rows: Range<usize>,
    depth: Range<usize>,
    width: usize,
) -> usize {
    let kc = depth.len();
    let panels = rows.len().div_ceil(width);
    let total = panels * width * kc;
    assert!(
        dst.len() >= total && rows.end <= src.rows && depth.end <= src.cols,
        "pack: block out of range"
    );
    let (rs, cs) = (src.row_stride, src.col_stride);
    for (q, panel) in dst[..total].chunks_exact_mut(width * kc).enumerate() {
        let r0 = rows.start + q * width;
        let valid = width.min(rows.end - r0);
        if valid < width {
            panel.fill(0.0);
        }
        // Every read below is `src[r, p]` with `r < rows.end <= src.rows` and
        // `p < depth.end <= src.cols` (asserted above), which `MatRef`'s invariant places inside
        // `src.data`; every write is inside `panel` (`p < kc`, `i < width`).
        if rs == 1 && valid == width && matches!(width, 8 | 16 | 32) {
            // Full panels of the kernels' widths: copies of a constant length, which compile to
            // a few vector moves instead of a `memcpy` call per depth step.
            match width {
                8 => copy_rows::<8>(panel, src, r0, depth.start),
                16 => copy_rows::<16>(panel, src, r0, depth.start),
                _ => copy_rows::<32>(panel, src, r0, depth.start),
            }
        } else if cs == 1 && valid == width && matches!(width, 4 | 6 | 8) {
            // Full panels of the kernels' MR from depth-contiguous rows (a conv's or a
            // MatMul's row-major weights as A): a fixed-width gather the compiler unrolls.
            match width {
                4 => gather_rows::<4>(panel, src, r0, depth.start),
                6 => gather_rows::<6>(panel, src, r0, depth.start),
                _ => gather_rows::<8>(panel, src, r0, depth.start),
            }
        } else if rs == 1 {
            // Rows contiguous (B row-major, or a transposed A): one short copy per depth step.
            for (p, out) in panel.chunks_exact_mut(width).enumerate() {
                let base = r0 + (depth.start + p) * cs;
                // SAFETY: reads `src[r0..r0 + valid, p]`, in bounds as noted above; `out` holds
                // `width >= valid` floats and cannot overlap the shared `src`.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.data.as_ptr().add(base),
                        out.as_mut_ptr(),
                        valid,
                    )
                };
            }
        } else {
            // Depth contiguous or general strides: gather one value per row for each depth
            // step, so writes stay sequential.
            for (p, out) in panel.chunks_exact_mut(width).enumerate() {
                let col = (depth.start + p) * cs;
                for (i, o) in out[..valid].iter_mut().enumerate() {
                    // SAFETY: `src[r0 + i, depth.start + p]` is in bounds as noted above.
                    *o = unsafe { *src.data.get_unchecked((r0 + i) * rs + col) };
                }
            }
        }
    }
    total
}

/// One full panel of `W` contiguous rows: `panel[p·W + i] = src[r0 + i, p0 + p]`.
///
/// The caller guarantees `src` has rows `r0..r0 + W` (row stride 1) and the panel's depth range.
#[inline(always)]
fn copy_rows<const W: usize>(panel: &mut [f32], src: MatRef, r0: usize, p0: usize) {
    for (p, out) in panel.chunks_exact_mut(W).enumerate() {
        let base = r0 + (p0 + p) * src.col_stride;
        let row: &[f32; W] = src.data[base..base + W]
            .try_into()
            .expect("a slice of W elements");
        out.copy_from_slice(row);
    }
}

/// One full panel of `W` rows whose depth is contiguous: `panel[p·W + i] = src[r0 + i, p0 + p]`.
///
/// The caller guarantees `src` has rows `r0..r0 + W` (column stride 1) and the panel's depth
/// range (`panel.len() / W` steps from `p0`).
#[inline(always)]
fn gather_rows<const W: usize>(panel: &mut [f32], src: MatRef, r0: usize, p0: usize) {
    let kc = panel.len() / W;
    let rows: [&[f32]; W] = std::array::from_fn(|i| {
        let start = (r0 + i) * src.row_stride + p0;
        &src.data[start..start + kc]
    });
    for (p, out) in panel.chunks_exact_mut(W).enumerate() {
        for (o, row) in out.iter_mut().zip(&rows) {
            // SAFETY: every row slice holds `kc` values and `p < kc` (`panel` has `kc`
            // chunks of `W`).
            *o = unsafe { *row.get_unchecked(p) };
        }
    }
}

/// A whole matrix packed for one kernel's `width` and `kc`: depth blocks of `kc`, each a run of
/// panels (see module docs).
#[derive(Clone)]
pub(super) struct Packed {
    /// Shared by the matrices of a [`PackedStack`]; read-only once packed.
    buf: Arc<AlignedBuf>,
    /// Where this matrix starts in `buf`.
    offset: usize,
    /// Rows of the panel-major view, rounded up to a multiple of `width`.
    pub padded_rows: usize,
}

impl Packed {
    pub fn new(src: MatRef, width: usize, kc: usize) -> Self {
        let mut buf = AlignedBuf::zeroed(src.rows.div_ceil(width) * width * src.cols);
        let padded_rows = pack_whole(buf.get_mut(buf.len()), src, width, kc);
        Packed {
            buf: Arc::new(buf),
            offset: 0,
            padded_rows,
        }
    }

    /// Packs a `rows × depth` panel-major matrix into `buf` (grown as needed), block by
    /// block on the rayon pool: `pack_block(dst, rows, depth)` packs one block into `dst`
    /// in panels of `width`, as `pack` does. [`Packed::into_buf`] gives the buffer back.
    pub fn par_new(
        mut buf: AlignedBuf,
        rows: usize,
        depth: usize,
        width: usize,
        kc: usize,
        pack_block: impl Fn(&mut [f32], Range<usize>, Range<usize>) + Sync,
    ) -> Self {
        let padded_rows = rows.div_ceil(width) * width;
        let dst = buf.get_mut(padded_rows * depth);
        // One task per thread: a rayon task costs microseconds, a depth block's packing
        // little more. Whole depth blocks each where there are enough of them, else parts
        // of every block's panels.
        let threads = parallel::threads();
        let blocks = depth.div_ceil(kc);
        let panels = padded_rows / width;
        let per_task = if blocks >= threads {
            panels
        } else {
            panels.div_ceil(threads).max(1)
        };
        let mut pieces = Vec::new();
        let mut rest = dst;
        for p0 in (0..depth).step_by(kc) {
            let kc_len = kc.min(depth - p0);
            let (block, tail) = rest.split_at_mut(padded_rows * kc_len);
            rest = tail;
            for (t, chunk) in block.chunks_mut(per_task * width * kc_len).enumerate() {
                let r0 = t * per_task * width;
                let r1 = (r0 + per_task * width).min(rows);
                pieces.push((chunk, r0..r1, p0..p0 + kc_len));
            }
        }
        let per_thread = pieces.len().div_ceil(threads).max(1);
        let mut tasks = Vec::new();
        while !pieces.is_empty() {
            let take = per_thread.min(pieces.len());
            tasks.push(pieces.drain(..take).collect::<Vec<_>>());
        }
        parallel::for_each(tasks.into_par_iter(), |task| {
            for (dst, rows, depth) in task {
                pack_block(dst, rows, depth);
            }
        });
        Packed {
            buf: Arc::new(buf),
            offset: 0,
            padded_rows,
        }
    }

    /// The buffer of a matrix packed by [`Packed::par_new`], for reuse (`None` while a clone
    /// of this `Packed` still shares it).
    pub fn into_buf(self) -> Option<AlignedBuf> {
        Arc::try_unwrap(self.buf).ok()
    }

    /// The panels of rows `r0..` (`r0` a multiple of `width`) of the depth block at `p0`
    /// (`p0` a multiple of `kc`) of depth `kc_len`.
    pub fn block(&self, r0: usize, p0: usize, kc_len: usize) -> &[f32] {
        &self.buf.as_slice()[self.offset + p0 * self.padded_rows + r0 * kc_len..]
    }
}

/// Matrices of one shape packed one after another into a single buffer, which they then share.
///
/// A 3×3 convolution on the Winograd path has 36 of them, a grouped one one per group: each
/// alone is too small for huge pages (see `huge_pages`) and costs a page fault per 4 KiB at
/// load; together they usually are not, and fault once per 2 MiB.
pub(super) struct PackedStack {
    buf: AlignedBuf,
    rows: usize,
    cols: usize,
    width: usize,
    kc: usize,
    /// Rows packed so far of each matrix.
    filled: Vec<usize>,
}

impl PackedStack {
    /// Room for `count` matrices of `rows × cols` (panel-major view, see module docs).
    pub fn new(count: usize, rows: usize, cols: usize, width: usize, kc: usize) -> Self {
        PackedStack {
            buf: AlignedBuf::zeroed(count * rows.div_ceil(width) * width * cols),
            rows,
            cols,
            width,
            kc,
            filled: vec![0; count],
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows a [`PackedStack::push_rows`] block starts on a multiple of.
    pub fn width(&self) -> usize {
        self.width
    }

    fn each(&self) -> usize {
        self.rows.div_ceil(self.width) * self.width * self.cols
    }

    /// Packs the next matrix whole; an error when it is not `rows × cols` or the stack is full.
    pub fn push(&mut self, src: MatRef) -> Result<(), GemmError> {
        let index = self.filled.iter().position(|&r| r == 0);
        match index {
            Some(index) if src.rows == self.rows => self.push_rows(index, 0, src),
            _ => Err(err(format!(
                "cannot stack a {}x{} matrix onto {} matrices of {}x{}",
                src.rows,
                src.cols,
                self.filled.len(),
                self.rows,
                self.cols
            ))),
        }
    }

    /// Packs `src` as rows `r0..r0 + src.rows` of matrix `index`: the rows after those packed
    /// so far, starting on a multiple of [`PackedStack::width`] and ending on one or at the
    /// last row, so that whole panels are written. A caller that builds each matrix a block of
    /// rows at a time (a transform of the weights) needs no whole-matrix temporary.
    pub fn push_rows(&mut self, index: usize, r0: usize, src: MatRef) -> Result<(), GemmError> {
        let r1 = r0.saturating_add(src.rows);
        let fits = index < self.filled.len()
            && self.filled[index] == r0
            && src.cols == self.cols
            && r1 <= self.rows
            && r0.is_multiple_of(self.width)
            && (r1.is_multiple_of(self.width) || r1 == self.rows);
        if !fits {
            return Err(err(format!(
                "cannot pack {} rows of {} at row {r0} of matrix {index} of {} ({}x{}, {} rows \
                 packed, panels of {})",
                src.rows,
                src.cols,
                self.filled.len(),
                self.rows,
                self.cols,
                self.filled.get(index).copied().unwrap_or(0),
                self.width
            )));
        }
        let padded_rows = self.rows.div_ceil(self.width) * self.width;
        let start = index * self.each();
        let matrix = &mut self.buf.get_mut(start + self.each())[start..];
        let mut p0 = 0;
        while p0 < self.cols {
            let p1 = (p0 + self.kc).min(self.cols);
            // The panels of rows `r0..` of the depth block at `p0` (see module docs).
            let at = p0 * padded_rows + r0 * (p1 - p0);
            pack(&mut matrix[at..], src, 0..src.rows, p0..p1, self.width);
            p0 = p1;
        }
        self.filled[index] = r1;
        Ok(())
    }

    /// The matrices packed, in order, up to the first one not yet whole.
    pub fn finish(self) -> Vec<Packed> {
        let (each, padded_rows) = (self.each(), self.rows.div_ceil(self.width) * self.width);
        let whole = self.filled.iter().take_while(|&&r| r == self.rows).count();
        let buf = Arc::new(self.buf);
        (0..whole)
            .map(|i| Packed {
                buf: buf.clone(),
                offset: i * each,
                padded_rows,
            })
            .collect()
    }
}

/// Packs all of `src` into `dst` (which holds exactly its padded size) in depth blocks of
/// `kc`; returns the padded row count.
fn pack_whole(dst: &mut [f32], src: MatRef, width: usize, kc: usize) -> usize {
    let padded_rows = src.rows.div_ceil(width) * width;
    let mut p0 = 0;
    while p0 < src.cols {
        let p1 = (p0 + kc).min(src.cols);
        pack(
            &mut dst[p0 * padded_rows..],
            src,
            0..src.rows,
            p0..p1,
            width,
        );
        p0 = p1;
    }
    padded_rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_are_depth_major_and_zero_padded() {
        // P = [[1, 2, 3], [4, 5, 6], [7, 8, 9]] (3 rows × depth 3), width 2.
        let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let p = MatRef::new(&data, 3, 3, 3, 1).unwrap();
        let mut dst = [f32::NAN; 12];
        assert_eq!(pack(&mut dst, p, 0..3, 0..3, 2), 12);
        assert_eq!(
            dst,
            [1.0, 4.0, 2.0, 5.0, 3.0, 6.0, 7.0, 0.0, 8.0, 0.0, 9.0, 0.0]
        );
        // The same matrix stored column-major packs identically (contiguous-rows path).
        let t = [1.0, 4.0, 7.0, 2.0, 5.0, 8.0, 3.0, 6.0, 9.0];
        let pt = MatRef::new(&t, 3, 3, 1, 3).unwrap();
        let mut dst2 = [f32::NAN; 12];
        pack(&mut dst2, pt, 0..3, 0..3, 2);
        assert_eq!(dst, dst2);
    }

    #[test]
    fn packing_in_parallel_lays_out_what_packing_whole_does() {
        // Depth blocks of 4 (the last short), panels of 3 (the last padded), on a pool of
        // 3 threads: several depth blocks per task, and fewer blocks than threads.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for (rows, depth) in [(10, 11), (7, 3), (1, 1)] {
            let data: Vec<f32> = (0..rows * depth).map(|i| i as f32 + 1.0).collect();
            let p = MatRef::new(&data, rows, depth, depth, 1).unwrap();
            let whole = Packed::new(p, 3, 4);
            let parallel = pool.install(|| {
                Packed::par_new(AlignedBuf::default(), rows, depth, 3, 4, |dst, r, d| {
                    pack(dst, p, r, d, 3);
                })
            });
            assert_eq!(parallel.padded_rows, whole.padded_rows);
            let len = whole.padded_rows * depth;
            assert_eq!(
                parallel.block(0, 0, 4)[..len],
                whole.block(0, 0, 4)[..len],
                "{rows}x{depth}"
            );
        }
    }
}
