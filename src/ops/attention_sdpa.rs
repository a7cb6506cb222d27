//! `ScaledDotProductAttention` (domain `infer`): `softmax(scale · Q·Kᵀ + mask) · V` as one
//! step, made by `plan::fuse::attention` from the MatMul → (Mul) → Add → Softmax → MatMul
//! chain that exporters write for attention (BERT, MiniLM, GPT-2).
//!
//! Unfused, the scores of all heads (`[batch, heads, Tq, Tk]`, 786 KB for 12 heads of 128
//! tokens) go to memory three times over: written by the product, read and written by the
//! mask Add and the Softmax, read by the second product. Here each task computes a block of
//! query rows of one head into a thread's scratch (16–64 KB, in L1/L2), adds the mask, takes
//! the softmax and multiplies by V there, writing only the output.
//!
//! Inputs: `Q [..., Tq, D]`, `Kt [..., D, Tk]` (K already transposed, as the exported graph
//! has it), `V [..., Tk, Dv]`, optional `mask` broadcastable to `[..., Tq, Tk]`. Attributes:
//! `_scale` (the scores' factor, 1 when absent), `_nodes` (the fused nodes' names, for
//! errors), `_softmax_opset`, `_cast_probs` (a Cast to float after the Softmax). Any case the
//! direct path does not take (other types, batch broadcasting between Q, K and V, a mask not
//! `Tk` long) runs the fused nodes' own kernels one after the other, so the node computes
//! exactly what they did.

use crate::error::Result;
use crate::ir::{Attr, Attrs, Node};
use crate::ops::util::{input, opt_input};
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{spare, DType, Tensor};
use crate::{ensure, op_err};
use infer_kernels::gemm::{gemm_serial, Epilogue, MatMut, MatRef};
use infer_kernels::parallel;
use infer_kernels::softmax::softmax_rows;
use rayon::prelude::*;
use std::cell::Cell;

/// The attribute naming the fused nodes: the scores MatMul, the mask Add (when there is one),
/// the Softmax and the output MatMul.
pub(crate) const NODES_ATTR: &str = "_nodes";
/// The Softmax's opset (its `axis` default and semantics depend on it).
pub(crate) const SOFTMAX_OPSET_ATTR: &str = "_softmax_opset";
/// Set (to 1) when a Cast to float sat between the Softmax and the output product (GPT-2's
/// export): nothing on the direct path, whose operands are f32, a real step otherwise.
pub(crate) const CAST_ATTR: &str = "_cast_probs";

/// ONNX's code for float32 (`Cast`'s `to`).
pub(crate) const FLOAT: i64 = 1;

thread_local! {
    /// A task's scores and probabilities, kept between calls.
    static SCRATCH: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

#[derive(Debug)]
pub(super) struct ScaledDotProductAttention {
    scale: f32,
    /// The fused nodes' kernels, in order, for the cases the direct path does not take.
    unfused: Vec<Part>,
}

/// One fused node, rebuilt as its own kernel.
#[derive(Debug)]
struct Part {
    name: String,
    op_type: &'static str,
    kernel: Box<dyn Kernel>,
}

impl ScaledDotProductAttention {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Self::new(ctx)?))
    }

    fn new(ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let scale = attrs.float_or("_scale", 1.0)?;
        let names = attrs
            .strings(NODES_ATTR)?
            .ok_or_else(|| op_err!("ScaledDotProductAttention needs a '{NODES_ATTR}' attribute"))?;
        let masked = ctx.node.inputs.len() > 3;
        let cast = attrs.int_or(CAST_ATTR, 0)? != 0;
        // Scores, mask Add, Softmax, Cast, output: the ones this node fused.
        let ops = [
            Some("MatMul"),
            masked.then_some("Add"),
            Some("Softmax"),
            cast.then_some("Cast"),
            Some("MatMul"),
        ];
        let ops: Vec<&'static str> = ops.into_iter().flatten().collect();
        ensure!(
            names.len() == ops.len(),
            "ScaledDotProductAttention names {} fused nodes, expected {}",
            names.len(),
            ops.len()
        );
        let softmax_opset = attrs.int_or(SOFTMAX_OPSET_ATTR, ctx.opset)?;
        let unfused = names
            .iter()
            .zip(ops)
            .enumerate()
            .map(|(i, (name, op))| {
                let mut part_attrs = Attrs::default();
                let mut opset = 13;
                match op {
                    "MatMul" if i == 0 && scale != 1.0 => {
                        part_attrs.0.insert("_scale".into(), Attr::Float(scale));
                    }
                    "Softmax" => {
                        part_attrs.0.insert("axis".into(), Attr::Int(-1));
                        opset = softmax_opset;
                    }
                    "Cast" => {
                        part_attrs.0.insert("to".into(), Attr::Int(FLOAT));
                    }
                    _ => {}
                }
                let node = Node {
                    name: name.clone(),
                    op_type: op.into(),
                    domain: String::new(),
                    inputs: vec![None; 2],
                    outputs: vec![None],
                    attrs: part_attrs,
                };
                let part_ctx = BuildCtx {
                    node: &node,
                    opset,
                    constants: vec![None, None],
                    options: ctx.options,
                };
                let kernel = crate::ops::build(&part_ctx).map_err(|e| e.at_node(name, op))?;
                Ok(Part {
                    name: name.clone(),
                    op_type: op,
                    kernel,
                })
            })
            .collect::<Result<Vec<Part>>>()?;
        Ok(ScaledDotProductAttention { scale, unfused })
    }

    /// The fused nodes one after the other, each error naming its node.
    fn run_unfused(
        &self,
        q: &Tensor,
        kt: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut x: Option<Tensor> = None;
        for (i, part) in self.unfused.iter().enumerate() {
            let prev = x.as_ref();
            let inputs: Vec<Option<&Tensor>> = match (i, part.op_type) {
                (0, _) => vec![Some(q), Some(kt)],
                (_, "Add") => vec![prev, mask],
                (_, "MatMul") => vec![prev, Some(v)],
                _ => vec![prev],
            };
            let y = part
                .kernel
                .run(&inputs)
                .and_then(|outs| {
                    outs.into_iter()
                        .next()
                        .ok_or_else(|| op_err!("{} gave no output", part.op_type))
                })
                .map_err(|e| e.at_node(&part.name, part.op_type))?;
            x = Some(y);
        }
        x.ok_or_else(|| op_err!("no fused nodes"))
    }
}

/// Where the direct path reads the mask: `mask[lead(g) + row · row_stride + col]`, the
/// leading (batch) index `g` mapped by `lead_strides` over the output's leading dims.
struct MaskView<'a> {
    data: &'a [f32],
    /// For each leading dim of the output: its extent and the mask's stride along it (0 when
    /// the mask broadcasts).
    lead: Vec<(usize, usize)>,
    row_stride: usize,
}

impl MaskView<'_> {
    /// The mask's row for query row `row` of problem `g` (a flat index over the leading dims).
    fn row(&self, g: usize, row: usize, cols: usize) -> &[f32] {
        let mut rest = g;
        let mut at = 0;
        for &(extent, stride) in self.lead.iter().rev() {
            at += rest % extent * stride;
            rest /= extent;
        }
        let start = at + row * self.row_stride;
        &self.data[start..start + cols]
    }
}

/// The problem the direct path solves: `g` independent heads.
struct Problem<'a> {
    q: &'a [f32],
    kt: &'a [f32],
    v: &'a [f32],
    mask: Option<MaskView<'a>>,
    /// (Tq, D, Tk, Dv).
    dims: (usize, usize, usize, usize),
    scale: f32,
}

impl Problem<'_> {
    /// Query rows `rows` of head `g` into `out` (`rows.len() × Dv`).
    fn block(&self, g: usize, rows: std::ops::Range<usize>, out: &mut [f32]) -> Result<()> {
        let (tq, d, tk, dv) = self.dims;
        let r = rows.len();
        let q = &self.q[(g * tq + rows.start) * d..][..r * d];
        let kt = &self.kt[g * d * tk..][..d * tk];
        let v = &self.v[g * tk * dv..][..tk * dv];
        let (mut scores, mut probs) = SCRATCH.take();
        scores.resize(r * tk, 0.0);
        probs.resize(r * tk, 0.0);
        let result = (|| -> Result<()> {
            // With a mask, the scale is applied in the same pass that adds it (the product's
            // epilogue would make a pass of its own): `s · scale + m`, as the unfused nodes
            // round it.
            let epi = Epilogue {
                alpha: if self.mask.is_some() { 1.0 } else { self.scale },
                ..Default::default()
            };
            gemm_serial(
                MatRef::row_major(q, r, d)?,
                MatRef::row_major(kt, d, tk)?,
                MatMut::row_major(&mut scores, r, tk)?,
                &epi,
            )?;
            if let Some(mask) = &self.mask {
                let scale = self.scale;
                for (i, row) in scores.chunks_exact_mut(tk.max(1)).enumerate() {
                    let m = mask.row(g, rows.start + i, tk);
                    row.iter_mut().zip(m).for_each(|(s, m)| *s = *s * scale + m);
                }
            }
            softmax_rows(&scores, &mut probs, tk);
            gemm_serial(
                MatRef::row_major(&probs, r, tk)?,
                MatRef::row_major(v, tk, dv)?,
                MatMut::row_major(out, r, dv)?,
                &Epilogue::default(),
            )?;
            Ok(())
        })();
        SCRATCH.set((scores, probs));
        result
    }
}

/// Fewest query rows per task when a head is split (a block of scores stays in L1 below
/// ~64 rows of 128 keys).
const MIN_BLOCK_ROWS: usize = 16;

impl Kernel for ScaledDotProductAttention {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (q, kt, v) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let mask = opt_input(inputs, 3);
        let Some((lead, problem)) = direct(q, kt, v, mask, self.scale)? else {
            return Ok(vec![self.run_unfused(q, kt, v, mask)?]);
        };
        let (tq, _, _, dv) = problem.dims;
        let heads: usize = lead.iter().product();
        let mut shape = lead.clone();
        shape.extend([tq, dv]);
        let mut out = spare::f32_output(crate::tensor::checked_numel(&shape)?)?;
        let head_len = tq * dv;
        if head_len > 0 {
            // Heads alone keep the threads busy at 12 heads; fewer heads are also split by rows.
            let threads = parallel::threads();
            let splits = (2 * threads).div_ceil(heads.max(1)).max(1);
            let block = tq.div_ceil(splits).max(MIN_BLOCK_ROWS).min(tq);
            parallel::try_for_each(out.par_chunks_mut(head_len).enumerate(), |(g, head)| {
                if block == tq {
                    return problem.block(g, 0..tq, head);
                }
                parallel::try_for_each(head.par_chunks_mut(block * dv).enumerate(), |(b, rows)| {
                    let start = b * block;
                    problem.block(g, start..(start + block).min(tq), rows)
                })
            })?;
        }
        Ok(vec![out.into_tensor(shape)?])
    }
}

/// The leading dims and the problem when the direct path applies: f32 operands of one rank
/// (3 or more) with the same leading dims, and a mask, if any, f32 with `Tk` columns and every
/// other dim 1 or the output's.
fn direct<'a>(
    q: &'a Tensor,
    kt: &'a Tensor,
    v: &'a Tensor,
    mask: Option<&'a Tensor>,
    scale: f32,
) -> Result<Option<(Vec<usize>, Problem<'a>)>> {
    let f32s = [Some(q), Some(kt), Some(v), mask]
        .iter()
        .flatten()
        .all(|t| t.dtype() == DType::F32);
    let rank = q.rank();
    if !f32s || rank < 3 || kt.rank() != rank || v.rank() != rank {
        return Ok(None);
    }
    let (qs, ks, vs) = (q.shape(), kt.shape(), v.shape());
    let lead = &qs[..rank - 2];
    if ks[..rank - 2] != *lead || vs[..rank - 2] != *lead {
        return Ok(None);
    }
    let (tq, d) = (qs[rank - 2], qs[rank - 1]);
    let (tk, dv) = (ks[rank - 1], vs[rank - 1]);
    if ks[rank - 2] != d || vs[rank - 2] != tk {
        return Ok(None);
    }
    let mask_view = match mask {
        None => None,
        Some(m) => {
            let ms = m.shape();
            if ms.len() > rank || ms.last() != Some(&tk) || tk == 0 {
                return Ok(None);
            }
            // The mask's dims aligned to the output's from the right, missing ones as 1.
            let mut dims = vec![1; rank - ms.len()];
            dims.extend_from_slice(ms);
            let out_dims: Vec<usize> = lead.iter().copied().chain([tq, tk]).collect();
            if dims.iter().zip(&out_dims).any(|(&m, &o)| m != 1 && m != o) {
                return Ok(None);
            }
            let mut strides = vec![0; rank];
            let mut stride = 1;
            for i in (0..rank).rev() {
                strides[i] = if dims[i] == 1 { 0 } else { stride };
                stride *= dims[i];
            }
            Some(MaskView {
                data: m.as_slice::<f32>()?,
                lead: lead
                    .iter()
                    .copied()
                    .zip(strides[..rank - 2].iter().copied())
                    .collect(),
                row_stride: strides[rank - 2],
            })
        }
    };
    let problem = Problem {
        q: q.as_slice::<f32>()?,
        kt: kt.as_slice::<f32>()?,
        v: v.as_slice::<f32>()?,
        mask: mask_view,
        dims: (tq, d, tk, dv),
        scale,
    };
    Ok(Some((lead.to_vec(), problem)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::BuildOptions;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7 + seed * 13) % 23) as f32 - 11.0) / 8.0)
            .collect()
    }

    fn tensor(shape: &[usize], seed: usize) -> Tensor {
        Tensor::from_vec(shape.to_vec(), values(shape.iter().product(), seed)).unwrap()
    }

    fn fused(masked: bool, cast: bool, scale: f32) -> ScaledDotProductAttention {
        let mut attrs = Attrs::default();
        let names = ["scores", "mask", "softmax", "cast", "output"];
        let names: Vec<String> = names
            .iter()
            .filter(|n| (masked || **n != "mask") && (cast || **n != "cast"))
            .map(|n| n.to_string())
            .collect();
        if cast {
            attrs.0.insert(CAST_ATTR.into(), Attr::Int(1));
        }
        attrs.0.insert(NODES_ATTR.into(), Attr::Strings(names));
        attrs.0.insert("_scale".into(), Attr::Float(scale));
        let node = Node {
            name: "attention".into(),
            op_type: "ScaledDotProductAttention".into(),
            domain: "infer".into(),
            inputs: vec![None; if masked { 4 } else { 3 }],
            outputs: vec![None],
            attrs,
        };
        let ctx = BuildCtx {
            node: &node,
            opset: 1,
            constants: vec![None; node.inputs.len()],
            options: BuildOptions::default(),
        };
        ScaledDotProductAttention::new(&ctx).unwrap()
    }

    /// The fused node's output against its nodes run one by one.
    fn check(q: &[usize], kt: &[usize], v: &[usize], mask: Option<Tensor>, direct_path: bool) {
        let (q, kt, v) = (tensor(q, 1), tensor(kt, 2), tensor(v, 3));
        let masked = mask.is_some();
        let kernel = fused(masked, q.rank() == 3, 0.3);
        let inputs = [Some(&q), Some(&kt), Some(&v), mask.as_ref()];
        let inputs = &inputs[..if masked { 4 } else { 3 }];
        assert_eq!(
            direct(&q, &kt, &v, mask.as_ref(), 1.0).unwrap().is_some(),
            direct_path,
            "{:?} {:?} {:?} {:?}",
            q.shape(),
            kt.shape(),
            v.shape(),
            mask.as_ref().map(Tensor::shape)
        );
        let got = kernel.run(inputs).unwrap().remove(0);
        let want = kernel.run_unfused(&q, &kt, &v, mask.as_ref()).unwrap();
        assert_eq!(got.shape(), want.shape());
        let (got, want) = (
            got.as_slice::<f32>().unwrap(),
            want.as_slice::<f32>().unwrap(),
        );
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()) || g.is_nan() && w.is_nan(),
                "element {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn direct_path_matches_the_unfused_nodes() {
        let neg = |shape: &[usize], every: usize| {
            let n: usize = shape.iter().product();
            let v = (0..n)
                .map(|i| {
                    if i % every == 0 {
                        f32::NEG_INFINITY
                    } else {
                        (i % 5) as f32 * -0.5
                    }
                })
                .collect();
            Tensor::from_vec(shape.to_vec(), v).unwrap()
        };
        // Heads with a padding mask per batch, a mask per query row, none; rank 3; one head
        // (split by rows); a row masked out entirely (NaN, as Softmax gives).
        let cases = [
            (vec![2, 3], (37, 16, 29, 24), Some(neg(&[2, 1, 1, 29], 7))),
            (vec![2, 3], (37, 16, 29, 24), Some(neg(&[37, 29], 5))),
            (vec![2, 3], (37, 16, 29, 24), None),
            (vec![4], (9, 8, 9, 5), Some(tensor(&[4, 1, 9], 4))),
            (vec![1, 1], (70, 8, 33, 8), Some(neg(&[1, 1, 70, 33], 3))),
            (vec![1, 2], (3, 4, 5, 6), Some(neg(&[1, 1, 3, 5], 1))),
            // Empty head size, no keys, no queries.
            (vec![1, 2], (3, 0, 5, 4), None),
            (vec![1, 2], (3, 4, 0, 3), None),
            (vec![2, 1], (0, 4, 5, 3), Some(tensor(&[1, 5], 7))),
        ];
        for (lead, (tq, d, tk, dv), mask) in cases {
            let shape = |rows: usize, cols: usize| [&lead[..], &[rows, cols]].concat();
            check(&shape(tq, d), &shape(d, tk), &shape(tk, dv), mask, true);
        }
    }

    #[test]
    fn other_cases_run_the_unfused_nodes() {
        // K broadcast over batch, a mask one column wide, a mask of another rank, rank 2.
        check(&[2, 3, 5, 4], &[1, 3, 4, 6], &[2, 3, 6, 2], None, false);
        check(
            &[2, 3, 5, 4],
            &[2, 3, 4, 6],
            &[2, 3, 6, 2],
            Some(tensor(&[2, 3, 5, 1], 5)),
            false,
        );
        check(&[5, 4], &[4, 6], &[6, 2], Some(tensor(&[5, 6], 6)), false);
    }

    #[test]
    fn mismatched_operands_are_errors_naming_the_fused_node() {
        let kernel = fused(false, false, 1.0);
        let (q, kt, v) = (
            tensor(&[1, 2, 3, 4], 1),
            tensor(&[1, 2, 5, 6], 2),
            tensor(&[1, 2, 6, 2], 3),
        );
        let err = kernel
            .run(&[Some(&q), Some(&kt), Some(&v)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("scores"), "{err}");
    }
}
