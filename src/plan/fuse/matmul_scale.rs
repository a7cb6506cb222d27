//! MatMul → Mul (or Div) by a constant scalar becomes MatMul with a scale (`_scale`), applied
//! by the GEMM's epilogue while each block of the product is in cache: the `Q·Kᵀ / √d` of
//! attention exported unfused, which otherwise costs a pass over every score.

use super::{const_scalar, output0, remove_nodes, Uses};
use crate::ir::{Attr, Graph};

pub fn fuse_matmul_scale(g: &mut Graph) {
    let uses = Uses::of(g);
    let mut removed = vec![false; g.nodes.len()];
    for m in 0..g.nodes.len() {
        let mm = &g.nodes[m];
        // Only a bare product: a bias or an activation would have to be scaled too.
        if mm.op_type != "MatMul" || mm.inputs.len() != 2 || !mm.attrs.0.is_empty() {
            continue;
        }
        let Some(y) = output0(g, m) else { continue };
        let Some(s) = uses.sole_consumer(y) else {
            continue;
        };
        let op = &g.nodes[s];
        if removed[s] || op.inputs.len() != 2 || op.outputs.len() != 1 {
            continue;
        }
        let scale = match (op.op_type.as_str(), op.inputs[0] == Some(y), op.inputs[1]) {
            ("Mul", true, Some(c)) => const_scalar(g, c),
            ("Mul", false, _) if op.inputs[1] == Some(y) => {
                op.inputs[0].and_then(|c| const_scalar(g, c))
            }
            // y / c only: c / y is no scale.
            ("Div", true, Some(c)) => const_scalar(g, c).map(|c| 1.0 / c),
            _ => None,
        };
        // A finite, non-zero scale: the epilogue multiplies, which for 0 or inf would turn
        // infinite or NaN products into other values than the Mul gives.
        let Some(scale) = scale.filter(|s| s.is_normal()) else {
            continue;
        };
        let out = output0(g, s);
        let mm = &mut g.nodes[m];
        mm.attrs.0.insert("_scale".into(), Attr::Float(scale));
        mm.outputs[0] = out;
        removed[s] = true;
    }
    remove_nodes(g, &removed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;

    fn scalar(b: &mut Builder, v: f32) -> crate::ir::ValueId {
        b.constant("s", Tensor::from_vec(vec![], vec![v]).unwrap())
    }

    #[test]
    fn scores_times_or_over_a_constant_become_a_scaled_matmul() {
        for (op, first, want) in [
            ("Mul", false, 0.125),
            ("Mul", true, 0.125),
            ("Div", false, 0.5),
        ] {
            let mut b = Builder::new();
            let (q, k) = (b.input("q"), b.input("k"));
            let c = scalar(&mut b, if op == "Div" { 2.0 } else { 0.125 });
            let y = b.node("MatMul", &[q, k], Attrs::default());
            let ins = if first { [c, y] } else { [y, c] };
            let out = b.node(op, &ins, Attrs::default());
            b.g.outputs.push(out);
            fuse_matmul_scale(&mut b.g);
            assert_eq!(b.ops(), vec!["MatMul"], "{op}");
            assert_eq!(b.g.nodes[0].attrs.float_or("_scale", 1.0).unwrap(), want);
            assert_eq!(b.g.nodes[0].outputs[0], Some(out));
        }
    }

    #[test]
    fn a_constant_over_the_product_or_a_zero_scale_is_left_alone() {
        for (op, v, product_first) in [("Div", 2.0, false), ("Mul", 0.0, true)] {
            let mut b = Builder::new();
            let (q, k) = (b.input("q"), b.input("k"));
            let c = scalar(&mut b, v);
            let y = b.node("MatMul", &[q, k], Attrs::default());
            let ins = if product_first { [y, c] } else { [c, y] };
            let out = b.node(op, &ins, Attrs::default());
            b.g.outputs.push(out);
            fuse_matmul_scale(&mut b.g);
            assert_eq!(b.ops(), vec!["MatMul", op]);
        }
    }
}
