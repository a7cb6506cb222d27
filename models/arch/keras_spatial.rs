//! Keras's spatial layers (convolutions, pooling, padding, upsampling) → ONNX nodes.
//!
//! Keras is channels-last; ONNX's Conv and pools are channels-first, so each is wrapped in a
//! pair of Transposes (adjacent pairs cancel in the optimizer), and kernels are permuted
//! from Keras's `[k…, in, out]` to ONNX's `[out, in, k…]` once, at build time.

use super::keras_layers::{Layer, LayerBuilder};
use crate::ir::{Attr, ValueId};
use crate::tensor::Tensor;
use serde_json::Value;

type Res<T> = std::result::Result<T, String>;

impl LayerBuilder {
    /// Moves channels-last `x` of `spatial` dims to channels-first, runs `op` there, and back.
    fn channels_first_op(
        &mut self,
        layer: &Layer,
        n: &str,
        x: ValueId,
        spatial: usize,
        op: impl FnOnce(&mut Self, ValueId) -> Res<ValueId>,
    ) -> Res<ValueId> {
        if layer.channels_first() {
            return op(self, x);
        }
        let rank = spatial as i64 + 2;
        let to_first: Vec<i64> = [0, rank - 1].into_iter().chain(1..rank - 1).collect();
        let to_last: Vec<i64> = [0].into_iter().chain(2..rank).chain([1]).collect();
        let t = self.g.node(
            "Transpose",
            &format!("{n}.nchw"),
            &[x],
            vec![("perm", Attr::Ints(to_first))],
        );
        let y = op(self, t)?;
        Ok(self
            .g
            .node("Transpose", n, &[y], vec![("perm", Attr::Ints(to_last))]))
    }

    /// ONNX padding attributes for Keras `padding` ("valid", "same", "causal").
    fn padding(layer: &Layer, kernel: &[i64], dilation: &[i64]) -> Res<Vec<(&'static str, Attr)>> {
        Ok(match layer.string("padding", "valid") {
            "valid" => vec![],
            // TensorFlow's SAME puts the odd extra pad at the end.
            "same" => vec![("auto_pad", Attr::String("SAME_UPPER".into()))],
            "causal" if kernel.len() == 1 => {
                vec![("pads", Attr::Ints(vec![(kernel[0] - 1) * dilation[0], 0]))]
            }
            other => {
                return Err(format!(
                    "layer '{}': padding '{other}' is not supported",
                    layer.name
                ))
            }
        })
    }

    /// Conv1D / Conv2D: kernel `[k…, in/groups, out]` → ONNX `[out, in/groups, k…]`.
    pub(super) fn conv(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let spatial = if layer.class == "Conv1D" { 1 } else { 2 };
        let bias = layer.flag("use_bias", true);
        let mut vars = self.vars(layer, 1 + usize::from(bias))?.into_iter();
        let kernel = vars.next().ok_or("")?;
        let r = spatial + 2;
        if kernel.rank() != r {
            return Err(format!("layer '{n}': kernel of shape {:?}", kernel.shape()));
        }
        let perm: Vec<usize> = [r - 1, r - 2].into_iter().chain(0..spatial).collect();
        let kernel = permute(&kernel, &perm).map_err(|e| format!("layer '{n}': {e}"))?;
        let bias = vars.next();
        self.conv_node(layer, n, x, spatial, kernel, bias, layer.int("groups", 1))
    }

    /// Conv1DTranspose / Conv2DTranspose: kernel `[k…, out, in]` → ONNX `[in, out, k…]`.
    /// Keras's "same" output is `input · stride` (TensorFlow's: the forward convolution's
    /// SAME padding, its odd extra at the end, cropped back off); "valid" crops nothing.
    pub(super) fn conv_transpose(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let spatial = if layer.class == "Conv1DTranspose" {
            1
        } else {
            2
        };
        if !layer.config["output_padding"].is_null() {
            return Err(format!("layer '{n}': output_padding is not supported"));
        }
        let bias = layer.flag("use_bias", true);
        let mut vars = self.vars(layer, 1 + usize::from(bias))?.into_iter();
        let kernel = vars.next().ok_or("")?;
        let r = spatial + 2;
        if kernel.rank() != r {
            return Err(format!("layer '{n}': kernel of shape {:?}", kernel.shape()));
        }
        let perm: Vec<usize> = [r - 1, r - 2].into_iter().chain(0..spatial).collect();
        let kernel = permute(&kernel, &perm).map_err(|e| format!("layer '{n}': {e}"))?;
        let ks: Vec<i64> = kernel.shape()[2..].iter().map(|&d| d as i64).collect();
        let strides = layer.tuple("strides", spatial, Some(1))?;
        let dilations = layer.tuple("dilation_rate", spatial, Some(1))?;
        // Full output (i − 1)·s + span, cropped to i·s: by span − s, or padded when negative.
        let (mut begin, mut end, mut extra) = (vec![], vec![], vec![]);
        for d in 0..spatial {
            let span = (ks[d] - 1) * dilations[d] + 1;
            let crop = match layer.string("padding", "valid") {
                "valid" => 0,
                "same" => span - strides[d],
                other => return Err(format!("layer '{n}': padding '{other}' is not supported")),
            };
            begin.push(crop.max(0) / 2);
            end.push(crop.max(0) - crop.max(0) / 2);
            extra.push((-crop).max(0));
        }
        let attrs = vec![
            ("kernel_shape", Attr::Ints(ks)),
            ("strides", Attr::Ints(strides)),
            ("dilations", Attr::Ints(dilations)),
            ("pads", Attr::Ints([begin, end].concat())),
            ("output_padding", Attr::Ints(extra)),
        ];
        let mut inputs = vec![self.constant(&format!("{n}.kernel"), kernel)];
        if let Some(b) = vars.next() {
            inputs.push(self.constant(&format!("{n}.bias"), b));
        }
        self.channels_first_op(layer, n, x, spatial, |s, x| {
            let all: Vec<ValueId> = [x].into_iter().chain(inputs).collect();
            Ok(s.g.node("ConvTranspose", &format!("{n}.conv"), &all, attrs))
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_node(
        &mut self,
        layer: &Layer,
        n: &str,
        x: ValueId,
        spatial: usize,
        kernel: Tensor,
        bias: Option<Tensor>,
        groups: i64,
    ) -> Res<ValueId> {
        let ks: Vec<i64> = kernel.shape()[2..].iter().map(|&d| d as i64).collect();
        let strides = layer.tuple("strides", spatial, Some(1))?;
        let dilations = layer.tuple("dilation_rate", spatial, Some(1))?;
        let mut attrs = Self::padding(layer, &ks, &dilations)?;
        attrs.extend([
            ("kernel_shape", Attr::Ints(ks)),
            ("strides", Attr::Ints(strides)),
            ("dilations", Attr::Ints(dilations)),
            ("group", Attr::Int(groups)),
        ]);
        let w = self.constant(&format!("{n}.kernel"), kernel);
        let mut inputs = vec![w];
        if let Some(b) = bias {
            inputs.push(self.constant(&format!("{n}.bias"), b));
        }
        self.channels_first_op(layer, n, x, spatial, |s, x| {
            let mut all = vec![x];
            all.extend(inputs);
            Ok(s.g.node("Conv", &format!("{n}.conv"), &all, attrs))
        })
    }

    /// Depthwise kernel `[kh, kw, in, mult]` → grouped-conv weight `[in·mult, 1, kh, kw]`.
    fn depthwise_kernel(n: &str, k: &Tensor) -> Res<Tensor> {
        let [kh, kw, c, m] = <[usize; 4]>::try_from(k.shape())
            .map_err(|_| format!("layer '{n}': depthwise kernel of shape {:?}", k.shape()))?;
        permute(k, &[2, 3, 0, 1])
            .and_then(|t| t.reshape(vec![c * m, 1, kh, kw]))
            .map_err(|e| format!("layer '{n}': {e}"))
    }

    pub(super) fn depthwise(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let bias = layer.flag("use_bias", true);
        let mut vars = self.vars(layer, 1 + usize::from(bias))?.into_iter();
        let kernel = vars.next().ok_or("")?;
        let channels = kernel.shape().get(2).copied().unwrap_or(1) as i64;
        let kernel = Self::depthwise_kernel(n, &kernel)?;
        self.conv_node(layer, n, x, 2, kernel, vars.next(), channels)
    }

    /// Depthwise then pointwise (1×1) convolution, the bias on the latter.
    pub(super) fn separable(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let bias = layer.flag("use_bias", true);
        let mut vars = self.vars(layer, 2 + usize::from(bias))?.into_iter();
        let (depth, point) = (vars.next().ok_or("")?, vars.next().ok_or("")?);
        let channels = depth.shape().get(2).copied().unwrap_or(1) as i64;
        let depth = Self::depthwise_kernel(n, &depth)?;
        let point = permute(&point, &[3, 2, 0, 1]).map_err(|e| format!("layer '{n}': {e}"))?;
        let dw = self.conv_node(
            layer,
            &format!("{n}.depthwise"),
            x,
            2,
            depth,
            None,
            channels,
        )?;
        // The pointwise step: stride 1, no padding, whatever the layer's settings.
        let pointwise = Layer {
            class: "Conv2D".into(),
            name: format!("{n}.pointwise"),
            config: serde_json::json!({"data_format": layer.string("data_format", "channels_last")}),
        };
        self.conv_node(&pointwise, n, dw, 2, point, vars.next(), 1)
    }

    pub(super) fn pool(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let spatial = if layer.class.ends_with("1D") { 1 } else { 2 };
        let size = layer.tuple("pool_size", spatial, Some(2))?;
        let strides = match layer.config["strides"].is_null() {
            true => size.clone(),
            false => layer.tuple("strides", spatial, None)?,
        };
        let mut attrs = Self::padding(layer, &size, &vec![1; spatial])?;
        attrs.extend([
            ("kernel_shape", Attr::Ints(size)),
            ("strides", Attr::Ints(strides)),
        ]);
        let op = if layer.class.starts_with("Max") {
            "MaxPool"
        } else {
            "AveragePool"
        };
        self.channels_first_op(layer, n, x, spatial, |s, x| {
            Ok(s.g.node(op, &format!("{n}.pool"), &[x], attrs))
        })
    }

    pub(super) fn global_pool(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let spatial = if layer.class.ends_with("1D") { 1 } else { 2 };
        let axes: Vec<i64> = match layer.channels_first() {
            true => (2..2 + spatial as i64).collect(),
            false => (1..1 + spatial as i64).collect(),
        };
        let axes = self.ints(&format!("{n}.axes"), &axes)?;
        let keep = vec![(
            "keepdims",
            Attr::Int(i64::from(layer.flag("keepdims", false))),
        )];
        let op = if layer.class.contains("Max") {
            "ReduceMax"
        } else {
            "ReduceMean"
        };
        Ok(self.g.node(op, n, &[x, axes], keep))
    }

    /// Zero padding of the spatial axes of channels-last `x`.
    pub(super) fn zero_padding(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let spatial = if layer.class.ends_with("1D") { 1 } else { 2 };
        let p = &layer.config["padding"];
        // An integer, one (before, after) pair, or a pair per spatial axis.
        let pairs: Vec<(i64, i64)> = match (p.as_i64(), p.as_array()) {
            (Some(k), _) => vec![(k, k); spatial],
            (None, Some(a)) if a.iter().all(Value::is_i64) && spatial == 1 => {
                vec![(
                    a[0].as_i64().unwrap_or(0),
                    a.get(1).and_then(Value::as_i64).unwrap_or(0),
                )]
            }
            (None, Some(a)) if a.iter().all(Value::is_i64) => a
                .iter()
                .map(|v| (v.as_i64().unwrap_or(0), v.as_i64().unwrap_or(0)))
                .collect(),
            (None, Some(a)) => a
                .iter()
                .map(|pair| (pair[0].as_i64().unwrap_or(0), pair[1].as_i64().unwrap_or(0)))
                .collect(),
            _ => return Err(format!("layer '{n}': bad padding {p}")),
        };
        if pairs.len() != spatial {
            return Err(format!("layer '{n}': bad padding {p}"));
        }
        let (before, after): (Vec<i64>, Vec<i64>) = pairs.into_iter().unzip();
        let pads: Vec<i64> = if layer.channels_first() {
            [0, 0]
                .iter()
                .chain(&before)
                .chain(&[0, 0])
                .chain(&after)
                .copied()
                .collect()
        } else {
            [0].iter()
                .chain(&before)
                .chain(&[0, 0])
                .chain(&after)
                .chain(&[0])
                .copied()
                .collect()
        };
        let pads = self.ints(&format!("{n}.pads"), &pads)?;
        Ok(self.g.node("Pad", n, &[x, pads], vec![]))
    }

    pub(super) fn upsampling(&mut self, layer: &Layer, n: &str, x: ValueId) -> Res<ValueId> {
        let size = layer.tuple("size", 2, Some(2))?;
        let (h, w) = (size[0] as f32, size[1] as f32);
        let scales = if layer.channels_first() {
            [1.0, 1.0, h, w]
        } else {
            [1.0, h, w, 1.0]
        };
        let roi = self.floats(&format!("{n}.roi"), &[], vec![0])?;
        let scales = self.floats(&format!("{n}.scales"), &scales, vec![4])?;
        let attrs = match layer.string("interpolation", "nearest") {
            // Output pixel i reads input pixel ⌊i / s⌋, as Keras's nearest does.
            "nearest" => vec![
                ("mode", Attr::String("nearest".into())),
                (
                    "coordinate_transformation_mode",
                    Attr::String("asymmetric".into()),
                ),
                ("nearest_mode", Attr::String("floor".into())),
            ],
            "bilinear" => vec![
                ("mode", Attr::String("linear".into())),
                (
                    "coordinate_transformation_mode",
                    Attr::String("half_pixel".into()),
                ),
            ],
            other => {
                return Err(format!(
                    "layer '{n}': interpolation '{other}' is not supported"
                ))
            }
        };
        Ok(self.g.node("Resize", n, &[x, roi, scales], attrs))
    }
}

/// `t` (f32) with its axes permuted, as a new contiguous tensor.
fn permute(t: &Tensor, perm: &[usize]) -> crate::Result<Tensor> {
    let v = t.view::<f32>()?;
    if perm.len() != v.ndim() {
        return Err(crate::op_err!(
            "cannot permute shape {:?} by {perm:?}",
            t.shape()
        ));
    }
    let p = v.permuted_axes(perm.to_vec());
    Ok(Tensor::from_array(p.as_standard_layout().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_moves_axes() {
        // HWIO [1, 2, 1, 3] → OIHW [3, 1, 1, 2]: element (h, w, i, o) lands at (o, i, h, w).
        let k = Tensor::from_vec(vec![1, 2, 1, 3], (0..6).map(|v| v as f32).collect()).unwrap();
        let p = permute(&k, &[3, 2, 0, 1]).unwrap();
        assert_eq!(p.shape(), &[3, 1, 1, 2]);
        assert_eq!(p.as_slice::<f32>().unwrap(), &[0., 3., 1., 4., 2., 5.]);
    }
}
