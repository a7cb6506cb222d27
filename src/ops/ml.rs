//! `ai.onnx.ml` ops on numeric tensors: ArrayFeatureExtractor, Binarizer and TreeEnsemble
//! (opset 5).

use super::util::input;
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{Elem, Tensor};
use crate::{ensure, op_err, with_any_dtype, with_dtype};

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    if ctx.node.domain != "ai.onnx.ml" {
        return None;
    }
    Some(match op {
        "ArrayFeatureExtractor" => Ok(Box::new(ArrayFeatureExtractor)),
        "Binarizer" => ctx.attrs().float_or("threshold", 0.0).map(|t| {
            Box::new(Binarizer {
                threshold: t as f64,
            }) as Box<dyn Kernel>
        }),
        "TreeEnsemble" => TreeEnsemble::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        _ => return None,
    })
}

/// Picks entries of the last axis: `Y[..., j] = X[..., indices[j]]`. A 1-D input gives a
/// `[1, k]` output (as onnxruntime does).
#[derive(Debug)]
struct ArrayFeatureExtractor;

impl Kernel for ArrayFeatureExtractor {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        let s = x.shape();
        ensure!(!s.is_empty(), "X must have at least one dimension");
        let last = s[s.len() - 1];
        let picks = indices
            .to_i64_vec()?
            .into_iter()
            .map(|i| {
                usize::try_from(i)
                    .ok()
                    .filter(|&i| i < last)
                    .ok_or_else(|| op_err!("index {i} is out of range for {last} features"))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut shape = if s.len() == 1 {
            vec![1]
        } else {
            s[..s.len() - 1].to_vec()
        };
        shape.push(picks.len());
        with_any_dtype!(x.dtype(), T, {
            let src = x.as_slice::<T>()?;
            let out: Vec<T> = src
                .chunks_exact(last.max(1))
                .flat_map(|row| picks.iter().map(move |&i| row[i]))
                .collect();
            Ok(vec![Tensor::from_vec(shape, out)?])
        })
    }
}

/// `Y = X > threshold ? 1 : 0`, in X's type.
#[derive(Debug)]
struct Binarizer {
    threshold: f64,
}

impl Kernel for Binarizer {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        with_dtype!(x.dtype(), T, {
            let out: Vec<T> = x
                .as_slice::<T>()?
                .iter()
                .map(|v| {
                    T::from_f64(if v.to_f64() > self.threshold {
                        1.0
                    } else {
                        0.0
                    })
                })
                .collect();
            Ok(vec![Tensor::from_vec(x.shape().to_vec(), out)?])
        })
    }
}

/// Where a branch goes: another interior node or a leaf (indices into their arrays).
#[derive(Clone, Copy, Debug)]
enum Next {
    Node(usize),
    Leaf(usize),
}

#[derive(Debug)]
enum Test {
    Leq(f64),
    Lt(f64),
    Gte(f64),
    Gt(f64),
    Eq(f64),
    Neq(f64),
    Member(Vec<f64>),
}

#[derive(Debug)]
struct TreeNode {
    feature: usize,
    test: Test,
    /// A NaN feature takes the true branch (otherwise it fails every comparison).
    missing_tracks_true: bool,
    on_true: Next,
    on_false: Next,
}

impl TreeNode {
    fn goes_true(&self, v: f64) -> bool {
        if v.is_nan() {
            return self.missing_tracks_true;
        }
        match &self.test {
            Test::Leq(s) => v <= *s,
            Test::Lt(s) => v < *s,
            Test::Gte(s) => v >= *s,
            Test::Gt(s) => v > *s,
            Test::Eq(s) => v == *s,
            Test::Neq(s) => v != *s,
            Test::Member(set) => set.contains(&v),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Aggregate {
    Average,
    Sum,
    Min,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum PostTransform {
    None,
    Softmax,
    Logistic,
}

#[derive(Debug)]
struct TreeEnsemble {
    nodes: Vec<TreeNode>,
    /// Per leaf: (target, weight).
    leaves: Vec<(usize, f64)>,
    roots: Vec<Next>,
    n_targets: usize,
    aggregate: Aggregate,
    post: PostTransform,
}

impl TreeEnsemble {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let a = ctx.attrs();
        let ints = |name: &str| -> Result<&[i64]> {
            a.ints(name)?
                .ok_or_else(|| op_err!("missing attribute '{name}'"))
        };
        let floats = |name: &str| -> Result<Option<Vec<f64>>> {
            a.tensor(name)?.map(Tensor::to_f64_vec).transpose()
        };
        let index = |v: i64, len: usize, what: &str| -> Result<usize> {
            usize::try_from(v)
                .ok()
                .filter(|&i| i < len)
                .ok_or_else(|| op_err!("{what} {v} is out of range (0..{len})"))
        };
        let splits = floats("nodes_splits")?.ok_or_else(|| op_err!("missing nodes_splits"))?;
        let modes = a
            .tensor("nodes_modes")?
            .ok_or_else(|| op_err!("missing nodes_modes"))?
            .to_i64_vec()?;
        let (features, true_ids, false_ids) = (
            ints("nodes_featureids")?,
            ints("nodes_truenodeids")?,
            ints("nodes_falsenodeids")?,
        );
        let (true_leafs, false_leafs) = (ints("nodes_trueleafs")?, ints("nodes_falseleafs")?);
        let missing = a.ints("nodes_missing_value_tracks_true")?.unwrap_or(&[]);
        let weights = floats("leaf_weights")?.ok_or_else(|| op_err!("missing leaf_weights"))?;
        let targets = ints("leaf_targetids")?;
        let n_targets = index(a.int_or("n_targets", 0)?, usize::MAX, "n_targets")?;
        let n = splits.len();
        ensure!(
            [modes.len(), features.len(), true_ids.len(), false_ids.len()]
                .iter()
                .chain(&[true_leafs.len(), false_leafs.len()])
                .all(|&l| l == n),
            "the nodes_* attributes differ in length"
        );
        ensure!(
            weights.len() == targets.len(),
            "leaf attributes differ in length"
        );
        let leaves = targets
            .iter()
            .zip(&weights)
            .map(|(&t, &w)| Ok((index(t, n_targets, "leaf target")?, w)))
            .collect::<Result<Vec<_>>>()?;
        let next = |id: i64, leaf: i64| -> Result<Next> {
            Ok(if leaf != 0 {
                Next::Leaf(index(id, leaves.len(), "leaf id")?)
            } else {
                Next::Node(index(id, n, "node id")?)
            })
        };
        // Members of the set-membership nodes, in node order, each set ended by a NaN.
        let members = floats("membership_values")?.unwrap_or_default();
        let mut member_sets = members.split(|v| v.is_nan());
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let s = splits[i];
            let test = match modes[i] {
                0 => Test::Leq(s),
                1 => Test::Lt(s),
                2 => Test::Gte(s),
                3 => Test::Gt(s),
                4 => Test::Eq(s),
                5 => Test::Neq(s),
                6 => Test::Member(
                    member_sets
                        .next()
                        .ok_or_else(|| op_err!("membership_values has too few sets"))?
                        .to_vec(),
                ),
                m => return Err(op_err!("unknown node mode {m}")),
            };
            nodes.push(TreeNode {
                feature: index(features[i], usize::MAX, "feature id")?,
                test,
                missing_tracks_true: missing.get(i).is_some_and(|&m| m != 0),
                on_true: next(true_ids[i], true_leafs[i])?,
                on_false: next(false_ids[i], false_leafs[i])?,
            });
        }
        // A root whose branches both reach the same leaf is that leaf.
        let roots = ints("tree_roots")?
            .iter()
            .map(|&r| {
                let i = index(r, n, "tree root")?;
                Ok(match (nodes[i].on_true, nodes[i].on_false) {
                    (Next::Leaf(t), Next::Leaf(f)) if t == f => Next::Leaf(t),
                    _ => Next::Node(i),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let aggregate = match a.int_or("aggregate_function", 1)? {
            0 => Aggregate::Average,
            1 => Aggregate::Sum,
            2 => Aggregate::Min,
            3 => Aggregate::Max,
            f => return Err(op_err!("unknown aggregate_function {f}")),
        };
        let post = match a.int_or("post_transform", 0)? {
            0 => PostTransform::None,
            1 => PostTransform::Softmax,
            2 => PostTransform::Logistic,
            p => return Err(op_err!("post_transform {p} is not supported")),
        };
        Ok(TreeEnsemble {
            nodes,
            leaves,
            roots,
            n_targets,
            aggregate,
            post,
        })
    }

    /// The leaf one tree sends `row` to. Walks at most as many steps as there are nodes, so
    /// a cyclic (malformed) tree is an error rather than a hang.
    fn leaf(&self, mut at: Next, row: &[f64]) -> Result<(usize, f64)> {
        for _ in 0..=self.nodes.len() {
            match at {
                Next::Leaf(l) => return Ok(self.leaves[l]),
                Next::Node(i) => {
                    let node = &self.nodes[i];
                    let v = *row.get(node.feature).ok_or_else(|| {
                        op_err!(
                            "feature {} is out of range for {} features",
                            node.feature,
                            row.len()
                        )
                    })?;
                    at = if node.goes_true(v) {
                        node.on_true
                    } else {
                        node.on_false
                    };
                }
            }
        }
        Err(op_err!("the tree has a cycle"))
    }

    fn predict(&self, row: &[f64], out: &mut [f64]) -> Result<()> {
        let init = match self.aggregate {
            Aggregate::Min => f64::INFINITY,
            Aggregate::Max => f64::NEG_INFINITY,
            _ => 0.0,
        };
        out.fill(init);
        for &root in &self.roots {
            let (t, w) = self.leaf(root, row)?;
            out[t] = match self.aggregate {
                Aggregate::Sum => out[t] + w,
                Aggregate::Average => out[t] + w / self.roots.len() as f64,
                Aggregate::Min => out[t].min(w),
                Aggregate::Max => out[t].max(w),
            };
        }
        match self.post {
            PostTransform::None => {}
            PostTransform::Logistic => out.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
            PostTransform::Softmax => {
                let max = out.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                out.iter_mut().for_each(|v| *v = (*v - max).exp());
                let sum: f64 = out.iter().sum();
                out.iter_mut().for_each(|v| *v /= sum);
            }
        }
        Ok(())
    }
}

impl Kernel for TreeEnsemble {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.dtype().is_float(),
            "X must be a float tensor, got {}",
            x.dtype()
        );
        let s = x.shape();
        let (rows, features) = match s {
            [n] => (1, *n),
            [n, f] => (*n, *f),
            _ => return Err(op_err!("X must be [N, F], got {s:?}")),
        };
        let data = x.to_f64_vec()?;
        let mut out = vec![0.0; rows * self.n_targets];
        if self.n_targets > 0 {
            for (row, o) in data
                .chunks(features.max(1))
                .zip(out.chunks_mut(self.n_targets))
            {
                self.predict(row, o)?;
            }
        }
        Ok(vec![
            Tensor::from_vec(vec![rows, self.n_targets], out)?.cast(x.dtype())?
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_feature_extractor_picks_columns() {
        let x = Tensor::from_vec(vec![2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let i = Tensor::from_vec(vec![2], vec![2i64, 0]).unwrap();
        let y = ArrayFeatureExtractor
            .run(&[Some(&x), Some(&i)])
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<i32>().unwrap(), &[3, 1, 6, 4]);
        let bad = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
        assert!(ArrayFeatureExtractor.run(&[Some(&x), Some(&bad)]).is_err());
    }

    #[test]
    fn binarizer_thresholds_strictly() {
        let x = Tensor::from_vec(vec![3], vec![0.5f32, 1.0, 1.5]).unwrap();
        let y = Binarizer { threshold: 1.0 }
            .run(&[Some(&x)])
            .unwrap()
            .remove(0);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 0.0, 1.0]);
    }

    #[test]
    fn tree_routes_rows_to_leaves() {
        // x0 <= 2 ? leaf 0 (target 0, 1.5) : leaf 1 (target 1, -3)
        let tree = TreeEnsemble {
            nodes: vec![TreeNode {
                feature: 0,
                test: Test::Leq(2.0),
                missing_tracks_true: false,
                on_true: Next::Leaf(0),
                on_false: Next::Leaf(1),
            }],
            leaves: vec![(0, 1.5), (1, -3.0)],
            roots: vec![Next::Node(0)],
            n_targets: 2,
            aggregate: Aggregate::Sum,
            post: PostTransform::None,
        };
        let x = Tensor::from_vec(vec![2, 1], vec![1.0f64, 5.0]).unwrap();
        let y = tree.run(&[Some(&x)]).unwrap().remove(0);
        assert_eq!(y.as_slice::<f64>().unwrap(), &[1.5, 0.0, 0.0, -3.0]);
    }
}
