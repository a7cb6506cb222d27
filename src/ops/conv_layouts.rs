//! Conv on channels-last (NHWC) and channel-blocked (NCHW16c) tensors, for the layers the
//! planner hands over in those layouts (`plan::channels_last`, `plan::blocked`): pointwise
//! (1×1, stride 1, unpadded, one group) and depthwise 2-D convolutions, inside chains such
//! as MobileNet's expand → depthwise → project blocks.
//!
//! A channels-last tensor is stored as `[N, H, W, C]`, a blocked one as `[N, C/16, H, W, 16]`;
//! each side of a layer has its own layout, so a chain's first and last layers convert on the
//! fly instead of a separate transpose. Pointwise layers with a channels-last or blocked
//! output are the product `Y[HW, M] = X[HW, C] · Wᵀ[C, M]` (weights packed as the right
//! operand once; an NCHW input is the same `X` read with strides; a blocked output is the
//! GEMM's column-blocked C), and with an NCHW output the usual `W · X` with `X = [C, HW]` read
//! with strides, or packed from channel blocks (`gemm::BlockedRhs`). Depthwise layers copy 16
//! channels per cell into and out of their scratch (`depthwise_lanes::depthwise_image`) where
//! NCHW needs transposes; a blocked group is one contiguous range. Any other one-group
//! convolution (a network's stem) writes blocks from NCHW planes as
//! `Y[OHW, M] = patches(X)ᵀ · Wᵀ`, its patches packed straight into the GEMM's row panels.

use super::conv::{Conv, Geometry, PackedWeights};
use super::conv_patches::Patches;
use super::conv_pool::{pool_image, ConvRows, PoolAfter};
use super::matmul::{f32_data, from_f32_output};
use super::util::{input, opt_input};
use crate::error::Result;
use crate::ir::Attrs;
use crate::tensor::Tensor;
use crate::{ensure, op_err};
use infer_kernels::depthwise::PlaneGeometry;
use infer_kernels::depthwise_lanes::{depthwise_image, LanesWeights, Layout};
use infer_kernels::gemm::{
    gemm, reads_blocked_lhs, Activation, Bias, BlockedRhs, Epilogue, GemmError, Lhs, MatMut,
    MatRef, PackedA, PackedB, Rhs, COL_BLOCK,
};
use infer_kernels::stem::{self, StemRows};
use infer_kernels::transpose::transpose_strided;
use std::borrow::Cow;

/// Internal attributes the planner sets on a Conv whose input or output it keeps in another
/// layout than NCHW: the layout's [`layout_code`].
pub const INPUT_ATTR: &str = "_layout_input";
pub const OUTPUT_ATTR: &str = "_layout_output";

/// The value of `INPUT_ATTR` / `OUTPUT_ATTR` for `layout`.
pub fn layout_code(layout: Layout) -> i64 {
    match layout {
        Layout::Planes => 0,
        Layout::ChannelsLast => 1,
        Layout::Blocked => 2,
    }
}

/// The layout of each side of a Conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvLayout {
    pub input: Layout,
    pub output: Layout,
}

impl Default for ConvLayout {
    fn default() -> Self {
        ConvLayout {
            input: Layout::Planes,
            output: Layout::Planes,
        }
    }
}

impl ConvLayout {
    pub fn parse(attrs: &Attrs) -> Result<Self> {
        let side = |name: &str| match attrs.int_or(name, 0)? {
            0 => Ok(Layout::Planes),
            1 => Ok(Layout::ChannelsLast),
            2 => Ok(Layout::Blocked),
            other => Err(op_err!("{name} = {other} is not a layout")),
        };
        Ok(ConvLayout {
            input: side(INPUT_ATTR)?,
            output: side(OUTPUT_ATTR)?,
        })
    }

    /// Whether either side is not NCHW.
    pub fn any(self) -> bool {
        self != ConvLayout::default()
    }
}

/// `[N, C, H, W]` for a layout: the dims of a tensor stored in it.
fn nchw(shape: &[usize], layout: Layout) -> Result<[usize; 4]> {
    match (layout, shape) {
        (Layout::Planes, &[n, c, h, w]) => Ok([n, c, h, w]),
        (Layout::ChannelsLast, &[n, h, w, c]) => Ok([n, c, h, w]),
        (Layout::Blocked, &[n, blocks, h, w, COL_BLOCK]) => Ok([n, blocks * COL_BLOCK, h, w]),
        _ => Err(op_err!(
            "a tensor of shape {shape:?} is not a 2-D feature map in the {layout:?} layout"
        )),
    }
}

/// The shape of an `[N, C, H, W]` tensor stored in `layout`.
fn shape_in(layout: Layout, [n, c, h, w]: [usize; 4]) -> Result<Vec<usize>> {
    Ok(match layout {
        Layout::Planes => vec![n, c, h, w],
        Layout::ChannelsLast => vec![n, h, w, c],
        Layout::Blocked => {
            ensure!(
                c % COL_BLOCK == 0,
                "{c} channels are not whole blocks of {COL_BLOCK}"
            );
            vec![n, c / COL_BLOCK, h, w, COL_BLOCK]
        }
    })
}

/// Runs `conv` (whose layout has a channels-last or blocked side) on `inputs`.
pub(super) fn run(conv: &Conv, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let layout = conv.layout;
    let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
    let [n, c, h, wd] = nchw(x.shape(), layout.input)?;
    let ws = w.shape();
    let depthwise = ws.len() == 4 && ws[1] == 1 && ws[0] == conv.group && conv.group == c;
    let dense = ws.len() == 4 && conv.group == 1 && ws[1] == c;
    // Any other dense convolution writes blocks from its patches (MobileNet's stem into
    // its first depthwise layer); it reads planes.
    let patches = dense && layout.input == Layout::Planes && layout.output == Layout::Blocked;
    ensure!(
        depthwise || (dense && ws[2..] == [1, 1]) || patches,
        "channels-last layout is planned only for pointwise and depthwise 2-D convolutions; \
         weights {ws:?} with group {} on input {:?} are neither",
        conv.group,
        x.shape()
    );
    let geo = conv.spatial.resolve(&[h, wd], &ws[2..], false)?;
    let g = geo
        .plane()
        .ok_or_else(|| op_err!("not a 2-D convolution"))?;
    let pointwise = dense && geo_is_pointwise(&g);
    ensure!(
        depthwise || pointwise || patches,
        "pointwise convolutions here take no stride or padding"
    );
    let m = ws[0];
    let [oh, ow] = g.output;
    let out_shape = shape_in(layout.output, [n, m, oh, ow])?;
    let bias = opt_input(inputs, 2).map(f32_data).transpose()?;
    ensure!(
        bias.as_ref().is_none_or(|b| b.len() == m),
        "bias must have {m} elements"
    );
    let residual = opt_input(inputs, 3);
    if let Some(r) = residual {
        ensure!(
            r.shape() == out_shape && layout.output != Layout::Blocked,
            "residual of shape {:?} does not fit the {:?} output {out_shape:?}",
            r.shape(),
            layout.output
        );
    }
    let residual = residual.map(f32_data).transpose()?;
    let xd = f32_data(x)?;
    let prepared = conv
        .packed
        .as_ref()
        .filter(|(_, shape)| shape == ws)
        .map(|(p, _)| p);
    if let Some(pool) = &conv.pool {
        ensure!(
            patches,
            "a max pool is fused only after a convolution that writes blocks from its patches"
        );
        let bias = bias.as_deref();
        return run_pooled(conv, pool, &geo, &g, [x, w], [n, c, m], prepared, bias);
    }
    let (in_len, out_len) = (h * wd, oh * ow);
    let mut out = crate::tensor::spare::f32_output(crate::tensor::checked_numel(&out_shape)?)?;
    if pointwise {
        let wd_stored;
        let weights = match prepared {
            Some(PackedWeights::Gemm(p)) => Weights::Packed {
                left: Some(&p[0]),
                right: None,
            },
            Some(PackedWeights::PointwiseBoth { left, right }) => Weights::Packed {
                left: Some(left),
                right: Some(right),
            },
            Some(PackedWeights::Transposed(right)) => Weights::Packed {
                left: None,
                right: Some(right),
            },
            _ => {
                wd_stored = f32_data(w)?;
                Weights::Stored(&wd_stored)
            }
        };
        for i in 0..n {
            let x = &xd[i * c * in_len..][..c * in_len];
            let y = &mut out[i * m * out_len..][..m * out_len];
            let r = residual
                .as_deref()
                .map(|r| &r[i * m * out_len..][..m * out_len]);
            let image = PointwiseImage {
                layout,
                dims: [c, m, in_len],
                weights: &weights,
                bias: bias.as_deref(),
                residual: r,
                activation: conv.activation,
            };
            image.run(x, y)?;
        }
    } else if patches {
        // (A residual was refused above: it never comes with a blocked output.)
        if let Some(PackedWeights::Stem(sw)) = prepared {
            let mut direct = true;
            for (x, y) in xd
                .chunks_exact(c * in_len)
                .zip(out.chunks_exact_mut(m * out_len))
            {
                let (b, act) = (bias.as_deref(), conv.activation);
                direct &= stem::stem_image(&g, c, x, sw, b, act, y);
            }
            if direct {
                return Ok(vec![from_f32_output(x.dtype(), out_shape, out)?]);
            }
        }
        for i in 0..n {
            let x = &xd[i * c * in_len..][..c * in_len];
            let y = &mut out[i * m * out_len..][..m * out_len];
            blocks_from_patches(conv, &geo, x, w, prepared, bias.as_deref(), y)?;
        }
    } else {
        let interleaved;
        let lanes = match prepared {
            Some(PackedWeights::Lanes(l)) => l,
            _ => {
                interleaved = LanesWeights::new(&f32_data(w)?, m, g.kernel[0] * g.kernel[1]);
                &interleaved
            }
        };
        // Relu and Clip clamp as the outputs are stored, any other activation runs on the
        // group's cells; with a residual both wait for it.
        let (clamp, activation) = match (conv.activation, &residual) {
            (Some(Activation::Relu), None) => (Some((0.0, f32::INFINITY)), None),
            (Some(Activation::Clip(lo, hi)), None) => (Some((lo, hi)), None),
            (act, None) => (None, act),
            (_, Some(_)) => (None, None),
        };
        for i in 0..n {
            let x = &xd[i * c * in_len..][..c * in_len];
            let y = &mut out[i * m * out_len..][..m * out_len];
            let (xl, yl) = (layout.input, layout.output);
            depthwise_image(&g, x, xl, lanes, bias.as_deref(), clamp, activation, y, yl);
        }
        if let Some(r) = residual.as_deref() {
            out.iter_mut().zip(r).for_each(|(y, r)| *y += r);
            if let Some(act) = conv.activation {
                infer_kernels::elementwise::apply_activation(act, &mut out);
            }
        }
    }
    Ok(vec![from_f32_output(x.dtype(), out_shape, out)?])
}

/// One image's output channel blocks `y` (`[M/16][OH][OW][16]`) from its input planes `x`
/// by the patches GEMM: `Y[OHW, M] = patches(X)ᵀ[OHW, C·K] · Wᵀ[C·K, M]` into the
/// column-blocked C.
fn blocks_from_patches(
    conv: &Conv,
    geo: &Geometry,
    x: &[f32],
    w: &Tensor,
    prepared: Option<&PackedWeights>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let ws = w.shape();
    let (m, k) = (ws[0], ws[1..].iter().product::<usize>());
    let wd_stored;
    let weights = match prepared {
        // A strided or padded 1×1 kernel was packed as a pointwise one: `Wᵀ[C, M]`.
        Some(PackedWeights::Transposed(p) | PackedWeights::PointwiseBoth { right: p, .. }) => {
            Rhs::Packed(p)
        }
        _ => {
            wd_stored = f32_data(w)?;
            Rhs::Mat(MatRef::new(&wd_stored, k, m, 1, k)?)
        }
    };
    let epilogue = Epilogue {
        bias: bias.map_or(Bias::None, Bias::PerCol),
        activation: conv.activation,
        ..Default::default()
    };
    let out_len = geo.output_len();
    let x = Patches::new(geo, x, k)?;
    let y = MatMut::column_blocked(y, out_len, m, out_len * COL_BLOCK)?;
    gemm(Lhs::Source(&x), weights, y, &epilogue)?;
    Ok(())
}

/// A convolution writing channel blocks with the max pool after it fused
/// (`conv_pool.rs`): the pooled map in NCHW planes.
#[allow(clippy::too_many_arguments)]
fn run_pooled(
    conv: &Conv,
    pool: &PoolAfter,
    geo: &Geometry,
    g: &PlaneGeometry,
    [x, w]: [&Tensor; 2],
    [n, c, m]: [usize; 3],
    prepared: Option<&PackedWeights>,
    bias: Option<&[f32]>,
) -> Result<Vec<Tensor>> {
    ensure!(
        m % COL_BLOCK == 0,
        "{m} channels are not whole blocks of {COL_BLOCK}"
    );
    let pooled = pool.geometry(g.output)?;
    let [ph, pw] = pooled.output;
    let out_shape = vec![n, m, ph, pw];
    let mut out = crate::tensor::spare::f32_output(crate::tensor::checked_numel(&out_shape)?)?;
    let xd = f32_data(x)?;
    let (in_len, conv_len, out_len) = (c * g.input[0] * g.input[1], geo.output_len(), ph * pw);
    for i in 0..n {
        let x = &xd[i * in_len..][..in_len];
        let y = &mut out[i * m * out_len..][..m * out_len];
        let stem = match prepared {
            Some(PackedWeights::Stem(weights)) => {
                StemRows::new(g, c, x, weights, bias, conv.activation)
            }
            _ => None,
        };
        if let Some(stem) = stem {
            pool_image(&ConvRows::Stem(Box::new(stem)), m / COL_BLOCK, &pooled, y);
        } else {
            let mut whole = crate::tensor::spare::f32_output(m * conv_len)?;
            blocks_from_patches(conv, geo, x, w, prepared, bias, &mut whole)?;
            pool_image(&ConvRows::Computed(&whole), m / COL_BLOCK, &pooled, y);
            whole.give_back();
        }
    }
    Ok(vec![from_f32_output(x.dtype(), out_shape, out)?])
}

fn geo_is_pointwise(g: &infer_kernels::depthwise::PlaneGeometry) -> bool {
    g.stride == [1, 1] && g.pad == [0, 0] && g.input == g.output
}

/// A pointwise layer's weights: packed for either side of its product, or as stored
/// (`[M, C]`).
enum Weights<'a> {
    Packed {
        left: Option<&'a PackedA>,
        right: Option<&'a PackedB>,
    },
    Stored(&'a [f32]),
}

impl<'a> Weights<'a> {
    /// `W[M, C]` as the left operand.
    fn left(&self, m: usize, c: usize) -> Result<Lhs<'a>> {
        match *self {
            Weights::Packed { left: Some(a), .. } => Ok(Lhs::Packed(a)),
            Weights::Stored(w) => Ok(Lhs::Mat(MatRef::row_major(w, m, c)?)),
            Weights::Packed { left: None, .. } => Err(op_err!("weights not packed as W")),
        }
    }

    /// `Wᵀ[C, M]` packed as the right operand, if it was.
    fn packed_right(&self) -> Option<&'a PackedB> {
        match *self {
            Weights::Packed { right, .. } => right,
            Weights::Stored(_) => None,
        }
    }

    /// `Wᵀ[C, M]` as the right operand.
    fn right(&self, m: usize, c: usize) -> Result<Rhs<'a>> {
        match *self {
            Weights::Packed { right: Some(b), .. } => Ok(Rhs::Packed(b)),
            Weights::Stored(w) => Ok(Rhs::Mat(MatRef::new(w, c, m, 1, c)?)),
            Weights::Packed { right: None, .. } => Err(op_err!("weights not packed as Wᵀ")),
        }
    }
}

/// Fewest positions for which a channels-last output is computed with the channels as the
/// GEMM's columns. On smaller maps the positions are too few rows for the 8-row tiles (a 7×7
/// map is 6⅛ of them) and the layer ran 40 % slower than in planes (MobileNet-v2's 7×7
/// expansions, 1 thread, Zen 4): there it is computed in planes and transposed. Blocked
/// outputs take the channels-as-columns product on every map: their 7×7 expansions stayed
/// within 0.02 ms of NCHW (`examples/ab_options.rs … blocked`), the transpose would not.
const CHANNELS_AS_COLUMNS_MIN_POSITIONS: usize = 512;

/// Fewest positions for which a projection from blocks into planes takes the positions as
/// its rows (`blocked_to_planes_by_positions`). MobileNet-v2's 14×14 projections ran 0.150–
/// 0.226 ms that way against 0.158–0.252 (1 thread, per-node profile); its 7×7 ones (49
/// rows: 6 tiles and a row the GEMM computes on its own) 0.165–0.174 against 0.183–0.189
/// (960 → 160) and 0.106–0.117 against 0.118–0.120 (576 → 160).
const BY_POSITIONS_MIN_POSITIONS: usize = 32;

/// One image of a pointwise layer.
struct PointwiseImage<'a> {
    layout: ConvLayout,
    /// `[C, M, HW]`.
    dims: [usize; 3],
    weights: &'a Weights<'a>,
    bias: Option<&'a [f32]>,
    /// In the output's layout.
    residual: Option<&'a [f32]>,
    activation: Option<Activation>,
}

impl PointwiseImage<'_> {
    /// `y = conv(x)`, each in its side's layout.
    fn run(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let [c, m, hw] = self.dims;
        if self.layout.input == Layout::Blocked {
            let x = BlockedRhs::new(x, c, hw)?;
            if self.layout.output == Layout::Blocked {
                // Y[HW, M] = X[HW, C] · Wᵀ[C, M], X read from its blocks (in place where the
                // kernel can: the planner hands blocks from one pointwise layer to the next
                // only there) into the column-blocked C; no residual, as for any blocked output.
                let epilogue = self.epilogue(Bias::PerCol, MatRef::row_major, [hw, m])?;
                let y = MatMut::column_blocked(y, hw, m, hw * COL_BLOCK)?;
                gemm(Lhs::Blocked(&x), self.weights.right(m, c)?, y, &epilogue)?;
                return Ok(());
            }
            ensure!(
                self.layout.output == Layout::Planes,
                "a pointwise convolution reads channel blocks only into NCHW planes or blocks"
            );
            if let Some(right) = self.weights.packed_right().filter(|right| {
                reads_blocked_lhs()
                    && c % COL_BLOCK == 0
                    && right.cols() == m.next_multiple_of(COL_BLOCK)
                    && m < c
                    && hw >= BY_POSITIONS_MIN_POSITIONS
            }) {
                return self.blocked_to_planes_by_positions(&x, right, y);
            }
            // Y[M, HW] = W[M, C] · X[C, HW], X's panels packed from its channel blocks.
            let epilogue = self.epilogue(Bias::PerRow, MatRef::row_major, [m, hw])?;
            let y = MatMut::row_major(y, m, hw)?;
            gemm(self.weights.left(m, c)?, Rhs::Source(&x), y, &epilogue)?;
            return Ok(());
        }
        let x_view = if self.layout.input == Layout::ChannelsLast {
            MatRef::row_major(x, hw, c)?
        } else {
            MatRef::new(x, hw, c, 1, hw)?
        };
        if self.layout.output == Layout::Blocked {
            // Y[HW, M] = X[HW, C] · Wᵀ[C, M] into the column-blocked C: 16 output channels
            // per block (no residual: the planner hands such outputs only to convolutions).
            let epilogue = self.epilogue(Bias::PerCol, MatRef::row_major, [hw, m])?;
            let y = MatMut::column_blocked(y, hw, m, hw * COL_BLOCK)?;
            gemm(x_view, self.weights.right(m, c)?, y, &epilogue)?;
        } else if self.layout.output == Layout::Planes {
            // Y[M, HW] = W[M, C] · X[C, HW], X read across its channels-last cells.
            let epilogue = self.epilogue(Bias::PerRow, MatRef::row_major, [m, hw])?;
            let y = MatMut::row_major(y, m, hw)?;
            gemm(self.weights.left(m, c)?, x_view.t(), y, &epilogue)?;
        } else if hw >= CHANNELS_AS_COLUMNS_MIN_POSITIONS || self.layout.input != Layout::Planes {
            // Y[HW, M] = X[HW, C] · Wᵀ[C, M]: an output channel per column.
            let epilogue = self.epilogue(Bias::PerCol, MatRef::row_major, [hw, m])?;
            let y = MatMut::row_major(y, hw, m)?;
            gemm(x_view, self.weights.right(m, c)?, y, &epilogue)?;
        } else {
            // In planes, then transposed into the cells; the residual (cells) read across.
            let by_columns = |r, rows, cols| MatRef::new(r, rows, cols, 1, rows);
            let epilogue = self.epilogue(Bias::PerRow, by_columns, [m, hw])?;
            let mut planes = crate::tensor::spare::f32_output(m * hw)?;
            let product = MatMut::row_major(&mut planes, m, hw)?;
            gemm(self.weights.left(m, c)?, x_view.t(), product, &epilogue)?;
            infer_kernels::transpose::transpose(&planes, m, hw, y);
            planes.give_back();
        }
        Ok(())
    }

    /// A layer from blocks into planes with fewer output than input channels (MobileNet's
    /// projections): `Y[HW, M] = X[HW, C] · Wᵀ[C, M]` with `X` read straight from its blocks
    /// by the kernel into blocks of `Y`, then those transposed into planes. Packing `X` for
    /// `W · X` instead moves all of its `C · HW` floats through register transposes, this
    /// only the `M · HW` of the output (a sixth on MobileNet-v2). `right` is `Wᵀ` padded with
    /// zero columns to whole blocks (24 channels are computed as 32: the product is still
    /// faster than packing `X`).
    fn blocked_to_planes_by_positions(
        &self,
        x: &BlockedRhs,
        right: &PackedB,
        y: &mut [f32],
    ) -> Result<()> {
        let [_, m, hw] = self.dims;
        let padded_m = right.cols();
        // Zero past the real channels, copied only when there are padding columns.
        let bias: Option<Cow<[f32]>> = self.bias.map(|b| {
            if b.len() == padded_m {
                Cow::Borrowed(b)
            } else {
                let mut v = b.to_vec();
                v.resize(padded_m, 0.0);
                Cow::Owned(v)
            }
        });
        // The residual waits for the planes: the blocks are in the wrong layout for it.
        let activation = if self.residual.is_some() {
            None
        } else {
            self.activation
        };
        let epilogue = Epilogue {
            bias: bias.as_deref().map_or(Bias::None, Bias::PerCol),
            activation,
            ..Default::default()
        };
        let mut blocks = crate::tensor::spare::f32_output(padded_m * hw)?;
        let product = MatMut::column_blocked(&mut blocks, hw, padded_m, hw * COL_BLOCK)?;
        gemm(Lhs::Blocked(x), Rhs::Packed(right), product, &epilogue)?;
        for (first, block) in (0..m)
            .step_by(COL_BLOCK)
            .zip(blocks.chunks_exact(hw * COL_BLOCK))
        {
            let channels = COL_BLOCK.min(m - first);
            let planes = &mut y[first * hw..(first + channels) * hw];
            transpose_strided(block, COL_BLOCK, hw, channels, planes, hw);
        }
        blocks.give_back();
        if let Some(r) = self.residual {
            y.iter_mut().zip(r).for_each(|(y, r)| *y += r);
            if let Some(act) = self.activation {
                infer_kernels::elementwise::apply_activation(act, y);
            }
        }
        Ok(())
    }

    /// The product's epilogue for an output of `[rows, cols]`, the bias along `bias`'s axis
    /// and the residual viewed by `residual_view`.
    fn epilogue<'s>(
        &'s self,
        bias: fn(&'s [f32]) -> Bias<'s>,
        residual_view: fn(&'s [f32], usize, usize) -> std::result::Result<MatRef<'s>, GemmError>,
        [rows, cols]: [usize; 2],
    ) -> Result<Epilogue<'s>> {
        Ok(Epilogue {
            bias: self.bias.map_or(Bias::None, bias),
            residual: self
                .residual
                .map(|r| residual_view(r, rows, cols))
                .transpose()?,
            activation: self.activation,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::tests::run_op;
    use super::*;
    use crate::ir::Attr;

    fn conv(attrs: &[(&str, Attr)], inputs: &[Option<&Tensor>], constant_w: bool) -> Tensor {
        run_op("Conv", attrs, inputs, constant_w).unwrap()
    }

    /// `[N, C, H, W]` ↔ `[N, H, W, C]`.
    fn to_last(t: &Tensor) -> Tensor {
        let &[n, c, h, w] = t.shape() else { panic!() };
        let x = t.as_slice::<f32>().unwrap();
        let mut y = vec![0.0; x.len()];
        for (i, v) in x.iter().enumerate() {
            let (b, ch, p) = (i / (c * h * w), i / (h * w) % c, i % (h * w));
            y[(b * h * w + p) * c + ch] = *v;
        }
        Tensor::from_vec(vec![n, h, w, c], y).unwrap()
    }

    /// Same shape, every element within 1e-4 relative (plus 1e-4 absolute).
    fn assert_close(got: &Tensor, want: &Tensor, what: impl Fn() -> String) {
        assert_eq!(got.shape(), want.shape(), "{}", what());
        let (g, e) = (
            got.as_slice::<f32>().unwrap(),
            want.as_slice::<f32>().unwrap(),
        );
        for (i, (a, b)) in g.iter().zip(e).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{} [{i}]: {a} vs {b}",
                what()
            );
        }
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7 + seed * 13) % 23) as f32 - 11.0) / 8.0)
            .collect()
    }

    #[test]
    fn channels_last_sides_match_the_nchw_convolution() {
        let act = |name: &str| Attr::String(name.into());
        // (C, M, H, W, kernel, stride, pad, group, batch)
        let cases = [
            (24, 40, 5, 7, 1, 1, 0, 1, 2),
            // Enough positions for the output channels to be the GEMM's columns.
            (8, 40, 24, 24, 1, 1, 0, 1, 1),
            (17, 9, 3, 3, 1, 1, 0, 1, 1),
            (32, 32, 9, 9, 3, 1, 1, 32, 1),
            (40, 40, 10, 7, 3, 2, 1, 40, 2),
            (19, 19, 6, 6, 5, 1, 2, 19, 1),
        ];
        for (c, m, h, w, k, s, p, group, n) in cases {
            let x = Tensor::from_vec(vec![n, c, h, w], values(n * c * h * w, 1)).unwrap();
            let wt = Tensor::from_vec(vec![m, c / group, k, k], values(m * c / group * k * k, 2))
                .unwrap();
            let b = Tensor::from_vec(vec![m], values(m, 3)).unwrap();
            let mut attrs = vec![
                ("group", Attr::Int(group as i64)),
                ("strides", Attr::Ints(vec![s as i64; 2])),
                ("pads", Attr::Ints(vec![p as i64; 4])),
            ];
            for activation in [None, Some("Clip"), Some("Silu")] {
                attrs.truncate(3);
                if let Some(a) = activation {
                    attrs.extend([("_activation", act(a)), ("_min", Attr::Float(0.0))]);
                    attrs.push(("_max", Attr::Float(1.0)));
                }
                let want = conv(&attrs, &[Some(&x), Some(&wt), Some(&b)], true);
                // With a residual too (the output's shape, in its layout).
                let skip = Tensor::from_vec(
                    want.shape().to_vec(),
                    values(want.shape().iter().product(), 4),
                )
                .unwrap();
                let want_res = conv(&attrs, &[Some(&x), Some(&wt), Some(&b), Some(&skip)], true);
                for (input_last, output_last, constant_w) in [
                    (true, true, true),
                    (false, true, true),
                    (true, false, true),
                    (true, true, false),
                    (false, true, false),
                ] {
                    let mut attrs = attrs.clone();
                    attrs.push((INPUT_ATTR, Attr::Int(input_last as i64)));
                    attrs.push((OUTPUT_ATTR, Attr::Int(output_last as i64)));
                    let xs = if input_last { to_last(&x) } else { x.clone() };
                    for (want, skip) in [(&want, None), (&want_res, Some(&skip))] {
                        let want = if output_last {
                            to_last(want)
                        } else {
                            want.clone()
                        };
                        let skip = skip.map(|r| if output_last { to_last(r) } else { r.clone() });
                        let mut inputs = vec![Some(&xs), Some(&wt), Some(&b)];
                        inputs.extend(skip.as_ref().map(Some));
                        let got = conv(&attrs, &inputs, constant_w);
                        assert_close(&got, &want, || {
                            format!(
                                "case {c}x{m} k{k} s{s} {activation:?} in {input_last} \
                                 out {output_last} residual {}",
                                skip.is_some()
                            )
                        });
                    }
                }
            }
        }
    }

    /// `[N, C, H, W]` → `[N, C/16, H, W, 16]`.
    fn to_blocked(t: &Tensor) -> Tensor {
        let &[n, c, h, w] = t.shape() else { panic!() };
        let x = t.as_slice::<f32>().unwrap();
        let hw = h * w;
        let mut y = vec![0.0; x.len()];
        for (i, v) in x.iter().enumerate() {
            let (b, ch, p) = (i / (c * hw), i / hw % c, i % hw);
            y[((b * c / 16 + ch / 16) * hw + p) * 16 + ch % 16] = *v;
        }
        Tensor::from_vec(vec![n, c / 16, h, w, 16], y).unwrap()
    }

    #[test]
    fn blocked_sides_match_the_nchw_convolution() {
        let act = |name: &str| Attr::String(name.into());
        let (planes, last, blocked) = (Layout::Planes, Layout::ChannelsLast, Layout::Blocked);
        // (C, M, H, W, kernel, stride, group, batch, input layout, output layout)
        let cases = [
            // Expansions: from planes or cells into blocks, small and large maps.
            (24, 96, 7, 7, 1, 1, 1, 2, planes, blocked),
            (16, 32, 23, 25, 1, 1, 1, 1, planes, blocked),
            (8, 48, 5, 6, 1, 1, 1, 1, last, blocked),
            // Pointwise from blocks into blocks (a projection into an expansion).
            (32, 16, 9, 7, 1, 1, 1, 2, blocked, blocked),
            (48, 96, 23, 25, 1, 1, 1, 1, blocked, blocked),
            // Projections: from blocks into planes.
            (96, 24, 7, 7, 1, 1, 1, 2, blocked, planes),
            (32, 40, 23, 25, 1, 1, 1, 1, blocked, planes),
            // ... with fewer channels out than in on 128+ positions: by positions, X read in
            // place (24 channels as 32).
            (96, 32, 13, 11, 1, 1, 1, 2, blocked, planes),
            (400, 48, 16, 9, 1, 1, 1, 1, blocked, planes),
            (96, 24, 12, 12, 1, 1, 1, 1, blocked, planes),
            // Depthwise, every pair with a blocked side, strides 1 and 2.
            (32, 32, 9, 9, 3, 1, 32, 2, blocked, blocked),
            (48, 48, 12, 11, 3, 2, 48, 1, blocked, blocked),
            (32, 32, 10, 7, 3, 2, 32, 1, planes, blocked),
            (16, 16, 6, 6, 5, 1, 16, 2, blocked, planes),
            (32, 32, 8, 8, 3, 1, 32, 1, blocked, last),
            // Stems: any dense kernel from planes into blocks; with constant weights and up to
            // 4 channels directly (`infer_kernels::stem`, on AVX-512 or AVX2), else from its
            // patches.
            (3, 32, 15, 17, 3, 2, 1, 2, planes, blocked),
            (3, 64, 20, 22, 7, 2, 1, 1, planes, blocked),
            (5, 16, 9, 8, 3, 1, 1, 1, planes, blocked),
            (4, 48, 12, 12, 1, 2, 1, 1, planes, blocked),
        ];
        let in_layout = |t: &Tensor, l: Layout| match l {
            Layout::Planes => t.clone(),
            Layout::ChannelsLast => to_last(t),
            Layout::Blocked => to_blocked(t),
        };
        for (c, m, h, w, k, s, group, n, xl, yl) in cases {
            let x = Tensor::from_vec(vec![n, c, h, w], values(n * c * h * w, 1)).unwrap();
            let wt = Tensor::from_vec(vec![m, c / group, k, k], values(m * c / group * k * k, 2))
                .unwrap();
            let b = Tensor::from_vec(vec![m], values(m, 3)).unwrap();
            let pad = (k / 2) as i64;
            for activation in [None, Some("Clip"), Some("Silu")] {
                let mut attrs = vec![
                    ("group", Attr::Int(group as i64)),
                    ("strides", Attr::Ints(vec![s as i64; 2])),
                    ("pads", Attr::Ints(vec![pad; 4])),
                ];
                if let Some(a) = activation {
                    attrs.extend([("_activation", act(a)), ("_min", Attr::Float(0.0))]);
                    attrs.push(("_max", Attr::Float(1.0)));
                }
                let want = in_layout(&conv(&attrs, &[Some(&x), Some(&wt), Some(&b)], true), yl);
                attrs.push((INPUT_ATTR, Attr::Int(layout_code(xl))));
                attrs.push((OUTPUT_ATTR, Attr::Int(layout_code(yl))));
                let xs = in_layout(&x, xl);
                for constant_w in [true, false] {
                    let got = conv(&attrs, &[Some(&xs), Some(&wt), Some(&b)], constant_w);
                    assert_close(&got, &want, || {
                        format!(
                            "case {c}x{m} k{k} s{s} {activation:?} {xl:?} -> {yl:?} \
                             constant {constant_w}"
                        )
                    });
                }
            }
        }
    }

    #[test]
    fn projections_from_blocks_add_their_residual_in_planes() {
        // (C, M, H, W): by positions (fewer whole output blocks), and by channels.
        for (c, m, h, w) in [
            (96, 32, 13, 11),
            (224, 16, 16, 9),
            (144, 24, 12, 12),
            (32, 40, 6, 6),
        ] {
            let x = Tensor::from_vec(vec![1, c, h, w], values(c * h * w, 1)).unwrap();
            let wt = Tensor::from_vec(vec![m, c, 1, 1], values(m * c, 2)).unwrap();
            let b = Tensor::from_vec(vec![m], values(m, 3)).unwrap();
            let r = Tensor::from_vec(vec![1, m, h, w], values(m * h * w, 4)).unwrap();
            let mut attrs = vec![
                ("_activation", Attr::String("Clip".into())),
                ("_min", Attr::Float(0.0)),
                ("_max", Attr::Float(1.0)),
            ];
            let inputs = |x| [Some(x), Some(&wt), Some(&b), Some(&r)];
            let want = conv(&attrs, &inputs(&x), true);
            attrs.push((INPUT_ATTR, Attr::Int(layout_code(Layout::Blocked))));
            let got = conv(&attrs, &inputs(&to_blocked(&x)), true);
            assert_close(&got, &want, || format!("{c}x{m} {h}x{w}"));
        }
    }

    #[test]
    fn blocked_outputs_with_partial_blocks_or_residuals_are_errors() {
        let x = Tensor::from_vec(vec![1, 8, 4, 4], values(128, 1)).unwrap();
        let wt = Tensor::from_vec(vec![24, 8, 1, 1], values(192, 2)).unwrap();
        let attrs = [(OUTPUT_ATTR, Attr::Int(layout_code(Layout::Blocked)))];
        let err = run_op("Conv", &attrs, &[Some(&x), Some(&wt)], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("whole blocks"), "{err}");
        let wt = Tensor::from_vec(vec![16, 8, 1, 1], values(128, 2)).unwrap();
        let skip = Tensor::from_vec(vec![1, 1, 4, 4, 16], values(256, 3)).unwrap();
        let err = run_op(
            "Conv",
            &attrs,
            &[Some(&x), Some(&wt), None, Some(&skip)],
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("residual"), "{err}");
    }

    #[test]
    fn other_convolutions_with_a_channels_last_side_are_errors() {
        let x = Tensor::from_vec(vec![1, 4, 4, 2], values(32, 1)).unwrap();
        let wt = Tensor::from_vec(vec![3, 2, 3, 3], values(54, 2)).unwrap();
        let attrs = [(INPUT_ATTR, Attr::Int(1))];
        let err = run_op("Conv", &attrs, &[Some(&x), Some(&wt)], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pointwise and depthwise"), "{err}");
    }
}
