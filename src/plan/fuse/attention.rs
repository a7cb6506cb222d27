//! MatMul(Q, Kᵀ) [× scale] [+ mask] → Softmax over the last axis [→ Cast to float] →
//! MatMul(·, V) becomes one `ScaledDotProductAttention` node (domain `infer`,
//! `ops/attention_sdpa.rs`), whose scores never leave the cache. Runs after `matmul_scale`,
//! so the scale is the scores MatMul's `_scale`.

use super::{output0, remove_nodes, Uses};
use crate::ir::{Attr, Graph};
use crate::ops::attention::sdpa::{CAST_ATTR, FLOAT, NODES_ATTR, SOFTMAX_OPSET_ATTR};
use std::collections::HashMap;

pub fn fuse_attention(g: &mut Graph) {
    let uses = Uses::of(g);
    let producer: HashMap<_, usize> = (0..g.nodes.len())
        .filter_map(|i| Some((output0(g, i)?, i)))
        .collect();
    let opset = g.opsets.get("").copied().unwrap_or(1);
    let mut removed = vec![false; g.nodes.len()];
    for sm in 0..g.nodes.len() {
        let softmax = &g.nodes[sm];
        if softmax.op_type != "Softmax" || !softmax.domain.is_empty() || removed[sm] {
            continue;
        }
        // Over the last axis: said so, or the default from opset 13 on.
        let axis = softmax.attrs.int("axis").ok().flatten();
        if !(axis == Some(-1) || axis.is_none() && opset >= 13) {
            continue;
        }
        let (Some(Some(s)), Some(p)) = (softmax.inputs.first().copied(), output0(g, sm)) else {
            continue;
        };
        // A Cast to float may come first (GPT-2's export).
        let Some(mut out) = uses.sole_consumer(p) else {
            continue;
        };
        let mut cast = None;
        let mut p = p;
        if is_cast_to_float(&g.nodes[out]) {
            let Some(c) = output0(g, out) else { continue };
            let Some(next) = uses.sole_consumer(c) else {
                continue;
            };
            (cast, p, out) = (Some(out), c, next);
        }
        // The output product, reading the probabilities as its left operand only.
        let out_mm = &g.nodes[out];
        if !is_plain_matmul(out_mm) || out_mm.inputs[0] != Some(p) || out_mm.inputs[1] == Some(p) {
            continue;
        }
        // An optional mask Add between the scores product and the Softmax.
        let (scores, mask, add) = match producer.get(&s) {
            Some(&a) if g.nodes[a].op_type == "Add" && g.nodes[a].domain.is_empty() => {
                let add = &g.nodes[a];
                let (Some(x), Some(y)) = (
                    add.inputs.first().copied().flatten(),
                    add.inputs.get(1).copied().flatten(),
                ) else {
                    continue;
                };
                if add.inputs.len() != 2 || uses.sole_consumer(s) != Some(sm) {
                    continue;
                }
                // Whichever side the product is on (the other is the mask, whatever it is).
                let (scores, mask) = match (producer.get(&x), producer.get(&y)) {
                    (Some(&m), _) if is_scores(g, m) => (x, y),
                    (_, Some(&m)) if is_scores(g, m) => (y, x),
                    _ => continue,
                };
                (scores, Some(mask), Some(a))
            }
            _ => (s, None, None),
        };
        let Some(&mm) = producer.get(&scores) else {
            continue;
        };
        let reader = add.unwrap_or(sm);
        if !is_scores(g, mm) || uses.sole_consumer(scores) != Some(reader) {
            continue;
        }
        let fused = [Some(mm), add, Some(sm), cast, Some(out)];
        if fused.iter().flatten().any(|&i| removed[i]) {
            continue;
        }
        let mm_node = &g.nodes[mm];
        let (q, kt) = (mm_node.inputs[0], mm_node.inputs[1]);
        let v = g.nodes[out].inputs[1];
        let scale = mm_node.attrs.float_or("_scale", 1.0).unwrap_or(1.0);
        let names: Vec<String> = fused
            .iter()
            .flatten()
            .map(|&i| g.nodes[i].name.clone())
            .collect();
        let node = &mut g.nodes[out];
        node.op_type = "ScaledDotProductAttention".into();
        node.domain = "infer".into();
        node.inputs = vec![q, kt, v];
        if let Some(m) = mask {
            node.inputs.push(Some(m));
        }
        node.attrs.0.clear();
        if scale != 1.0 {
            node.attrs.0.insert("_scale".into(), Attr::Float(scale));
        }
        node.attrs.0.insert(NODES_ATTR.into(), Attr::Strings(names));
        node.attrs
            .0
            .insert(SOFTMAX_OPSET_ATTR.into(), Attr::Int(opset));
        if cast.is_some() {
            node.attrs.0.insert(CAST_ATTR.into(), Attr::Int(1));
        }
        for i in [Some(mm), add, Some(sm), cast].into_iter().flatten() {
            removed[i] = true;
        }
    }
    remove_nodes(g, &removed);
}

/// A Cast to float32.
fn is_cast_to_float(n: &crate::ir::Node) -> bool {
    n.op_type == "Cast" && n.domain.is_empty() && n.attrs.int("to").ok().flatten() == Some(FLOAT)
}

/// A MatMul of the default domain with two inputs and no fused parts.
fn is_plain_matmul(n: &crate::ir::Node) -> bool {
    is_matmul_with(n, &[])
}

/// A scores product: a plain MatMul, or one carrying only the scale.
fn is_scores(g: &Graph, node: usize) -> bool {
    let n = &g.nodes[node];
    n.outputs.len() == 1 && is_matmul_with(n, &["_scale"])
}

/// A MatMul of the default domain with two inputs whose attributes are all among `allowed`.
fn is_matmul_with(n: &crate::ir::Node, allowed: &[&str]) -> bool {
    n.op_type == "MatMul"
        && n.domain.is_empty()
        && n.inputs.len() == 2
        && n.attrs.0.keys().all(|k| allowed.contains(&k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;

    /// q·kt [+ mask] → Softmax → ·v; returns the graph's output.
    fn chain(
        b: &mut Builder,
        masked: bool,
        mask_first: bool,
        softmax: Attrs,
    ) -> crate::ir::ValueId {
        let (q, kt, v) = (b.input("q"), b.input("kt"), b.input("v"));
        let mut s = b.node("MatMul", &[q, kt], Attrs::default());
        b.g.nodes[0]
            .attrs
            .0
            .insert("_scale".into(), Attr::Float(0.125));
        if masked {
            let m = b.input("mask");
            let ins = if mask_first { [m, s] } else { [s, m] };
            s = b.node("Add", &ins, Attrs::default());
        }
        let p = b.node("Softmax", &[s], softmax);
        b.node("MatMul", &[p, v], Attrs::default())
    }

    fn last_axis() -> Attrs {
        let mut a = Attrs::default();
        a.0.insert("axis".into(), Attr::Int(-1));
        a
    }

    #[test]
    fn scores_mask_softmax_and_product_become_one_node() {
        for (masked, mask_first) in [(true, false), (true, true), (false, false)] {
            let mut b = Builder::new();
            let y = chain(&mut b, masked, mask_first, last_axis());
            b.g.outputs.push(y);
            fuse_attention(&mut b.g);
            assert_eq!(b.ops(), vec!["ScaledDotProductAttention"]);
            let n = &b.g.nodes[0];
            assert_eq!(n.domain, "infer");
            assert_eq!(n.outputs[0], Some(y));
            assert_eq!(n.inputs.len(), if masked { 4 } else { 3 });
            assert_eq!(n.attrs.float_or("_scale", 1.0).unwrap(), 0.125);
            let names = n.attrs.strings(NODES_ATTR).unwrap().unwrap();
            assert_eq!(names.len(), if masked { 4 } else { 3 });
        }
    }

    #[test]
    fn a_cast_to_float_of_the_probabilities_is_taken_along() {
        let mut b = Builder::new();
        let (q, kt, v) = (b.input("q"), b.input("kt"), b.input("v"));
        let s = b.node("MatMul", &[q, kt], Attrs::default());
        let p = b.node("Softmax", &[s], last_axis());
        let mut to = Attrs::default();
        to.0.insert("to".into(), Attr::Int(FLOAT));
        let c = b.node("Cast", &[p], to);
        let y = b.node("MatMul", &[c, v], Attrs::default());
        b.g.outputs.push(y);
        fuse_attention(&mut b.g);
        assert_eq!(b.ops(), vec!["ScaledDotProductAttention"]);
        let n = &b.g.nodes[0];
        assert_eq!(n.attrs.int_or(CAST_ATTR, 0).unwrap(), 1);
        assert_eq!(n.attrs.strings(NODES_ATTR).unwrap().unwrap().len(), 4);
    }

    #[test]
    fn other_axes_shared_values_and_products_with_epilogues_stay() {
        // Softmax over another axis.
        let mut b = Builder::new();
        let mut axis1 = Attrs::default();
        axis1.0.insert("axis".into(), Attr::Int(1));
        let y = chain(&mut b, true, false, axis1);
        b.g.outputs.push(y);
        fuse_attention(&mut b.g);
        assert_eq!(b.ops(), vec!["MatMul", "Add", "Softmax", "MatMul"]);

        // Opset 11 without an axis: its default is 1.
        let mut b = Builder::new();
        b.g.opsets.insert(String::new(), 11);
        let y = chain(&mut b, false, false, Attrs::default());
        b.g.outputs.push(y);
        fuse_attention(&mut b.g);
        assert_eq!(b.ops(), vec!["MatMul", "Softmax", "MatMul"]);

        // The probabilities are also a graph output.
        let mut b = Builder::new();
        let y = chain(&mut b, true, false, last_axis());
        let p = b.g.nodes[2].outputs[0].unwrap();
        b.g.outputs.extend([y, p]);
        fuse_attention(&mut b.g);
        assert_eq!(b.ops().len(), 4);

        // The output product has a bias (it is no plain product).
        let mut b = Builder::new();
        let y = chain(&mut b, false, false, last_axis());
        b.g.nodes[2]
            .attrs
            .0
            .insert("_activation".into(), Attr::String("Relu".into()));
        b.g.outputs.push(y);
        fuse_attention(&mut b.g);
        assert_eq!(b.ops().len(), 3);
    }
}
