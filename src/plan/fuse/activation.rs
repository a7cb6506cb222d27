//! Conv/Gemm/MatMul → activation fused into the producer's epilogue, so the activation costs
//! no extra pass over memory. Also recognizes SiLU written as `x * Sigmoid(x)`.

use super::{const_scalar, output0, remove_nodes, Uses};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node};

const PRODUCERS: [&str; 3] = ["Conv", "Gemm", "MatMul"];

/// The internal attributes describing `act`, or `None` when it cannot be fused.
fn epilogue_attrs(g: &Graph, act: &Node, opset: i64) -> Result<Option<Vec<(&'static str, Attr)>>> {
    let a = &act.attrs;
    let name = |s: &str| Attr::String(s.to_string());
    Ok(Some(match act.op_type.as_str() {
        "Relu" => vec![("_activation", name("Relu"))],
        "Sigmoid" => vec![("_activation", name("Sigmoid"))],
        "Tanh" => vec![("_activation", name("Tanh"))],
        "HardSwish" => vec![("_activation", name("HardSwish"))],
        "LeakyRelu" => vec![
            ("_activation", name("LeakyRelu")),
            ("_alpha", Attr::Float(a.float_or("alpha", 0.01)?)),
        ],
        "HardSigmoid" => vec![
            ("_activation", name("HardSigmoid")),
            ("_alpha", Attr::Float(a.float_or("alpha", 0.2)?)),
            ("_beta", Attr::Float(a.float_or("beta", 0.5)?)),
        ],
        "Gelu" => {
            let tanh = a.string_or("approximate", "none")? == "tanh";
            vec![("_activation", name(if tanh { "GeluTanh" } else { "Gelu" }))]
        }
        "Clip" => {
            let (min, max) = if opset < 11 {
                (a.float_or("min", f32::MIN)?, a.float_or("max", f32::MAX)?)
            } else {
                let bound = |i: usize, default: f32| match act.inputs.get(i).copied().flatten() {
                    None => Some(default),
                    Some(v) => const_scalar(g, v),
                };
                match (bound(1, f32::MIN), bound(2, f32::MAX)) {
                    (Some(lo), Some(hi)) => (lo, hi),
                    _ => return Ok(None),
                }
            };
            vec![
                ("_activation", name("Clip")),
                ("_min", Attr::Float(min)),
                ("_max", Attr::Float(max)),
            ]
        }
        _ => return Ok(None),
    }))
}

pub fn fuse_activations(g: &mut Graph) -> Result<()> {
    let uses = Uses::of(g);
    let opset = g.onnx_opset();
    let mut removed = vec![false; g.nodes.len()];
    for p in 0..g.nodes.len() {
        let prod = &g.nodes[p];
        if !PRODUCERS.contains(&prod.op_type.as_str())
            || prod.attrs.has("_activation")
            || removed[p]
        {
            continue;
        }
        let Some(y) = output0(g, p) else { continue };
        // y has one reader: the activation itself, or a shape-only op whose one reader is the
        // activation. Elementwise activations commute with a reshape, so then the producer
        // applies it and the reshape passes the result on (GPT-2 exports `Gemm → Reshape →
        // Gelu`). `takes_output` is the node whose output becomes the activation's.
        if let Some(a) = uses.sole_consumer(y) {
            let target = match activation_after_reshape(g, &uses, y, a) {
                Some((reshape, act)) => Some((act, reshape)),
                None if g.nodes[a].inputs.first() == Some(&Some(y)) => Some((a, p)),
                None => None,
            };
            if let Some((act, takes_output)) = target.filter(|&(act, _)| !removed[act]) {
                if let Some(attrs) = epilogue_attrs(g, &g.nodes[act], opset)? {
                    let out = g.nodes[act].outputs.first().copied().flatten();
                    g.nodes[p]
                        .attrs
                        .0
                        .extend(attrs.into_iter().map(|(k, v)| (k.to_string(), v)));
                    g.nodes[takes_output].outputs[0] = out;
                    removed[act] = true;
                }
            }
            continue;
        }
        // SiLU: y read by exactly Sigmoid(y) and Mul(y, sigmoid) (either operand order).
        if let Some((sig, mul)) = silu_pattern(g, &uses, y) {
            if removed[sig] || removed[mul] {
                continue;
            }
            let out = output0(g, mul);
            let prod = &mut g.nodes[p];
            prod.attrs
                .0
                .insert("_activation".into(), Attr::String("Silu".into()));
            prod.outputs[0] = out;
            removed[sig] = true;
            removed[mul] = true;
        }
    }
    remove_nodes(g, &removed);
    Ok(())
}

/// `(reshape, activation)` when `reader`, the sole reader of `y`, is a shape-only op on `y`
/// whose result only the node `activation` reads, as its first input.
fn activation_after_reshape(
    g: &Graph,
    uses: &Uses,
    y: usize,
    reader: usize,
) -> Option<(usize, usize)> {
    const SHAPE_ONLY: [&str; 4] = ["Reshape", "Flatten", "Squeeze", "Unsqueeze"];
    let node = &g.nodes[reader];
    if !SHAPE_ONLY.contains(&node.op_type.as_str()) || node.inputs.first() != Some(&Some(y)) {
        return None;
    }
    let r = output0(g, reader)?;
    let act = uses.sole_consumer(r)?;
    (g.nodes[act].inputs.first() == Some(&Some(r))).then_some((reader, act))
}

fn silu_pattern(g: &Graph, uses: &Uses, y: usize) -> Option<(usize, usize)> {
    if uses.is_graph_output(y) {
        return None;
    }
    let readers = uses.consumers(y);
    let [r0, r1] = readers else { return None };
    let (sig, mul) = if g.nodes[*r0].op_type == "Sigmoid" {
        (*r0, *r1)
    } else {
        (*r1, *r0)
    };
    if g.nodes[sig].op_type != "Sigmoid" || g.nodes[mul].op_type != "Mul" {
        return None;
    }
    let s = output0(g, sig)?;
    if uses.sole_consumer(s) != Some(mul) {
        return None;
    }
    let ins = &g.nodes[mul].inputs;
    let matches = ins.len() == 2
        && ((ins[0] == Some(y) && ins[1] == Some(s)) || (ins[0] == Some(s) && ins[1] == Some(y)));
    matches.then_some((sig, mul))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;

    #[test]
    fn relu_after_conv_moves_into_its_epilogue() {
        let mut b = Builder::new();
        let x = b.input("x");
        let w = b.constant(
            "w",
            Tensor::from_vec(vec![1, 1, 1, 1], vec![1.0f32]).unwrap(),
        );
        let y = b.node("Conv", &[x, w], Attrs::default());
        let r = b.node("Relu", &[y], Attrs::default());
        b.g.outputs.push(r);
        fuse_activations(&mut b.g).unwrap();
        assert_eq!(b.ops(), vec!["Conv"]);
        assert_eq!(b.g.nodes[0].outputs[0], Some(r));
        assert_eq!(
            b.g.nodes[0].attrs.string("_activation").unwrap(),
            Some("Relu")
        );
    }

    #[test]
    fn clip_with_constant_bounds_fuses_and_silu_is_recognized() {
        let mut b = Builder::new();
        let x = b.input("x");
        let w = b.constant("w", Tensor::from_vec(vec![1, 1], vec![1.0f32]).unwrap());
        let lo = b.constant("lo", Tensor::scalar(0.0f32));
        let hi = b.constant("hi", Tensor::scalar(6.0f32));
        let y = b.node("MatMul", &[x, w], Attrs::default());
        let c = b.node("Clip", &[y, lo, hi], Attrs::default());
        let y2 = b.node("MatMul", &[c, w], Attrs::default());
        let s = b.node("Sigmoid", &[y2], Attrs::default());
        let m = b.node("Mul", &[y2, s], Attrs::default());
        b.g.outputs.push(m);
        fuse_activations(&mut b.g).unwrap();
        assert_eq!(b.ops(), vec!["MatMul", "MatMul"]);
        assert_eq!(b.g.nodes[0].attrs.float_or("_max", 0.0).unwrap(), 6.0);
        assert_eq!(
            b.g.nodes[1].attrs.string("_activation").unwrap(),
            Some("Silu")
        );
        assert_eq!(b.g.nodes[1].outputs[0], Some(m));
    }

    #[test]
    fn activation_behind_a_reshape_moves_into_the_producer() {
        let mut b = Builder::new();
        let x = b.input("x");
        let w = b.constant("w", Tensor::from_vec(vec![1, 1], vec![1.0f32]).unwrap());
        let shape = b.constant(
            "shape",
            Tensor::from_vec(vec![3], vec![1i64, -1, 1]).unwrap(),
        );
        let y = b.node("Gemm", &[x, w], Attrs::default());
        let r = b.node("Reshape", &[y, shape], Attrs::default());
        let mut tanh = Attrs::default();
        tanh.0
            .insert("approximate".into(), Attr::String("tanh".into()));
        let gelu = b.node("Gelu", &[r], tanh);
        b.g.outputs.push(gelu);
        fuse_activations(&mut b.g).unwrap();
        assert_eq!(b.ops(), vec!["Gemm", "Reshape"]);
        assert_eq!(
            b.g.nodes[0].attrs.string("_activation").unwrap(),
            Some("GeluTanh")
        );
        assert_eq!(b.g.nodes[0].outputs[0], Some(y));
        assert_eq!(b.g.nodes[1].outputs[0], Some(gelu));

        // Not when the reshaped raw value has another reader.
        let mut b = Builder::new();
        let x = b.input("x");
        let w = b.constant("w", Tensor::from_vec(vec![1, 1], vec![1.0f32]).unwrap());
        let shape = b.constant("shape", Tensor::from_vec(vec![1], vec![-1i64]).unwrap());
        let y = b.node("MatMul", &[x, w], Attrs::default());
        let r = b.node("Reshape", &[y, shape], Attrs::default());
        let relu = b.node("Relu", &[r], Attrs::default());
        b.g.outputs.extend([relu, r]);
        fuse_activations(&mut b.g).unwrap();
        assert_eq!(b.ops(), vec!["MatMul", "Reshape", "Relu"]);
    }

    #[test]
    fn activation_is_not_fused_when_the_raw_output_is_also_used() {
        let mut b = Builder::new();
        let x = b.input("x");
        let w = b.constant("w", Tensor::from_vec(vec![1, 1], vec![1.0f32]).unwrap());
        let y = b.node("MatMul", &[x, w], Attrs::default());
        let r = b.node("Relu", &[y], Attrs::default());
        b.g.outputs.extend([r, y]);
        fuse_activations(&mut b.g).unwrap();
        assert_eq!(b.ops(), vec!["MatMul", "Relu"]);
    }
}
