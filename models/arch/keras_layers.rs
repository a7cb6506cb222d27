//! Keras layers → ONNX nodes. Each layer reads its config (Keras 3 spelling, with the Keras 2
//! names where they differ) and binds its stored variables in Keras order.

use super::graph::GraphBuilder;
use crate::ir::{Attr, Graph, ValueId};
use crate::tensor::{DType, Tensor};
use serde_json::Value;
use std::collections::HashMap;

type Res<T> = std::result::Result<T, String>;

/// A layer of the config: class, name and settings.
pub(super) struct Layer {
    pub class: String,
    pub name: String,
    pub config: Value,
}

impl Layer {
    pub fn parse(v: &Value) -> Res<Layer> {
        let class = v["class_name"]
            .as_str()
            .ok_or("a layer has no class_name")?;
        let config = v["config"].clone();
        let name = config["name"]
            .as_str()
            .or(v["name"].as_str())
            .ok_or_else(|| format!("a {class} layer has no name"))?;
        Ok(Layer {
            class: class.to_string(),
            name: name.to_string(),
            config,
        })
    }

    pub(super) fn int(&self, key: &str, default: i64) -> i64 {
        self.config[key].as_i64().unwrap_or(default)
    }

    pub(super) fn float(&self, key: &str, default: f64) -> f64 {
        self.config[key].as_f64().unwrap_or(default)
    }

    pub(super) fn string<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.config[key].as_str().unwrap_or(default)
    }

    pub(super) fn flag(&self, key: &str, default: bool) -> bool {
        self.config[key].as_bool().unwrap_or(default)
    }

    /// An `n`-tuple setting (`kernel_size`, `strides`, …), given as a list or one integer.
    pub(super) fn tuple(&self, key: &str, n: usize, default: Option<i64>) -> Res<Vec<i64>> {
        let v = &self.config[key];
        if let Some(x) = v.as_i64() {
            return Ok(vec![x; n]);
        }
        if let Some(a) = v.as_array() {
            let t: Option<Vec<i64>> = a.iter().map(Value::as_i64).collect();
            if let Some(t) = t.filter(|t| t.len() == n) {
                return Ok(t);
            }
        }
        default
            .map(|d| vec![d; n])
            .ok_or_else(|| format!("layer '{}': '{key}' must be {n} integers", self.name))
    }

    pub(super) fn channels_first(&self) -> bool {
        self.string("data_format", "channels_last") == "channels_first"
    }
}

/// The arguments of one layer call: positional tensors, keyword tensors (`key`,
/// `attention_mask`) and the other keyword settings (`use_causal_mask`).
pub(super) struct Call {
    pub inputs: Vec<ValueId>,
    pub tensors: Vec<(String, ValueId)>,
    pub options: Value,
}

impl Call {
    pub fn positional(inputs: &[ValueId]) -> Call {
        Call {
            inputs: inputs.to_vec(),
            tensors: Vec::new(),
            options: Value::Null,
        }
    }

    pub fn tensor(&self, key: &str) -> Option<ValueId> {
        self.tensors.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// Builds the graph layer by layer, taking each layer's variables by its name.
pub(super) struct LayerBuilder {
    pub(super) g: GraphBuilder,
    weights: HashMap<String, Vec<Tensor>>,
    /// Inside a nested model: the weight-key prefix (`inner/`) and the node-name prefix
    /// (`inner/`, or `inner@1/` for its second call).
    pub(super) scope: Scope,
    /// The Embedding whose `mask_zero` makes Keras mask later layers, if any: mask-consuming
    /// layers (recurrent, attention, average pooling) refuse to build rather than ignore it.
    masked_by: Option<String>,
}

#[derive(Clone, Default)]
pub(super) struct Scope {
    pub weights: String,
    pub names: String,
}

impl LayerBuilder {
    pub fn new(weights: HashMap<String, Vec<Tensor>>) -> LayerBuilder {
        LayerBuilder {
            g: GraphBuilder::new(),
            weights,
            scope: Scope::default(),
            masked_by: None,
        }
    }

    pub fn finish(self) -> Graph {
        self.g.finish()
    }

    /// Declares `v` the output named `name` (an Identity renames it when needed).
    pub fn output(&mut self, v: ValueId, name: &str) -> Res<()> {
        let v = if self.g.value_name(v) == name {
            v
        } else {
            self.g.node("Identity", name, &[v], vec![])
        };
        self.g.mark_output(v);
        Ok(())
    }

    /// The `count` variables of `layer` (f32; half-precision ones widened).
    pub(super) fn vars(&mut self, layer: &Layer, count: usize) -> Res<Vec<Tensor>> {
        self.vars_at(layer, &layer.name, count)
    }

    /// The `count` variables stored under `key` (a name path within the current scope:
    /// `lstm/lstm_cell`) for `layer`. Shared layers read them again on each call (tensors
    /// are shared, not copied).
    pub(super) fn vars_at(&mut self, layer: &Layer, key: &str, count: usize) -> Res<Vec<Tensor>> {
        let key = format!("{}{key}", self.scope.weights);
        let vars = self.weights.get(&key).cloned().unwrap_or_default();
        if vars.len() != count {
            return Err(format!(
                "layer '{}' ({}): {} stored variables{}, expected {count}",
                layer.name,
                layer.class,
                vars.len(),
                if key == layer.name {
                    String::new()
                } else {
                    format!(" at '{key}'")
                }
            ));
        }
        vars.into_iter()
            .map(|t| match t.dtype() {
                DType::F32 => Ok(t),
                _ => t.cast(DType::F32),
            })
            .collect::<crate::Result<Vec<_>>>()
            .map_err(|e| format!("layer '{}': {e}", layer.name))
    }

    /// An error for mask-consuming layer `n` when a Keras mask may reach it.
    pub(super) fn unmasked(&self, n: &str) -> Res<()> {
        match &self.masked_by {
            Some(e) => Err(format!(
                "layer '{n}': Keras masks (Embedding '{e}' with mask_zero) are not supported"
            )),
            None => Ok(()),
        }
    }

    pub(super) fn constant(&mut self, name: &str, t: Tensor) -> ValueId {
        self.g.constant(name, t)
    }

    pub(super) fn floats(&mut self, name: &str, v: &[f32], shape: Vec<usize>) -> Res<ValueId> {
        let t = Tensor::from_vec(shape, v.to_vec()).map_err(|e| e.to_string())?;
        Ok(self.g.constant(name, t))
    }

    pub(super) fn ints(&mut self, name: &str, v: &[i64]) -> Res<ValueId> {
        self.g.ints(name, v).map_err(|e| e.to_string())
    }

    /// Applies `layer` to `inputs`; `call` tells repeated calls of a shared layer apart.
    pub fn apply(&mut self, layer: &Layer, inputs: &[ValueId], call: &str) -> Res<ValueId> {
        self.apply_call(layer, &Call::positional(inputs), call)
    }

    /// Applies `layer` to the arguments of one Functional call.
    pub fn apply_call(&mut self, layer: &Layer, args: &Call, call: &str) -> Res<ValueId> {
        let name = format!("{}{}{call}", self.scope.names, layer.name);
        let n = name.as_str();
        let inputs = args.inputs.as_slice();
        if let Some((key, _)) = args.tensors.first() {
            if layer.class != "MultiHeadAttention" {
                return Err(format!(
                    "layer '{n}': the keyword tensor argument '{key}' is not supported"
                ));
            }
        }
        let one = || -> Res<ValueId> {
            match inputs {
                [x] => Ok(*x),
                _ => Err(format!("layer '{n}' takes one input, got {}", inputs.len())),
            }
        };
        let x = match layer.class.as_str() {
            "Dropout"
            | "SpatialDropout1D"
            | "SpatialDropout2D"
            | "GaussianNoise"
            | "GaussianDropout"
            | "AlphaDropout"
            | "ActivityRegularization"
            | "Identity" => return one(),
            "Dense" => self.dense(layer, n, one()?)?,
            "Conv1D" | "Conv2D" => self.conv(layer, n, one()?)?,
            "DepthwiseConv2D" => self.depthwise(layer, n, one()?)?,
            "SeparableConv2D" => self.separable(layer, n, one()?)?,
            "BatchNormalization" => self.batch_norm(layer, n, one()?)?,
            "LayerNormalization" => self.layer_norm(layer, n, one()?)?,
            "Activation" => {
                let act = layer.string("activation", "linear");
                return self.activation(n, one()?, act);
            }
            "ReLU" => self.relu(layer, n, one()?)?,
            "LeakyReLU" => {
                let slope = layer.config["negative_slope"]
                    .as_f64()
                    .or(layer.config["alpha"].as_f64())
                    .unwrap_or(0.3);
                let attrs = vec![("alpha", Attr::Float(slope as f32))];
                self.g.node("LeakyRelu", n, &[one()?], attrs)
            }
            "ELU" => {
                let attrs = vec![("alpha", Attr::Float(layer.float("alpha", 1.0) as f32))];
                self.g.node("Elu", n, &[one()?], attrs)
            }
            "Softmax" => {
                let axis = layer.config["axis"].as_i64().unwrap_or(-1);
                self.g
                    .node("Softmax", n, &[one()?], vec![("axis", Attr::Int(axis))])
            }
            "Flatten" => self
                .g
                .node("Flatten", n, &[one()?], vec![("axis", Attr::Int(1))]),
            "Reshape" => {
                let target = layer.config["target_shape"]
                    .as_array()
                    .ok_or_else(|| format!("layer '{n}': no target_shape"))?;
                // 0 keeps the batch dimension.
                let mut shape = vec![0];
                shape.extend(target.iter().map(|d| d.as_i64().unwrap_or(-1)));
                let s = self.ints(&format!("{n}.shape"), &shape)?;
                self.g.reshape(n, one()?, s)
            }
            "Permute" => {
                let dims = layer.tuple(
                    "dims",
                    layer.config["dims"].as_array().map_or(0, Vec::len),
                    None,
                )?;
                let mut perm = vec![0];
                perm.extend(dims);
                self.g
                    .node("Transpose", n, &[one()?], vec![("perm", Attr::Ints(perm))])
            }
            "MaxPooling1D" | "MaxPooling2D" | "AveragePooling1D" | "AveragePooling2D" => {
                self.pool(layer, n, one()?)?
            }
            "GlobalAveragePooling1D"
            | "GlobalAveragePooling2D"
            | "GlobalMaxPooling1D"
            | "GlobalMaxPooling2D" => {
                if layer.class == "GlobalAveragePooling1D" {
                    self.unmasked(n)?;
                }
                self.global_pool(layer, n, one()?)?
            }
            "Add" | "Subtract" | "Multiply" | "Average" | "Maximum" | "Minimum" => {
                self.merge(layer, n, inputs)?
            }
            "Concatenate" => {
                let axis = layer.int("axis", -1);
                self.g
                    .node("Concat", n, inputs, vec![("axis", Attr::Int(axis))])
            }
            "Embedding" => {
                if layer.flag("mask_zero", false) {
                    self.masked_by = Some(n.to_string());
                }
                let [table] = <[Tensor; 1]>::try_from(self.vars(layer, 1)?).map_err(|_| "")?;
                let table = self.constant(&format!("{n}.embeddings"), table);
                let to = vec![("to", Attr::Int(i64::from(DType::I64.onnx_code())))];
                let ids = self.g.node("Cast", &format!("{n}.ids"), &[one()?], to);
                self.g
                    .node("Gather", n, &[table, ids], vec![("axis", Attr::Int(0))])
            }
            "Rescaling" => {
                let scale = self.floats(
                    &format!("{n}.scale"),
                    &[layer.float("scale", 1.0) as f32],
                    vec![],
                )?;
                let offset = self.floats(
                    &format!("{n}.offset"),
                    &[layer.float("offset", 0.0) as f32],
                    vec![],
                )?;
                let scaled = self
                    .g
                    .node("Mul", &format!("{n}.scaled"), &[one()?, scale], vec![]);
                self.g.node("Add", n, &[scaled, offset], vec![])
            }
            "Normalization" => self.normalization(layer, n, one()?)?,
            "ZeroPadding1D" | "ZeroPadding2D" => self.zero_padding(layer, n, one()?)?,
            "UpSampling2D" => self.upsampling(layer, n, one()?)?,
            "Conv1DTranspose" | "Conv2DTranspose" => self.conv_transpose(layer, n, one()?)?,
            // Their `activation` is the cell's, applied inside.
            "LSTM" | "GRU" | "SimpleRNN" => {
                self.unmasked(n)?;
                return self.recurrent(layer, n, one()?);
            }
            "Bidirectional" => {
                self.unmasked(n)?;
                self.bidirectional(layer, n, one()?)?
            }
            "MultiHeadAttention" => {
                self.unmasked(n)?;
                self.multi_head_attention(layer, n, args)?
            }
            "Sequential" | "Functional" | "Model" => return self.nested(layer, inputs, call),
            other => {
                return Err(format!(
                    "layer '{}': Keras layer class '{other}' is not supported",
                    layer.name
                ))
            }
        };
        // Layers with a fused `activation` setting (Dense, convolutions).
        match layer.config["activation"].as_str() {
            Some(act) if layer.class != "Activation" => {
                self.activation(&format!("{n}.{act}"), x, act)
            }
            _ => Ok(x),
        }
    }

    /// An activation function by its Keras name.
    pub(super) fn activation(&mut self, n: &str, x: ValueId, act: &str) -> Res<ValueId> {
        let unary = |op: &str| (op.to_string(), Vec::<(&str, Attr)>::new());
        let (op, attrs) = match act {
            "linear" => return Ok(x),
            "relu" => unary("Relu"),
            "sigmoid" => unary("Sigmoid"),
            "tanh" => unary("Tanh"),
            "softmax" => ("Softmax".into(), vec![("axis", Attr::Int(-1))]),
            "log_softmax" => ("LogSoftmax".into(), vec![("axis", Attr::Int(-1))]),
            "gelu" => unary("Gelu"),
            "elu" => unary("Elu"),
            "selu" => unary("Selu"),
            "softplus" => unary("Softplus"),
            "softsign" => unary("Softsign"),
            "exponential" => unary("Exp"),
            "mish" => unary("Mish"),
            "hard_silu" | "hard_swish" => unary("HardSwish"),
            // Keras 3: relu6(x + 3) / 6.
            "hard_sigmoid" => (
                "HardSigmoid".into(),
                vec![
                    ("alpha", Attr::Float(1.0 / 6.0)),
                    ("beta", Attr::Float(0.5)),
                ],
            ),
            "leaky_relu" => ("LeakyRelu".into(), vec![("alpha", Attr::Float(0.2))]),
            "relu6" => return self.clip(n, x, 0.0, Some(6.0)),
            "swish" | "silu" => {
                let s = self
                    .g
                    .node("Sigmoid", &format!("{n}.sigmoid"), &[x], vec![]);
                return Ok(self.g.node("Mul", n, &[x, s], vec![]));
            }
            other => return Err(format!("activation '{other}' (at '{n}') is not supported")),
        };
        Ok(self.g.node(&op, n, &[x], attrs))
    }

    fn clip(&mut self, n: &str, x: ValueId, min: f32, max: Option<f32>) -> Res<ValueId> {
        let lo = self.floats(&format!("{n}.min"), &[min], vec![])?;
        let hi = self.floats(&format!("{n}.max"), &[max.unwrap_or(f32::INFINITY)], vec![])?;
        Ok(self.g.node("Clip", n, &[x, lo, hi], vec![]))
    }

    /// `ReLU(max_value, negative_slope, threshold)`.
    fn relu(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        if layer.float("threshold", 0.0) != 0.0 {
            return Err(format!(
                "layer '{n}': ReLU with a threshold is not supported"
            ));
        }
        let slope = layer.float("negative_slope", 0.0) as f32;
        let max = layer.config["max_value"].as_f64().map(|m| m as f32);
        let y = match (slope, max) {
            (0.0, Some(m)) => return self.clip(n, x, 0.0, Some(m)),
            (0.0, None) => return Ok(self.g.node("Relu", n, &[x], vec![])),
            (s, _) => self.g.node(
                "LeakyRelu",
                &format!("{n}.leaky"),
                &[x],
                vec![("alpha", Attr::Float(s))],
            ),
        };
        match max {
            Some(m) => self.clip(n, y, f32::NEG_INFINITY, Some(m)),
            None => Ok(y),
        }
    }

    /// `x · kernel + bias`, kernel stored `[in, out]` (MatMul needs no transpose).
    fn dense(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let bias = layer.flag("use_bias", true);
        let mut vars = self.vars(layer, 1 + usize::from(bias))?.into_iter();
        let kernel = vars.next().ok_or("")?;
        if kernel.rank() != 2 {
            return Err(format!(
                "layer '{n}': Dense kernel of shape {:?}",
                kernel.shape()
            ));
        }
        let k = self.constant(&format!("{n}.kernel"), kernel);
        let y = self
            .g
            .node("MatMul", &format!("{n}.matmul"), &[x, k], vec![]);
        Ok(match vars.next() {
            Some(b) => {
                let b = self.constant(&format!("{n}.bias"), b);
                self.g.node("Add", n, &[y, b], vec![])
            }
            None => y,
        })
    }

    fn merge(&mut self, layer: &Layer, n: &str, inputs: &[ValueId]) -> Res<ValueId> {
        if inputs.len() < 2 {
            return Err(format!("layer '{n}' merges {} inputs", inputs.len()));
        }
        let op = match layer.class.as_str() {
            "Subtract" if inputs.len() == 2 => "Sub",
            "Subtract" => return Err(format!("layer '{n}': Subtract takes exactly 2 inputs")),
            "Add" => "Sum",
            "Multiply" => "Mul",
            "Average" => "Mean",
            "Maximum" => "Max",
            _ => "Min",
        };
        if op == "Mul" {
            // Mul is binary: chain it.
            let mut acc = inputs[0];
            for (i, &v) in inputs[1..].iter().enumerate() {
                let name = if i + 2 == inputs.len() {
                    n.to_string()
                } else {
                    format!("{n}.{i}")
                };
                acc = self.g.node("Mul", &name, &[acc, v], vec![]);
            }
            return Ok(acc);
        }
        let op = if op == "Sum" && inputs.len() == 2 {
            "Add"
        } else {
            op
        };
        Ok(self.g.node(op, n, inputs, vec![]))
    }

    /// Inference batch norm over the last axis: `x · scale + shift` with
    /// `scale = γ / √(var + ε)`, `shift = β − mean · scale` folded at build time.
    fn batch_norm(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let axis = layer.config["axis"]
            .as_i64()
            .or(layer.config["axis"][0].as_i64())
            .unwrap_or(-1);
        if axis != -1 && !(axis == 1 && layer.channels_first()) && axis != 3 {
            return Err(format!(
                "layer '{n}': BatchNormalization over axis {axis} is not supported"
            ));
        }
        let (scale, center) = (layer.flag("scale", true), layer.flag("center", true));
        let vars = self.vars(layer, 2 + usize::from(scale) + usize::from(center))?;
        let mut vars = vars.into_iter();
        let gamma = scale.then(|| vars.next()).flatten();
        let beta = center.then(|| vars.next()).flatten();
        let (mean, var) = (vars.next().ok_or("")?, vars.next().ok_or("")?);
        let eps = layer.float("epsilon", 1e-3) as f32;
        let read = |t: &Tensor| {
            t.as_slice::<f32>()
                .map(<[f32]>::to_vec)
                .map_err(|e| format!("layer '{n}': {e}"))
        };
        let (mean, var) = (read(&mean)?, read(&var)?);
        let c = mean.len();
        let gamma = gamma.map_or(Ok(vec![1.0; c]), |g| read(&g))?;
        let beta = beta.map_or(Ok(vec![0.0; c]), |b| read(&b))?;
        if [var.len(), gamma.len(), beta.len()].iter().any(|&l| l != c) {
            return Err(format!(
                "layer '{n}': BatchNormalization variables of different sizes"
            ));
        }
        let s: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
        let t: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * s[i]).collect();
        // Channels-first (axis 1) broadcasts as [C, 1, …]; assume 2 spatial dims there.
        let shape = if axis == 1 { vec![c, 1, 1] } else { vec![c] };
        let s = self.floats(&format!("{n}.scale"), &s, shape.clone())?;
        let t = self.floats(&format!("{n}.shift"), &t, shape)?;
        let y = self.g.node("Mul", &format!("{n}.scaled"), &[x, s], vec![]);
        Ok(self.g.node("Add", n, &[y, t], vec![]))
    }

    fn layer_norm(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let axis = layer.config["axis"]
            .as_i64()
            .or(layer.config["axis"][0].as_i64())
            .unwrap_or(-1);
        if axis != -1 || layer.flag("rms_scaling", false) {
            return Err(format!(
                "layer '{n}': LayerNormalization other than over the last axis"
            ));
        }
        let (scale, center) = (layer.flag("scale", true), layer.flag("center", true));
        let mut vars = self
            .vars(layer, usize::from(scale) + usize::from(center))?
            .into_iter();
        let gamma = scale.then(|| vars.next()).flatten();
        let beta = center.then(|| vars.next()).flatten();
        let width = gamma
            .as_ref()
            .or(beta.as_ref())
            .map(|t| t.len())
            .ok_or_else(|| {
                format!("layer '{n}': LayerNormalization without scale and center is not supported")
            })?;
        let g = match gamma {
            Some(gamma) => self.constant(&format!("{n}.gamma"), gamma),
            None => self.floats(&format!("{n}.gamma"), &vec![1.0; width], vec![width])?,
        };
        let mut inputs = vec![x, g];
        if let Some(b) = beta {
            inputs.push(self.constant(&format!("{n}.beta"), b));
        }
        let eps = layer.float("epsilon", 1e-3) as f32;
        let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))];
        Ok(self.g.node("LayerNormalization", n, &inputs, attrs))
    }

    /// `(x − mean) / max(√var, 1e-7)` over the last axis (or its inverse).
    fn normalization(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let (mean, var) = if layer.config["mean"].is_null() {
            let mut v = self.vars(layer, 3)?.into_iter();
            (v.next().ok_or("")?, v.next().ok_or("")?)
        } else {
            let list = |k: &str| -> Res<Tensor> {
                let v = &layer.config[k];
                let vals: Vec<f32> = match v.as_array() {
                    Some(a) => a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect(),
                    None => vec![v.as_f64().ok_or_else(|| format!("layer '{n}': bad {k}"))? as f32],
                };
                Tensor::from_vec(vec![vals.len()], vals).map_err(|e| e.to_string())
            };
            (list("mean")?, list("variance")?)
        };
        let axis = &layer.config["axis"];
        if !(axis.as_i64() == Some(-1) || axis[0].as_i64() == Some(-1) || axis.is_null()) {
            return Err(format!(
                "layer '{n}': Normalization other than over the last axis"
            ));
        }
        let m = self.constant(&format!("{n}.mean"), mean);
        let v = self.constant(&format!("{n}.variance"), var);
        let sd = self.g.node("Sqrt", &format!("{n}.sd"), &[v], vec![]);
        let eps = self.floats(&format!("{n}.eps"), &[1e-7], vec![])?;
        let sd = self
            .g
            .node("Max", &format!("{n}.sd_eps"), &[sd, eps], vec![]);
        Ok(if layer.flag("invert", false) {
            let y = self.g.node("Mul", &format!("{n}.scaled"), &[x, sd], vec![]);
            self.g.node("Add", n, &[y, m], vec![])
        } else {
            let y = self
                .g
                .node("Sub", &format!("{n}.centered"), &[x, m], vec![]);
            self.g.node("Div", n, &[y, sd], vec![])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_accept_an_integer_or_a_list() {
        let l = Layer::parse(&serde_json::json!({
            "class_name": "Conv2D",
            "config": {"name": "c", "kernel_size": 3, "strides": [2, 1]}
        }))
        .unwrap();
        assert_eq!(l.tuple("kernel_size", 2, None).unwrap(), vec![3, 3]);
        assert_eq!(l.tuple("strides", 2, None).unwrap(), vec![2, 1]);
        assert_eq!(l.tuple("dilation_rate", 2, Some(1)).unwrap(), vec![1, 1]);
        assert!(l.tuple("missing", 2, None).is_err());
    }
}
