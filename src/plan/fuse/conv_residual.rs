//! Conv → Add(other tensor) becomes Conv with a residual input (its 4th), added in the GEMM
//! epilogue: the skip connections of ResNet-style blocks cost no extra pass over memory, and
//! a Relu after the Add then fuses into the same epilogue.
//!
//! Shapes are not known at plan time, so the Conv kernel checks that the residual has the
//! output's shape and falls back to a broadcasting add when it does not: fusing is always
//! correct, and fast in the common case.

use super::{output0, remove_nodes, Uses};
use crate::ir::Graph;

pub fn fuse_conv_residual(g: &mut Graph) {
    let uses = Uses::of(g);
    let mut removed = vec![false; g.nodes.len()];
    for c in 0..g.nodes.len() {
        let conv = &g.nodes[c];
        // Conv's inputs are X, W and an optional B; a fused activation would have to run
        // before the add, which the epilogue's order (bias, residual, activation) cannot do.
        if conv.op_type != "Conv" || conv.inputs.len() > 3 || conv.attrs.has("_activation") {
            continue;
        }
        let Some(y) = output0(g, c) else { continue };
        let Some(a) = uses.sole_consumer(y) else {
            continue;
        };
        let add = &g.nodes[a];
        if add.op_type != "Add" || add.inputs.len() != 2 || removed[a] {
            continue;
        }
        let other = match (add.inputs[0], add.inputs[1]) {
            (Some(l), Some(r)) if l == y && r != y => r,
            (Some(l), Some(r)) if r == y && l != y => l,
            _ => continue,
        };
        // A constant operand is a broadcast bias, not a skip connection: leave it to the
        // elementwise Add rather than take the kernel's fallback on every run.
        if g.initializers.contains_key(&other) {
            continue;
        }
        let out = output0(g, a);
        let conv = &mut g.nodes[c];
        conv.inputs.resize(3, None);
        conv.inputs.push(Some(other));
        conv.outputs[0] = out;
        removed[a] = true;
    }
    remove_nodes(g, &removed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;

    fn weights(b: &mut Builder) -> usize {
        b.constant(
            "w",
            Tensor::from_vec(vec![1, 1, 1, 1], vec![2.0f32]).unwrap(),
        )
    }

    #[test]
    fn skip_connection_moves_into_the_conv() {
        let mut b = Builder::new();
        let (x, skip) = (b.input("x"), b.input("skip"));
        let w = weights(&mut b);
        let y = b.node("Conv", &[x, w], Attrs::default());
        let sum = b.node("Add", &[skip, y], Attrs::default());
        b.g.outputs.push(sum);
        fuse_conv_residual(&mut b.g);
        assert_eq!(b.ops(), vec!["Conv"]);
        let conv = &b.g.nodes[0];
        assert_eq!(conv.inputs, vec![Some(x), Some(w), None, Some(skip)]);
        assert_eq!(conv.outputs[0], Some(sum));
    }

    #[test]
    fn constant_operands_shared_outputs_and_activated_convs_are_left_alone() {
        let mut b = Builder::new();
        let x = b.input("x");
        let w = weights(&mut b);
        let bias = b.constant(
            "bias",
            Tensor::from_vec(vec![1, 1, 1], vec![1.0f32]).unwrap(),
        );
        // Add of a constant.
        let y1 = b.node("Conv", &[x, w], Attrs::default());
        let s1 = b.node("Add", &[y1, bias], Attrs::default());
        // The conv output is also read elsewhere.
        let y2 = b.node("Conv", &[s1, w], Attrs::default());
        let s2 = b.node("Add", &[y2, x], Attrs::default());
        let r = b.node("Relu", &[y2], Attrs::default());
        // Add(y, y).
        let y3 = b.node("Conv", &[s2, w], Attrs::default());
        let s3 = b.node("Add", &[y3, y3], Attrs::default());
        b.g.outputs.extend([r, s3]);
        fuse_conv_residual(&mut b.g);
        assert_eq!(
            b.ops(),
            vec!["Conv", "Add", "Conv", "Add", "Relu", "Conv", "Add"]
        );
    }
}
