//! The erf form of GELU, `x · 0.5 · (1 + erf(x / √2))`, as exporters spell it out in
//! elementary ops, becomes one `Gelu` node (which matmul/conv can then take as an epilogue).

use super::{const_scalar, output0, remove_nodes, Uses};
use crate::ir::{Attrs, Graph, Node, ValueId};

const SQRT_2: f32 = std::f32::consts::SQRT_2;

fn near(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-3 * b.abs()
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
fn match_at(g: &Graph, uses: &Uses, erf: usize) -> Option<(ValueId, Vec<usize>, ValueId)> {
    let scaled = g.nodes[erf].inputs.first().copied().flatten()?;
    let pre = g.nodes.iter().position(|n| n.outputs.first() == Some(&Some(scaled)))?;
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
    let e = output0(g, erf)?;
    let add = uses.sole_consumer(e)?;
    if g.nodes[add].op_type != "Add" || const_scalar(g, other_input(&g.nodes[add], e)?)? != 1.0 {
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
        // x·(1+erf) then ·0.5
        let m2 = uses.sole_consumer(m1_out)?;
        if g.nodes[m2].op_type != "Mul" || const_scalar(g, other_input(&g.nodes[m2], m1_out)?)? != 0.5 {
            return None;
        }
        return Some((x, vec![pre, erf, add, m1, m2], output0(g, m2)?));
    }
    // (x·0.5)·(1+erf)
    let half = g.nodes.iter().position(|n| n.outputs.first() == Some(&Some(m1_other)))?;
    let h = &g.nodes[half];
    if h.op_type != "Mul" || other_input(h, x).and_then(|c| const_scalar(g, c)) != Some(0.5) {
        return None;
    }
    if uses.sole_consumer(m1_other) != Some(m1) {
        return None;
    }
    Some((x, vec![pre, erf, add, half, m1], m1_out))
}

pub fn fuse_erf_gelu(g: &mut Graph) {
    let uses = Uses::of(g);
    let mut removed = vec![false; g.nodes.len()];
    let mut added = Vec::new();
    for i in 0..g.nodes.len() {
        if g.nodes[i].op_type != "Erf" || removed[i] {
            continue;
        }
        let Some((x, nodes, out)) = match_at(g, &uses, i) else { continue };
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
            attrs: Attrs::default(),
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
        fuse_erf_gelu(&mut b.g);
        assert_eq!(b.ops(), vec!["Gelu"]);
        assert_eq!(b.g.nodes[0].inputs, vec![Some(x)]);
        assert_eq!(b.g.nodes[0].outputs, vec![Some(out)]);
    }
}
