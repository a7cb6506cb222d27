//! Packing operands into the panel layout the microkernels read.
//!
//! Both operands are packed by the same routine, seen as a "panel-major" matrix `P` of shape
//! `width_dim × k`: for `A` that is `A` itself (panels of `MR` rows), for `B` it is `Bᵀ`
//! (panels of `NR` columns). A block `rows r0..r1, depth p0..p1` is laid out panel after panel;
//! panel `q` holds, for each `p` in the depth range, the `width` values `P[r0 + q·width + i, p]`,
//! zero past `r1`. A whole prepacked matrix is the concatenation over depth blocks of `kc`,
//! so the panel covering row `r` (a multiple of `width`) of the block starting at depth `p0`
//! begins at `p0 · padded_rows + r · block_depth`.

use super::{pack_stream, MatRef};
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
    pack_panels(dst, src, rows, depth, width, false)
}

/// [`pack`], with `streaming` for an operand packed once and read much later: full panels are
/// then written with streaming stores where `pack_stream` handles their layout (the caller
/// calls `pack_stream::fence` before sharing `dst`).
fn pack_panels(
    dst: &mut [f32],
    src: MatRef,
    rows: Range<usize>,
    depth: Range<usize>,
    width: usize,
    streaming: bool,
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
        if streaming && valid == width && pack_stream::panel(panel, src, r0, depth.start, width) {
            continue;
        }
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
                #[cfg(target_arch = "x86_64")]
                6 if crate::isa::x86_has(crate::isa::X86Level::Avx2) => {
                    // SAFETY: AVX2 was just detected; the rows and depth range are inside
                    // `src` (asserted above) and `panel` holds their `6 · kc` values.
                    unsafe { gather_rows6_avx2(panel, src, r0, depth.start) }
                }
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

/// `gather_rows::<6>` (the AVX2 kernel's A panels) through registers: 8 depth steps of the 6
/// rows (and rows 4 and 5 again, as padding) loaded and transposed 8×8 at a time, each
/// transposed step stored 8 wide over the next step's first 2 values, which its own store then
/// rewrites. Element by element, packing a MatMul's activations took 7 % of MiniLM's time on
/// Zen 3 (6 rows do not vectorize on their own).
///
/// # Safety
/// The CPU has AVX2; rows `r0..r0 + 6` and columns `p0..p0 + panel.len() / 6` lie inside `src`,
/// whose columns are contiguous (`col_stride == 1`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_rows6_avx2(panel: &mut [f32], src: MatRef, r0: usize, p0: usize) {
    use std::arch::x86_64::*;
    const W: usize = 6;
    let kc = panel.len() / W;
    let rows: [&[f32]; W] = std::array::from_fn(|i| {
        let start = (r0 + i) * src.row_stride + p0;
        &src.data[start..start + kc]
    });
    let out = panel.as_mut_ptr();
    let mut p = 0;
    // The last step's 8-wide store reaches 2 floats past it: leave the panel's last step to
    // the scalar tail.
    while p + 8 < kc {
        // SAFETY: loads of 8 values from `p < kc - 8` in each `kc`-long row; the stores write
        // `out[(p + j) · 6..][..8]`, which ends at `(p + 8) · 6 + 2 ≤ kc · 6` inside `panel`.
        unsafe {
            // Loads spelled out: a closure would not inherit the target features.
            let a0 = _mm256_loadu_ps(rows[0].as_ptr().add(p));
            let a1 = _mm256_loadu_ps(rows[1].as_ptr().add(p));
            let a2 = _mm256_loadu_ps(rows[2].as_ptr().add(p));
            let a3 = _mm256_loadu_ps(rows[3].as_ptr().add(p));
            let a4 = _mm256_loadu_ps(rows[4].as_ptr().add(p));
            let a5 = _mm256_loadu_ps(rows[5].as_ptr().add(p));
            // 8×8 transpose of (a0..a5, a4, a5): unpacks pair the rows' values, shuffles
            // gather 4 rows' values, 128-bit permutes join the halves.
            let t0 = _mm256_unpacklo_ps(a0, a1);
            let t1 = _mm256_unpackhi_ps(a0, a1);
            let t2 = _mm256_unpacklo_ps(a2, a3);
            let t3 = _mm256_unpackhi_ps(a2, a3);
            let t4 = _mm256_unpacklo_ps(a4, a5);
            let t5 = _mm256_unpackhi_ps(a4, a5);
            let u0 = _mm256_shuffle_ps::<0b01_00_01_00>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0b11_10_11_10>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0b01_00_01_00>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0b11_10_11_10>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0b01_00_01_00>(t4, t4);
            let u5 = _mm256_shuffle_ps::<0b11_10_11_10>(t4, t4);
            let u6 = _mm256_shuffle_ps::<0b01_00_01_00>(t5, t5);
            let u7 = _mm256_shuffle_ps::<0b11_10_11_10>(t5, t5);
            let steps = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (j, v) in steps.into_iter().enumerate() {
                _mm256_storeu_ps(out.add((p + j) * W), v);
            }
        }
        p += 8;
    }
    gather_rows::<W>(&mut panel[p * W..], src, r0, p0 + p);
}

/// A whole matrix packed for one kernel's `width` and `kc`: depth blocks of `kc`, each a run of
/// panels (see module docs).
#[derive(Clone)]
pub(super) struct Packed {
    /// Shared by the matrices packed together by [`pack_rows`]; read-only once packed.
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

/// Source floats (all matrices' rows together) that [`pack_rows`] has a block of rows produced
/// and packed at a time: 256 KiB, which stay in L2 between the two.
const ROW_BLOCK_FLOATS: usize = 64 << 10;

/// `count` matrices of `rows × cols` (panel-major views, see module docs) packed one after
/// another into a single buffer, which they then share, from rows produced a block at a time:
/// `fill(r0..r1, dst)` writes rows `r0..r1` of every matrix into `dst`, row-major, matrix
/// after matrix (`count · (r1 - r0) · cols` floats). Blocks are whole panels (the last may be
/// ragged), and several go to the rayon pool's threads at once, so `fill` may run on any of
/// them; the first error it returns is returned.
///
/// Weights decoded or transformed a block at a time need no temporary of the whole matrix
/// (whose fresh pages cost more than the packing at load), and the block just produced is
/// still in cache when packed. One shared buffer serves many matrices (the 36 tile points of
/// a Winograd kernel, the groups of a grouped convolution) with fewer, larger allocations.
pub(super) fn pack_rows<E, F>(
    count: usize,
    rows: usize,
    cols: usize,
    width: usize,
    kc: usize,
    fill: F,
) -> Result<Vec<Packed>, E>
where
    E: Send,
    F: Fn(Range<usize>, &mut [f32]) -> Result<(), E> + Sync,
{
    let padded_rows = rows.div_ceil(width) * width;
    let each = padded_rows * cols;
    let mut buf = AlignedBuf::zeroed(count * each);
    if count * each > 0 {
        // Rows per block: whole panels, about `ROW_BLOCK_FLOATS` of source, and enough blocks
        // for every thread where the matrices are worth splitting.
        let panels = padded_rows / width;
        let threads = if count * each >= ROW_BLOCK_FLOATS {
            parallel::threads()
        } else {
            1
        };
        let block_panels = (ROW_BLOCK_FLOATS / (count * width * cols))
            .min(panels.div_ceil(threads))
            .max(1);
        let block_rows = block_panels * width;
        let blocks = panels.div_ceil(block_panels);
        // Each block's destinations: for each matrix and depth block, its run of panels.
        let mut dests: Vec<Vec<&mut [f32]>> = (0..blocks).map(|_| Vec::new()).collect();
        for matrix in buf.get_mut(count * each).chunks_exact_mut(each) {
            let mut rest = matrix;
            for p0 in (0..cols).step_by(kc) {
                let kc_len = kc.min(cols - p0);
                let (depth_block, tail) = rest.split_at_mut(padded_rows * kc_len);
                rest = tail;
                for (b, run) in depth_block.chunks_mut(block_rows * kc_len).enumerate() {
                    dests[b].push(run);
                }
            }
        }
        // One task per thread (a contiguous run of blocks), each with one scratch block.
        let per_task = blocks.div_ceil(threads);
        let mut tasks = Vec::new();
        let mut first = 0;
        let mut dests = dests.into_iter();
        while first < blocks {
            let run: Vec<_> = dests.by_ref().take(per_task).collect();
            let next = first + run.len();
            tasks.push((first, run));
            first = next;
        }
        parallel::try_for_each(tasks.into_par_iter(), |(first, run)| {
            let mut scratch = vec![0.0; count * block_rows.min(rows) * cols];
            for (b, runs) in (first..).zip(run) {
                let r0 = b * block_rows;
                let n = block_rows.min(rows - r0);
                let src = &mut scratch[..count * n * cols];
                fill(r0..r0 + n, src)?;
                let mut runs = runs.into_iter();
                for matrix in src.chunks_exact(n * cols) {
                    let matrix = MatRef {
                        data: matrix,
                        rows: n,
                        cols,
                        row_stride: cols,
                        col_stride: 1,
                    };
                    for (p0, dst) in (0..cols).step_by(kc).zip(runs.by_ref()) {
                        pack_panels(dst, matrix, 0..n, p0..(p0 + kc).min(cols), width, true);
                    }
                }
            }
            pack_stream::fence();
            Ok(())
        })?;
    }
    let buf = Arc::new(buf);
    Ok((0..count)
        .map(|i| Packed {
            buf: buf.clone(),
            offset: i * each,
            padded_rows,
        })
        .collect())
}

/// Packs all of `src` into `dst` (which holds exactly its padded size) in depth blocks of
/// `kc`, for an operand packed once (streaming stores); returns the padded row count.
fn pack_whole(dst: &mut [f32], src: MatRef, width: usize, kc: usize) -> usize {
    let padded_rows = src.rows.div_ceil(width) * width;
    let mut p0 = 0;
    while p0 < src.cols {
        let p1 = (p0 + kc).min(src.cols);
        pack_panels(
            &mut dst[p0 * padded_rows..],
            src,
            0..src.rows,
            p0..p1,
            width,
            true,
        );
        p0 = p1;
    }
    pack_stream::fence();
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
    fn streamed_panels_are_the_panels_packed() {
        // Both orientations, widths the streaming path takes (4, 8, 32) and one it leaves to
        // the ordinary one (6), a depth that is no multiple of 4, a ragged last panel, and a
        // destination 16-byte aligned (a whole panel) or not (offset by one float).
        for (width, depth) in [(4, 9), (8, 13), (32, 7), (6, 5), (8, 3)] {
            let rows = 2 * width + 1;
            let data: Vec<f32> = (0..rows * depth).map(|i| i as f32 * 0.5 - 3.0).collect();
            let by_rows = MatRef::new(&data, rows, depth, depth, 1).unwrap();
            let by_cols = MatRef::new(&data, rows, depth, 1, rows).unwrap();
            for src in [by_rows, by_cols] {
                for skip in [0, 1] {
                    let len = rows.div_ceil(width) * width * depth;
                    let mut want = AlignedBuf::default();
                    let want = &mut want.get_mut(len + 1)[skip..];
                    want.fill(f32::NAN);
                    let mut got = AlignedBuf::default();
                    let got = &mut got.get_mut(len + 1)[skip..];
                    got.fill(f32::NAN);
                    pack(want, src, 0..rows, 0..depth, width);
                    pack_panels(got, src, 0..rows, 0..depth, width, true);
                    pack_stream::fence();
                    assert_eq!(
                        got[..len],
                        want[..len],
                        "width {width}, depth {depth}, skip {skip}"
                    );
                }
            }
        }
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
