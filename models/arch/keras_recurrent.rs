//! Keras's recurrent layers (LSTM, GRU, SimpleRNN, and the Bidirectional wrapper) → the ONNX
//! LSTM / GRU / RNN ops in batch-major layout (`layout = 1`: `[batch, time, features]` as
//! Keras has it).
//!
//! Keras stores a cell's `kernel` `[input, G·units]`, `recurrent_kernel` `[units, G·units]`
//! and `bias` with the G gates side by side; ONNX wants each transposed, `[dirs, G·units, …]`,
//! with LSTM's gates reordered (Keras i, f, c, o → ONNX i, o, f, c; GRU's z, r, h agree).
//! Keras's GRU `reset_after` (its default) is ONNX's `linear_before_reset`, and its two bias
//! rows (input, recurrent) are ONNX's `Wb` and `Rb`.

use super::keras_layers::{Layer, LayerBuilder};
use crate::ir::{Attr, ValueId};
use crate::tensor::Tensor;

type Res<T> = std::result::Result<T, String>;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Cell {
    Lstm,
    Gru { reset_after: bool },
    Simple,
}

impl Cell {
    fn op(self) -> &'static str {
        match self {
            Cell::Lstm => "LSTM",
            Cell::Gru { .. } => "GRU",
            Cell::Simple => "RNN",
        }
    }

    /// Keras's gate blocks in ONNX's order.
    fn gate_order(self) -> &'static [usize] {
        match self {
            Cell::Lstm => &[0, 3, 1, 2],
            Cell::Gru { .. } => &[0, 1, 2],
            Cell::Simple => &[0],
        }
    }

    /// The name of the cell sublayer that holds the variables.
    fn cell_name(self) -> &'static str {
        match self {
            Cell::Lstm => "lstm_cell",
            Cell::Gru { .. } => "gru_cell",
            Cell::Simple => "simple_rnn_cell",
        }
    }
}

/// One recurrent layer's settings.
#[derive(PartialEq, Debug)]
struct Recurrent {
    cell: Cell,
    units: usize,
    return_sequences: bool,
    go_backwards: bool,
    use_bias: bool,
    /// ONNX activations with their alpha / beta (cell order: f, g, h for LSTM).
    activations: Vec<(&'static str, Option<(f32, f32)>)>,
}

impl Recurrent {
    fn parse(layer: &Layer) -> Res<Recurrent> {
        let n = &layer.name;
        let cell = match layer.class.as_str() {
            "LSTM" => Cell::Lstm,
            "GRU" => Cell::Gru {
                reset_after: layer.flag("reset_after", true),
            },
            "SimpleRNN" => Cell::Simple,
            other => return Err(format!("layer '{n}': {other} is not a recurrent layer")),
        };
        // Extra state outputs, state carried across batches, and time-major inputs.
        for key in ["return_state", "stateful", "time_major"] {
            if layer.flag(key, false) {
                return Err(format!(
                    "layer '{n}' ({}): {key} is not supported",
                    layer.class
                ));
            }
        }
        let units = layer.int("units", 0);
        if units <= 0 {
            return Err(format!("layer '{n}': units must be positive"));
        }
        let act = |key: &str, default: &str| activation(n, layer.string(key, default));
        let activations = match cell {
            Cell::Lstm => {
                let (f, g) = (
                    act("recurrent_activation", "sigmoid")?,
                    act("activation", "tanh")?,
                );
                vec![f, g, g]
            }
            Cell::Gru { .. } => vec![
                act("recurrent_activation", "sigmoid")?,
                act("activation", "tanh")?,
            ],
            Cell::Simple => vec![act("activation", "tanh")?],
        };
        Ok(Recurrent {
            cell,
            units: units as usize,
            return_sequences: layer.flag("return_sequences", false),
            go_backwards: layer.flag("go_backwards", false),
            use_bias: layer.flag("use_bias", true),
            activations,
        })
    }

    /// ONNX `W`, `R`, `B` of one direction from the cell's variables: `[G·H, in]`,
    /// `[G·H, H]`, `[2·G·H]`.
    fn onnx_weights(&self, n: &str, vars: Vec<Tensor>) -> Res<[Vec<f32>; 3]> {
        let h = self.units;
        let order = self.cell.gate_order();
        let gh = order.len() * h;
        let mut vars = vars.into_iter();
        let (kernel, recurrent) = (vars.next().ok_or("")?, vars.next().ok_or("")?);
        let shape_err = |t: &Tensor, what: &str| {
            format!("layer '{n}': {what} of shape {:?} for {h} units", t.shape())
        };
        if !matches!(kernel.shape(), [_, g] if *g == gh) {
            return Err(shape_err(&kernel, "kernel"));
        }
        if recurrent.shape() != [h, gh] {
            return Err(shape_err(&recurrent, "recurrent kernel"));
        }
        let w = gates_transposed(&kernel, order, h, n)?;
        let r = gates_transposed(&recurrent, order, h, n)?;
        let mut b = vec![0f32; 2 * gh];
        if let Some(bias) = vars.next() {
            let values = bias
                .as_slice::<f32>()
                .map_err(|e| format!("layer '{n}': {e}"))?;
            let two_rows = self.cell == Cell::Gru { reset_after: true };
            if bias.len() != if two_rows { 2 * gh } else { gh } {
                return Err(shape_err(&bias, "bias"));
            }
            // Per gate block, in ONNX order; GRU's second row is the recurrent bias.
            for (row, chunk) in values.chunks(gh).enumerate() {
                for (to, &from) in order.iter().enumerate() {
                    let dst = row * gh + to * h;
                    b[dst..dst + h].copy_from_slice(&chunk[from * h..from * h + h]);
                }
            }
        }
        Ok([w, r, b])
    }

    /// Whether `other` (a Bidirectional's backward layer) is this one run backwards.
    fn mirrors(&self, other: &Recurrent) -> bool {
        !self.go_backwards
            && other.go_backwards
            && self.cell == other.cell
            && self.units == other.units
            && self.use_bias == other.use_bias
            && self.return_sequences == other.return_sequences
            && self.activations == other.activations
    }
}

/// A Keras activation as an ONNX recurrent activation.
fn activation(n: &str, name: &str) -> Res<(&'static str, Option<(f32, f32)>)> {
    Ok(match name {
        "tanh" => ("Tanh", None),
        "sigmoid" => ("Sigmoid", None),
        "relu" => ("Relu", None),
        "softsign" => ("Softsign", None),
        "softplus" => ("Softplus", None),
        "linear" => ("Affine", Some((1.0, 0.0))),
        // Keras 3: relu6(x + 3) / 6.
        "hard_sigmoid" => ("HardSigmoid", Some((1.0 / 6.0, 0.5))),
        "elu" => ("Elu", Some((1.0, 0.0))),
        other => {
            return Err(format!(
                "layer '{n}': recurrent activation '{other}' is not supported"
            ))
        }
    })
}

/// `t` `[rows, G·h]` → `[G·h, rows]` with gate block `order[k]` of `t` as block `k`.
fn gates_transposed(t: &Tensor, order: &[usize], h: usize, n: &str) -> Res<Vec<f32>> {
    let v = t
        .as_slice::<f32>()
        .map_err(|e| format!("layer '{n}': {e}"))?;
    let cols = order.len() * h;
    let rows = v.len() / cols;
    let mut out = Vec::with_capacity(v.len());
    for &gate in order {
        for c in gate * h..gate * h + h {
            out.extend((0..rows).map(|r| v[r * cols + c]));
        }
    }
    Ok(out)
}

impl LayerBuilder {
    /// LSTM / GRU / SimpleRNN on `[batch, time, features]`.
    pub(super) fn recurrent(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let spec = Recurrent::parse(layer)?;
        let vars = self.cell_vars(layer, &layer.name, &spec)?;
        let weights = spec.onnx_weights(n, vars)?;
        let direction = if spec.go_backwards {
            "reverse"
        } else {
            "forward"
        };
        let y = self.recurrent_node(n, x, &spec, direction, vec![weights])?;
        if spec.go_backwards && spec.return_sequences {
            // Keras lists a backwards layer's outputs in the order it computed them; ONNX
            // aligns each with its input timestep.
            let (start, end) = (
                self.ints(&format!("{n}.start"), &[-1])?,
                self.ints(&format!("{n}.end"), &[i64::MIN])?,
            );
            let axes = self.ints(&format!("{n}.axes"), &[1])?;
            let steps = self.ints(&format!("{n}.steps"), &[-1])?;
            return Ok(self
                .g
                .node("Slice", n, &[y, start, end, axes, steps], vec![]));
        }
        Ok(y)
    }

    /// `Bidirectional(layer)`: one bidirectional ONNX node; its two directions merged by
    /// `merge_mode` (concat, sum, ave, mul).
    pub(super) fn bidirectional(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let inner = |key: &str| -> Res<Option<Layer>> {
            let v = &layer.config[key];
            if v.is_null() {
                return Ok(None);
            }
            Layer::parse(v).map(Some)
        };
        let forward =
            inner("layer")?.ok_or_else(|| format!("layer '{n}': Bidirectional without a layer"))?;
        let fwd = Recurrent::parse(&forward)?;
        let (backward, bwd) = match inner("backward_layer")? {
            Some(b) => {
                let spec = Recurrent::parse(&b)?;
                (b, spec)
            }
            None => {
                let mut b = Layer::parse(&layer.config["layer"])?;
                b.name = format!("backward_{}", b.name.trim_start_matches("forward_"));
                b.config["go_backwards"] = true.into();
                let spec = Recurrent::parse(&b)?;
                (b, spec)
            }
        };
        if !fwd.mirrors(&bwd) {
            return Err(format!(
                "layer '{n}': Bidirectional with differing forward and backward layers is not \
                 supported"
            ));
        }
        let key = |l: &Layer| format!("{}/{}", layer.name, l.name);
        let vars = self.cell_vars(&forward, &key(&forward), &fwd)?;
        let fw = fwd.onnx_weights(n, vars)?;
        let vars = self.cell_vars(&backward, &key(&backward), &bwd)?;
        let bw = bwd.onnx_weights(n, vars)?;
        let y = self.recurrent_node(&format!("{n}.rnn"), x, &fwd, "bidirectional", vec![fw, bw])?;
        // The direction axis: 2 of Y [batch, time, 2, H] (reshaped to [batch, time, 2·H] as
        // concat), 1 of Y_h [batch, 2, H].
        let axis = if fwd.return_sequences { 2 } else { 1 };
        let op = match layer.string("merge_mode", "concat") {
            "concat" => {
                let shape = if fwd.return_sequences {
                    vec![0, 0, -1]
                } else {
                    vec![0, -1]
                };
                let shape = self.ints(&format!("{n}.shape"), &shape)?;
                return Ok(self.g.reshape(n, y, shape));
            }
            "sum" => "ReduceSum",
            "ave" => "ReduceMean",
            "mul" => "ReduceProd",
            other => {
                return Err(format!(
                    "layer '{n}': Bidirectional merge_mode '{other}' is not supported"
                ))
            }
        };
        let axes = self.ints(&format!("{n}.axes"), &[axis])?;
        Ok(self
            .g
            .node(op, n, &[y, axes], vec![("keepdims", Attr::Int(0))]))
    }

    /// The cell variables of recurrent `layer` stored under `key` (`lstm/lstm_cell`; older
    /// files keep them on the layer itself).
    fn cell_vars(&mut self, layer: &Layer, key: &str, spec: &Recurrent) -> Res<Vec<Tensor>> {
        let count = 2 + usize::from(spec.use_bias);
        let cell = format!("{key}/{}", spec.cell.cell_name());
        self.vars_at(layer, &cell, count)
            .or_else(|e| self.vars_at(layer, key, count).map_err(|_| e))
    }

    /// The ONNX node over `[W, R, B]` per direction; its sequence `[batch, time, dirs·H]`
    /// when the layer returns sequences, else its last state `[batch, dirs·H]` (for one
    /// direction; Bidirectional reshapes or reduces the direction axis itself).
    fn recurrent_node(
        &mut self,
        n: &str,
        x: ValueId,
        spec: &Recurrent,
        direction: &str,
        weights: Vec<[Vec<f32>; 3]>,
    ) -> Res<ValueId> {
        let (dirs, h) = (weights.len(), spec.units);
        let gh = spec.cell.gate_order().len() * h;
        let [mut w, mut r, mut b] = [Vec::new(), Vec::new(), Vec::new()];
        for [wd, rd, bd] in weights {
            w.extend(wd);
            r.extend(rd);
            b.extend(bd);
        }
        let input = w.len() / (dirs * gh);
        let w = self.floats(&format!("{n}.W"), &w, vec![dirs, gh, input])?;
        let r = self.floats(&format!("{n}.R"), &r, vec![dirs, gh, h])?;
        let b = self.floats(&format!("{n}.B"), &b, vec![dirs, 2 * gh])?;
        // Both directions use the same activations (listed once per direction).
        let per_dir = spec
            .activations
            .iter()
            .cycle()
            .take(dirs * spec.activations.len());
        let acts: Vec<String> = per_dir.clone().map(|a| a.0.to_string()).collect();
        let params: Vec<(f32, f32)> = per_dir.filter_map(|a| a.1).collect();
        let mut attrs = vec![
            ("hidden_size", Attr::Int(h as i64)),
            ("direction", Attr::String(direction.into())),
            ("layout", Attr::Int(1)),
            ("activations", Attr::Strings(acts)),
        ];
        if !params.is_empty() {
            attrs.push((
                "activation_alpha",
                Attr::Floats(params.iter().map(|p| p.0).collect()),
            ));
            attrs.push((
                "activation_beta",
                Attr::Floats(params.iter().map(|p| p.1).collect()),
            ));
        }
        if let Cell::Gru { reset_after } = spec.cell {
            attrs.push(("linear_before_reset", Attr::Int(i64::from(reset_after))));
        }
        let outputs = if spec.cell == Cell::Lstm { 3 } else { 2 };
        let rnn_name = if dirs == 1 {
            format!("{n}.rnn")
        } else {
            n.to_string()
        };
        let outs = self
            .g
            .node_n(spec.cell.op(), &rnn_name, &[x, w, r, b], outputs, attrs);
        if dirs == 2 {
            let which = if spec.return_sequences {
                outs[0]
            } else {
                outs[1]
            };
            return Ok(which);
        }
        // Drop the direction axis: Y [batch, time, 1, H], Y_h [batch, 1, H].
        let (v, axis) = if spec.return_sequences {
            (outs[0], 2)
        } else {
            (outs[1], 1)
        };
        let axes = self.ints(&format!("{n}.squeeze"), &[axis])?;
        let name = if spec.go_backwards && spec.return_sequences {
            format!("{n}.forward")
        } else {
            n.to_string()
        };
        Ok(self.g.node("Squeeze", &name, &[v, axes], vec![]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lstm_gate_blocks_are_reordered_and_transposed() {
        // kernel [1 input, 4 gates × 1 unit] = Keras i, f, c, o → ONNX rows i, o, f, c.
        let k = Tensor::from_vec(vec![1, 4], vec![1f32, 2., 3., 4.]).unwrap();
        assert_eq!(
            gates_transposed(&k, Cell::Lstm.gate_order(), 1, "l").unwrap(),
            [1., 4., 2., 3.]
        );
        // [2 inputs, 2 gates × 1 unit]: rows become gates, columns inputs.
        let k = Tensor::from_vec(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        assert_eq!(
            gates_transposed(&k, &[0, 1], 1, "l").unwrap(),
            [1., 3., 2., 4.]
        );
    }

    #[test]
    fn unsupported_settings_name_the_layer() {
        let layer = |config: serde_json::Value| {
            Layer::parse(&serde_json::json!({"class_name": "LSTM", "config": config})).unwrap()
        };
        let e = Recurrent::parse(&layer(
            serde_json::json!({"name": "enc", "units": 2, "return_state": true}),
        ))
        .unwrap_err();
        assert!(e.contains("'enc'") && e.contains("return_state"), "{e}");
        let e = Recurrent::parse(&layer(
            serde_json::json!({"name": "enc", "units": 2, "activation": "gelu"}),
        ))
        .unwrap_err();
        assert!(e.contains("'enc'") && e.contains("gelu"), "{e}");
    }
}
