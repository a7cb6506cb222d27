//! Conv → BatchNormalization (inference) folded into the convolution's weights and bias.
//!
//! BN(y) = (y - mean) · s + beta with s = gamma / sqrt(var + eps), and y = W*x + b, so
//! BN(y) = (W·s)*x + ((b - mean)·s + beta): scale each output channel's filter.

use super::{remove_nodes, Uses};
use crate::error::Result;
use crate::ir::{Graph, ValueType};
use crate::tensor::Tensor;

pub fn fold_batch_norm_into_conv(g: &mut Graph) -> Result<()> {
    let uses = Uses::of(g);
    let mut removed = vec![false; g.nodes.len()];
    for conv in 0..g.nodes.len() {
        if g.nodes[conv].op_type != "Conv" || g.nodes[conv].attrs.has("_activation") {
            continue;
        }
        let Some(Some(y)) = g.nodes[conv].outputs.first().copied() else {
            continue;
        };
        let Some(bn) = uses.sole_consumer(y) else {
            continue;
        };
        let bn_node = &g.nodes[bn];
        if bn_node.op_type != "BatchNormalization"
            || bn_node.inputs.first() != Some(&Some(y))
            || bn_node.outputs.iter().skip(1).any(|o| o.is_some())
            || bn_node.attrs.int_or("training_mode", 0)? != 0
        {
            continue;
        }
        let Some(folded) = folded_params(g, conv, bn)? else {
            continue;
        };
        let (w, b) = folded;
        let w_id = g.add_value(
            format!("{}_bn_weight", g.nodes[conv].name),
            ValueType::default(),
        );
        let b_id = g.add_value(
            format!("{}_bn_bias", g.nodes[conv].name),
            ValueType::default(),
        );
        g.initializers.insert(w_id, w);
        g.initializers.insert(b_id, b);
        let bn_out = g.nodes[bn].outputs[0];
        let node = &mut g.nodes[conv];
        node.inputs.truncate(1);
        node.inputs.push(Some(w_id));
        node.inputs.push(Some(b_id));
        node.outputs[0] = bn_out;
        removed[bn] = true;
    }
    remove_nodes(g, &removed);
    Ok(())
}

/// New (weight, bias) when every parameter is a constant f32 tensor of matching size.
fn folded_params(g: &Graph, conv: usize, bn: usize) -> Result<Option<(Tensor, Tensor)>> {
    let c = &g.nodes[conv];
    let b = &g.nodes[bn];
    let get =
        |slot: Option<&Option<usize>>| slot.copied().flatten().and_then(|v| g.initializers.get(&v));
    let (Some(w), Some(gamma), Some(beta), Some(mean), Some(var)) = (
        get(c.inputs.get(1)),
        get(b.inputs.get(1)),
        get(b.inputs.get(2)),
        get(b.inputs.get(3)),
        get(b.inputs.get(4)),
    ) else {
        return Ok(None);
    };
    let bias = match c.inputs.get(2).copied().flatten() {
        Some(v) => match g.initializers.get(&v) {
            Some(t) => Some(t),
            None => return Ok(None),
        },
        None => None,
    };
    let eps = b.attrs.float_or("epsilon", 1e-5)?;
    let (Ok(wv), Ok(gamma), Ok(beta), Ok(mean), Ok(var)) = (
        w.as_slice::<f32>(),
        gamma.as_slice::<f32>(),
        beta.as_slice::<f32>(),
        mean.as_slice::<f32>(),
        var.as_slice::<f32>(),
    ) else {
        return Ok(None);
    };
    let oc = match w.shape().first() {
        Some(&n) if n > 0 => n,
        _ => return Ok(None),
    };
    if [gamma.len(), beta.len(), mean.len(), var.len()]
        .iter()
        .any(|&n| n != oc)
    {
        return Ok(None);
    }
    let bias_v: Vec<f32> = match bias {
        Some(t) => match t.as_slice::<f32>() {
            Ok(s) if s.len() == oc => s.to_vec(),
            _ => return Ok(None),
        },
        None => vec![0.0; oc],
    };
    let per_oc = wv.len() / oc;
    let scale: Vec<f32> = (0..oc).map(|o| gamma[o] / (var[o] + eps).sqrt()).collect();
    let new_w: Vec<f32> = wv
        .iter()
        .enumerate()
        .map(|(i, &x)| x * scale[i / per_oc])
        .collect();
    let new_b: Vec<f32> = (0..oc)
        .map(|o| (bias_v[o] - mean[o]) * scale[o] + beta[o])
        .collect();
    Ok(Some((
        Tensor::from_vec(w.shape().to_vec(), new_w)?,
        Tensor::from_vec(vec![oc], new_b)?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;

    #[test]
    fn conv_then_bn_becomes_one_conv_with_scaled_weights() {
        let mut b = Builder::new();
        let x = b.input("x");
        let w = b.constant(
            "w",
            Tensor::from_vec(vec![2, 1, 1, 1], vec![1.0f32, 2.0]).unwrap(),
        );
        let y = b.node("Conv", &[x, w], Attrs::default());
        let p = |v: Vec<f32>| Tensor::from_vec(vec![2], v).unwrap();
        let gamma = b.constant("g", p(vec![2.0, 1.0]));
        let beta = b.constant("b", p(vec![0.5, -1.0]));
        let mean = b.constant("m", p(vec![1.0, 0.0]));
        let var = b.constant("v", p(vec![4.0 - 1e-5, 1.0 - 1e-5]));
        let out = b.node(
            "BatchNormalization",
            &[y, gamma, beta, mean, var],
            Attrs::default(),
        );
        b.g.outputs.push(out);
        fold_batch_norm_into_conv(&mut b.g).unwrap();
        assert_eq!(b.ops(), vec!["Conv"]);
        let conv = &b.g.nodes[0];
        assert_eq!(conv.outputs[0], Some(out));
        let w2 = b.g.initializers[&conv.inputs[1].unwrap()]
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let b2 = b.g.initializers[&conv.inputs[2].unwrap()]
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        // scale = [2/2, 1/1] = [1, 1]; bias = (0 - mean) * scale + beta = [-0.5, -1].
        assert!(
            (w2[0] - 1.0).abs() < 1e-5 && (w2[1] - 2.0).abs() < 1e-5,
            "{w2:?}"
        );
        assert!(
            (b2[0] + 0.5).abs() < 1e-5 && (b2[1] + 1.0).abs() < 1e-5,
            "{b2:?}"
        );
    }
}
