//! MatMul → Add(constant row vector) becomes MatMul with a bias input, added in the GEMM
//! epilogue (the Linear layers of every transformer).

use super::{output0, remove_nodes, Uses};
use crate::error::Result;
use crate::ir::Graph;

pub fn fuse_matmul_bias(g: &mut Graph) -> Result<()> {
    let uses = Uses::of(g);
    let mut removed = vec![false; g.nodes.len()];
    for m in 0..g.nodes.len() {
        let mm = &g.nodes[m];
        if mm.op_type != "MatMul" || mm.inputs.len() != 2 || mm.attrs.has("_activation") {
            continue;
        }
        let Some(y) = output0(g, m) else { continue };
        let Some(a) = uses.sole_consumer(y) else {
            continue;
        };
        let add = &g.nodes[a];
        if add.op_type != "Add" || add.inputs.len() != 2 || removed[a] {
            continue;
        }
        let other = if add.inputs[0] == Some(y) {
            add.inputs[1]
        } else {
            add.inputs[0]
        };
        let Some(bias) = other else { continue };
        // The bias must be a constant f32 row whose length is the MatMul's N (its last dim,
        // which equals the weight's last dim) — anything else changes the broadcast.
        let Some(b) = g.initializers.get(&bias) else {
            continue;
        };
        let n = b.shape().last().copied().unwrap_or(0);
        let weight_n = mm.inputs[1]
            .and_then(|w| g.initializers.get(&w))
            .and_then(|w| w.shape().last().copied());
        let is_row = b.dtype() == crate::DType::F32
            && b.shape().iter().rev().skip(1).all(|&d| d == 1)
            && b.rank() <= 2
            && Some(n) == weight_n;
        if !is_row {
            continue;
        }
        let row = b.reshape(vec![n])?;
        let row_id = g.add_value(format!("{}_bias", g.nodes[m].name), Default::default());
        g.initializers.insert(row_id, row);
        let out = output0(g, a);
        let mm = &mut g.nodes[m];
        mm.inputs.push(Some(row_id));
        mm.outputs[0] = out;
        removed[a] = true;
    }
    remove_nodes(g, &removed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;

    #[test]
    fn linear_layer_add_becomes_matmul_bias() {
        let mut b = Builder::new();
        let x = b.input("x");
        let w = b.constant("w", Tensor::from_vec(vec![2, 3], vec![0.0f32; 6]).unwrap());
        let bias = b.constant(
            "b",
            Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap(),
        );
        let y = b.node("MatMul", &[x, w], Attrs::default());
        let out = b.node("Add", &[bias, y], Attrs::default());
        b.g.outputs.push(out);
        fuse_matmul_bias(&mut b.g).unwrap();
        assert_eq!(b.ops(), vec!["MatMul"]);
        assert_eq!(b.g.nodes[0].inputs.len(), 3);
        assert_eq!(b.g.nodes[0].outputs[0], Some(out));
    }

    #[test]
    fn a_bias_that_broadcasts_over_rows_is_left_alone() {
        let mut b = Builder::new();
        let x = b.input("x");
        let w = b.constant("w", Tensor::from_vec(vec![2, 3], vec![0.0f32; 6]).unwrap());
        let bias = b.constant("b", Tensor::from_vec(vec![4, 1], vec![1.0f32; 4]).unwrap());
        let y = b.node("MatMul", &[x, w], Attrs::default());
        let out = b.node("Add", &[y, bias], Attrs::default());
        b.g.outputs.push(out);
        fuse_matmul_bias(&mut b.g).unwrap();
        assert_eq!(b.ops(), vec!["MatMul", "Add"]);
    }
}
