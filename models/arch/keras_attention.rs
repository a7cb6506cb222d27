//! Keras's `MultiHeadAttention` → projections (MatMul + Add) around one ONNX `Attention`.
//!
//! Keras projects with EinsumDense kernels `[d_model, heads, key_dim]` and biases
//! `[heads, key_dim]`; flattened to `[d_model, heads·key_dim]` they are plain MatMul weights
//! whose output rows hold the heads side by side, the 3-D layout `Attention` reads with
//! `q_num_heads`. Keras scales the query by 1/√key_dim, `Attention`'s default scale. The
//! output kernel `[heads, value_dim, d_out]` flattens to `[heads·value_dim, d_out]`.

use super::keras_layers::{Call, Layer, LayerBuilder};
use crate::ir::{Attr, ValueId};
use crate::tensor::Tensor;

type Res<T> = std::result::Result<T, String>;

impl LayerBuilder {
    /// `MultiHeadAttention(query, value[, key], attention_mask=…, use_causal_mask=…)` on
    /// `[batch, time, features]` inputs.
    pub(super) fn multi_head_attention(
        &mut self,
        layer: &Layer,
        n: &str,
        args: &Call,
    ) -> Res<ValueId> {
        let heads = layer.int("num_heads", 0);
        if heads <= 0 {
            return Err(format!("layer '{n}': num_heads must be positive"));
        }
        let unsupported = |what: &str| {
            Err(format!(
                "layer '{n}': MultiHeadAttention {what} is not supported"
            ))
        };
        let axes = &layer.config["attention_axes"];
        if !(axes.is_null() || axes.as_array().is_some_and(|a| a.len() == 1 && a[0] == 1)) {
            return unsupported(&format!("over attention_axes {axes}"));
        }
        if layer.flag("use_gate", false) {
            return unsupported("with use_gate");
        }
        if !layer.config["sliding_window"].is_null() {
            return unsupported("with a sliding_window");
        }
        let rank = layer.config["build_config"]["shapes_dict"]["query_shape"]
            .as_array()
            .map_or(3, Vec::len);
        if rank != 3 {
            return unsupported(&format!("on rank-{rank} inputs"));
        }
        if args.options["return_attention_scores"].as_bool() == Some(true) {
            return unsupported("returning attention scores");
        }
        let (query, value, key) = match args.inputs.as_slice() {
            [q, v] => (*q, *v, args.tensor("key").unwrap_or(*v)),
            [q, v, k] => (*q, *v, *k),
            other => {
                return Err(format!(
                    "layer '{n}' takes query and value, got {} inputs",
                    other.len()
                ))
            }
        };
        let bias = layer.flag("use_bias", true);
        let q = self.projection(layer, n, "query", query, bias)?;
        let k = self.projection(layer, n, "key", key, bias)?;
        let v = self.projection(layer, n, "value", value, bias)?;
        let causal = args.options["use_causal_mask"].as_bool().unwrap_or(false);
        // With a mask too, Attention applies both (the causal frontier and the mask).
        let attrs = vec![
            ("q_num_heads", Attr::Int(heads)),
            ("kv_num_heads", Attr::Int(heads)),
            ("is_causal", Attr::Int(i64::from(causal))),
        ];
        let mut inputs = vec![q, k, v];
        if let Some(mask) = args.tensor("attention_mask") {
            // Keras's [batch, query, key] mask (true: attend) broadcast over the heads.
            let to_bool = vec![(
                "to",
                Attr::Int(i64::from(crate::tensor::DType::Bool.onnx_code())),
            )];
            let mask = self
                .g
                .node("Cast", &format!("{n}.mask_bool"), &[mask], to_bool);
            let axes = self.ints(&format!("{n}.mask_axes"), &[1])?;
            inputs.push(
                self.g
                    .node("Unsqueeze", &format!("{n}.mask"), &[mask, axes], vec![]),
            );
        }
        let y = self
            .g
            .node("Attention", &format!("{n}.attention"), &inputs, attrs);
        self.projection(layer, n, "attention_output", y, bias)
    }

    /// The EinsumDense sublayer `sub` of `layer` applied to `x`: its kernel flattened to
    /// `[in, out]` (query/key/value: `[d, heads, dim]`; output: `[heads, dim, d]`).
    fn projection(
        &mut self,
        layer: &Layer,
        n: &str,
        sub: &str,
        x: ValueId,
        bias: bool,
    ) -> Res<ValueId> {
        let key = format!("{}/{sub}", layer.name);
        let mut vars = self
            .vars_at(layer, &key, 1 + usize::from(bias))?
            .into_iter();
        let kernel = vars.next().ok_or("")?;
        let shape = kernel.shape().to_vec();
        let (rows, cols) = match (sub, shape.as_slice()) {
            ("attention_output", [h, d, out]) => (h * d, *out),
            (_, [d, h, k]) if sub != "attention_output" => (*d, h * k),
            _ => {
                return Err(format!(
                    "layer '{n}': {sub} kernel of shape {shape:?} is not supported"
                ))
            }
        };
        let kernel = reshaped(n, kernel, vec![rows, cols])?;
        let w = self.constant(&format!("{n}.{sub}.kernel"), kernel);
        // The last node is the layer's output, named after it.
        let out = match sub {
            "attention_output" => n.to_string(),
            _ => format!("{n}.{sub}"),
        };
        let Some(b) = vars.next() else {
            return Ok(self.g.node("MatMul", &out, &[x, w], vec![]));
        };
        let y = self
            .g
            .node("MatMul", &format!("{out}.matmul"), &[x, w], vec![]);
        let b = reshaped(n, b, vec![cols])?;
        let b = self.constant(&format!("{n}.{sub}.bias"), b);
        Ok(self.g.node("Add", &out, &[y, b], vec![]))
    }
}

fn reshaped(n: &str, t: Tensor, shape: Vec<usize>) -> Res<Tensor> {
    t.reshape(shape).map_err(|e| format!("layer '{n}': {e}"))
}
