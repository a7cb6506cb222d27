//! A small IR graph builder: named nodes of ONNX op types, constants and symbolic inputs.

use super::hf_config::Activation;
use crate::error::Result;
use crate::ir::{Attr, Attrs, Dim, Graph, Node, ValueId, ValueType};
use crate::tensor::{DType, Tensor};

/// The default-domain opset the built graphs declare: `Attention` needs 23.
const OPSET: i64 = 23;

/// Builds a `Graph` node by node; each node's single output is named after the node.
pub(crate) struct GraphBuilder {
    g: Graph,
}

/// Symbolic dimensions of the token inputs.
pub(crate) const BATCH: &str = "batch";
pub(crate) const SEQUENCE: &str = "sequence";

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        let mut g = Graph::default();
        g.opsets.insert(String::new(), OPSET);
        GraphBuilder { g }
    }

    /// A `[batch, sequence]` int64 input (token ids, masks).
    pub fn token_input(&mut self, name: &str) -> ValueId {
        let ty = ValueType {
            dtype: Some(DType::I64),
            shape: Some(vec![
                Dim::Symbol(BATCH.into()),
                Dim::Symbol(SEQUENCE.into()),
            ]),
        };
        let v = self.g.add_value(name, ty);
        self.g.inputs.push(v);
        v
    }

    /// A constant; weights are passed in as they were loaded (views of the mapped file).
    pub fn constant(&mut self, name: &str, t: Tensor) -> ValueId {
        let v = self.g.add_value(name, ValueType::default());
        self.g.initializers.insert(v, t);
        v
    }

    /// A 1-D int64 constant (shapes, axes).
    pub fn ints(&mut self, name: &str, values: &[i64]) -> Result<ValueId> {
        let t = Tensor::from_vec(vec![values.len()], values.to_vec())?;
        Ok(self.constant(name, t))
    }

    /// Adds a node with one output.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[ValueId],
        attrs: Vec<(&str, Attr)>,
    ) -> ValueId {
        self.node_n(op, name, inputs, 1, attrs)[0]
    }

    /// Adds a node with `outputs` outputs (named `name.0`, `name.1`, … when several).
    pub fn node_n(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[ValueId],
        outputs: usize,
        attrs: Vec<(&str, Attr)>,
    ) -> Vec<ValueId> {
        let value_name = |i| match outputs {
            1 => name.to_string(),
            _ => format!("{name}.{i}"),
        };
        let outs: Vec<ValueId> = (0..outputs)
            .map(|i| self.g.add_value(value_name(i), ValueType::default()))
            .collect();
        self.g.nodes.push(Node {
            name: name.to_string(),
            op_type: op.to_string(),
            domain: String::new(),
            inputs: inputs.iter().copied().map(Some).collect(),
            outputs: outs.iter().copied().map(Some).collect(),
            attrs: Attrs(attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        });
        outs
    }

    /// `x · Wᵀ + b` (`transposed`: W stored `[out, in]`, as torch's Linear) or `x · W + b`
    /// (W stored `[in, out]`, as GPT-2's Conv1D), on 2-D `x`. Gemm packs W straight from the
    /// mapped file, in either layout: no transposed copy is made.
    pub fn linear(
        &mut self,
        name: &str,
        x: ValueId,
        (w, b): (ValueId, ValueId),
        transposed: bool,
    ) -> ValueId {
        let attrs = vec![("transB", Attr::Int(i64::from(transposed)))];
        self.node("Gemm", name, &[x, w, b], attrs)
    }

    pub fn layer_norm(
        &mut self,
        name: &str,
        x: ValueId,
        (gamma, beta): (ValueId, ValueId),
        eps: f32,
    ) -> ValueId {
        let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))];
        self.node("LayerNormalization", name, &[x, gamma, beta], attrs)
    }

    /// `attention_mask` `[batch, sequence]` (nonzero = attend) → a boolean key mask
    /// `[batch, 1, 1, sequence]` that broadcasts over heads and queries. `None` without a
    /// mask input: every key is attended.
    pub fn key_mask(&mut self, mask: Option<ValueId>) -> Result<Option<ValueId>> {
        let Some(mask) = mask else { return Ok(None) };
        let to_bool = vec![("to", Attr::Int(i64::from(DType::Bool.onnx_code())))];
        let keep = self.node("Cast", "attention_mask.bool", &[mask], to_bool);
        let axes = self.ints("attention_mask.axes", &[1, 2])?;
        Ok(Some(self.node(
            "Unsqueeze",
            "attention_mask.keys",
            &[keep, axes],
            vec![],
        )))
    }

    /// Multi-head attention over 3-D `[batch, sequence, hidden]` Q, K, V with an optional key
    /// mask.
    pub fn attention(
        &mut self,
        name: &str,
        [q, k, v]: [ValueId; 3],
        keep: Option<ValueId>,
        heads: usize,
        causal: bool,
    ) -> ValueId {
        let attrs = vec![
            ("q_num_heads", Attr::Int(heads as i64)),
            ("kv_num_heads", Attr::Int(heads as i64)),
            ("is_causal", Attr::Int(i64::from(causal))),
        ];
        let mut inputs = vec![q, k, v];
        inputs.extend(keep);
        self.node("Attention", name, &inputs, attrs)
    }

    /// The feed-forward activation as one node (fused into the preceding Gemm by the
    /// planner).
    pub fn activation(&mut self, name: &str, x: ValueId, act: Activation) -> ValueId {
        match act {
            Activation::Relu => self.node("Relu", name, &[x], vec![]),
            Activation::Gelu => self.node("Gelu", name, &[x], vec![]),
            Activation::GeluTanh => {
                let tanh = vec![("approximate", Attr::String("tanh".into()))];
                self.node("Gelu", name, &[x], tanh)
            }
        }
    }

    /// Names `v` as a graph output.
    pub fn output(&mut self, v: ValueId, name: &str) {
        self.g.values[v].name = name.to_string();
        self.g.outputs.push(v);
    }

    pub fn finish(self) -> Graph {
        self.g
    }
}
