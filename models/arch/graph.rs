//! A small IR graph builder: named nodes of ONNX op types, constants and symbolic inputs.

use super::bind::Weights;
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

/// Shape values of a token batch (see `GraphBuilder::token_shapes`).
pub(crate) struct TokenShapes {
    /// `[batch, sequence]`.
    pub batch_seq: ValueId,
    /// `[-1, width]`: hidden states flattened to 2-D.
    pub flat: ValueId,
    /// `[batch, sequence, width]`.
    pub hidden: ValueId,
}

/// Symbolic dimensions of the token inputs.
const BATCH: &str = "batch";
const SEQUENCE: &str = "sequence";

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        let mut g = Graph::default();
        g.opsets.insert(String::new(), OPSET);
        GraphBuilder { g }
    }

    /// A `[batch, sequence]` int64 input (token ids, masks).
    pub fn token_input(&mut self, name: &str) -> ValueId {
        let ty = ValueType {
            kind: Default::default(),
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

    /// A graph input of type `ty`.
    pub fn input(&mut self, name: &str, ty: ValueType) -> ValueId {
        let v = self.g.add_value(name, ty);
        self.g.inputs.push(v);
        v
    }

    /// Declares `v` a graph output (its name and type as they are).
    pub fn mark_output(&mut self, v: ValueId) {
        self.g.outputs.push(v);
    }

    /// The name of value `v`.
    pub fn value_name(&self, v: ValueId) -> &str {
        &self.g.values[v].name
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

    /// The stored tensor `key` of shape `shape` as a constant (see `Weights::take`).
    pub fn weight(&mut self, w: &mut Weights, key: &str, shape: &[usize]) -> ValueId {
        let t = w.take(key, shape);
        self.constant(key, t)
    }

    /// The Linear layer `name` (`{name}.weight` of `shape`, `{name}.bias`) on 2-D `x`:
    /// `x · Wᵀ + b` when W is stored `[out, in]` (torch's Linear: `transposed`), `x · W + b`
    /// when stored `[in, out]` (GPT-2's Conv1D). Gemm packs W straight from the mapped file
    /// in either layout: no transposed copy is made.
    pub fn linear(
        &mut self,
        w: &mut Weights,
        name: &str,
        x: ValueId,
        shape: [usize; 2],
        transposed: bool,
    ) -> ValueId {
        let out = if transposed { shape[0] } else { shape[1] };
        let weight = self.weight(w, &format!("{name}.weight"), &shape);
        let bias = self.weight(w, &format!("{name}.bias"), &[out]);
        let attrs = vec![("transB", Attr::Int(i64::from(transposed)))];
        self.node("Gemm", name, &[x, weight, bias], attrs)
    }

    /// The LayerNorm `name` (`{name}.weight`, `{name}.bias`) over the last axis of `x`.
    pub fn layer_norm(
        &mut self,
        w: &mut Weights,
        name: &str,
        x: ValueId,
        width: usize,
        eps: f32,
    ) -> ValueId {
        let gamma = self.weight(w, &format!("{name}.weight"), &[width]);
        let beta = self.weight(w, &format!("{name}.bias"), &[width]);
        let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))];
        self.node("LayerNormalization", name, &[x, gamma, beta], attrs)
    }

    /// The shapes that move hidden states between `[batch, sequence, width]` and the 2-D
    /// `[batch · sequence, width]` the Gemms work on.
    pub fn token_shapes(&mut self, ids: ValueId, width: usize) -> Result<TokenShapes> {
        let batch_seq = self.node("Shape", "shape.tokens", &[ids], vec![]);
        Ok(TokenShapes {
            batch_seq,
            flat: self.ints("shape.flat", &[-1, width as i64])?,
            hidden: self.widen(batch_seq, "shape.hidden", width)?,
        })
    }

    /// `[batch, sequence, width]` as a shape value.
    pub fn widen(&mut self, batch_seq: ValueId, name: &str, width: usize) -> Result<ValueId> {
        let w = self.ints(&format!("{name}.width"), &[width as i64])?;
        Ok(self.node(
            "Concat",
            name,
            &[batch_seq, w],
            vec![("axis", Attr::Int(0))],
        ))
    }

    pub fn reshape(&mut self, name: &str, x: ValueId, shape: ValueId) -> ValueId {
        self.node("Reshape", name, &[x, shape], vec![])
    }

    /// The first `sequence` rows of `table` (the embeddings of positions 0, 1, …), which
    /// broadcast over the batch.
    pub fn leading_rows(&mut self, name: &str, table: ValueId, ids: ValueId) -> Result<ValueId> {
        let seq_attrs = vec![("start", Attr::Int(1)), ("end", Attr::Int(2))];
        let seq = self.node("Shape", "shape.sequence", &[ids], seq_attrs);
        let zero = self.ints("zero", &[0])?;
        Ok(self.node("Slice", name, &[table, zero, seq], vec![]))
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

    /// Names `v`, a float32 `[batch, sequence, width]`, as a graph output.
    pub fn output(&mut self, v: ValueId, name: &str, width: usize) {
        let value = &mut self.g.values[v];
        value.name = name.to_string();
        value.ty = ValueType {
            kind: Default::default(),
            dtype: Some(DType::F32),
            shape: Some(vec![
                Dim::Symbol(BATCH.into()),
                Dim::Symbol(SEQUENCE.into()),
                Dim::Known(width),
            ]),
        };
        self.g.outputs.push(v);
    }

    pub fn finish(self) -> Graph {
        self.g
    }
}
