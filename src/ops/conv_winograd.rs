//! Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions: 36 multiplies per 4×4 output tile
//! and input channel instead of 144. onnxruntime's CPU provider convolves these by im2col
//! GEMM. The transforms are `infer_kernels::winograd`'s; this file runs the 36 products
//! between them: `Mp[M, tiles] = Up[M, C] · Vp[C, tiles]` for each tile point `p`, whose
//! depth is `C` rather than im2col's `9·C`.
//!
//! Buffers: `V` is `[C][36][tiles]` (the input transform writes one channel per task), the
//! products `[36][M][tiles]` (one GEMM per task); `tiles` counts the tiles of every image.

use super::conv::Geometry;
use crate::error::Result;
use crate::tensor::{spare, Tensor};
use infer_kernels::gemm::{gemm_serial, Activation, Epilogue, Lhs, MatMut, MatRef, PackedA, Rhs};
use infer_kernels::parallel;
use infer_kernels::winograd::{self, Scratch, TileGrid, POINTS};
use rayon::prelude::*;

/// A 3×3 kernel of `m` output and `c` input channels in the Winograd domain: one packed
/// `[m, c]` matrix per tile point.
#[derive(Debug)]
pub(super) struct WinogradWeights {
    points: Vec<PackedA>,
    m: usize,
    c: usize,
}

/// Where one run's outputs go and what is added to them.
pub(super) struct WinogradOutput<'a> {
    pub y: &'a mut [f32],
    pub bias: Option<&'a [f32]>,
    /// Same shape as `y`.
    pub residual: Option<&'a [f32]>,
    pub activation: Option<Activation>,
}

impl WinogradWeights {
    /// Transforms weights `[m, c, 3, 3]` (f32).
    pub fn new(w: &Tensor, m: usize, c: usize) -> Result<Self> {
        crate::ensure!(
            w.len() == m * c * 9,
            "3x3 weights of {m}x{c} channels need {} values, got {}",
            m * c * 9,
            w.len()
        );
        // Output channels are read and transformed a block at a time and packed right away:
        // the transform of all of them, 4× the weights, was a temporary whose fresh pages
        // cost more than the transform itself at load.
        let points = PackedA::stack_from_rows(POINTS, m, c, |rows, u| -> Result<()> {
            let n = rows.len();
            let mut g = vec![0.0; n * c * 9];
            w.read_f32_into(rows.start * c * 9, &mut g)?;
            winograd::transform_weights_into(&g, n, c, u);
            Ok(())
        })?;
        Ok(WinogradWeights { points, m, c })
    }

    /// Whether this kernel computes `geo` (a 2-D 3×3 convolution with unit stride and
    /// dilation; any padding).
    pub fn fits(geo: &Geometry) -> bool {
        geo.input[0] == 1
            && geo.output[0] == 1
            && geo.kernel == [1, 3, 3]
            && geo.stride == [1; 3]
            && geo.dilation == [1; 3]
    }

    /// `y = conv(x)` for `batch` images of `c` channels (NCHW), then bias, residual and
    /// activation. `geo` must `fit`.
    pub fn run(&self, geo: &Geometry, batch: usize, x: &[f32], out: WinogradOutput) -> Result<()> {
        let grid = TileGrid::new(
            [geo.input[1], geo.input[2]],
            [geo.output[1], geo.output[2]],
            [geo.pad[1], geo.pad[2]],
        );
        let per_image = grid.tiles();
        let all = batch * per_image;
        let (m, c) = (self.m, self.c);
        let in_len = geo.input_len();
        crate::ensure!(
            x.len() == batch * c * in_len && out.y.len() == batch * m * geo.output_len(),
            "Winograd convolution: buffers do not match the geometry"
        );
        if all == 0 || m == 0 {
            return Ok(());
        }

        // Rows of V (one tile point of one channel) end in the transform's slack.
        let v_row = all + winograd::ROW_SLACK;
        let mut v = spare::f32_output(c * POINTS * v_row)?;
        parallel::for_each_init(
            v.par_chunks_mut(POINTS * v_row).enumerate(),
            Scratch::default,
            |scratch, (ch, v_ch)| {
                for n in 0..batch {
                    let plane = &x[(n * c + ch) * in_len..(n * c + ch + 1) * in_len];
                    let dst = n * per_image;
                    winograd::input_transform(&grid, plane, v_ch, v_row, dst, scratch);
                }
            },
        );

        // The output transform reads whole vectors past the last point's tiles.
        let mut products = spare::f32_output(POINTS * m * all + winograd::ROW_SLACK)?;
        parallel::try_for_each(
            products
                .par_chunks_mut(m * all)
                .zip(&self.points)
                .enumerate(),
            |(p, (mp, up))| -> Result<()> {
                let vp = MatRef::new(&v[p * v_row..], c, all, POINTS * v_row, 1)?;
                let mp = MatMut::row_major(mp, m, all)?;
                gemm_serial(Lhs::Packed(up), Rhs::Mat(vp), mp, &Epilogue::default())?;
                Ok(())
            },
        )?;
        v.give_back();

        let out_len = geo.output_len();
        parallel::for_each_init(
            out.y.par_chunks_mut(out_len).enumerate(),
            Scratch::default,
            |scratch, (plane, y)| {
                let (n, ch) = (plane / m, plane % m);
                let src = ch * all + n * per_image;
                winograd::output_transform(&grid, &products, m * all, src, y, scratch);
                if let Some(b) = out.bias {
                    y.iter_mut().for_each(|v| *v += b[ch]);
                }
                if let Some(r) = out.residual {
                    let r = &r[plane * out_len..(plane + 1) * out_len];
                    y.iter_mut().zip(r).for_each(|(v, r)| *v += r);
                }
                if let Some(act) = out.activation {
                    infer_kernels::elementwise::apply_activation(act, y);
                }
            },
        );
        products.give_back();
        Ok(())
    }
}
