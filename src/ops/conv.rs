//! Convolutions (Conv, ConvTranspose) over the packed GEMM, with 1×1 and depthwise fast paths.
//!
//! Layout is NCHW (1, 2 or 3 spatial dims; fewer are padded with leading 1s to three, so one
//! code path covers all). Per image and group, Conv is `Y[M/g, OHW] = W[M/g, C/g·K] · cols`,
//! where `cols` is the input itself for 1×1 stride-1 kernels, a direct loop serves depthwise
//! kernels, and otherwise the input patches are packed straight into the GEMM's panels
//! (`conv_patches.rs`). Constant weights are packed once at build time; constant 3×3 stride-1
//! kernels of at least 32 input channels and at most 256×256 channel pairs are instead
//! transformed for Winograd F(4×4, 3×3) (`conv_winograd.rs`), a quarter of the multiplies.
//! Conv takes the fused epilogue of `matmul::fused_activation` and, as an optional 4th input,
//! a residual of the output's shape added before the activation.

use super::conv_layouts::ConvLayout;
use super::conv_patches::Patches;
use super::conv_pool::PoolAfter;
use super::conv_winograd::{WinogradOutput, WinogradWeights};
use super::elementwise::broadcast::binary;
use super::matmul::{f32_data, from_f32, from_f32_output, fused_activation};
use super::util::{input, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::ir::Attrs;
use crate::tensor::Tensor;
use crate::{ensure, op_err};
use infer_kernels::depthwise::{depthwise_plane, PlaneGeometry, PlaneScratch};
use infer_kernels::depthwise_lanes::{self, depthwise_image, LanesWeights, Layout};
use infer_kernels::gemm::{
    axpy_taps, gemm, gemm_serial, Activation, Bias, Epilogue, Lhs, MatMut, MatRef, PackedA,
    PackedB, Rhs, Tap, COL_BLOCK,
};
use infer_kernels::parallel;
use infer_kernels::stem::{self, StemWeights};
use rayon::prelude::*;
use std::cell::Cell;
use std::ops::Range;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "Conv" => Conv::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "ConvTranspose" => ConvTranspose::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "ConcatConvs" if ctx.node.domain == "infer" => super::conv_concat::ConcatConvs::build(ctx),
        _ => return None,
    })
}

/// Spatial dims handled natively; lower ranks are padded with leading 1s.
const DIMS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// The spatial attributes shared by convolutions and pooling, as written on the node.
#[derive(Clone, Debug)]
pub(super) struct SpatialAttrs {
    pub auto_pad: AutoPad,
    pub kernel_shape: Option<Vec<usize>>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    /// `[begin..., end...]`.
    pub pads: Option<Vec<usize>>,
}

fn non_negative(attrs: &Attrs, name: &str, min: usize) -> Result<Option<Vec<usize>>> {
    attrs
        .ints(name)?
        .map(|v| {
            v.iter()
                .map(|&x| {
                    usize::try_from(x)
                        .ok()
                        .filter(|&x| x >= min)
                        .ok_or_else(|| op_err!("attribute '{name}' has invalid value {x}"))
                })
                .collect()
        })
        .transpose()
}

impl SpatialAttrs {
    pub fn parse(attrs: &Attrs) -> Result<Self> {
        let auto_pad = match attrs.string_or("auto_pad", "NOTSET")? {
            "NOTSET" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => return Err(op_err!("unknown auto_pad '{other}'")),
        };
        Ok(SpatialAttrs {
            auto_pad,
            kernel_shape: non_negative(attrs, "kernel_shape", 1)?,
            strides: non_negative(attrs, "strides", 1)?,
            dilations: non_negative(attrs, "dilations", 1)?,
            pads: non_negative(attrs, "pads", 0)?,
        })
    }

    /// Resolves output size and padding for an input of spatial shape `input` and a kernel of
    /// spatial shape `kernel` (`ceil_mode` is pooling's rounding).
    pub fn resolve(&self, input: &[usize], kernel: &[usize], ceil_mode: bool) -> Result<Geometry> {
        let rank = input.len();
        ensure!(
            (1..=DIMS).contains(&rank) && kernel.len() == rank,
            "spatial rank {rank} with kernel {kernel:?} is not supported (1 to {DIMS} dims)"
        );
        ensure!(kernel.iter().all(|&k| k >= 1), "empty kernel {kernel:?}");
        let per_dim = |v: &Option<Vec<usize>>, name: &str| -> Result<Vec<usize>> {
            match v {
                Some(v) => {
                    ensure!(
                        v.len() == rank,
                        "'{name}' has {} values for {rank} spatial dims",
                        v.len()
                    );
                    Ok(v.clone())
                }
                None => Ok(vec![1; rank]),
            }
        };
        let strides = per_dim(&self.strides, "strides")?;
        let dilations = per_dim(&self.dilations, "dilations")?;
        let mut g = Geometry::identity(rank);
        for d in 0..rank {
            let i = DIMS - rank + d;
            let (inp, k, s, dil) = (input[d], kernel[d], strides[d], dilations[d]);
            let span = dil * (k - 1) + 1;
            let (out, begin, end) = match self.auto_pad {
                AutoPad::NotSet => {
                    let (b, e) = match &self.pads {
                        Some(p) => {
                            ensure!(
                                p.len() == 2 * rank,
                                "'pads' has {} values for {rank} spatial dims",
                                p.len()
                            );
                            (p[d], p[d + rank])
                        }
                        None => (0, 0),
                    };
                    let padded = inp + b + e;
                    ensure!(
                        padded >= span,
                        "kernel span {span} exceeds padded input {padded}"
                    );
                    let mut out = if ceil_mode {
                        (padded - span).div_ceil(s) + 1
                    } else {
                        (padded - span) / s + 1
                    };
                    // The last window must start inside the input or its left padding.
                    if ceil_mode && (out - 1) * s >= inp + b {
                        out -= 1;
                    }
                    (out, b, e)
                }
                AutoPad::Valid => {
                    ensure!(inp >= span, "kernel span {span} exceeds input {inp}");
                    ((inp - span) / s + 1, 0, 0)
                }
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let out = inp.div_ceil(s);
                    let total = (out.saturating_sub(1) * s + span).saturating_sub(inp);
                    let small = total / 2;
                    if self.auto_pad == AutoPad::SameUpper {
                        (out, small, total - small)
                    } else {
                        (out, total - small, small)
                    }
                }
            };
            g.input[i] = inp;
            g.output[i] = out;
            g.kernel[i] = k;
            g.stride[i] = s;
            g.dilation[i] = dil;
            g.pad[i] = begin;
            g.pad_end[i] = end;
        }
        Ok(g)
    }
}

/// Resolved spatial geometry, padded to `DIMS` dims with leading 1s.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Geometry {
    pub rank: usize,
    pub input: [usize; DIMS],
    pub output: [usize; DIMS],
    pub kernel: [usize; DIMS],
    pub stride: [usize; DIMS],
    pub dilation: [usize; DIMS],
    pub pad: [usize; DIMS],
    pub pad_end: [usize; DIMS],
}

impl Geometry {
    fn identity(rank: usize) -> Self {
        Geometry {
            rank,
            input: [1; DIMS],
            output: [1; DIMS],
            kernel: [1; DIMS],
            stride: [1; DIMS],
            dilation: [1; DIMS],
            pad: [0; DIMS],
            pad_end: [0; DIMS],
        }
    }

    /// The output's spatial dims, at their original rank.
    pub fn output_dims(&self) -> &[usize] {
        &self.output[DIMS - self.rank..]
    }

    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }

    pub fn kernel_len(&self) -> usize {
        self.kernel.iter().product()
    }

    /// The geometry of a 1-D or 2-D window op's plane, for the register-blocked plane
    /// kernels (3-D ones take the row-by-row paths).
    pub fn plane(&self) -> Option<PlaneGeometry> {
        (self.input[0] == 1 && self.kernel[0] == 1 && self.output[0] == 1 && self.pad[0] == 0).then(
            || PlaneGeometry {
                input: [self.input[1], self.input[2]],
                output: [self.output[1], self.output[2]],
                kernel: [self.kernel[1], self.kernel[2]],
                stride: [self.stride[1], self.stride[2]],
                dilation: [self.dilation[1], self.dilation[2]],
                pad: [self.pad[1], self.pad[2]],
            },
        )
    }

    /// Whether the product needs no im2col: a 1×1 kernel over the unpadded, unstrided input.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1; DIMS]
            && self.stride == [1; DIMS]
            && self.pad == [0; DIMS]
            && self.pad_end == [0; DIMS]
    }

    /// Input coordinate along dim `d` of output `o` and kernel tap `k`, if inside the input.
    #[inline]
    pub fn input_index(&self, d: usize, o: usize, k: usize) -> Option<usize> {
        (o * self.stride[d] + k * self.dilation[d])
            .checked_sub(self.pad[d])
            .filter(|&i| i < self.input[d])
    }

    /// The outputs `o` along the last dim whose input `o·stride + tap·dilation - pad` is inside
    /// the input, for kernel tap `tap`.
    #[inline]
    pub fn valid_outputs(&self, tap: usize) -> Range<usize> {
        let d = DIMS - 1;
        let (s, off, n) = (self.stride[d], tap * self.dilation[d], self.input[d]);
        let pad = self.pad[d];
        // o·s + off ≥ pad  and  o·s + off < pad + n.
        let lo = pad.saturating_sub(off).div_ceil(s);
        let hi = (pad + n).saturating_sub(off).div_ceil(s);
        lo.min(self.output[d])..hi.min(self.output[d]).max(lo.min(self.output[d]))
    }
}

/// Shape checks shared by Conv and ConvTranspose: `x` is `[N, C, spatial...]`.
fn batch_and_channels(x: &Tensor) -> Result<(usize, usize, &[usize])> {
    let s = x.shape();
    ensure!(
        s.len() >= 3,
        "input must be [N, C, spatial...], got shape {s:?}"
    );
    Ok((s[0], s[1], &s[2..]))
}

/// ONNX Conv (f32, f16 and bf16 computed in f32) with a fused epilogue.
#[derive(Debug)]
pub(super) struct Conv {
    pub spatial: SpatialAttrs,
    pub group: usize,
    /// Constant weights prepared at build time, and the weight shape they came from.
    pub packed: Option<(PackedWeights, Vec<usize>)>,
    pub activation: Option<Activation>,
    /// The layout of each side, as the planner chose it (`conv_layouts.rs`).
    pub layout: ConvLayout,
    /// A max pool fused after the convolution, which then outputs the pooled map in NCHW
    /// (`conv_pool.rs`).
    pub pool: Option<PoolAfter>,
}

/// Constant weights in the form their product wants.
#[derive(Debug)]
pub(super) enum PackedWeights {
    /// One packed `[M/g, C/g·K]` matrix per group, for the im2col (or pointwise) GEMM.
    Gemm(Vec<PackedA>),
    /// A pointwise kernel with a channels-last or blocked input or a channels-last output,
    /// packed for both orientations of its product (`conv_layouts.rs` picks one per
    /// feature-map size and channel counts): `W[M, C]` as the left operand and `Wᵀ[C, M]` as
    /// the right.
    PointwiseBoth { left: PackedA, right: PackedB },
    /// Any one-group kernel writing channel blocks, pointwise ones included: `Wᵀ[C·K, M]`,
    /// the right operand of the product with the output positions as rows
    /// (`conv_layouts.rs`).
    Transposed(PackedB),
    /// An image's few channels convolved into channel blocks, directly (`conv_layouts.rs`,
    /// `infer_kernels::stem`).
    Stem(StemWeights),
    /// A 3×3 stride-1 kernel in the Winograd domain (`conv_winograd.rs`).
    Winograd(WinogradWeights),
    /// A depthwise kernel as `depthwise_lanes` reads it (one vector per tap and 16 channels;
    /// the plane-at-a-time kernel reads the stored weights).
    Lanes(LanesWeights),
}

/// Largest 3×3 kernel (in `M·C`) that takes the Winograd path: it keeps 4× the weights
/// (36 points instead of 9 taps), and the deeper kernels of the usual networks run on small
/// maps (ResNet-50's 512-channel stage is 7×7: 4 tiles), where that buys nothing.
const WINOGRAD_MAX_CHANNEL_PAIRS: usize = 256 * 256;

/// Fewest input channels for the Winograd path: each of its 36 products is only that deep,
/// too shallow to pay for the tile transforms below it. SqueezeNet's 3×3 expansions, in
/// pairs with their 1×1 (paired in-process runs, 1 thread, ms, Winograd vs patches GEMM):
/// 16 → 64 channels on 55×55 0.96 vs 0.76, 32 → 128 on 27×27 0.50 vs 0.67.
const WINOGRAD_MIN_INPUT_CHANNELS: usize = 32;

impl Conv {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Self> {
        let group = ctx.attrs().int_or("group", 1)?;
        ensure!(group >= 1, "group must be positive, got {group}");
        let group = group as usize;
        let spatial = SpatialAttrs::parse(ctx.attrs())?;
        let layout = ConvLayout::parse(ctx.attrs())?;
        let packed = match ctx.constant(1) {
            Some(w)
                if (layout.output != Layout::Planes || layout.input == Layout::Blocked)
                    && group == 1
                    && w.dtype() == crate::DType::F32
                    && w.rank() == 4
                    && w.shape()[2..] == [1, 1] =>
            {
                let s = w.shape();
                let (m, c) = (s[0], s[1]);
                // From blocks into planes, `Wᵀ` serves only the product by positions, which
                // writes whole blocks: zero columns pad it to them.
                let padded = layout.input == Layout::Blocked && layout.output == Layout::Planes;
                let m_right = if padded {
                    m.next_multiple_of(COL_BLOCK)
                } else {
                    m
                };
                // Read a few output channels at a time as they are packed: zero past `m`.
                let rows = |cols: Range<usize>, dst: &mut [f32]| -> Result<()> {
                    let stored = cols.start.min(m)..cols.end.min(m);
                    let (read, pad) = dst.split_at_mut(stored.len() * c);
                    pad.fill(0.0);
                    w.read_f32_into(stored.start * c, read)
                };
                let right = PackedB::from_columns(c, m_right, rows)?;
                // A blocked output is always the product with `Wᵀ` on the right
                // (`conv_layouts.rs`): `W` packed too would only cost load time and memory.
                let packed = if layout.output == Layout::Blocked {
                    PackedWeights::Transposed(right)
                } else {
                    PackedWeights::PointwiseBoth {
                        left: PackedA::from_rows(m, c, rows)?,
                        right,
                    }
                };
                Some((packed, s.to_vec()))
            }
            Some(w)
                if layout.output == Layout::Blocked
                    && group == 1
                    && w.dtype() == crate::DType::F32
                    && w.rank() == 4 =>
            {
                let s = w.shape();
                let (m, k) = (s[0], s[1..].iter().product::<usize>());
                // An image's few channels into blocks (a stem) is convolved directly where
                // the CPU has the kernel for it.
                let stem =
                    (layout.input == Layout::Planes && stem::available() && stem::suits(s[1], k))
                        .then(|| w.with_slice::<f32, _>(|data| StemWeights::new(data, m, k)))
                        .transpose()?
                        .flatten();
                let packed = match stem {
                    Some(stem) => PackedWeights::Stem(stem),
                    None => PackedWeights::Transposed(PackedB::from_columns(k, m, |cols, dst| {
                        w.read_f32_into(cols.start * k, dst)
                    })?),
                };
                Some((packed, s.to_vec()))
            }
            Some(w)
                if ctx.options.winograd
                    && w.dtype() == crate::DType::F32
                    && winograd_suits(&spatial, group, w) =>
            {
                let s = w.shape();
                let ww = WinogradWeights::new(w, s[0], s[1])?;
                Some((PackedWeights::Winograd(ww), s.to_vec()))
            }
            Some(w)
                if w.dtype() == crate::DType::F32 && w.rank() >= 3 && is_depthwise(w, group) =>
            {
                let s = w.shape();
                let taps = s[2..].iter().product::<usize>();
                let lanes = w.with_slice::<f32, _>(|data| LanesWeights::new(data, s[0], taps))?;
                Some((PackedWeights::Lanes(lanes), s.to_vec()))
            }
            Some(w)
                if w.dtype() == crate::DType::F32 && w.rank() >= 3 && !is_depthwise(w, group) =>
            {
                let s = w.shape();
                let (m, kg) = (s[0], s[1..].iter().product::<usize>());
                ensure!(
                    m % group == 0,
                    "{m} output channels are not divisible by group {group}"
                );
                let mg = m / group;
                // Every group's output channels `rows`, read as they are packed.
                let packs = PackedA::stack_from_rows(group, mg, kg, |rows, dst| -> Result<()> {
                    let each = rows.len() * kg;
                    for (g, out) in dst.chunks_exact_mut(each.max(1)).enumerate() {
                        w.read_f32_into((g * mg + rows.start) * kg, out)?;
                    }
                    Ok(())
                })?;
                Some((PackedWeights::Gemm(packs), s.to_vec()))
            }
            _ => None,
        };
        Ok(Conv {
            spatial,
            group,
            packed,
            activation: fused_activation(ctx)?,
            layout,
            pool: PoolAfter::parse(ctx.attrs())?,
        })
    }
}

/// Whether weights `w` (`[M, C/g, k…]`) make a Conv of `group` groups depthwise: one input
/// and one output channel per group.
fn is_depthwise(w: &Tensor, group: usize) -> bool {
    let s = w.shape();
    s.len() >= 2 && s[1] == 1 && s[0] == group
}

/// Whether a Conv node with these attributes and constant weights `w` takes the Winograd
/// path (when the session has it on): for the planner, which keeps such layers in planes.
pub(crate) fn takes_winograd(attrs: &Attrs, w: &Tensor) -> bool {
    let group = attrs
        .int_or("group", 1)
        .ok()
        .and_then(|g| usize::try_from(g).ok());
    match (SpatialAttrs::parse(attrs), group) {
        (Ok(spatial), Some(group)) => winograd_suits(&spatial, group, w),
        _ => false,
    }
}

/// Whether weights `w` of a Conv with these attributes take the Winograd path: a 2-D 3×3
/// kernel, unit strides and dilations, one group, at least `WINOGRAD_MIN_INPUT_CHANNELS`
/// and at most `WINOGRAD_MAX_CHANNEL_PAIRS`.
fn winograd_suits(spatial: &SpatialAttrs, group: usize, w: &Tensor) -> bool {
    let ones = |v: &Option<Vec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&x| x == 1));
    let s = w.shape();
    group == 1
        && s.len() == 4
        && s[2..] == [3, 3]
        && s[0] * s[1] <= WINOGRAD_MAX_CHANNEL_PAIRS
        && s[1] >= WINOGRAD_MIN_INPUT_CHANNELS
        && ones(&spatial.strides)
        && ones(&spatial.dilations)
}

/// Everything one Conv run needs, resolved and checked.
struct ConvProblem<'a> {
    geo: Geometry,
    /// Images in the batch.
    batch: usize,
    groups: usize,
    /// Input and output channels per group, and `C/g · K` (the GEMM depth).
    cg: usize,
    mg: usize,
    kg: usize,
    x: &'a [f32],
    /// The weights as stored; empty when `packed` holds them (see `Conv::run`).
    w: &'a [f32],
    packed: Option<&'a [PackedA]>,
    /// Depthwise weights interleaved for `depthwise_lanes` at build time (constant weights).
    lanes: Option<&'a LanesWeights>,
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    activation: Option<Activation>,
}

/// The input slot of a fused per-image, per-channel scale of `X` (`ops::conv_scale`): after
/// `X`, `W`, `B` and the fused residual.
pub(crate) const SCALE_SLOT: usize = 4;

impl Kernel for Conv {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if let Some(scale) = opt_input(inputs, SCALE_SLOT) {
            return super::conv_scale::run(self, inputs, scale);
        }
        if self.layout.any() {
            return super::conv_layouts::run(self, inputs);
        }
        ensure!(
            self.pool.is_none(),
            "a max pool is fused only after a convolution that writes channel blocks"
        );
        match self.run_planes(inputs, None)? {
            Some(y) => Ok(vec![y]),
            None => Err(op_err!("a Conv without a destination produced no output")),
        }
    }
}

impl Conv {
    /// Whether `run_planes` can write this Conv's output into a caller's f32 buffer (see
    /// `conv_concat.rs`): NCHW planes on both sides and an f32 input.
    pub(super) fn writes_into(&self, inputs: &[Option<&Tensor>]) -> bool {
        !self.layout.any()
            && inputs
                .first()
                .copied()
                .flatten()
                .is_some_and(|x| x.dtype() == crate::DType::F32)
            && opt_input(inputs, 3).is_none()
    }

    /// The output shape for `inputs` (NCHW planes).
    pub(super) fn output_shape(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<usize>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let (n, _, spatial) = batch_and_channels(x)?;
        let ws = w.shape();
        ensure!(
            ws.len() == x.rank() && ws.len() >= 2,
            "weights of shape {ws:?} do not fit input {:?}",
            x.shape()
        );
        let geo = self.spatial.resolve(spatial, &ws[2..], false)?;
        let mut shape = vec![n, ws[0]];
        shape.extend_from_slice(geo.output_dims());
        Ok(shape)
    }

    /// The NCHW convolution: into `dest` (every element written; only where `writes_into`,
    /// returning `None`), or into a new tensor.
    pub(super) fn run_planes(
        &self,
        inputs: &[Option<&Tensor>],
        dest: Option<&mut [f32]>,
    ) -> Result<Option<Tensor>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let (n, c, spatial) = batch_and_channels(x)?;
        let ws = w.shape();
        ensure!(
            ws.len() == x.rank() && ws[0] % self.group == 0 && ws[1] * self.group == c,
            "weights of shape {ws:?} do not fit input {:?} with group {}",
            x.shape(),
            self.group
        );
        if let Some(k) = &self.spatial.kernel_shape {
            ensure!(
                k[..] == ws[2..],
                "kernel_shape {k:?} differs from the weights' {ws:?}"
            );
        }
        let geo = self.spatial.resolve(spatial, &ws[2..], false)?;
        let m = ws[0];
        let mut out_shape = vec![n, m];
        out_shape.extend_from_slice(geo.output_dims());

        let prepared = self
            .packed
            .as_ref()
            .filter(|(_, shape)| shape == ws && x.dtype() == crate::DType::F32)
            .map(|(p, _)| p);
        let (gemm_packs, winograd) = match prepared {
            Some(PackedWeights::Gemm(p)) if !is_depthwise(w, self.group) => (Some(&p[..]), None),
            Some(PackedWeights::Winograd(ww)) if WinogradWeights::fits(&geo) => (None, Some(ww)),
            _ => (None, None),
        };
        let lanes = match prepared {
            Some(PackedWeights::Lanes(l)) if is_depthwise(w, self.group) => Some(l),
            _ => None,
        };
        let xd = f32_data(x)?;
        // Prepacked weights are all a product needs: reading the stored ones would decode a
        // misaligned initializer into a copy kept for the session's life.
        let wd = if gemm_packs.is_some() || winograd.is_some() {
            std::borrow::Cow::Borrowed(&[][..])
        } else {
            f32_data(w)?
        };
        let bias = opt_input(inputs, 2).map(f32_data).transpose()?;
        let residual = opt_input(inputs, 3).map(f32_data).transpose()?;
        ensure!(
            bias.as_ref().is_none_or(|b| b.len() == m),
            "bias must have {m} elements"
        );
        // A residual of another shape (the fused Add broadcasts) is added after the product.
        let broadcast_residual = opt_input(inputs, 3).filter(|r| r.shape() != out_shape);
        let problem = ConvProblem {
            batch: n,
            groups: self.group,
            cg: ws[1],
            mg: m / self.group,
            kg: ws[1] * geo.kernel_len(),
            geo,
            x: &xd,
            w: &wd,
            packed: gemm_packs,
            lanes,
            bias: bias.as_deref(),
            residual: residual.as_deref().filter(|_| broadcast_residual.is_none()),
            activation: self.activation.filter(|_| broadcast_residual.is_none()),
        };
        let numel = crate::tensor::checked_numel(&out_shape)?;
        // The caller's buffer, or a new one. Every element is written: the GEMM stores whole
        // tiles, depthwise planes every output.
        let mut fresh = None;
        let y: &mut [f32] = match dest {
            Some(dest) => {
                ensure!(
                    dest.len() == numel && x.dtype() == crate::DType::F32 && residual.is_none(),
                    "cannot write a {:?} output into {} floats",
                    out_shape,
                    dest.len()
                );
                dest
            }
            None => fresh.insert(crate::tensor::spare::f32_output(numel)?),
        };
        match winograd {
            Some(ww) => {
                let out = WinogradOutput {
                    y,
                    bias: problem.bias,
                    residual: problem.residual,
                    activation: problem.activation,
                };
                ww.run(&problem.geo, n, &xd, out)?
            }
            // Other shapes (or Winograd weights on a geometry they do not fit, which the
            // attributes rule out) multiply the weights, prepacked or as they are.
            None => problem.run(y)?,
        }
        let Some(out) = fresh else {
            return Ok(None);
        };
        let Some(r) = broadcast_residual else {
            return Ok(Some(from_f32_output(x.dtype(), out_shape, out)?));
        };
        let r = match r.dtype() {
            crate::DType::F32 => std::borrow::Cow::Borrowed(r),
            _ => std::borrow::Cow::Owned(r.cast(crate::DType::F32)?),
        };
        let sum = binary(&out.into_tensor(out_shape)?, &r, |a: f32, b: f32| a + b)?;
        let shape = sum.shape().to_vec();
        let mut sum = sum.into_vec::<f32>()?;
        if let Some(act) = self.activation {
            infer_kernels::elementwise::apply_activation(act, &mut sum);
        }
        Ok(Some(from_f32(x.dtype(), shape, sum)?))
    }
}

/// Outputs per depthwise task: fewer are not worth a rayon task.
const MIN_TASK_FLOATS: usize = 1 << 12;

thread_local! {
    static DEPTHWISE_BUF: Cell<PlaneScratch> = const { Cell::new(PlaneScratch::new()) };
}

impl ConvProblem<'_> {
    fn run(&self, out: &mut [f32]) -> Result<()> {
        let (in_len, out_len) = (self.geo.input_len(), self.geo.output_len());
        let chunk = self.mg * out_len;
        if chunk == 0 {
            return Ok(());
        }
        if self.cg == 1 && self.mg == 1 {
            // Depthwise: one plane in, one plane out; small planes are grouped per task.
            let plane_2d = self.geo.plane();
            let taps = row_taps(&self.geo);
            // A Relu / Relu6 with no residual before it is applied as the planes are stored.
            let clamp = match (self.activation, self.residual) {
                (Some(Activation::Relu), None) => Some((0.0, f32::INFINITY)),
                (Some(Activation::Clip(lo, hi)), None) => Some((lo, hi)),
                _ => None,
            };
            if let Some(g) = plane_2d.filter(depthwise_lanes::preferred) {
                return self.run_depthwise_lanes(&g, clamp, out);
            }
            return parallel::try_for_each(
                out.par_chunks_mut(out_len)
                    .enumerate()
                    .with_min_len(MIN_TASK_FLOATS.div_ceil(out_len)),
                |(plane, y)| {
                    let ch = plane % self.groups;
                    let x = &self.x[plane * in_len..(plane + 1) * in_len];
                    let w = &self.w[ch * self.kg..(ch + 1) * self.kg];
                    let bias = self.bias.map_or(0.0, |b| b[ch]);
                    match &plane_2d {
                        Some(g) => DEPTHWISE_BUF.with(|cell| {
                            let mut buf = cell.take();
                            depthwise_plane(g, x, w, bias, clamp, y, &mut buf);
                            cell.set(buf);
                            if clamp.is_none() {
                                self.finish_plane(y, plane);
                            }
                        }),
                        None => {
                            depthwise(&self.geo, &taps, x, w, y);
                            y.iter_mut().for_each(|v| *v += bias);
                            self.finish_plane(y, plane);
                        }
                    }
                    Ok(())
                },
            );
        }
        // One task per (image, group): `chunk` consecutive output channels.
        parallel::try_for_each(out.par_chunks_mut(chunk).enumerate(), |(idx, y)| {
            let g = idx % self.groups;
            let x0 = idx * self.cg * in_len;
            let x = &self.x[x0..x0 + self.cg * in_len];
            let w = match self.packed {
                Some(p) => Lhs::Packed(&p[g]),
                None => Lhs::Mat(MatRef::row_major(
                    &self.w[g * self.mg * self.kg..],
                    self.mg,
                    self.kg,
                )?),
            };
            self.group_product(w, x, y, idx, g)
        })
    }

    /// Depthwise 16 channels per vector (where `depthwise_lanes::preferred`), a rayon task per
    /// group of 16.
    fn run_depthwise_lanes(
        &self,
        g: &PlaneGeometry,
        clamp: Option<(f32, f32)>,
        out: &mut [f32],
    ) -> Result<()> {
        let (in_len, out_len) = (self.geo.input_len(), self.geo.output_len());
        let channels = self.groups;
        let interleaved;
        let lanes = match self.lanes {
            Some(lanes) => lanes,
            None => {
                interleaved = LanesWeights::new(self.w, channels, self.kg);
                &interleaved
            }
        };
        // With no residual the activation runs on each group's cells, still in cache;
        // a residual is added to the finished planes first.
        let activation = self
            .activation
            .filter(|_| clamp.is_none() && self.residual.is_none());
        for (image, y) in out.chunks_mut(channels * out_len).enumerate() {
            let x = &self.x[image * channels * in_len..][..channels * in_len];
            depthwise_image(
                g,
                x,
                Layout::Planes,
                lanes,
                self.bias,
                clamp,
                activation,
                y,
                Layout::Planes,
            );
            if clamp.is_none() && activation.is_none() {
                self.finish_plane(y, image * channels);
            }
        }
        Ok(())
    }

    /// Residual and activation of depthwise output planes from `plane` on (the bias is
    /// already in).
    fn finish_plane(&self, y: &mut [f32], plane: usize) {
        if let Some(r) = self.residual {
            let start = plane * self.geo.output_len();
            let r = &r[start..start + y.len()];
            y.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
        if let Some(act) = self.activation {
            infer_kernels::elementwise::apply_activation(act, y);
        }
    }

    /// `y[mg, OHW] = w · patches(x)` for image/group `idx` (whose first output channel is
    /// `idx · mg` counting across images): one product over all output positions, split
    /// across threads when the (image, group) tasks alone do not keep them busy.
    fn group_product(&self, w: Lhs, x: &[f32], y: &mut [f32], idx: usize, g: usize) -> Result<()> {
        let out_len = self.geo.output_len();
        let bias = self.bias.map_or(Bias::None, |b| {
            Bias::PerRow(&b[g * self.mg..(g + 1) * self.mg])
        });
        let residual = self
            .residual
            .map(|r| MatRef::row_major(&r[idx * self.mg * out_len..], self.mg, out_len))
            .transpose()?;
        let epilogue = Epilogue {
            bias,
            residual,
            activation: self.activation,
            ..Default::default()
        };
        let y = MatMut::row_major(y, self.mg, out_len)?;
        // A pointwise kernel reads the input itself; any other packs its patches on the fly.
        let patches;
        let b = if self.geo.is_pointwise() {
            Rhs::Mat(MatRef::row_major(x, self.cg, out_len)?)
        } else {
            patches = Patches::new(&self.geo, x, self.kg)?;
            Rhs::Source(&patches)
        };
        let tasks = self.batch * self.groups;
        if tasks < parallel::threads() {
            gemm(w, b, y, &epilogue)?;
        } else {
            gemm_serial(w, b, y, &epilogue)?;
        }
        Ok(())
    }
}

/// The horizontal taps of a kernel: for each `kw`, the outputs along the last dim whose input
/// is inside the input, and that input's index for the first of them.
fn row_taps(geo: &Geometry) -> Vec<Tap> {
    (0..geo.kernel[DIMS - 1])
        .map(|kw| {
            let outputs = geo.valid_outputs(kw);
            let first = (outputs.start * geo.stride[DIMS - 1] + kw * geo.dilation[DIMS - 1])
                .saturating_sub(geo.pad[DIMS - 1]);
            Tap {
                index: kw,
                outputs,
                first,
            }
        })
        .filter(|tap| !tap.outputs.is_empty())
        .collect()
}

/// One depthwise plane: `y = Σ_taps w[tap] · shifted(x)`, accumulated row by row, a whole
/// kernel row of taps per `axpy_taps` call.
fn depthwise(geo: &Geometry, taps: &[Tap], x: &[f32], w: &[f32], y: &mut [f32]) {
    let [od_n, oh_n, ow_n] = geo.output;
    let [_, h_n, w_n] = geo.input;
    let [kd_n, kh_n, kw_n] = geo.kernel;
    let sw = geo.stride[DIMS - 1];
    y.fill(0.0);
    for od in 0..od_n {
        for oh in 0..oh_n {
            let out = &mut y[(od * oh_n + oh) * ow_n..(od * oh_n + oh + 1) * ow_n];
            for kd in 0..kd_n {
                let Some(id) = geo.input_index(0, od, kd) else {
                    continue;
                };
                for kh in 0..kh_n {
                    let Some(ih) = geo.input_index(1, oh, kh) else {
                        continue;
                    };
                    let src = &x[(id * h_n + ih) * w_n..(id * h_n + ih + 1) * w_n];
                    let weights = &w[(kd * kh_n + kh) * kw_n..(kd * kh_n + kh + 1) * kw_n];
                    axpy_taps(out, src, weights, taps, sw);
                }
            }
        }
    }
}

/// ONNX ConvTranspose (f32, f16 and bf16 computed in f32): per image and group, a GEMM
/// `cols = Wᵀ · x` followed by a scatter-add of `cols` into the output (col2im).
#[derive(Debug)]
struct ConvTranspose {
    spatial: SpatialAttrs,
    group: usize,
    output_padding: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
}

impl ConvTranspose {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let group = attrs.int_or("group", 1)?;
        ensure!(group >= 1, "group must be positive, got {group}");
        Ok(ConvTranspose {
            spatial: SpatialAttrs::parse(attrs)?,
            group: group as usize,
            output_padding: non_negative(attrs, "output_padding", 0)?,
            output_shape: non_negative(attrs, "output_shape", 1)?,
        })
    }

    /// The geometry of the equivalent forward convolution: its "input" is our output.
    fn geometry(&self, input: &[usize], kernel: &[usize]) -> Result<Geometry> {
        let rank = input.len();
        ensure!(
            (1..=DIMS).contains(&rank) && kernel.iter().all(|&k| k >= 1),
            "spatial rank {rank} with kernel {kernel:?} is not supported (1 to {DIMS} dims)"
        );
        let get = |v: &Option<Vec<usize>>, default: usize, name: &str| -> Result<Vec<usize>> {
            match v {
                Some(v) => {
                    ensure!(
                        v.len() >= rank,
                        "'{name}' has {} values for {rank} spatial dims",
                        v.len()
                    );
                    Ok(v[v.len() - rank..].to_vec())
                }
                None => Ok(vec![default; rank]),
            }
        };
        let strides = get(&self.spatial.strides, 1, "strides")?;
        let dilations = get(&self.spatial.dilations, 1, "dilations")?;
        let out_pad = get(&self.output_padding, 0, "output_padding")?;
        let output_shape = match &self.output_shape {
            Some(_) => Some(get(&self.output_shape, 0, "output_shape")?),
            None => None,
        };
        let same = matches!(
            self.spatial.auto_pad,
            AutoPad::SameUpper | AutoPad::SameLower
        );
        let mut g = Geometry::identity(rank);
        for d in 0..rank {
            let i = DIMS - rank + d;
            let span = (kernel[d] - 1) * dilations[d] + 1;
            let full = strides[d] * input[d].saturating_sub(1) + out_pad[d] + span;
            let (out, begin, end) = match (&self.spatial.pads, same) {
                (None, true) => {
                    let out = match &output_shape {
                        Some(s) => s[d],
                        None => input[d] * strides[d],
                    };
                    let total = full
                        .checked_sub(out)
                        .ok_or_else(|| op_err!("output_shape {out} is too large"))?;
                    let small = total / 2;
                    if self.spatial.auto_pad == AutoPad::SameUpper {
                        (out, small, total - small)
                    } else {
                        (out, total - small, small)
                    }
                }
                (pads, _) => {
                    let (b, e) = match pads {
                        Some(p) => {
                            ensure!(
                                p.len() == 2 * rank,
                                "'pads' has {} values for {rank} spatial dims",
                                p.len()
                            );
                            (p[d], p[d + rank])
                        }
                        None => (0, 0),
                    };
                    let out = match &output_shape {
                        Some(s) => s[d],
                        None => full
                            .checked_sub(b + e)
                            .ok_or_else(|| op_err!("pads {b}+{e} exceed the output size {full}"))?,
                    };
                    (out, b, e)
                }
            };
            g.input[i] = out;
            g.output[i] = input[d];
            g.kernel[i] = kernel[d];
            g.stride[i] = strides[d];
            g.dilation[i] = dilations[d];
            g.pad[i] = begin;
            g.pad_end[i] = end;
        }
        Ok(g)
    }
}

impl Kernel for ConvTranspose {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let (n, c, spatial) = batch_and_channels(x)?;
        let ws = w.shape();
        ensure!(
            ws.len() == x.rank() && ws[0] == c && c % self.group == 0,
            "weights of shape {ws:?} do not fit input {:?} with group {}",
            x.shape(),
            self.group
        );
        let geo = self.geometry(spatial, &ws[2..])?;
        let (cg, mg) = (c / self.group, ws[1]);
        let m = mg * self.group;
        let kernel_len = geo.kernel_len();
        let (in_len, out_len) = (geo.output_len(), geo.input_len());
        let mut out_shape = vec![n, m];
        out_shape.extend_from_slice(&geo.input[DIMS - geo.rank..]);
        let xd = f32_data(x)?;
        let wd = f32_data(w)?;
        let bias = opt_input(inputs, 2).map(f32_data).transpose()?;
        ensure!(
            bias.as_ref().is_none_or(|b| b.len() == m),
            "bias must have {m} elements"
        );

        let mut out = crate::tensor::filled_vec(crate::tensor::checked_numel(&out_shape)?, 0.0f32)?;
        let chunk = mg * out_len;
        if chunk > 0 {
            parallel::try_for_each(
                out.par_chunks_mut(chunk).enumerate(),
                |(idx, y)| -> Result<()> {
                    let g = idx % self.group;
                    let x = &xd[idx * cg * in_len..(idx + 1) * cg * in_len];
                    // W_g is [C/g, M/g·K]; cols = W_gᵀ · x_g is [M/g·K, in_len].
                    let wg =
                        MatRef::row_major(&wd[g * cg * mg * kernel_len..], cg, mg * kernel_len)?;
                    let mut cols = crate::tensor::filled_vec(
                        crate::tensor::checked_numel(&[mg, kernel_len, in_len])?,
                        0.0f32,
                    )?;
                    gemm(
                        wg.t(),
                        MatRef::row_major(x, cg, in_len)?,
                        MatMut::row_major(&mut cols, mg * kernel_len, in_len)?,
                        &Epilogue::default(),
                    )?;
                    for (oc, plane) in y.chunks_exact_mut(out_len).enumerate() {
                        if let Some(b) = &bias {
                            plane.fill(b[g * mg + oc]);
                        }
                        col2im(
                            &geo,
                            &cols[oc * kernel_len * in_len..(oc + 1) * kernel_len * in_len],
                            plane,
                        );
                    }
                    Ok(())
                },
            )?;
        }
        Ok(vec![from_f32(x.dtype(), out_shape, out)?])
    }
}

/// Adds `cols` (`[K, positions]` of one channel) into `plane`: the transpose of `im2col`.
fn col2im(geo: &Geometry, cols: &[f32], plane: &mut [f32]) {
    let positions = geo.output_len();
    let [_, oh_n, ow_n] = geo.output;
    let [_, h_n, w_n] = geo.input;
    let [_, kh_n, kw_n] = geo.kernel;
    for (tap, row) in cols.chunks_exact(positions).enumerate() {
        let (kd, kh, kw) = (tap / (kh_n * kw_n), tap / kw_n % kh_n, tap % kw_n);
        for (pos, &v) in row.iter().enumerate() {
            let (od, oh, ow) = (pos / (oh_n * ow_n), pos / ow_n % oh_n, pos % ow_n);
            if let (Some(id), Some(ih), Some(iw)) = (
                geo.input_index(0, od, kd),
                geo.input_index(1, oh, kh),
                geo.input_index(2, ow, kw),
            ) {
                plane[(id * h_n + ih) * w_n + iw] += v;
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ir::{Attr, Node};

    /// Builds `op` (any operator; here mostly Conv) with `attrs` (its weights constant when
    /// `constant_w`) and runs it once.
    pub(in crate::ops) fn run_op(
        op: &str,
        attrs: &[(&str, Attr)],
        inputs: &[Option<&Tensor>],
        constant_w: bool,
    ) -> Result<Tensor> {
        let node = Node {
            name: "n".into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: vec![],
            outputs: vec![],
            attrs: Attrs(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        };
        let mut constants = vec![None; inputs.len()];
        if constant_w {
            constants[1] = inputs[1];
        }
        let ctx = BuildCtx {
            node: &node,
            opset: 17,
            constants,
            options: Default::default(),
        };
        Ok(crate::ops::build(&ctx)?.run(inputs)?.remove(0))
    }

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    fn ints(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }

    /// Direct-definition convolution in f64, 2-D only, for cross-checking every path.
    #[allow(clippy::too_many_arguments)]
    fn reference_conv2d(
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        wt: &[f32],
        [m, cg, kh, kw]: [usize; 4],
        group: usize,
        stride: [usize; 2],
        pad: [usize; 4],
        dil: [usize; 2],
    ) -> (Vec<f32>, [usize; 4]) {
        let oh = (h + pad[0] + pad[2] - dil[0] * (kh - 1) - 1) / stride[0] + 1;
        let ow = (w + pad[1] + pad[3] - dil[1] * (kw - 1) - 1) / stride[1] + 1;
        let mg = m / group;
        let mut y = vec![0.0f32; n * m * oh * ow];
        for b in 0..n {
            for o in 0..m {
                let g = o / mg;
                for i in 0..oh {
                    for j in 0..ow {
                        let mut s = 0.0f64;
                        for ci in 0..cg {
                            for p in 0..kh {
                                for q in 0..kw {
                                    let hi =
                                        (i * stride[0] + p * dil[0]) as isize - pad[0] as isize;
                                    let wi =
                                        (j * stride[1] + q * dil[1]) as isize - pad[1] as isize;
                                    if hi >= 0 && wi >= 0 && (hi as usize) < h && (wi as usize) < w
                                    {
                                        let xv = x[((b * c + g * cg + ci) * h + hi as usize) * w
                                            + wi as usize];
                                        s += xv as f64
                                            * wt[((o * cg + ci) * kh + p) * kw + q] as f64;
                                    }
                                }
                            }
                        }
                        y[((b * m + o) * oh + i) * ow + j] = s as f32;
                    }
                }
            }
        }
        (y, [n, m, oh, ow])
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7 + seed * 13) % 23) as f32 - 11.0) / 8.0)
            .collect()
    }

    fn assert_close(got: &Tensor, shape: &[usize], want: &[f32]) {
        assert_close_deep(got, shape, want, 0);
    }

    /// `assert_close` for sums of `depth` products of `values` (each at most 2 in magnitude):
    /// f32 rounding, and the Winograd transforms' more, grow with the depth. The reference
    /// is exact (f64).
    fn assert_close_deep(got: &Tensor, shape: &[usize], want: &[f32], depth: usize) {
        assert_eq!(got.shape(), shape);
        let slack = 1e-7 * depth as f32;
        for (g, w) in got.as_slice::<f32>().unwrap().iter().zip(want) {
            assert!(
                (g - w).abs() < 1e-4 * (1.0 + w.abs()) + slack,
                "got {g}, want {w} in {shape:?}"
            );
        }
    }

    #[test]
    fn conv_paths_match_direct_definition() {
        // (x shape, w shape, group, strides, pads [t, l, b, r], dilations): general im2col,
        // strided + dilated, pointwise, grouped, depthwise (stride 1 and 2), channel multiplier,
        // deep kernels whose outputs span several column tiles (im2col and pointwise), and
        // 3×3 stride-1 kernels (Winograd when the weights are constant).
        type Case = (
            [usize; 4],
            [usize; 4],
            usize,
            [usize; 2],
            [usize; 4],
            [usize; 2],
        );
        let cases: [Case; 15] = [
            ([1, 3, 7, 6], [4, 3, 3, 3], 1, [1, 1], [1, 1, 1, 1], [1, 1]),
            // Winograd weights transformed and packed in several blocks of output channels.
            (
                [1, 256, 6, 5],
                [20, 256, 3, 3],
                1,
                [1, 1],
                [1, 1, 1, 1],
                [1, 1],
            ),
            // 3×3 stride 1 (Winograd with constant weights): batches, partial and single
            // tiles, uneven and wide padding.
            (
                [2, 32, 10, 13],
                [6, 32, 3, 3],
                1,
                [1, 1],
                [0, 2, 1, 0],
                [1, 1],
            ),
            ([1, 3, 4, 4], [2, 3, 3, 3], 1, [1, 1], [0; 4], [1, 1]),
            (
                [1, 32, 3, 2],
                [5, 32, 3, 3],
                1,
                [1, 1],
                [3, 1, 2, 4],
                [1, 1],
            ),
            ([2, 2, 9, 8], [3, 2, 3, 2], 1, [2, 3], [0, 1, 2, 0], [2, 1]),
            ([2, 5, 4, 3], [7, 5, 1, 1], 1, [1, 1], [0, 0, 0, 0], [1, 1]),
            ([1, 4, 5, 5], [6, 2, 3, 3], 2, [1, 1], [1, 0, 1, 0], [1, 1]),
            ([2, 3, 6, 7], [3, 1, 3, 3], 3, [1, 1], [1, 1, 1, 1], [1, 1]),
            ([1, 2, 7, 9], [2, 1, 3, 3], 2, [2, 2], [1, 1, 1, 1], [1, 2]),
            ([1, 2, 5, 5], [4, 1, 3, 3], 2, [1, 1], [1, 1, 1, 1], [1, 1]),
            (
                [1, 256, 15, 9],
                [3, 256, 3, 3],
                1,
                [1, 1],
                [1, 1, 1, 1],
                [1, 1],
            ),
            ([1, 2048, 9, 9], [2, 2048, 1, 1], 1, [1, 1], [0; 4], [1, 1]),
            // Depthwise on small planes, 16 channels at a time: a full and a partial group
            // per image, batches, 5×5 and strided kernels.
            (
                [2, 20, 5, 6],
                [20, 1, 5, 5],
                20,
                [1, 1],
                [2, 2, 2, 2],
                [1, 1],
            ),
            (
                [1, 36, 14, 13],
                [36, 1, 5, 5],
                36,
                [2, 2],
                [2, 1, 2, 2],
                [1, 1],
            ),
        ];
        for (xs, ws, group, stride, pad, dil) in cases {
            let x = values(xs.iter().product(), 1);
            let w = values(ws.iter().product(), 2);
            let (want, ys) = reference_conv2d(&x, xs, &w, ws, group, stride, pad, dil);
            let depth = ws[1] * ws[2] * ws[3];
            let attrs = [
                ("group", Attr::Int(group as i64)),
                ("strides", ints(&[stride[0] as i64, stride[1] as i64])),
                ("pads", ints(&pad.map(|p| p as i64))),
                ("dilations", ints(&[dil[0] as i64, dil[1] as i64])),
            ];
            let (xt, wt) = (t(&xs, x.clone()), t(&ws, w.clone()));
            for constant in [false, true] {
                let y = run_op("Conv", &attrs, &[Some(&xt), Some(&wt)], constant).unwrap();
                assert_close_deep(&y, &ys, &want, depth);
            }
            // The same with the whole fused epilogue: relu(conv + bias[c] + residual).
            let bias = values(ws[0], 3);
            let residual = values(want.len(), 4);
            let plane = ys[2] * ys[3];
            let fused: Vec<f32> = (0..want.len())
                .map(|i| (want[i] + bias[i / plane % ws[0]] + residual[i]).max(0.0))
                .collect();
            let (bt, rt) = (t(&[ws[0]], bias.clone()), t(&ys, residual));
            let mut relu = attrs.to_vec();
            relu.push(("_activation", Attr::String("Relu".into())));
            let inputs = [Some(&xt), Some(&wt), Some(&bt), Some(&rt)];
            let y = run_op("Conv", &relu, &inputs, true).unwrap();
            assert_close_deep(&y, &ys, &fused, depth);
            // Without the residual the Relu is applied as the output is stored (depthwise too).
            let relu_only: Vec<f32> = (0..want.len())
                .map(|i| (want[i] + bias[i / plane % ws[0]]).max(0.0))
                .collect();
            let y = run_op("Conv", &relu, &inputs[..3], true).unwrap();
            assert_close_deep(&y, &ys, &relu_only, depth);
        }
    }

    #[test]
    fn prepacked_weights_are_not_decoded_again_at_run_time() {
        // Weights stored misaligned (as most ONNX initializers are) are only readable through
        // a decoded copy; a Conv whose product runs on its prepacked weights (im2col GEMM,
        // pointwise, Winograd) must not make one, or it stays for the session's life.
        // Depthwise reads the stored weights, so there a copy is expected.
        let misaligned = |shape: &[usize], v: &[f32]| {
            let mut bytes = vec![0u8];
            bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            let b = bytes::Bytes::from(bytes).slice(1..);
            Tensor::from_le_bytes(crate::DType::F32, shape.to_vec(), b).unwrap()
        };
        // (x shape, w shape, group, whether the run reads the stored weights)
        let cases = [
            ([1, 3, 6, 6], [4, 3, 3, 3], 1, false),
            ([1, 3, 6, 6], [4, 3, 1, 1], 1, false),
            ([1, 4, 7, 7], [2, 2, 3, 3], 2, false),
            ([1, 3, 6, 6], [3, 1, 3, 3], 3, true),
        ];
        for (xs, ws, group, reads_stored) in cases {
            let x = values(xs.iter().product(), 1);
            let w = values(ws.iter().product(), 2);
            let pad = if ws[2] == 3 { [1; 4] } else { [0; 4] };
            let (want, ys) = reference_conv2d(&x, xs, &w, ws, group, [1, 1], pad, [1, 1]);
            let wt = misaligned(&ws, &w);
            let attrs = [
                ("group", Attr::Int(group as i64)),
                ("pads", ints(&pad.map(|p| p as i64))),
            ];
            let y = run_op("Conv", &attrs, &[Some(&t(&xs, x)), Some(&wt)], true).unwrap();
            assert_close_deep(&y, &ys, &want, ws[1] * 9);
            assert_eq!(wt.holds_decoded_copy(), reads_stored, "weights {ws:?}");
        }
    }

    /// 1-D: x = [1, 2, 3, 4], w = [1, -1] → [-1, -1, -1], + bias 0.5, + the fused residual
    /// `r`, then Relu.
    fn conv_bias_residual_relu(r: &Tensor) -> Tensor {
        let x = t(&[1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        let w = t(&[1, 1, 2], vec![1.0, -1.0]);
        let b = t(&[1], vec![0.5]);
        let attrs = [("_activation", Attr::String("Relu".into()))];
        run_op(
            "Conv",
            &attrs,
            &[Some(&x), Some(&w), Some(&b), Some(r)],
            true,
        )
        .unwrap()
    }

    #[test]
    fn conv_fused_bias_residual_activation() {
        // [-0.5; 3] + residual [1, 0, 2], then Relu → [0.5, 0, 1.5].
        let y = conv_bias_residual_relu(&t(&[1, 1, 3], vec![1.0, 0.0, 2.0]));
        assert_close(&y, &[1, 1, 3], &[0.5, 0.0, 1.5]);
    }

    #[test]
    fn conv_residual_of_another_shape_broadcasts_before_the_activation() {
        // [-0.5; 3] with a fused Add whose other operand is [2, 1, 1]: broadcast to [2, 1, 3],
        // → [1.5, 1.5, 1.5, -0.5 → 0 (Relu)…].
        let y = conv_bias_residual_relu(&t(&[2, 1, 1], vec![2.0, 0.0]));
        assert_close(&y, &[2, 1, 3], &[1.5, 1.5, 1.5, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn conv_auto_pad_and_3d() {
        // SAME_UPPER, stride 2 on a 5-wide input: output ceil(5/2) = 3, total pad 2 → (1, 1).
        let x = t(&[1, 1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let w = t(&[1, 1, 1, 3], vec![1.0, 1.0, 1.0]);
        let same = [
            ("auto_pad", Attr::String("SAME_UPPER".into())),
            ("strides", ints(&[1, 2])),
        ];
        let y = run_op("Conv", &same, &[Some(&x), Some(&w)], false).unwrap();
        assert_close(&y, &[1, 1, 1, 3], &[3.0, 9.0, 9.0]);
        // SAME_LOWER with an even kernel puts the extra pad first: [0,1,2,3,4,5] windows of 2.
        let w2 = t(&[1, 1, 1, 2], vec![1.0, 1.0]);
        let lower = [("auto_pad", Attr::String("SAME_LOWER".into()))];
        let y = run_op("Conv", &lower, &[Some(&x), Some(&w2)], false).unwrap();
        assert_close(&y, &[1, 1, 1, 5], &[1.0, 3.0, 5.0, 7.0, 9.0]);
        // 3-D: a 2×2×2 box sum over a 2×2×3 input of ones → 8s.
        let x3 = t(&[1, 1, 2, 2, 3], vec![1.0; 12]);
        let w3 = t(&[1, 1, 2, 2, 2], vec![1.0; 8]);
        let y = run_op("Conv", &[], &[Some(&x3), Some(&w3)], true).unwrap();
        assert_close(&y, &[1, 1, 1, 1, 2], &[8.0, 8.0]);
    }

    #[test]
    fn conv_bad_inputs_are_errors() {
        let x = t(&[1, 2, 3, 3], vec![0.0; 18]);
        let w = t(&[1, 3, 1, 1], vec![0.0; 3]);
        assert!(run_op("Conv", &[], &[Some(&x), Some(&w)], false).is_err());
        let big = t(&[1, 2, 5, 5], vec![0.0; 50]);
        assert!(run_op("Conv", &[], &[Some(&x), Some(&big)], false).is_err());
        let empty_kernel = t(&[1, 2, 0, 1], vec![]);
        assert!(run_op("Conv", &[], &[Some(&x), Some(&empty_kernel)], false).is_err());
        assert!(run_op(
            "ConvTranspose",
            &[],
            &[Some(&x), Some(&empty_kernel)],
            false
        )
        .is_err());
        let w1 = t(&[1, 2, 1, 1], vec![0.0; 2]);
        let bad_res = t(&[1, 1, 2, 2], vec![0.0; 4]);
        assert!(run_op(
            "Conv",
            &[],
            &[Some(&x), Some(&w1), None, Some(&bad_res)],
            false
        )
        .is_err());
    }

    #[test]
    fn conv_transpose_matches_onnx_examples() {
        // From the ONNX operator docs (test_convtranspose): x = 0..9 as 3×3, w = ones 2×3×3×3.
        let x = t(&[1, 1, 3, 3], (0..9).map(|v| v as f32).collect());
        let w = t(&[1, 2, 3, 3], vec![1.0; 18]);
        let y = run_op("ConvTranspose", &[], &[Some(&x), Some(&w)], false).unwrap();
        let plane = [
            0., 1., 3., 3., 2., 3., 8., 15., 12., 7., 9., 21., 36., 27., 15., 9., 20., 33., 24.,
            13., 6., 13., 21., 15., 8.,
        ];
        let want: Vec<f32> = plane.iter().chain(&plane).copied().collect();
        assert_close(&y, &[1, 2, 5, 5], &want);
        // Strided 1-D with pads and a bias: x = [1, 2], w = [1, 1, 1], stride 2, pads (1, 1):
        // full output [1, 1, 3, 2, 2] cropped to [1, 3, 2], plus 0.5.
        let x1 = t(&[1, 1, 2], vec![1.0, 2.0]);
        let w1 = t(&[1, 1, 3], vec![1.0; 3]);
        let b1 = t(&[1], vec![0.5]);
        let attrs = [("strides", ints(&[2])), ("pads", ints(&[1, 1]))];
        let y = run_op(
            "ConvTranspose",
            &attrs,
            &[Some(&x1), Some(&w1), Some(&b1)],
            false,
        )
        .unwrap();
        assert_close(&y, &[1, 1, 3], &[1.5, 3.5, 2.5]);
        // output_shape with SAME_UPPER: 2 inputs, stride 2 → 4 outputs, total pad 1 → (0, 1).
        let same = [
            ("strides", ints(&[2])),
            ("auto_pad", Attr::String("SAME_UPPER".into())),
        ];
        let y = run_op("ConvTranspose", &same, &[Some(&x1), Some(&w1)], false).unwrap();
        assert_close(&y, &[1, 1, 4], &[1.0, 1.0, 3.0, 2.0]);
    }
}
