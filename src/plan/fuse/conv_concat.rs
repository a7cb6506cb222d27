//! Concat along channels of convolutions read by nothing else becomes one `ConcatConvs` node
//! (domain `infer`, `ops/conv_concat.rs`) whose convolutions write their channels straight
//! into the concatenated output: SqueezeNet's Fire modules, Inception's branches.

use super::{output0, remove_nodes, Uses};
use crate::ir::{Attr, Graph};
use crate::ops::conv_concat::{conv_attr_key, CONVS_ATTR, SLOTS};
use std::collections::HashMap;

pub fn fuse_concat_of_convs(g: &mut Graph) {
    let uses = Uses::of(g);
    let producer: HashMap<_, usize> = (0..g.nodes.len())
        .filter_map(|i| Some((output0(g, i)?, i)))
        .collect();
    let mut removed = vec![false; g.nodes.len()];
    for c in 0..g.nodes.len() {
        let node = &g.nodes[c];
        if node.op_type != "Concat" || !node.domain.is_empty() || node.inputs.len() < 2 {
            continue;
        }
        let Some(convs) = node
            .inputs
            .iter()
            .map(|v| {
                let v = (*v)?;
                let p = *producer.get(&v)?;
                let conv = &g.nodes[p];
                // One reader (this Concat, reading it once), no residual, constant 4-D weights
                // (so the rank, hence the channel axis, is known).
                let rank = conv
                    .inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|w| Some(g.initializers.get(&w)?.rank()))?;
                (conv.op_type == "Conv"
                    && conv.domain.is_empty()
                    && conv.inputs.len() <= SLOTS
                    && conv.outputs.len() == 1
                    && uses.sole_consumer(v) == Some(c)
                    && !removed[p])
                    .then_some((p, rank))
            })
            .collect::<Option<Vec<(usize, usize)>>>()
        else {
            continue;
        };
        let rank = convs[0].1;
        let axis = node.attrs.int("axis").ok().flatten();
        let channels = axis == Some(1) || axis.is_some_and(|a| a < 0 && a + rank as i64 == 1);
        if !channels || convs.iter().any(|&(_, r)| r != rank) {
            continue;
        }
        let mut inputs = Vec::with_capacity(SLOTS * convs.len());
        let mut attrs = HashMap::new();
        let mut names = Vec::with_capacity(convs.len());
        for (i, &(p, _)) in convs.iter().enumerate() {
            let conv = &g.nodes[p];
            let mut slots = conv.inputs.clone();
            slots.resize(SLOTS, None);
            inputs.extend(slots);
            for (k, v) in &conv.attrs.0 {
                attrs.insert(conv_attr_key(i, k), v.clone());
            }
            names.push(conv.name.clone());
        }
        attrs.insert(CONVS_ATTR.to_string(), Attr::Strings(names));
        let node = &mut g.nodes[c];
        node.op_type = "ConcatConvs".into();
        node.domain = "infer".into();
        node.inputs = inputs;
        node.attrs.0 = attrs;
        for &(p, _) in &convs {
            removed[p] = true;
        }
    }
    remove_nodes(g, &removed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;

    fn weights(b: &mut Builder, name: &str, m: usize, k: usize) -> crate::ir::ValueId {
        let len = m * k * k;
        let t = Tensor::from_vec(vec![m, 1, k, k], vec![0.5f32; len]).unwrap();
        b.constant(name, t)
    }

    #[test]
    fn a_channel_concat_of_convs_becomes_one_node() {
        let mut b = Builder::new();
        let x = b.input("x");
        let (w1, w3) = (weights(&mut b, "w1", 2, 1), weights(&mut b, "w3", 3, 3));
        let pads = Attrs([("pads".to_string(), Attr::Ints(vec![1; 4]))].into());
        let y1 = b.node("Conv", &[x, w1], Attrs::default());
        let y3 = b.node("Conv", &[x, w3], pads);
        let axis = Attrs([("axis".to_string(), Attr::Int(-3))].into());
        let out = b.node("Concat", &[y1, y3], axis);
        b.g.outputs.push(out);
        fuse_concat_of_convs(&mut b.g);
        assert_eq!(b.ops(), vec!["ConcatConvs"]);
        let n = &b.g.nodes[0];
        assert_eq!(
            n.inputs,
            vec![Some(x), Some(w1), None, Some(x), Some(w3), None]
        );
        assert!(matches!(n.attrs.get("1:pads"), Some(Attr::Ints(p)) if p == &[1; 4]));
        assert_eq!(n.outputs[0], Some(out));
    }

    #[test]
    fn a_conv_output_read_elsewhere_or_another_axis_is_left_alone() {
        for (axis, extra_reader) in [(1, true), (2, false)] {
            let mut b = Builder::new();
            let x = b.input("x");
            let w = weights(&mut b, "w", 2, 1);
            let y1 = b.node("Conv", &[x, w], Attrs::default());
            let y2 = b.node("Conv", &[x, w], Attrs::default());
            let attrs = Attrs([("axis".to_string(), Attr::Int(axis))].into());
            let out = b.node("Concat", &[y1, y2], attrs);
            b.g.outputs.push(out);
            if extra_reader {
                let r = b.node("Relu", &[y1], Attrs::default());
                b.g.outputs.push(r);
            }
            fuse_concat_of_convs(&mut b.g);
            assert!(b.ops().contains(&"Concat"), "axis {axis}");
        }
    }
}
