//! A channel-blocked (NCHW16c) image as an operand of a product: the right one `B[C, HW]`,
//! the channels as its rows, as a 1×1 convolution with planes out reads its input; or the
//! left one `A[HW, C]` (`Lhs::Blocked`), the positions as rows, with blocks out.

use super::kernel::COL_BLOCK;
use super::{err, GemmError, PanelSource};
use crate::transpose::transpose_strided;
use std::ops::Range;

/// `B[c, p]` is channel `c` of position `p` of one image stored as `C / 16` blocks of
/// `positions × 16` floats (see `MatMut::column_blocked`, which writes that layout). Its
/// panels are packed straight from the blocks, 16 positions × 16 channels at a time through a
/// register transpose: no NCHW copy of the image is ever made.
#[derive(Debug)]
pub struct BlockedRhs<'a> {
    data: &'a [f32],
    channels: usize,
    positions: usize,
}

impl<'a> BlockedRhs<'a> {
    /// The image `data` of `channels × positions`, blocked (the last block padded to 16).
    pub fn new(data: &'a [f32], channels: usize, positions: usize) -> Result<Self, GemmError> {
        let len = channels
            .div_ceil(COL_BLOCK)
            .checked_mul(COL_BLOCK * positions)
            .ok_or_else(|| err(format!("{channels}x{positions} blocked image overflows")))?;
        if data.len() < len {
            return Err(err(format!(
                "a blocked {channels}x{positions} image needs {len} floats, got {}",
                data.len()
            )));
        }
        Ok(BlockedRhs {
            data,
            channels,
            positions,
        })
    }
}

impl BlockedRhs<'_> {
    /// Whether the channels fill their blocks, as a blocked-A kernel needs.
    pub(super) fn whole_blocks(&self) -> bool {
        self.channels.is_multiple_of(COL_BLOCK)
    }

    /// Floats from one channel block to the next.
    pub(super) fn block_stride(&self) -> usize {
        self.positions * COL_BLOCK
    }

    /// The cell of position `position`, channel `channel` (a multiple of `COL_BLOCK`).
    ///
    /// # Panics
    /// If the cell is outside the image (the driver only asks for its own tiles').
    pub(super) fn cell(&self, position: usize, channel: usize) -> *const f32 {
        debug_assert!(channel.is_multiple_of(COL_BLOCK));
        let at = channel / COL_BLOCK * self.block_stride() + position * COL_BLOCK;
        self.data[at..].as_ptr()
    }
}

impl PanelSource for BlockedRhs<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.channels, self.positions)
    }

    fn pack(&self, dst: &mut [f32], depth: Range<usize>, cols: Range<usize>, width: usize) {
        let k = depth.len();
        if k == 0 {
            return;
        }
        for (q, panel) in dst.chunks_exact_mut(width * k).enumerate() {
            let p0 = cols.start + q * width;
            let w = width.min(cols.end - p0);
            if w < width {
                for row in panel.chunks_exact_mut(width) {
                    row[w..].fill(0.0);
                }
            }
            // The depth range in runs that stay inside one channel block: each a `w × run`
            // matrix of cells (16 floats apart) transposed into `run` panel rows.
            let mut c = depth.start;
            while c < depth.end {
                let (block, lane) = (c / COL_BLOCK, c % COL_BLOCK);
                let run = (COL_BLOCK - lane).min(depth.end - c);
                let src = &self.data[(block * self.positions + p0) * COL_BLOCK + lane..];
                let dst = &mut panel[(c - depth.start) * width..];
                transpose_strided(src, COL_BLOCK, w, run, dst, width);
                c += run;
            }
        }
    }
}
