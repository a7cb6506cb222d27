//! Graph fusions: each a pattern, a rewrite and a test, in its own file.
//!
//! Fused nodes keep their ONNX op type and carry internal attributes (prefixed `_`) that
//! their kernels read at build time: `_activation` (+ `_alpha`, `_beta`, `_min`, `_max`) for
//! an epilogue activation, and for MatMul `_scale` (a factor on the product) and an optional
//! third input, the bias.

mod activation;
mod attention;
mod conv_bn;
mod conv_concat;
mod conv_residual;
mod conv_scale;
mod gelu;
mod matmul_bias;
mod matmul_scale;

use crate::error::Result;
use crate::ir::{Graph, ValueId};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};

/// Runs every fusion pass, in dependency order (bias and residual before activation: the
/// epilogue adds them first).
pub fn run_all(g: &mut Graph) -> Result<()> {
    conv_bn::fold_batch_norm_into_conv(g)?;
    conv_residual::fuse_conv_residual(g);
    gelu::fuse_gelu(g);
    // A scale before the bias: the epilogue scales the product, then adds the bias.
    matmul_scale::fuse_matmul_scale(g);
    // Takes the scale along; before the bias pass, which would give the output product a
    // bias that the fused node has no place for.
    attention::fuse_attention(g);
    matmul_bias::fuse_matmul_bias(g)?;
    activation::fuse_activations(g)?;
    // After the activations: the scale's chain and the scaled value then end in fused nodes.
    conv_scale::fuse_conv_input_scale(g);
    // Last: the convolutions it takes in carry their fused epilogues.
    conv_concat::fuse_concat_of_convs(g);
    Ok(())
}

/// Who reads each value; rebuilt by each pass before it rewrites.
pub(crate) struct Uses {
    consumers: HashMap<ValueId, Vec<usize>>,
    graph_outputs: HashSet<ValueId>,
}

impl Uses {
    pub fn of(g: &Graph) -> Uses {
        let mut consumers: HashMap<ValueId, Vec<usize>> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                consumers.entry(*v).or_default().push(i);
            }
        }
        Uses {
            consumers,
            graph_outputs: g.outputs.iter().copied().collect(),
        }
    }

    /// The nodes reading `v` (a node reading it twice appears twice).
    pub fn consumers(&self, v: ValueId) -> &[usize] {
        self.consumers.get(&v).map_or(&[], |c| c.as_slice())
    }

    /// The one node reading `v`, when `v` is read once and is not a graph output — the
    /// condition for folding its producer into that reader.
    pub fn sole_consumer(&self, v: ValueId) -> Option<usize> {
        match self.consumers(v) {
            [only] if !self.graph_outputs.contains(&v) => Some(*only),
            _ => None,
        }
    }

    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.graph_outputs.contains(&v)
    }
}

/// The value of a one-element f32 constant.
pub(crate) fn const_scalar(g: &Graph, v: ValueId) -> Option<f32> {
    let t: &Tensor = g.initializers.get(&v)?;
    match t.as_slice::<f32>() {
        Ok([x]) => Some(*x),
        _ => None,
    }
}

/// Drops the nodes marked `true`.
pub(crate) fn remove_nodes(g: &mut Graph, removed: &[bool]) {
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !removed[i - 1]
    });
}

/// The node's first output.
pub(crate) fn output0(g: &Graph, node: usize) -> Option<ValueId> {
    g.nodes[node].outputs.first().copied().flatten()
}

#[cfg(test)]
pub(crate) mod test_util {
    use crate::ir::{Attrs, Graph, Node, ValueId, ValueType};
    use crate::tensor::Tensor;

    /// A tiny graph builder for fusion tests.
    pub struct Builder {
        pub g: Graph,
    }

    impl Builder {
        pub fn new() -> Builder {
            let mut g = Graph::default();
            g.opsets.insert(String::new(), 17);
            Builder { g }
        }
        pub fn input(&mut self, name: &str) -> ValueId {
            let v = self.g.add_value(name, ValueType::default());
            self.g.inputs.push(v);
            v
        }
        pub fn constant(&mut self, name: &str, t: Tensor) -> ValueId {
            let v = self.g.add_value(name, ValueType::default());
            self.g.initializers.insert(v, t);
            v
        }
        pub fn node(&mut self, op: &str, inputs: &[ValueId], attrs: Attrs) -> ValueId {
            let out = self
                .g
                .add_value(format!("{op}_{}", self.g.nodes.len()), ValueType::default());
            self.g.nodes.push(Node {
                name: format!("{op}_{}", self.g.nodes.len()),
                op_type: op.into(),
                domain: String::new(),
                inputs: inputs.iter().map(|&v| Some(v)).collect(),
                outputs: vec![Some(out)],
                attrs,
            });
            out
        }
        pub fn ops(&self) -> Vec<&str> {
            self.g.nodes.iter().map(|n| n.op_type.as_str()).collect()
        }
    }
}
