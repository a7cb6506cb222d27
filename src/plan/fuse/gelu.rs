//! GELU spelled out in elementary ops becomes one `Gelu` node (which matmul/conv can then
//! take as an epilogue): the erf form `x · 0.5 · (1 + erf(x / √2))` (BERT, ViT) and the tanh
//! form `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))` (GPT-2), as `approximate=tanh`.

use super::{const_scalar, output0, remove_nodes, Uses};
use crate::ir::{Attr, Attrs, Graph, Node, ValueId};
use std::collections::HashMap;

const SQRT_2: f32 = std::f32::consts::SQRT_2;

fn near(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-3 * b.abs()
}

/// The producer of `v`.
fn producer(g: &Graph, v: ValueId) -> Option<usize> {
    g.nodes
        .iter()
        .position(|n| n.outputs.first() == Some(&Some(v)))
}

/// For a binary `op` node with one constant scalar operand near `c`: the other operand.
fn with_const(g: &Graph, node: usize, op: &str, c: f32) -> Option<ValueId> {
    let n = &g.nodes[node];
    if n.op_type != op {
        return None;
    }
    let [Some(a), Some(b)] = n.inputs.as_slice() else {
        return None;
    };
    match (const_scalar(g, *a), const_scalar(g, *b)) {
        (_, Some(k)) if near(k, c) => Some(*a),
        (Some(k), _) if near(k, c) => Some(*b),
        _ => None,
    }
}

/// `· (1 + inner)` then `· 0.5 · x` in either association, starting from `inner`'s output.
/// Returns the nodes of this tail and the final output.
fn match_half_x_tail(
    g: &Graph,
    uses: &Uses,
    inner: ValueId,
    x: ValueId,
) -> Option<(Vec<usize>, ValueId)> {
    let add = uses.sole_consumer(inner)?;
    if with_const(g, add, "Add", 1.0)? != inner {
        return None;
    }
    let one_plus = output0(g, add)?;
    let m1 = uses.sole_consumer(one_plus)?;
    if g.nodes[m1].op_type != "Mul" {
        return None;
    }
    let m1_other = other_input(&g.nodes[m1], one_plus)?;
    let m1_out = output0(g, m1)?;
    if m1_other == x {
        // x·(1+inner) then ·0.5
        let m2 = uses.sole_consumer(m1_out)?;
        with_const(g, m2, "Mul", 0.5)?;
        return Some((vec![add, m1, m2], output0(g, m2)?));
    }
    // (x·0.5)·(1+inner)
    let half = producer(g, m1_other)?;
    if with_const(g, half, "Mul", 0.5)? != x || uses.sole_consumer(m1_other) != Some(m1) {
        return None;
    }
    Some((vec![add, half, m1], m1_out))
}

/// The tanh form, rooted at its `Tanh` node.
fn match_tanh_at(g: &Graph, uses: &Uses, tanh: usize) -> Option<(ValueId, Vec<usize>, ValueId)> {
    let t_in = g.nodes[tanh].inputs.first().copied().flatten()?;
    let scale = producer(g, t_in)?;
    let inner = with_const(g, scale, "Mul", 0.797_884_6)?;
    let add = producer(g, inner)?;
    if g.nodes[add].op_type != "Add" {
        return None;
    }
    let [Some(a), Some(b)] = g.nodes[add].inputs.as_slice() else {
        return None;
    };
    // One operand is x, the other 0.044715·x³.
    let (x, cube_term) = [(*a, *b), (*b, *a)].into_iter().find(|&(x, t)| {
        producer(g, t)
            .and_then(|m| with_const(g, m, "Mul", 0.044_715))
            .and_then(|c| producer(g, c))
            .and_then(|p| with_const(g, p, "Pow", 3.0))
            == Some(x)
    })?;
    let coef = producer(g, cube_term)?;
    let pow = producer(g, with_const(g, coef, "Mul", 0.044_715)?)?;
    // Every intermediate must feed only the next step of the pattern.
    let private = |n: usize| output0(g, n).and_then(|o| uses.sole_consumer(o)).is_some();
    if ![pow, coef, add, scale].into_iter().all(private) {
        return None;
    }
    let (tail, out) = match_half_x_tail(g, uses, output0(g, tanh)?, x)?;
    let mut nodes = vec![pow, coef, add, scale, tanh];
    nodes.extend(tail);
    Some((x, nodes, out))
}

/// The other input of a binary node whose one input is `v`.
fn other_input(n: &Node, v: ValueId) -> Option<ValueId> {
    match n.inputs.as_slice() {
        [Some(a), Some(b)] if *a == v => Some(*b),
        [Some(a), Some(b)] if *b == v => Some(*a),
        _ => None,
    }
}

/// Matches the pattern rooted at an `Erf` node; returns (x, nodes to remove, final output).
fn match_erf_at(g: &Graph, uses: &Uses, erf: usize) -> Option<(ValueId, Vec<usize>, ValueId)> {
    let scaled = g.nodes[erf].inputs.first().copied().flatten()?;
    let pre = g
        .nodes
        .iter()
        .position(|n| n.outputs.first() == Some(&Some(scaled)))?;
    let pre_node = &g.nodes[pre];
    let x = pre_node.inputs.first().copied().flatten()?;
    let c = const_scalar(g, pre_node.inputs.get(1).copied().flatten()?)?;
    let scale_ok = match pre_node.op_type.as_str() {
        "Div" => near(c, SQRT_2),
        "Mul" => near(c, 1.0 / SQRT_2),
        _ => false,
    };
    if !scale_ok || uses.sole_consumer(scaled) != Some(erf) {
        return None;
    }
    let (tail, out) = match_half_x_tail(g, uses, output0(g, erf)?, x)?;
    let mut nodes = vec![pre, erf];
    nodes.extend(tail);
    Some((x, nodes, out))
}

pub fn fuse_gelu(g: &mut Graph) {
    let uses = Uses::of(g);
    let mut removed = vec![false; g.nodes.len()];
    let mut added = Vec::new();
    for i in 0..g.nodes.len() {
        if removed[i] {
            continue;
        }
        let (found, approximate) = match g.nodes[i].op_type.as_str() {
            "Erf" => (match_erf_at(g, &uses, i), "none"),
            "Tanh" => (match_tanh_at(g, &uses, i), "tanh"),
            _ => continue,
        };
        let Some((x, nodes, out)) = found else {
            continue;
        };
        if nodes.iter().any(|&n| removed[n]) {
            continue;
        }
        for &n in &nodes {
            removed[n] = true;
        }
        added.push(Node {
            name: format!("{}_gelu", g.nodes[i].name),
            op_type: "Gelu".into(),
            domain: String::new(),
            inputs: vec![Some(x)],
            outputs: vec![Some(out)],
            attrs: Attrs(HashMap::from([(
                "approximate".to_string(),
                Attr::String(approximate.to_string()),
            )])),
        });
    }
    remove_nodes(g, &removed);
    g.nodes.extend(added);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;

    #[test]
    fn torch_erf_gelu_becomes_one_node() {
        let mut b = Builder::new();
        let x = b.input("x");
        let sqrt2 = b.constant("s", Tensor::scalar(SQRT_2));
        let one = b.constant("one", Tensor::scalar(1.0f32));
        let half = b.constant("half", Tensor::scalar(0.5f32));
        let d = b.node("Div", &[x, sqrt2], Attrs::default());
        let e = b.node("Erf", &[d], Attrs::default());
        let a = b.node("Add", &[e, one], Attrs::default());
        let m = b.node("Mul", &[x, a], Attrs::default());
        let out = b.node("Mul", &[m, half], Attrs::default());
        b.g.outputs.push(out);
        fuse_gelu(&mut b.g);
        assert_eq!(b.ops(), vec!["Gelu"]);
        assert_eq!(b.g.nodes[0].inputs, vec![Some(x)]);
        assert_eq!(b.g.nodes[0].outputs, vec![Some(out)]);
    }

    #[test]
    fn gpt2_tanh_gelu_becomes_one_node() {
        let mut b = Builder::new();
        let x = b.input("x");
        let mut c = |name: &str, v: f32| b.constant(name, Tensor::scalar(v));
        let (three, k, s, one, half) = (
            c("3", 3.0),
            c("k", 0.044715),
            c("s", 0.797_884_6),
            c("1", 1.0),
            c("h", 0.5),
        );
        let h = b.node("Mul", &[x, half], Attrs::default());
        let p = b.node("Pow", &[x, three], Attrs::default());
        let m = b.node("Mul", &[p, k], Attrs::default());
        let a = b.node("Add", &[x, m], Attrs::default());
        let sc = b.node("Mul", &[a, s], Attrs::default());
        let t = b.node("Tanh", &[sc], Attrs::default());
        let a1 = b.node("Add", &[t, one], Attrs::default());
        let out = b.node("Mul", &[h, a1], Attrs::default());
        b.g.outputs.push(out);
        fuse_gelu(&mut b.g);
        assert_eq!(b.ops(), vec!["Gelu"]);
        assert_eq!(
            b.g.nodes[0].attrs.string("approximate").unwrap(),
            Some("tanh")
        );
        assert_eq!(b.g.nodes[0].outputs, vec![Some(out)]);
    }
}
