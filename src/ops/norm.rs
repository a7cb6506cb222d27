//! Normalizations: BatchNormalization, LayerNormalization, RMSNormalization,
//! InstanceNormalization, GroupNormalization, LpNormalization, MeanVarianceNormalization,
//! LRN.
//!
//! All compute in f32 (f16/bf16 inputs are converted). Each reduces to "rows": contiguous runs
//! of elements that share statistics; rows are processed in parallel for large inputs, and
//! sums run in 8 independent lanes so they vectorize.

use super::matmul::{f32_data, from_f32, from_f32_output};
use super::util::{input, normalize_axis, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{spare, Tensor};
use crate::{ensure, op_err};
use infer_kernels::parallel;
use rayon::prelude::*;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    fn boxed<K: Kernel + 'static>(k: Result<K>) -> Result<Box<dyn Kernel>> {
        k.map(|k| Box::new(k) as Box<dyn Kernel>)
    }
    let attrs = ctx.attrs();
    Some(match op {
        "BatchNormalization" => boxed(BatchNorm::build(ctx)),
        "LayerNormalization" => boxed((|| {
            Ok(LayerNorm {
                axis: attrs.int_or("axis", -1)?,
                epsilon: attrs.float_or("epsilon", 1e-5)?,
                outputs: ctx.node.outputs.len(),
            })
        })()),
        "RMSNormalization" => boxed((|| {
            Ok(RmsNorm {
                axis: attrs.int_or("axis", -1)?,
                epsilon: attrs.float_or("epsilon", 1e-5)?,
            })
        })()),
        "InstanceNormalization" => boxed(attrs.float_or("epsilon", 1e-5).map(InstanceNorm)),
        "GroupNormalization" => boxed((|| {
            let groups = attrs
                .int("num_groups")?
                .ok_or_else(|| op_err!("attribute 'num_groups' is required"))?;
            ensure!(groups >= 1, "num_groups must be positive, got {groups}");
            Ok(GroupNorm {
                groups: groups as usize,
                epsilon: attrs.float_or("epsilon", 1e-5)?,
            })
        })()),
        "LpNormalization" => boxed((|| {
            let p = attrs.int_or("p", 2)?;
            ensure!(
                p == 1 || p == 2,
                "LpNormalization supports p = 1 or 2, got {p}"
            );
            Ok(LpNorm {
                axis: attrs.int_or("axis", -1)?,
                p,
            })
        })()),
        "LRN" => boxed((|| {
            let size = attrs
                .int("size")?
                .ok_or_else(|| op_err!("LRN needs the 'size' attribute"))?;
            ensure!(size >= 1, "LRN size must be positive, got {size}");
            Ok(Lrn {
                size: size as usize,
                alpha: attrs.float_or("alpha", 1e-4)?,
                beta: attrs.float_or("beta", 0.75)?,
                bias: attrs.float_or("bias", 1.0)?,
            })
        })()),
        "MeanVarianceNormalization" => boxed((|| {
            Ok(MeanVarianceNorm {
                axes: attrs.ints("axes")?.map_or(vec![0, 2, 3], <[i64]>::to_vec),
            })
        })()),
        _ => return None,
    })
}

/// Outputs with more elements than this are normalized row-parallel.
const PARALLEL_MIN_LEN: usize = 1 << 15;

/// Sum in 8 lanes (vectorizable, and more accurate than one running sum).
fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, x)| *l += x);
    }
    lanes.iter().sum::<f32>() + tail
}

/// Sum of squared deviations from `mean`, in 8 lanes.
fn sum_sq_dev(xs: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    for c in chunks {
        lanes
            .iter_mut()
            .zip(c)
            .for_each(|(l, x)| *l += (x - mean) * (x - mean));
    }
    lanes.iter().sum::<f32>() + tail
}

/// Mean and `1 / sqrt(variance + epsilon)` of a row (two passes, population variance).
fn moments(row: &[f32], epsilon: f32) -> (f32, f32) {
    let n = row.len().max(1) as f32;
    let mean = sum(row) / n;
    let var = sum_sq_dev(row, mean) / n;
    (mean, 1.0 / (var + epsilon).sqrt())
}

/// Runs `f(row_index, x_row, y_row)` over rows of length `len`, in parallel when large.
fn for_rows(x: &[f32], y: &mut [f32], len: usize, f: impl Fn(usize, &[f32], &mut [f32]) + Sync) {
    if len == 0 {
        return;
    }
    if y.len() > PARALLEL_MIN_LEN {
        parallel::for_each(
            y.par_chunks_mut(len).zip(x.par_chunks(len)).enumerate(),
            |(i, (y, x))| f(i, x, y),
        );
    } else {
        y.chunks_mut(len)
            .zip(x.chunks(len))
            .enumerate()
            .for_each(|(i, (y, x))| f(i, x, y));
    }
}

/// `[N, C, spatial...]` → (N, C, spatial size).
fn nc_spatial(x: &Tensor) -> Result<(usize, usize, usize)> {
    let s = x.shape();
    ensure!(s.len() >= 2, "input must be [N, C, ...], got shape {s:?}");
    Ok((s[0], s[1], s[2..].iter().product()))
}

/// A per-channel parameter of length `c`.
fn per_channel<'a>(
    t: Option<&'a Tensor>,
    c: usize,
    name: &str,
) -> Result<Option<std::borrow::Cow<'a, [f32]>>> {
    let Some(t) = t else { return Ok(None) };
    let v = f32_data(t)?;
    ensure!(
        v.len() == c,
        "{name} has {} elements, expected {c}",
        v.len()
    );
    Ok(Some(v))
}

/// BatchNormalization: `y = x · a[c] + b[c]` with `a = scale / sqrt(var + epsilon)` and
/// `b = bias - mean · a`. In inference mode mean and var are the given running statistics
/// (folded into `a`, `b` at build time when constant); in training mode (opset 14+) they are
/// the batch's own, and the updated running statistics are two extra outputs.
#[derive(Debug)]
struct BatchNorm {
    epsilon: f32,
    /// `Some(momentum)` in training mode.
    training: Option<f32>,
    folded: Option<(Vec<f32>, Vec<f32>)>,
}

impl BatchNorm {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let epsilon = attrs.float_or("epsilon", 1e-5)?;
        let training = (attrs.int_or("training_mode", 0)? != 0)
            .then(|| attrs.float_or("momentum", 0.9))
            .transpose()?;
        let constants: Option<Vec<&Tensor>> = (1..5).map(|i| ctx.constant(i)).collect();
        let folded = match constants {
            Some(p) if training.is_none() => {
                Some(Self::fold(&Self::params(&p, p[0].len())?, epsilon))
            }
            _ => None,
        };
        Ok(BatchNorm {
            epsilon,
            training,
            folded,
        })
    }

    /// Scale, bias, mean and variance as f32, each checked to hold `c` values.
    fn params<'a>(p: &[&'a Tensor], c: usize) -> Result<Vec<std::borrow::Cow<'a, [f32]>>> {
        p.iter()
            .zip(["scale", "bias", "mean", "var"])
            .map(|(t, name)| per_channel(Some(t), c, name).map(Option::unwrap_or_default))
            .collect()
    }

    /// Per-channel `(a, b)` from `[scale, bias, mean, var]`.
    fn fold(v: &[impl AsRef<[f32]>], epsilon: f32) -> (Vec<f32>, Vec<f32>) {
        let [s, b, m, var] = [0, 1, 2, 3].map(|i| v[i].as_ref());
        let a: Vec<f32> = s
            .iter()
            .zip(var)
            .map(|(s, v)| s / (v + epsilon).sqrt())
            .collect();
        let b = b
            .iter()
            .zip(m)
            .zip(&a)
            .map(|((b, m), a)| b - m * a)
            .collect();
        (a, b)
    }
}

/// Per-channel mean and population variance of `[N, C, spatial]` data, in f64.
fn channel_moments(x: &[f32], c: usize, spatial: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut s1, mut s2) = (vec![0.0f64; c], vec![0.0f64; c]);
    if spatial > 0 {
        for (i, plane) in x.chunks(spatial).enumerate() {
            let ch = i % c;
            s1[ch] += plane.iter().map(|&v| v as f64).sum::<f64>();
            s2[ch] += plane.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
        }
    }
    let count = (x.len() / c.max(1)).max(1) as f64;
    s1.iter()
        .zip(&s2)
        .map(|(s1, s2)| {
            let mean = s1 / count;
            (mean as f32, (s2 / count - mean * mean).max(0.0) as f32)
        })
        .unzip()
}

impl Kernel for BatchNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (_, c, spatial) = nc_spatial(x)?;
        let xd = f32_data(x)?;
        let mut running = None;
        let computed;
        let (a, b) = match (&self.folded, self.training) {
            (Some(f), _) => f,
            (None, training) => {
                let p: Vec<&Tensor> = (1..5).map(|i| input(inputs, i)).collect::<Result<_>>()?;
                let mut v = Self::params(&p, c)?;
                if let Some(momentum) = training {
                    let (mean, var) = channel_moments(&xd, c, spatial);
                    let update = |old: &[f32], new: &[f32]| -> Vec<f32> {
                        old.iter()
                            .zip(new)
                            .map(|(o, n)| o * momentum + n * (1.0 - momentum))
                            .collect()
                    };
                    running = Some((update(&v[2], &mean), update(&v[3], &var)));
                    v[2] = mean.into();
                    v[3] = var.into();
                }
                computed = Self::fold(&v, self.epsilon);
                &computed
            }
        };
        ensure!(
            a.len() == c,
            "BatchNormalization parameters have {} channels, input has {c}",
            a.len()
        );
        let mut y = vec![0.0f32; xd.len()];
        // Rows are whole images when planes are too small to be worth a task each.
        let row = if spatial >= MIN_PLANE_ROW {
            spatial
        } else {
            c * spatial
        };
        for_rows(&xd, &mut y, row, |i, x, y| {
            let first = if row == spatial { i % c } else { 0 };
            for (ch, (y, x)) in y.chunks_mut(spatial).zip(x.chunks(spatial)).enumerate() {
                let (a, b) = (a[first + ch], b[first + ch]);
                y.iter_mut().zip(x).for_each(|(y, x)| *y = x * a + b);
            }
        });
        let mut outs = vec![from_f32(x.dtype(), x.shape().to_vec(), y)?];
        if let Some((mean, var)) = running {
            outs.push(from_f32(x.dtype(), vec![c], mean)?);
            outs.push(from_f32(x.dtype(), vec![c], var)?);
        }
        Ok(outs)
    }
}

/// Smallest per-channel plane processed as a row of its own.
const MIN_PLANE_ROW: usize = 256;

/// LayerNormalization over the dims from `axis` on, with optional Mean / InvStdDev outputs.
#[derive(Debug)]
struct LayerNorm {
    axis: i64,
    epsilon: f32,
    /// How many outputs the node declares (Y, Mean, InvStdDev).
    outputs: usize,
}

/// A scale or bias broadcast over a row: per element, or one value.
fn row_param<'a>(
    t: Option<&'a Tensor>,
    len: usize,
    name: &str,
) -> Result<Option<std::borrow::Cow<'a, [f32]>>> {
    let Some(t) = t else { return Ok(None) };
    let v = f32_data(t)?;
    ensure!(
        v.len() == len || v.len() == 1,
        "{name} of shape {:?} does not broadcast over the normalized {len} elements",
        t.shape()
    );
    Ok(Some(v))
}

impl Kernel for LayerNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axis = normalize_axis(self.axis, x.rank())?;
        let len: usize = x.shape()[axis..].iter().product();
        let rows: usize = x.shape()[..axis].iter().product();
        let scale = row_param(Some(input(inputs, 1)?), len, "Scale")?;
        let bias = row_param(opt_input(inputs, 2), len, "B")?;
        let xd = f32_data(x)?;
        // Every element is written by the row pass, which takes each row's moments while the
        // row is in cache (they are computed again for the statistics outputs, if asked for).
        let mut y = spare::f32_output(xd.len())?;
        for_rows(&xd, &mut y, len, |_, x, y| {
            let (mean, inv) = moments(x, self.epsilon);
            // The usual case (a scale and a bias per element) in one pass over the row.
            if let (Some(s), Some(b)) = (scale.as_deref(), bias.as_deref()) {
                if s.len() == len && b.len() == len {
                    for (((y, x), s), b) in y.iter_mut().zip(x).zip(s).zip(b) {
                        *y = (x - mean) * inv * s + b;
                    }
                    return;
                }
            }
            y.iter_mut().zip(x).for_each(|(y, x)| *y = (x - mean) * inv);
            match scale.as_deref() {
                Some([s]) => y.iter_mut().for_each(|y| *y *= s),
                Some(s) => y.iter_mut().zip(s).for_each(|(y, s)| *y *= s),
                None => {}
            }
            match bias.as_deref() {
                Some([b]) => y.iter_mut().for_each(|y| *y += b),
                Some(b) => y.iter_mut().zip(b).for_each(|(y, b)| *y += b),
                None => {}
            }
        });
        let mut outs = vec![from_f32_output(x.dtype(), x.shape().to_vec(), y)?];
        if self.outputs > 1 {
            let mut shape = x.shape()[..axis].to_vec();
            shape.resize(x.rank(), 1);
            let stats = if len > 0 {
                parallel::collect_vec(xd.par_chunks(len).map(|row| moments(row, self.epsilon)))
            } else {
                Vec::new()
            };
            let (mean, inv): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
            ensure!(mean.len() == rows, "LayerNormalization over an empty axis");
            outs.push(Tensor::from_vec(shape.clone(), mean)?);
            outs.push(Tensor::from_vec(shape, inv)?);
        }
        Ok(outs)
    }
}

/// RMSNormalization (opset 23): `x / sqrt(mean(x²) + epsilon) · scale` over the dims from
/// `axis` on.
#[derive(Debug)]
struct RmsNorm {
    axis: i64,
    epsilon: f32,
}

impl Kernel for RmsNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axis = normalize_axis(self.axis, x.rank())?;
        let len: usize = x.shape()[axis..].iter().product();
        let scale = row_param(Some(input(inputs, 1)?), len, "scale")?.unwrap_or_default();
        let xd = f32_data(x)?;
        let mut y = vec![0.0f32; xd.len()];
        for_rows(&xd, &mut y, len, |_, x, y| {
            let inv = 1.0 / (sum_sq_dev(x, 0.0) / len as f32 + self.epsilon).sqrt();
            match &scale[..] {
                [s] => y.iter_mut().zip(x).for_each(|(y, x)| *y = x * inv * s),
                s => y
                    .iter_mut()
                    .zip(x)
                    .zip(s)
                    .for_each(|((y, x), s)| *y = x * inv * s),
            }
        });
        Ok(vec![from_f32(x.dtype(), x.shape().to_vec(), y)?])
    }
}

/// InstanceNormalization: statistics per image and channel, then per-channel scale and bias.
#[derive(Debug)]
struct InstanceNorm(f32);

impl Kernel for InstanceNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (_, c, spatial) = nc_spatial(x)?;
        let scale = per_channel(Some(input(inputs, 1)?), c, "scale")?.unwrap_or_default();
        let bias = per_channel(Some(input(inputs, 2)?), c, "B")?.unwrap_or_default();
        let xd = f32_data(x)?;
        let mut y = vec![0.0f32; xd.len()];
        for_rows(&xd, &mut y, spatial, |i, x, y| {
            let (mean, inv) = moments(x, self.0);
            let (a, b) = (inv * scale[i % c], bias[i % c] - mean * inv * scale[i % c]);
            y.iter_mut().zip(x).for_each(|(y, x)| *y = x * a + b);
        });
        Ok(vec![from_f32(x.dtype(), x.shape().to_vec(), y)?])
    }
}

/// GroupNormalization: statistics per image and group of channels; scale and bias per channel
/// (opset 21) or per group (opset 18, told apart by their length).
#[derive(Debug)]
struct GroupNorm {
    groups: usize,
    epsilon: f32,
}

impl Kernel for GroupNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (_, c, spatial) = nc_spatial(x)?;
        let g = self.groups;
        ensure!(c % g == 0, "{c} channels are not divisible into {g} groups");
        let (scale, bias) = (f32_data(input(inputs, 1)?)?, f32_data(input(inputs, 2)?)?);
        let per_group = match (scale.len(), bias.len()) {
            (s, b) if s == c && b == c => false,
            (s, b) if s == g && b == g => true,
            (s, b) => {
                return Err(op_err!(
                    "scale/bias have {s}/{b} elements, expected {c} or {g}"
                ))
            }
        };
        let cg = c / g;
        let xd = f32_data(x)?;
        let mut y = vec![0.0f32; xd.len()];
        for_rows(&xd, &mut y, cg * spatial, |i, x, y| {
            let (mean, inv) = moments(x, self.epsilon);
            let group = i % g;
            for (j, (y, x)) in y.chunks_mut(spatial).zip(x.chunks(spatial)).enumerate() {
                let p = if per_group { group } else { group * cg + j };
                let (a, b) = (inv * scale[p], bias[p] - mean * inv * scale[p]);
                y.iter_mut().zip(x).for_each(|(y, x)| *y = x * a + b);
            }
        });
        Ok(vec![from_f32(x.dtype(), x.shape().to_vec(), y)?])
    }
}

/// Splits `shape` around `axis` into (outer size, axis length, inner size).
fn lanes(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// LpNormalization: `x / ‖x‖_p` along `axis` (zero vectors stay zero).
#[derive(Debug)]
struct LpNorm {
    axis: i64,
    p: i64,
}

impl Kernel for LpNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axis = normalize_axis(self.axis, x.rank())?;
        let (outer, len, inner) = lanes(x.shape(), axis);
        let xd = f32_data(x)?;
        let mut y = xd.to_vec();
        for o in 0..outer {
            for i in 0..inner {
                let idx = |k: usize| (o * len + k) * inner + i;
                let norm = if self.p == 1 {
                    (0..len).map(|k| xd[idx(k)].abs()).sum::<f32>()
                } else {
                    (0..len)
                        .map(|k| xd[idx(k)] * xd[idx(k)])
                        .sum::<f32>()
                        .sqrt()
                };
                if norm != 0.0 {
                    (0..len).for_each(|k| y[idx(k)] /= norm);
                }
            }
        }
        Ok(vec![from_f32(x.dtype(), x.shape().to_vec(), y)?])
    }
}

/// MeanVarianceNormalization: `(x - mean) / (sqrt(E[x²] - mean²) + 1e-9)` over `axes`, as the
/// ONNX function body defines it.
#[derive(Debug)]
struct MeanVarianceNorm {
    axes: Vec<i64>,
}

impl Kernel for MeanVarianceNorm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        let mut reduced = vec![false; shape.len()];
        for &a in &self.axes {
            reduced[normalize_axis(a, shape.len())?] = true;
        }
        // Statistics are kept per "kept" coordinate: map each element to its kept index.
        let kept: Vec<usize> = (0..shape.len()).filter(|&d| !reduced[d]).collect();
        let strides = super::util::strides_of(shape);
        let groups: usize = kept.iter().map(|&d| shape[d]).product();
        let group_of = |flat: usize| {
            kept.iter()
                .fold(0, |acc, &d| acc * shape[d] + flat / strides[d] % shape[d])
        };
        let xd = f32_data(x)?;
        let (mut s1, mut s2, mut n) = (
            vec![0.0f64; groups],
            vec![0.0f64; groups],
            vec![0usize; groups],
        );
        for (i, &v) in xd.iter().enumerate() {
            let g = group_of(i);
            s1[g] += v as f64;
            s2[g] += v as f64 * v as f64;
            n[g] += 1;
        }
        let stats: Vec<(f32, f32)> = (0..groups)
            .map(|g| {
                let cnt = n[g].max(1) as f64;
                let mean = s1[g] / cnt;
                let std = (s2[g] / cnt - mean * mean).max(0.0).sqrt();
                (mean as f32, (std + 1e-9) as f32)
            })
            .collect();
        let y = xd
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (mean, std) = stats[group_of(i)];
                (v - mean) / std
            })
            .collect();
        Ok(vec![from_f32(x.dtype(), shape.to_vec(), y)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Attrs, Node};

    fn run_op(
        op: &str,
        attrs: &[(&str, Attr)],
        inputs: &[Option<&Tensor>],
        outputs: usize,
    ) -> Result<Vec<Tensor>> {
        let node = Node {
            name: "n".into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: vec![],
            outputs: (0..outputs).map(Some).collect(),
            attrs: Attrs(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        };
        let ctx = BuildCtx {
            node: &node,
            opset: 21,
            constants: vec![None; inputs.len()],
            options: Default::default(),
        };
        build(op, &ctx).expect("claimed")?.run(inputs)
    }

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn assert_close(t: &Tensor, want: &[f32]) {
        let got = t.as_slice::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn batch_norm_applies_running_statistics() {
        // Channel 0: (x - 1) / sqrt(4) · 2 + 0.5; channel 1: (x - 0) / 1 · 1 - 1 (epsilon 0).
        let x = t(&[1, 2, 2], &[3.0, 5.0, 1.0, 2.0]);
        let p = |v: [f32; 2]| t(&[2], &v);
        let (s, b, m, v) = (p([2.0, 1.0]), p([0.5, -1.0]), p([1.0, 0.0]), p([4.0, 1.0]));
        let y = run_op(
            "BatchNormalization",
            &[("epsilon", Attr::Float(0.0))],
            &[Some(&x), Some(&s), Some(&b), Some(&m), Some(&v)],
            1,
        )
        .unwrap();
        assert_close(&y[0], &[2.5, 4.5, 0.0, 1.0]);
    }

    #[test]
    fn batch_norm_training_mode_uses_batch_statistics() {
        // Channel values 1, 2 | 3, 4 across two images: mean 2.5, variance 1.25. Running
        // statistics move from (0, 1) by momentum 0.9: mean 0.25, variance 1.025.
        let x = t(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let one = |v: f32| t(&[1], &[v]);
        let attrs = [
            ("epsilon", Attr::Float(0.0)),
            ("training_mode", Attr::Int(1)),
        ];
        let (s, b, m, v) = (one(1.0), one(0.0), one(0.0), one(1.0));
        let y = run_op(
            "BatchNormalization",
            &attrs,
            &[Some(&x), Some(&s), Some(&b), Some(&m), Some(&v)],
            3,
        )
        .unwrap();
        let z = 1.25f32.sqrt();
        assert_close(&y[0], &[-1.5 / z, -0.5 / z, 0.5 / z, 1.5 / z]);
        assert_close(&y[1], &[0.25]);
        assert_close(&y[2], &[1.025]);
    }

    #[test]
    fn batch_norm_on_2d_and_large_planes() {
        // [N, C] input: channel c of every row gets a[c]·x + b[c] (here x·(c+1) + c).
        let params = |v: Vec<f32>| Tensor::from_vec(vec![3], v).unwrap();
        let (s, b) = (params(vec![1.0, 2.0, 3.0]), params(vec![0.0, 1.0, 2.0]));
        let (m, v) = (params(vec![0.0; 3]), params(vec![1.0; 3]));
        let ins = |x: &Tensor| -> Vec<Tensor> {
            run_op(
                "BatchNormalization",
                &[("epsilon", Attr::Float(0.0))],
                &[Some(x), Some(&s), Some(&b), Some(&m), Some(&v)],
                1,
            )
            .unwrap()
        };
        let x = t(&[2, 3], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert_close(&ins(&x)[0], &[1.0, 3.0, 5.0, 2.0, 5.0, 8.0]);
        // Planes of 300 values take the per-plane path.
        let x = Tensor::from_vec(vec![1, 3, 300], vec![2.0f32; 900]).unwrap();
        let want: Vec<f32> = [2.0, 5.0, 8.0].iter().flat_map(|&v| [v; 300]).collect();
        assert_close(&ins(&x)[0], &want);
    }

    #[test]
    fn layer_norm_with_statistics_outputs() {
        // Row [1, 2, 3, 4]: mean 2.5, var 1.25 → (x - 2.5) / 1.118034; row [2, 2, 2, 2] → 0
        // (a tiny epsilon keeps 0 · 1/sqrt(0) from becoming NaN).
        let x = t(&[2, 4], &[1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0]);
        let scale = t(&[4], &[1.0, 1.0, 2.0, 2.0]);
        let bias = t(&[4], &[0.0, 0.0, 0.0, 1.0]);
        let y = run_op(
            "LayerNormalization",
            &[("epsilon", Attr::Float(1e-12))],
            &[Some(&x), Some(&scale), Some(&bias)],
            3,
        );
        let y = y.unwrap();
        let z = [-1.341_640_8, -0.447_213_6, 0.447_213_6, 1.341_640_8];
        assert_close(
            &y[0],
            &[z[0], z[1], 2.0 * z[2], 2.0 * z[3] + 1.0, 0.0, 0.0, 0.0, 1.0],
        );
        assert_eq!(y[1].shape(), &[2, 1]);
        assert_close(&y[1], &[2.5, 2.0]);
        let inv = y[2].as_slice::<f32>().unwrap();
        assert!(
            (inv[0] - 0.894_427_2).abs() < 1e-5 && inv[1] > 1e5,
            "{inv:?}"
        );
    }

    #[test]
    fn rms_norm_scales_by_root_mean_square() {
        // Row [3, 4]: mean square 12.5 → x / 3.535534 · [1, 2] (epsilon 0).
        let x = t(&[1, 2], &[3.0, 4.0]);
        let s = t(&[2], &[1.0, 2.0]);
        let y = run_op(
            "RMSNormalization",
            &[("epsilon", Attr::Float(0.0))],
            &[Some(&x), Some(&s)],
            1,
        )
        .unwrap();
        assert_close(&y[0], &[0.848_528_1, 2.262_741_7]);
    }

    #[test]
    fn instance_and_group_norm() {
        // One image, 2 channels of [1, 3] and [2, 6] (epsilon 0): each normalizes to [-1, 1].
        let x = t(&[1, 2, 2], &[1.0, 3.0, 2.0, 6.0]);
        let (s, b) = (t(&[2], &[1.0, 2.0]), t(&[2], &[0.0, 1.0]));
        let eps = [("epsilon", Attr::Float(0.0))];
        let y = run_op(
            "InstanceNormalization",
            &eps,
            &[Some(&x), Some(&s), Some(&b)],
            1,
        )
        .unwrap();
        assert_close(&y[0], &[-1.0, 1.0, -1.0, 3.0]);
        // One group over all four values [1, 3, 2, 6]: mean 3, std sqrt(3.5).
        let attrs = [("epsilon", Attr::Float(0.0)), ("num_groups", Attr::Int(1))];
        let y = run_op(
            "GroupNormalization",
            &attrs,
            &[Some(&x), Some(&s), Some(&b)],
            1,
        )
        .unwrap();
        let z = |v: f32| (v - 3.0) / 3.5f32.sqrt();
        assert_close(
            &y[0],
            &[z(1.0), z(3.0), 2.0 * z(2.0) + 1.0, 2.0 * z(6.0) + 1.0],
        );
        // Two groups with opset-18 per-group parameters equal InstanceNormalization.
        let attrs = [("epsilon", Attr::Float(0.0)), ("num_groups", Attr::Int(2))];
        let y = run_op(
            "GroupNormalization",
            &attrs,
            &[Some(&x), Some(&s), Some(&b)],
            1,
        )
        .unwrap();
        assert_close(&y[0], &[-1.0, 1.0, -1.0, 3.0]);
        let bad = t(&[3], &[1.0; 3]);
        assert!(run_op(
            "GroupNormalization",
            &attrs,
            &[Some(&x), Some(&bad), Some(&bad)],
            1
        )
        .is_err());
    }

    #[test]
    fn lp_and_mean_variance_norm() {
        let x = t(&[2, 2], &[3.0, 4.0, 0.0, 0.0]);
        let y = run_op("LpNormalization", &[], &[Some(&x)], 1).unwrap();
        assert_close(&y[0], &[0.6, 0.8, 0.0, 0.0]);
        let y = run_op(
            "LpNormalization",
            &[("axis", Attr::Int(0)), ("p", Attr::Int(1))],
            &[Some(&x)],
            1,
        )
        .unwrap();
        assert_close(&y[0], &[1.0, 1.0, 0.0, 0.0]);
        // Over axis 1 of [[1, 3], [2, 2]]: rows → [-1, 1] and [0, 0].
        let m = t(&[2, 2], &[1.0, 3.0, 2.0, 2.0]);
        let y = run_op(
            "MeanVarianceNormalization",
            &[("axes", Attr::Ints(vec![1]))],
            &[Some(&m)],
            1,
        )
        .unwrap();
        assert_close(&y[0], &[-1.0, 1.0, 0.0, 0.0]);
    }
}

/// Local response normalization across channels (AlexNet/Inception era):
/// `y = x / (bias + alpha/size · Σ x²)^beta`, the sum over a window of `size` neighbouring
/// channels (`(size-1)/2` before, the rest after).
#[derive(Debug)]
struct Lrn {
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
}

impl Kernel for Lrn {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let [n, c, ..] = *x.shape() else {
            return Err(op_err!(
                "LRN needs an input of rank >= 2, got {:?}",
                x.shape()
            ));
        };
        let plane: usize = x.shape()[2..].iter().product();
        let xd = f32_data(x)?;
        let before = (self.size - 1) / 2;
        let after = self.size - 1 - before;
        let scale = self.alpha / self.size as f32;
        let mut out = vec![0.0f32; xd.len()];
        if plane > 0 {
            for (batch_in, batch_out) in xd
                .chunks_exact(c * plane)
                .zip(out.chunks_exact_mut(c * plane))
                .take(n)
            {
                for ch in 0..c {
                    let window = ch.saturating_sub(before)..(ch + after + 1).min(c);
                    for p in 0..plane {
                        let sum: f32 = window
                            .clone()
                            .map(|k| batch_in[k * plane + p].powi(2))
                            .sum();
                        let v = batch_in[ch * plane + p];
                        batch_out[ch * plane + p] = v / (self.bias + scale * sum).powf(self.beta);
                    }
                }
            }
        }
        Ok(vec![from_f32(x.dtype(), x.shape().to_vec(), out)?])
    }
}
