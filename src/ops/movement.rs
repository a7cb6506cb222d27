//! Data movement (Transpose, Concat, Slice, Gather, Split, Pad, Tile, ...).
//!
//! These ops copy elements without computing on them (CumSum and TopK aside), so each is
//! written once, generic over the element type, and instantiated for every dtype by
//! `with_dtype!`. Index data read from tensors is validated before any element moves.

#[path = "movement_index.rs"]
mod index;
#[path = "movement_layout.rs"]
mod layout;
#[path = "movement_seq.rs"]
mod seq;
#[path = "movement_strided.rs"]
pub(crate) mod strided;

pub(crate) use layout::{concat_tensors, split_tensor};

use super::util::normalize_axis;
use super::{BuildCtx, Kernel};
use crate::error::Result;
pub(crate) use crate::tensor::filled_vec;
use crate::{ensure, op_err};
use infer_kernels::parallel;
use rayon::prelude::*;

/// Element count above which kernels split their work over rayon tasks.
pub(crate) const PAR_THRESHOLD: usize = 32 * 1024;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "Transpose" => layout::Transpose::build(ctx),
        "Concat" => layout::Concat::build(ctx),
        "Split" => layout::Split::build(ctx),
        "Slice" => layout::Slice::build(ctx),
        "Tile" => layout::Tile::build(ctx),
        "Pad" => layout::Pad::build(ctx),
        "Trilu" => layout::Trilu::build(ctx),
        "DepthToSpace" => layout::DepthToSpace::build(ctx),
        "SpaceToDepth" => layout::SpaceToDepth::build(ctx),
        "Gather" => index::Gather::build(ctx),
        "GatherElements" => index::GatherElements::build(ctx),
        "GatherND" => index::GatherNd::build(ctx),
        // Scatter (opsets 9-10) is ScatterElements under its old name.
        "ScatterElements" | "Scatter" => index::ScatterElements::build(ctx),
        "ScatterND" => index::ScatterNd::build(ctx),
        "OneHot" => index::OneHot::build(ctx),
        "Compress" => index::Compress::build(ctx),
        "ReverseSequence" => seq::ReverseSequence::build(ctx),
        "CumSum" => seq::CumSum::build(ctx, false),
        "CumProd" => seq::CumSum::build(ctx, true),
        "TopK" => seq::TopK::build(ctx),
        _ => return None,
    })
}

/// Runs `f(index, chunk)` over `chunk`-sized pieces of `out`, on rayon when `out` is large.
pub(crate) fn for_each_chunk<T: Send>(
    out: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if chunk == 0 {
        return;
    }
    if out.len() >= PAR_THRESHOLD && out.len() > chunk {
        parallel::for_each(out.par_chunks_mut(chunk).enumerate(), |(i, c)| f(i, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// The axis an op works along, in `0..rank`. Unlike `util::normalize_axis`, a scalar has none.
pub(crate) fn axis_of(axis: i64, rank: usize) -> Result<usize> {
    ensure!(rank > 0, "axis {axis} given for a scalar input");
    normalize_axis(axis, rank)
}

/// Maps an index read from data (negative counts from the end) into `0..n`.
pub(crate) fn wrap_index(i: i64, n: usize) -> Result<usize> {
    let w = if i < 0 { i + n as i64 } else { i };
    if w < 0 || w >= n as i64 {
        return Err(op_err!("index {i} is out of range for a dimension of {n}"));
    }
    Ok(w as usize)
}

/// Converts dimensions read from data, rejecting negative ones.
pub(crate) fn dims_from_i64(v: &[i64]) -> Result<Vec<usize>> {
    v.iter()
        .map(|&d| usize::try_from(d).map_err(|_| op_err!("dimension {d} is negative")))
        .collect()
}

/// Builds and runs single ops in tests, through the same `ops::build` the planner uses.
#[cfg(test)]
pub(crate) mod testing {
    use crate::error::Result;
    use crate::ir::{Attr, Attrs, Node};
    use crate::ops::BuildCtx;
    use crate::tensor::{Storable, Tensor};

    /// Runs `op` at `opset` with the given attributes on the given inputs (`None` = omitted).
    pub fn run_op(
        op: &str,
        opset: i64,
        attrs: &[(&str, Attr)],
        inputs: &[Option<&Tensor>],
    ) -> Result<Vec<Tensor>> {
        let node = Node {
            name: "test".into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: (0..inputs.len()).map(Some).collect(),
            outputs: vec![Some(100)],
            attrs: Attrs(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        };
        run_node(&node, opset, inputs)
    }

    /// Like `run_op` for a node built by the caller (e.g. with several outputs).
    pub fn run_node(node: &Node, opset: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let ctx = BuildCtx {
            node,
            opset,
            constants: vec![None; inputs.len()],
            options: Default::default(),
        };
        crate::ops::build(&ctx)?.run(inputs)
    }

    /// Runs an op expected to have one output.
    pub fn run1(
        op: &str,
        opset: i64,
        attrs: &[(&str, Attr)],
        inputs: &[&Tensor],
    ) -> Result<Tensor> {
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|&t| Some(t)).collect();
        let mut out = run_op(op, opset, attrs, &inputs)?;
        assert_eq!(out.len(), 1, "{op} should have one output");
        Ok(out.remove(0))
    }

    /// A tensor from a shape and row-major values.
    pub fn t<T: Storable>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).expect("test tensor")
    }

    /// A 1-D int64 tensor.
    pub fn i64s(v: &[i64]) -> Tensor {
        t(&[v.len()], v.to_vec())
    }

    pub fn ints(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }

    /// The values of an output, which must be of type `T`.
    pub fn vals<T: Storable>(x: &Tensor) -> Vec<T> {
        x.as_slice::<T>().expect("output dtype").to_vec()
    }

    /// Asserts two float slices agree within `tol` (absolute).
    pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "length: {got:?} vs {want:?}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol,
                "at {i}: got {g}, want {w} (tol {tol})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use crate::ir::Attr;
    use crate::tensor::Tensor;

    /// Every op of the shape, movement and reduce families, fed every combination of up to
    /// three hostile inputs (scalars, empty tensors, negative and huge indices, wrong types),
    /// must return a result or an error, never panic or abort.
    #[test]
    fn hostile_inputs_never_panic() {
        let pool: Vec<Tensor> = vec![
            t(&[2, 3], vec![1.0f32, -2.0, 3.0, 0.0, f32::NAN, 6.0]),
            t(&[], vec![2.5f32]),
            t(&[0, 2], Vec::<f32>::new()),
            t(&[2], vec![-1i64, 3]),
            t(&[3], vec![0i64, 1 << 40, i64::MIN]),
            t(&[], vec![i64::MAX]),
            t(&[], vec![-2i64]),
            t(&[3], vec![true, false, true]),
            t(&[2, 2], vec![1i32, -7, 0, 2]),
        ];
        let ops = [
            "Reshape",
            "Flatten",
            "Squeeze",
            "Unsqueeze",
            "Shape",
            "Size",
            "Expand",
            "ConstantOfShape",
            "Range",
            "Identity",
            "EyeLike",
            "NonZero",
            "Transpose",
            "Concat",
            "Split",
            "Slice",
            "Tile",
            "Pad",
            "Trilu",
            "Gather",
            "GatherElements",
            "GatherND",
            "ScatterElements",
            "ScatterND",
            "OneHot",
            "Compress",
            "ReverseSequence",
            "CumSum",
            "CumProd",
            "TopK",
            "ReduceSum",
            "ReduceMean",
            "ReduceMax",
            "ReduceL2",
            "ReduceLogSumExp",
            "ArgMax",
            "Softmax",
            "Hardmax",
            "DepthToSpace",
            "SpaceToDepth",
            "ReduceProd",
            "ReduceMin",
            "ReduceL1",
            "ReduceLogSum",
            "ReduceSumSquare",
            "ArgMin",
            "LogSoftmax",
        ];
        let attr_sets: Vec<Vec<(&str, Attr)>> = vec![
            vec![],
            vec![("axis", Attr::Int(-1)), ("keepdims", Attr::Int(0))],
            vec![("axis", Attr::Int(1)), ("batch_dims", Attr::Int(1))],
            vec![
                ("axes", ints(&[0, -1])),
                ("perm", ints(&[1, 0])),
                ("blocksize", Attr::Int(2)),
                ("mode", Attr::String("reflect".into())),
                ("reduction", Attr::String("mul".into())),
            ],
        ];
        let n = pool.len();
        let mut combos: Vec<Vec<Option<&Tensor>>> = vec![vec![]];
        for a in 0..n {
            combos.push(vec![Some(&pool[a])]);
            for b in 0..n {
                combos.push(vec![Some(&pool[a]), Some(&pool[b])]);
                for c in 0..n {
                    combos.push(vec![Some(&pool[a]), Some(&pool[b]), Some(&pool[c])]);
                }
            }
        }
        for op in ops {
            for opset in [11, 18] {
                for attrs in &attr_sets {
                    for inputs in &combos {
                        let _ = run_op(op, opset, attrs, inputs);
                    }
                }
            }
        }
    }
}
