//! Squeeze-and-excitation: `Mul(x, s)` read only by a pointwise Conv, where `s` is computed
//! from a global average pool of `x` (`s = σ(fc2(act(fc1(pool(x)))))`, one factor per image
//! and channel), becomes that Conv with `s` as its input-channel scale (its 5th input,
//! `ops::conv::SCALE_SLOT`).
//!
//! The Mul was a pass over the whole feature map, and, being neither a convolution nor a
//! pool, it kept `x` (EfficientNet's depthwise outputs) out of channel blocks: they were
//! written as NCHW planes through a transpose. Fused, the Conv scales what it reads
//! (`ops::conv_scale`), and `x` is read only by the pool and the Conv, both of which read
//! blocks (`plan::blocked`).
//!
//! Shapes are not known at plan time; the chain back to a pool of `x` says which operand is
//! the scale, and the Conv checks its shape when it runs (anything but one factor per image
//! and channel is multiplied out with broadcasting first, as the Mul did).

use super::{output0, remove_nodes, Uses};
use crate::ir::{Graph, ValueId};
use crate::ops::conv::SCALE_SLOT;
use std::collections::HashMap;

/// Most nodes between the scale and the pool it is computed from (fc1, its activation, fc2,
/// the sigmoid, with room for a reshape pair).
const MAX_CHAIN: usize = 8;

pub fn fuse_conv_input_scale(g: &mut Graph) {
    let uses = Uses::of(g);
    let producer: HashMap<ValueId, usize> = (0..g.nodes.len())
        .filter_map(|i| Some((output0(g, i)?, i)))
        .collect();
    // (Mul, Conv, x, s) of each product to fuse.
    let mut fused = Vec::new();
    for (m, mul) in g.nodes.iter().enumerate() {
        if mul.op_type != "Mul" || !mul.domain.is_empty() || mul.inputs.len() != 2 {
            continue;
        }
        let (Some(a), Some(b)) = (mul.inputs[0], mul.inputs[1]) else {
            continue;
        };
        let pooled_from = |s: ValueId, x: ValueId| pools(g, &producer, s, x);
        let (x, s) = if pooled_from(b, a) {
            (a, b)
        } else if pooled_from(a, b) {
            (b, a)
        } else {
            continue;
        };
        let Some(y) = output0(g, m) else { continue };
        let Some(c) = uses.sole_consumer(y) else {
            continue;
        };
        let conv = &g.nodes[c];
        let weights = conv.inputs.get(1).copied().flatten();
        let pointwise = weights
            .and_then(|w| g.initializers.get(&w))
            .is_some_and(|w| w.rank() == 4 && w.shape()[2..] == [1, 1]);
        if conv.op_type != "Conv"
            || !conv.domain.is_empty()
            || conv.inputs.first() != Some(&Some(y))
            || conv.inputs.iter().skip(1).any(|v| *v == Some(y))
            || conv.inputs.len() > SCALE_SLOT
            || conv.attrs.int_or("group", 1).ok() != Some(1)
            || !pointwise
        {
            continue;
        }
        fused.push((m, c, x, s));
    }
    let mut removed = vec![false; g.nodes.len()];
    for (m, c, x, s) in fused {
        let conv = &mut g.nodes[c];
        conv.inputs[0] = Some(x);
        conv.inputs.resize(SCALE_SLOT, None);
        conv.inputs.push(Some(s));
        removed[m] = true;
    }
    remove_nodes(g, &removed);
}

/// Whether `s` is computed from a global average pool of `x`, following first inputs back
/// through at most `MAX_CHAIN` nodes.
fn pools(g: &Graph, producer: &HashMap<ValueId, usize>, s: ValueId, x: ValueId) -> bool {
    let mut v = s;
    for _ in 0..MAX_CHAIN {
        let Some(&p) = producer.get(&v) else {
            return false;
        };
        let node = &g.nodes[p];
        let Some(Some(first)) = node.inputs.first().copied() else {
            return false;
        };
        if node.op_type == "GlobalAveragePool" && node.domain.is_empty() {
            return first == x;
        }
        v = first;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Attrs};
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;

    fn conv_weights(b: &mut Builder, shape: [usize; 4]) -> ValueId {
        let n = shape.iter().product();
        b.constant(
            "w",
            Tensor::from_vec(shape.to_vec(), vec![0.5f32; n]).unwrap(),
        )
    }

    /// x → pool → fc1 → Relu → fc2 → Sigmoid → s; Mul(x, s) (or Mul(s, x)) → pointwise Conv.
    fn excitation(b: &mut Builder, x: ValueId, scale_first: bool) -> ValueId {
        let fc1 = conv_weights(b, [4, 16, 1, 1]);
        let fc2 = conv_weights(b, [16, 4, 1, 1]);
        let pooled = b.node("GlobalAveragePool", &[x], Attrs::default());
        let h = b.node("Conv", &[pooled, fc1], Attrs::default());
        let h = b.node("Relu", &[h], Attrs::default());
        let h = b.node("Conv", &[h, fc2], Attrs::default());
        let s = b.node("Sigmoid", &[h], Attrs::default());
        if scale_first {
            b.node("Mul", &[s, x], Attrs::default())
        } else {
            b.node("Mul", &[x, s], Attrs::default())
        }
    }

    #[test]
    fn excitation_scales_the_projection() {
        for scale_first in [false, true] {
            let mut b = Builder::new();
            let x = b.input("x");
            let scaled = excitation(&mut b, x, scale_first);
            let project = conv_weights(&mut b, [8, 16, 1, 1]);
            let y = b.node("Conv", &[scaled, project], Attrs::default());
            b.g.outputs.push(y);
            fuse_conv_input_scale(&mut b.g);
            assert!(!b.ops().contains(&"Mul"), "{:?}", b.ops());
            let conv = b.g.nodes.last().unwrap();
            assert_eq!(conv.inputs.len(), SCALE_SLOT + 1);
            assert_eq!(conv.inputs[0], Some(x));
            let sigmoid = b.g.nodes.iter().find(|n| n.op_type == "Sigmoid").unwrap();
            assert_eq!(conv.inputs[SCALE_SLOT], sigmoid.outputs[0]);
        }
    }

    #[test]
    fn other_products_and_readers_are_left_alone() {
        let mut b = Builder::new();
        let x = b.input("x");
        let other = b.input("other");
        // Not computed from a pool of x.
        let unrelated = b.node("Mul", &[x, other], Attrs::default());
        let w = conv_weights(&mut b, [8, 16, 1, 1]);
        let y1 = b.node("Conv", &[unrelated, w], Attrs::default());
        // Scaled, but read by a 3×3 Conv.
        let scaled = excitation(&mut b, x, false);
        let w3 = conv_weights(&mut b, [8, 16, 3, 3]);
        let y2 = b.node("Conv", &[scaled, w3], Attrs::default());
        // Scaled, read by a pointwise Conv and by a Relu.
        let scaled2 = excitation(&mut b, x, false);
        let y3 = b.node("Conv", &[scaled2, w], Attrs::default());
        let r = b.node("Relu", &[scaled2], Attrs::default());
        // Scaled, read by a grouped pointwise Conv.
        let scaled3 = excitation(&mut b, x, false);
        let mut grouped = Attrs::default();
        grouped.0.insert("group".into(), Attr::Int(2));
        let w_half = conv_weights(&mut b, [8, 8, 1, 1]);
        let y4 = b.node("Conv", &[scaled3, w_half], grouped);
        b.g.outputs.extend([y1, y2, y3, r, y4]);
        let before = b.ops().iter().filter(|op| **op == "Mul").count();
        fuse_conv_input_scale(&mut b.g);
        assert_eq!(b.ops().iter().filter(|op| **op == "Mul").count(), before);
    }
}
