//! Recurrent layers: RNN, GRU and LSTM (all directions, both layouts, sequence lengths,
//! initial states, peepholes, custom activations and clipping).
//!
//! Computed in f32 (f16/bf16/f64 inputs are converted). The input projection of every timestep
//! is one GEMM (`[rows, input] · Wᵀ`, biases fused), done once per direction; each step then
//! multiplies the hidden state by the packed recurrence weights and applies the cell's gate
//! math (`recurrent_cell.rs`). Weights are packed once at build time when they are constants.

#[path = "recurrent_cell.rs"]
mod cell;

use super::util::{input, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err};
use cell::{step, Cell, StepBuffers, StepCtx};
use infer_kernels::elementwise::{apply_inplace, UnaryF32};
use infer_kernels::gemm::{gemm, Bias, Epilogue, MatMut, MatRef, PackedB};
use infer_kernels::parallel;
use rayon::prelude::*;
use std::borrow::Cow;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    let attrs = ctx.attrs();
    let cell = match op {
        "RNN" => Cell::Rnn,
        "GRU" => match attrs.int_or("linear_before_reset", 0) {
            Ok(v) => Cell::Gru {
                linear_before_reset: v != 0,
            },
            Err(e) => return Some(Err(e)),
        },
        "LSTM" => match attrs.int_or("input_forget", 0) {
            Ok(v) => Cell::Lstm {
                input_forget: v != 0,
            },
            Err(e) => return Some(Err(e)),
        },
        _ => return None,
    };
    Some(Recurrent::build(cell, ctx).map(|k| Box::new(k) as Box<dyn Kernel>))
}

/// An activation function of a recurrent cell, named by the `activations` attribute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f32, f32),
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    HardSigmoid(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

impl Act {
    /// Parses `name`, taking its alpha/beta from the attribute lists (advancing their cursors)
    /// or, when they run out, the function's defaults.
    fn parse(
        name: &str,
        alphas: &mut impl Iterator<Item = f32>,
        betas: &mut impl Iterator<Item = f32>,
    ) -> Result<Act> {
        let mut alpha = |d: f32| alphas.next().unwrap_or(d);
        let act = match name.to_ascii_lowercase().as_str() {
            "relu" => Act::Relu,
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            "affine" => Act::Affine(alpha(1.0), betas.next().unwrap_or(0.0)),
            "leakyrelu" => Act::LeakyRelu(alpha(0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(alpha(1.0)),
            "scaledtanh" => Act::ScaledTanh(alpha(1.0), betas.next().unwrap_or(1.0)),
            "hardsigmoid" => Act::HardSigmoid(alpha(0.2), betas.next().unwrap_or(0.5)),
            "elu" => Act::Elu(alpha(1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            other => return Err(op_err!("unknown recurrent activation '{other}'")),
        };
        Ok(act)
    }

    /// `xs[i] = f(xs[i])`; tanh and sigmoid use the vectorized kernels.
    pub(super) fn apply(self, xs: &mut [f32]) {
        match self {
            Act::Tanh => apply_inplace(UnaryF32::Tanh, xs),
            Act::Sigmoid => apply_inplace(UnaryF32::Sigmoid, xs),
            Act::Relu => map(xs, |x| x.max(0.0)),
            Act::Affine(a, b) => map(xs, |x| a * x + b),
            Act::LeakyRelu(a) => map(xs, |x| if x < 0.0 { a * x } else { x }),
            Act::ThresholdedRelu(a) => map(xs, |x| if x > a { x } else { 0.0 }),
            Act::ScaledTanh(a, b) => {
                map(xs, |x| b * x);
                apply_inplace(UnaryF32::Tanh, xs);
                map(xs, |x| a * x);
            }
            Act::HardSigmoid(a, b) => map(xs, |x| (a * x + b).clamp(0.0, 1.0)),
            Act::Elu(a) => map(xs, |x| if x < 0.0 { a * (x.exp() - 1.0) } else { x }),
            Act::Softsign => map(xs, |x| x / (1.0 + x.abs())),
            Act::Softplus => map(xs, |x| {
                // ln(1 + e^x) without overflow for large x.
                if x > 20.0 {
                    x
                } else {
                    x.exp().ln_1p()
                }
            }),
        }
    }
}

/// `xs[i] = f(xs[i])`, monomorphized per function.
fn map(xs: &mut [f32], f: impl Fn(f32) -> f32) {
    xs.iter_mut().for_each(|x| *x = f(*x));
}

/// The attributes shared by all three layers.
#[derive(Debug)]
struct Recurrent {
    cell: Cell,
    hidden: usize,
    /// 1, or 2 for bidirectional (direction 0 forward, 1 reverse).
    num_dirs: usize,
    /// Whether the single direction runs backwards in time.
    reverse: bool,
    /// `layout = 1`: batch-major inputs and outputs.
    batch_major: bool,
    /// The cell's activations for each direction.
    acts: Vec<Vec<Act>>,
    clip: Option<f32>,
    /// W and R of each direction, packed at build time when both are f32 constants.
    packed: Option<Vec<DirWeights>>,
}

/// One direction's packed weights: `Wᵀ` (`[input, G·H]`) and the recurrence blocks of `Rᵀ`.
#[derive(Debug)]
pub(super) struct DirWeights {
    w: PackedB,
    /// `Rᵀ` split into the column blocks the cell multiplies separately (see `Cell::r_blocks`).
    pub(super) r: Vec<PackedB>,
}

impl Recurrent {
    fn build(cell: Cell, ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let hidden = attrs
            .int("hidden_size")?
            .ok_or_else(|| op_err!("hidden_size is required"))?;
        let hidden = usize::try_from(hidden)
            .ok()
            .filter(|&h| h > 0)
            .ok_or_else(|| op_err!("hidden_size must be positive, got {hidden}"))?;
        let (num_dirs, reverse) = match attrs.string_or("direction", "forward")? {
            "forward" => (1, false),
            "reverse" => (1, true),
            "bidirectional" => (2, false),
            d => return Err(op_err!("unknown direction '{d}'")),
        };
        let names: Vec<String> = match attrs.get("activations") {
            Some(_) => attrs_strings(ctx, "activations")?,
            None => Vec::new(),
        };
        let per_dir = cell.default_acts().len();
        let names: Vec<&str> = if names.is_empty() {
            (0..num_dirs)
                .flat_map(|_| cell.default_acts().iter().copied())
                .collect()
        } else {
            names.iter().map(String::as_str).collect()
        };
        ensure!(
            names.len() == per_dir * num_dirs,
            "expected {} activations, got {}",
            per_dir * num_dirs,
            names.len()
        );
        let alphas = attrs.floats("activation_alpha")?.unwrap_or(&[]).to_vec();
        let betas = attrs.floats("activation_beta")?.unwrap_or(&[]).to_vec();
        let (mut alphas, mut betas) = (alphas.into_iter(), betas.into_iter());
        let acts = names
            .chunks(per_dir)
            .map(|c| {
                c.iter()
                    .map(|n| Act::parse(n, &mut alphas, &mut betas))
                    .collect()
            })
            .collect::<Result<Vec<Vec<Act>>>>()?;
        let clip = match attrs.get("clip") {
            Some(_) => Some(attrs.float_or("clip", 0.0)?),
            None => None,
        };
        let mut layer = Recurrent {
            cell,
            hidden,
            num_dirs,
            reverse,
            batch_major: attrs.int_or("layout", 0)? != 0,
            acts,
            clip,
            packed: None,
        };
        if let (Some(w), Some(r)) = (ctx.constant(1), ctx.constant(2)) {
            if w.dtype() == DType::F32 && r.dtype() == DType::F32 {
                layer.packed = Some(layer.pack(w, r)?);
            }
        }
        Ok(layer)
    }

    /// Checks W and R against the attributes and packs each direction's transposes.
    fn pack(&self, w: &Tensor, r: &Tensor) -> Result<Vec<DirWeights>> {
        let gh = self.cell.gates() * self.hidden;
        let h = self.hidden;
        ensure!(
            w.rank() == 3 && w.shape()[0] == self.num_dirs && w.shape()[1] == gh,
            "W has shape {:?}, expected [{}, {gh}, input_size]",
            w.shape(),
            self.num_dirs
        );
        ensure!(
            r.shape() == [self.num_dirs, gh, h],
            "R has shape {:?}, expected [{}, {gh}, {h}]",
            r.shape(),
            self.num_dirs
        );
        let input_size = w.shape()[2];
        let (w, r) = (f32s(w)?, f32s(r)?);
        (0..self.num_dirs)
            .map(|d| {
                let wd = &w[d * gh * input_size..(d + 1) * gh * input_size];
                let rd = &r[d * gh * h..(d + 1) * gh * h];
                let mut blocks = Vec::new();
                let mut row0 = 0;
                for rows in self.cell.r_blocks(h) {
                    let block = &rd[row0 * h..(row0 + rows) * h];
                    blocks.push(PackedB::new(MatRef::row_major(block, rows, h)?.t()));
                    row0 += rows;
                }
                Ok(DirWeights {
                    w: PackedB::new(MatRef::row_major(wd, gh, input_size)?.t()),
                    r: blocks,
                })
            })
            .collect()
    }
}

/// A string-list attribute (`activations`).
fn attrs_strings(ctx: &BuildCtx, name: &str) -> Result<Vec<String>> {
    use crate::ir::Attr;
    match ctx.attrs().get(name) {
        Some(Attr::Strings(v)) => Ok(v.clone()),
        Some(other) => Err(op_err!(
            "attribute {name} should be a list of strings, got {other:?}"
        )),
        None => Ok(Vec::new()),
    }
}

/// A float tensor's elements as f32 (borrowed when already f32).
fn f32s(t: &Tensor) -> Result<Cow<'_, [f32]>> {
    match t.dtype() {
        DType::F32 => Ok(Cow::Borrowed(t.as_slice::<f32>()?)),
        DType::F16 | DType::BF16 | DType::F64 => {
            Ok(Cow::Owned(t.cast(DType::F32)?.into_vec::<f32>()?))
        }
        d => Err(op_err!("recurrent layers need float inputs, got {d}")),
    }
}

/// Where the rows of one (timestep, batch) pair live in the layout-dependent tensors.
#[derive(Clone, Copy)]
struct Layout {
    seq: usize,
    batch: usize,
    dirs: usize,
    batch_major: bool,
}

impl Layout {
    /// Row of X (and of the projected inputs) for timestep `t` of sequence `b`.
    fn x_row(&self, t: usize, b: usize) -> usize {
        if self.batch_major {
            b * self.seq + t
        } else {
            t * self.batch + b
        }
    }

    /// Row of Y for (t, direction, b).
    fn y_row(&self, t: usize, d: usize, b: usize) -> usize {
        if self.batch_major {
            (b * self.seq + t) * self.dirs + d
        } else {
            (t * self.dirs + d) * self.batch + b
        }
    }

    /// Row of Y_h/Y_c (and of the initial states) for (direction, b).
    fn state_row(&self, d: usize, b: usize) -> usize {
        if self.batch_major {
            b * self.dirs + d
        } else {
            d * self.batch + b
        }
    }
}

impl Kernel for Recurrent {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let dtype = x.dtype();
        ensure!(
            x.rank() == 3,
            "X must have rank 3, got shape {:?}",
            x.shape()
        );
        let (seq, batch, input_size) = if self.batch_major {
            (x.shape()[1], x.shape()[0], x.shape()[2])
        } else {
            (x.shape()[0], x.shape()[1], x.shape()[2])
        };
        let (h, gh, dirs) = (self.hidden, self.cell.gates() * self.hidden, self.num_dirs);
        let (w, r) = (input(inputs, 1)?, input(inputs, 2)?);
        ensure!(
            w.shape() == [dirs, gh, input_size],
            "W has shape {:?}, expected [{dirs}, {gh}, {input_size}]",
            w.shape()
        );
        let packed_here;
        let weights = match &self.packed {
            Some(p) => p,
            None => {
                packed_here = self.pack(w, r)?;
                &packed_here
            }
        };
        let layout = Layout {
            seq,
            batch,
            dirs,
            batch_major: self.batch_major,
        };
        let lens = seq_lens(opt_input(inputs, 4), batch, seq)?;
        let bias = opt_input(inputs, 3).map(f32s).transpose()?;
        if let Some(b) = &bias {
            ensure!(
                b.len() == dirs * 2 * gh,
                "B has {} elements, expected [{dirs}, {}]",
                b.len(),
                2 * gh
            );
        }
        let state_len = dirs * batch * h;
        let init = |i: usize, name: &str| -> Result<Option<Cow<'_, [f32]>>> {
            let Some(t) = opt_input(inputs, i) else {
                return Ok(None);
            };
            let v = f32s(t)?;
            ensure!(
                v.len() == state_len,
                "{name} has shape {:?}, expected {state_len} elements",
                t.shape()
            );
            Ok(Some(v))
        };
        let init_h = init(5, "initial_h")?;
        let init_c = if self.cell.has_cell_state() {
            init(6, "initial_c")?
        } else {
            None
        };
        let peep = match opt_input(inputs, 7) {
            Some(p) if self.cell.has_cell_state() => {
                let v = f32s(p)?;
                ensure!(
                    v.len() == dirs * 3 * h,
                    "P has shape {:?}, expected [{dirs}, {}]",
                    p.shape(),
                    3 * h
                );
                Some(v)
            }
            _ => None,
        };
        let xs = f32s(x)?;
        // The directions are independent: run them in parallel, each writing its outputs in
        // (t, b) order, then place them in the layout's order.
        let run_dir = |d: usize| -> Result<(Vec<f32>, StepBuffers)> {
            let bias_d = bias.as_deref().map(|b| &b[d * 2 * gh..(d + 1) * 2 * gh]);
            let xw = self.project(&xs, seq * batch, input_size, &weights[d], bias_d)?;
            let mut bufs = StepBuffers::new(self.cell, batch, h);
            for b in 0..batch {
                let row = layout.state_row(d, b);
                if let Some(v) = &init_h {
                    bufs.h[b * h..(b + 1) * h].copy_from_slice(&v[row * h..(row + 1) * h]);
                }
                if let Some(v) = &init_c {
                    bufs.c[b * h..(b + 1) * h].copy_from_slice(&v[row * h..(row + 1) * h]);
                }
            }
            let backwards = self.reverse || d == 1;
            let ctx = StepCtx {
                cell: self.cell,
                hidden: h,
                acts: &self.acts[d],
                clip: self.clip,
                weights: &weights[d],
                recurrence_bias: bias_d.map(|b| &b[gh..]),
                peepholes: peep.as_deref().map(|p| &p[d * 3 * h..(d + 1) * 3 * h]),
            };
            let mut y_d = vec![0.0f32; seq * batch * h];
            let mut times = vec![None; batch];
            for s in 0..seq {
                // Each sequence runs over its own length; reversed ones start at their end.
                for (t, &len) in times.iter_mut().zip(&lens) {
                    *t = (s < len).then(|| if backwards { len - 1 - s } else { s });
                }
                // Gate pre-activations: this step's projected inputs, plus H·Rᵀ in `step`.
                for (b, t) in times.iter().enumerate() {
                    let dst = &mut bufs.gates[b * gh..(b + 1) * gh];
                    match t {
                        Some(t) => {
                            let row = layout.x_row(*t, b);
                            dst.copy_from_slice(&xw[row * gh..(row + 1) * gh]);
                        }
                        None => dst.fill(0.0),
                    }
                }
                step(&ctx, &mut bufs, &times)?;
                for (b, t) in times.iter().enumerate() {
                    if let Some(t) = t {
                        let row = t * batch + b;
                        y_d[row * h..(row + 1) * h].copy_from_slice(&bufs.h[b * h..(b + 1) * h]);
                    }
                }
            }
            Ok((y_d, bufs))
        };
        let results = parallel::collect_vec((0..dirs).into_par_iter().map(run_dir))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let mut y = vec![0.0f32; seq * dirs * batch * h];
        let mut y_h = vec![0.0f32; state_len];
        let mut y_c = vec![0.0f32; state_len];
        for (d, (y_d, bufs)) in results.iter().enumerate() {
            for (tb, src) in y_d.chunks_exact(h).enumerate() {
                let row = layout.y_row(tb / batch, d, tb % batch);
                y[row * h..(row + 1) * h].copy_from_slice(src);
            }
            for b in 0..batch {
                let row = layout.state_row(d, b);
                y_h[row * h..(row + 1) * h].copy_from_slice(&bufs.h[b * h..(b + 1) * h]);
                if self.cell.has_cell_state() {
                    y_c[row * h..(row + 1) * h].copy_from_slice(&bufs.c[b * h..(b + 1) * h]);
                }
            }
        }
        let y_shape = if self.batch_major {
            vec![batch, seq, dirs, h]
        } else {
            vec![seq, dirs, batch, h]
        };
        let state_shape = if self.batch_major {
            vec![batch, dirs, h]
        } else {
            vec![dirs, batch, h]
        };
        let out = |shape: Vec<usize>, v: Vec<f32>| -> Result<Tensor> {
            Tensor::from_vec(shape, v)?.cast(dtype)
        };
        let mut outs = vec![out(y_shape, y)?, out(state_shape.clone(), y_h)?];
        if self.cell.has_cell_state() {
            outs.push(out(state_shape, y_c)?);
        }
        Ok(outs)
    }
}

impl Recurrent {
    /// `X · Wᵀ + bias` for every row of X at once (`[rows, G·H]`). The recurrence biases are
    /// folded in too, except those the cell must add inside a gate (GRU's linear-before-reset).
    fn project(
        &self,
        x: &[f32],
        rows: usize,
        input_size: usize,
        weights: &DirWeights,
        bias: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        let gh = self.cell.gates() * self.hidden;
        let folded: Option<Vec<f32>> = bias.map(|b| {
            let (wb, rb) = b.split_at(gh);
            let keep = self.cell.folded_recurrence_bias(self.hidden);
            wb.iter()
                .zip(rb)
                .enumerate()
                .map(|(j, (w, r))| if j < keep { w + r } else { *w })
                .collect()
        });
        let mut out = vec![0.0f32; rows * gh];
        let epi = Epilogue {
            bias: folded.as_deref().map_or(Bias::None, Bias::PerCol),
            ..Default::default()
        };
        gemm(
            MatRef::row_major(x, rows, input_size)?,
            &weights.w,
            MatMut::row_major(&mut out, rows, gh)?,
            &epi,
        )?;
        Ok(out)
    }
}

/// The `sequence_lens` input as lengths in `0..=seq` (all `seq` when omitted).
fn seq_lens(t: Option<&Tensor>, batch: usize, seq: usize) -> Result<Vec<usize>> {
    let Some(t) = t else {
        return Ok(vec![seq; batch]);
    };
    let v = t.to_i64_vec()?;
    ensure!(
        v.len() == batch,
        "sequence_lens has {} entries for a batch of {batch}",
        v.len()
    );
    v.iter()
        .map(|&l| {
            usize::try_from(l)
                .ok()
                .filter(|&l| l <= seq)
                .ok_or_else(|| op_err!("sequence length {l} is outside 0..={seq}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::ir::Attr;
    use crate::ops::movement::testing::{assert_close, run_op, t, vals};
    use crate::tensor::Tensor;

    fn run(op: &str, attrs: &[(&str, Attr)], inputs: &[Option<&Tensor>]) -> Vec<Vec<f32>> {
        let outs = run_op(op, 22, attrs, inputs).unwrap();
        outs.iter().map(vals::<f32>).collect()
    }

    #[test]
    fn gru_linear_before_reset_scales_the_recurrent_product_and_its_bias() {
        // numpy: z, r = σ(x·Wᵀ + H·Rᵀ + Wb + Rb); h̃ = tanh(x·Whᵀ + r ⊙ (H·Rhᵀ + Rbh) + Wbh).
        let x = t(&[2, 1, 2], vec![1.0f32, -1.0, 0.5, 2.0]);
        let w: Vec<f32> = vec![
            0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8, -0.9, 0.1, 0.2, 0.3,
        ];
        let r: Vec<f32> = vec![
            0.3, -0.2, 0.1, 0.4, -0.5, 0.6, 0.2, 0.1, -0.3, 0.5, 0.4, -0.1,
        ];
        let b: Vec<f32> = vec![
            0.1, -0.1, 0.2, 0.0, 0.3, -0.2, 0.05, 0.1, -0.1, 0.2, 0.3, 0.4,
        ];
        let (w, r, b) = (t(&[1, 6, 2], w), t(&[1, 6, 2], r), t(&[1, 12], b));
        let attrs = [
            ("hidden_size", Attr::Int(2)),
            ("linear_before_reset", Attr::Int(1)),
        ];
        let out = run("GRU", &attrs, &[Some(&x), Some(&w), Some(&r), Some(&b)]);
        let want_y = [-0.21340368, -0.05998057, -0.07887946, 0.19294612];
        assert_close(&out[0], &want_y, 1e-5);
        assert_close(&out[1], &want_y[2..], 1e-5);
    }

    #[test]
    fn reverse_lstm_runs_each_sequence_backwards_from_its_own_length() {
        // Batch of 2 with lengths 3 and 1: Y past a sequence's end stays zero, and the short
        // sequence's state is its single step's.
        let x = t(&[3, 2, 1], vec![1.0f32, 2.0, -1.0, 0.0, 0.5, 0.0]);
        let w = t(&[1, 4, 1], vec![0.5f32, -0.4, 0.3, 0.2]);
        let r = t(&[1, 4, 1], vec![0.1f32, 0.2, -0.3, 0.4]);
        let lens = t(&[2], vec![3i32, 1]);
        let attrs = [
            ("hidden_size", Attr::Int(1)),
            ("direction", Attr::String("reverse".into())),
        ];
        let ins = [Some(&x), Some(&w), Some(&r), None, Some(&lens)];
        let out = run("LSTM", &attrs, &ins);
        let want_y = [0.03539115, 0.08396583, -0.02830816, 0.0, 0.02519689, 0.0];
        assert_close(&out[0], &want_y, 1e-6);
        assert_close(&out[1], &[0.03539115, 0.08396583], 1e-6);
        assert_close(&out[2], &[0.08872036, 0.27776495], 1e-6);
    }

    #[test]
    fn rnn_clips_pre_activations_and_honours_custom_activations() {
        // H₁ = relu(clip([2, −1], ±1)) = [1, 0]; H₂ = relu(clip([−1, 0.5] + [0.5, 1], ±1)).
        let x = t(&[2, 1, 1], vec![2.0f32, -1.0]);
        let w = t(&[1, 2, 1], vec![1.0f32, -0.5]);
        let r = t(&[1, 2, 2], vec![0.5f32, 0.0, 1.0, -1.0]);
        let attrs = [
            ("hidden_size", Attr::Int(2)),
            ("activations", Attr::Strings(vec!["Relu".into()])),
            ("clip", Attr::Float(1.0)),
        ];
        let out = run("RNN", &attrs, &[Some(&x), Some(&w), Some(&r)]);
        assert_close(&out[0], &[1.0, 0.0, 0.0, 1.0], 1e-6);
    }

    #[test]
    fn mismatched_weights_are_errors() {
        let x = t(&[1, 1, 3], vec![0.0f32; 3]);
        let w = t(&[1, 4, 2], vec![0.0f32; 8]);
        let r = t(&[1, 4, 4], vec![0.0f32; 16]);
        let attrs = [("hidden_size", Attr::Int(4))];
        assert!(run_op("RNN", 22, &attrs, &[Some(&x), Some(&w), Some(&r)]).is_err());
    }
}
