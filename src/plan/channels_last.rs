//! Chooses the values that stay channels last (NHWC) between convolutions.
//!
//! A depthwise convolution computes 16 channels per vector, so on NCHW planes it interleaves
//! its input into channel-minor cells and de-interleaves its output back: two transposes
//! around every depthwise layer of a MobileNet or EfficientNet. Kept channels last, the
//! pointwise convolutions around it produce and consume those cells directly (a pointwise
//! layer is a GEMM either way round) and the transposes go.
//!
//! A value stays channels last when a pointwise or depthwise 2-D Conv with constant weights
//! produces it, every reader is such a Conv (as its input or its fused residual), it is not
//! a graph output, and it belongs to a chain holding at least one depthwise layer (plain
//! pointwise chains, as in ResNet, gain nothing). The Convs are marked with the internal
//! attributes of `ops::conv_channels_last`; the chain's first and last layers convert on the
//! fly, so no transpose nodes are added. Shapes need not be known: the marked Convs check
//! their tensors when they run.

use super::fuse::{output0, Uses};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node, ValueId};
use crate::ops::conv_channels_last::{INPUT_ATTR, OUTPUT_ATTR};
use crate::tensor::DType;
use std::collections::HashMap;

/// What a Conv node can do channels last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capable {
    Pointwise,
    Depthwise,
}

/// Marks the chains of pointwise and depthwise convolutions that run channels last.
pub fn choose(g: &mut Graph) -> Result<()> {
    let capable: Vec<Option<Capable>> = g.nodes.iter().map(|n| capability(g, n)).collect();
    let uses = Uses::of(g);
    // Which node produces each candidate value.
    let mut last: HashMap<ValueId, usize> = HashMap::new();
    for (i, c) in capable.iter().enumerate() {
        let Some(y) = c.and_then(|_| output0(g, i)) else {
            continue;
        };
        let readers = uses.consumers(y);
        let all_capable = readers.iter().all(|&r| {
            capable[r].is_some()
                && g.nodes[r]
                    .inputs
                    .iter()
                    .enumerate()
                    .all(|(slot, v)| *v != Some(y) || slot == 0 || slot == 3)
        });
        if !readers.is_empty() && all_capable && !uses.is_graph_output(y) {
            last.insert(y, i);
        }
    }
    // A fused residual is added in the output's layout: both sides agree, or neither stays.
    loop {
        let mut changed = false;
        for (i, n) in g.nodes.iter().enumerate() {
            let (Some(_), Some(Some(r))) = (capable[i], n.inputs.get(3)) else {
                continue;
            };
            let y = output0(g, i);
            let y_last = y.is_some_and(|y| last.contains_key(&y));
            if y_last != last.contains_key(r) {
                last.remove(r);
                if let Some(y) = y {
                    last.remove(&y);
                }
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    keep_chains_with_depthwise(g, &capable, &uses, &mut last);
    for (i, c) in capable.iter().enumerate() {
        if c.is_none() {
            continue;
        }
        let input_last = g.nodes[i].inputs.first().copied().flatten();
        let input_last = input_last.is_some_and(|v| last.contains_key(&v));
        let output_last = output0(g, i).is_some_and(|v| last.contains_key(&v));
        let attrs = &mut g.nodes[i].attrs.0;
        if input_last {
            attrs.insert(INPUT_ATTR.into(), Attr::Int(1));
        }
        if output_last {
            attrs.insert(OUTPUT_ATTR.into(), Attr::Int(1));
        }
    }
    // Their declared NCHW shapes no longer describe them.
    for &v in last.keys() {
        g.values[v].ty.shape = None;
    }
    Ok(())
}

/// Drops the channels-last values of chains (connected through channels-last values) that
/// hold no depthwise layer.
fn keep_chains_with_depthwise(
    g: &Graph,
    capable: &[Option<Capable>],
    uses: &Uses,
    last: &mut HashMap<ValueId, usize>,
) {
    // Union-find over nodes, joined through each channels-last value's producer and readers.
    let mut parent: Vec<usize> = (0..g.nodes.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (&v, &producer) in last.iter() {
        for &reader in uses.consumers(v) {
            let (a, b) = (root(&mut parent, producer), root(&mut parent, reader));
            parent[a] = b;
        }
    }
    let mut has_depthwise = vec![false; g.nodes.len()];
    for (i, c) in capable.iter().enumerate() {
        if *c == Some(Capable::Depthwise) {
            let r = root(&mut parent, i);
            has_depthwise[r] = true;
        }
    }
    last.retain(|_, producer| {
        let r = root(&mut parent, *producer);
        has_depthwise[r]
    });
}

/// Whether `n` is a 2-D Conv with constant f32 weights that runs channels last: pointwise
/// (1×1, stride 1, unpadded, one group) or depthwise.
fn capability(g: &Graph, n: &Node) -> Option<Capable> {
    if n.op_type != "Conv" || !n.domain.is_empty() {
        return None;
    }
    let w = g.initializers.get(&n.inputs.get(1).copied().flatten()?)?;
    let s = w.shape();
    if w.dtype() != DType::F32 || s.len() != 4 {
        return None;
    }
    let group = n.attrs.int_or("group", 1).ok()?;
    let all = |name: &str, value: i64| {
        n.attrs
            .ints(name)
            .ok()
            .is_some_and(|v| v.is_none_or(|v| v.iter().all(|&x| x == value)))
    };
    let auto_pad = n.attrs.string_or("auto_pad", "NOTSET").ok()?;
    if group == 1 && s[2..] == [1, 1] {
        let unpadded = matches!(auto_pad, "NOTSET" | "VALID") && all("pads", 0);
        return (unpadded && all("strides", 1)).then_some(Capable::Pointwise);
    }
    (s[1] == 1 && group > 1 && s[0] as i64 == group).then_some(Capable::Depthwise)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;

    fn weights(b: &mut Builder, shape: [usize; 4]) -> ValueId {
        let n = shape.iter().product();
        b.constant(
            "w",
            Tensor::from_vec(shape.to_vec(), vec![0.5f32; n]).unwrap(),
        )
    }

    fn depthwise_attrs(c: i64) -> Attrs {
        let mut a = Attrs::default();
        a.0.insert("group".into(), Attr::Int(c));
        a.0.insert("pads".into(), Attr::Ints(vec![1; 4]));
        a
    }

    fn layout(b: &Builder, node: usize) -> (bool, bool) {
        let a = &b.g.nodes[node].attrs;
        (a.has(INPUT_ATTR), a.has(OUTPUT_ATTR))
    }

    #[test]
    fn an_inverted_residual_block_runs_channels_last_inside() {
        let mut b = Builder::new();
        let x = b.input("x");
        let stem_w = weights(&mut b, [8, 3, 3, 3]);
        let expand_w = weights(&mut b, [32, 8, 1, 1]);
        let dw_w = weights(&mut b, [32, 1, 3, 3]);
        let project_w = weights(&mut b, [8, 32, 1, 1]);
        let stem = b.node("Conv", &[x, stem_w], Attrs::default());
        let e = b.node("Conv", &[stem, expand_w], Attrs::default());
        let d = b.node("Conv", &[e, dw_w], depthwise_attrs(32));
        // The project conv with the block input fused as its residual.
        let p = b.node("Conv", &[d, project_w], Attrs::default());
        b.g.nodes[3].inputs.extend([None, Some(stem)]);
        let e2 = b.node("Conv", &[p, expand_w], Attrs::default());
        let pool = b.node("GlobalAveragePool", &[e2], Attrs::default());
        b.g.outputs.push(pool);
        choose(&mut b.g).unwrap();
        // The stem is not capable, so its output stays NCHW, and with it the output of the
        // project conv that adds it as a residual.
        assert_eq!(layout(&b, 0), (false, false), "stem");
        assert_eq!(layout(&b, 1), (false, true), "expand");
        assert_eq!(layout(&b, 2), (true, true), "depthwise");
        assert_eq!(layout(&b, 3), (true, false), "project");
        assert_eq!(layout(&b, 4), (false, false), "expand before the pool");
    }

    #[test]
    fn pointwise_chains_without_depthwise_stay_nchw() {
        let mut b = Builder::new();
        let x = b.input("x");
        let w1 = weights(&mut b, [16, 16, 1, 1]);
        let y1 = b.node("Conv", &[x, w1], Attrs::default());
        let y2 = b.node("Conv", &[y1, w1], Attrs::default());
        let y3 = b.node("Conv", &[y2, w1], Attrs::default());
        b.g.outputs.push(y3);
        choose(&mut b.g).unwrap();
        for i in 0..3 {
            assert_eq!(layout(&b, i), (false, false));
        }
    }

    #[test]
    fn values_read_by_other_ops_or_as_graph_outputs_stay_nchw() {
        let mut b = Builder::new();
        let x = b.input("x");
        let pw = weights(&mut b, [16, 16, 1, 1]);
        let dw = weights(&mut b, [16, 1, 3, 3]);
        let a = b.node("Conv", &[x, pw], Attrs::default());
        let d = b.node("Conv", &[a, dw], depthwise_attrs(16));
        let relu = b.node("Relu", &[a], Attrs::default());
        let p = b.node("Conv", &[d, pw], Attrs::default());
        b.g.outputs.extend([relu, p, d]);
        choose(&mut b.g).unwrap();
        assert_eq!(layout(&b, 0), (false, false), "also read by Relu");
        assert_eq!(layout(&b, 1), (false, false), "a graph output");
        assert_eq!(layout(&b, 3), (false, false));
    }

    #[test]
    fn strided_or_padded_pointwise_and_grouped_convs_are_not_capable() {
        let mut b = Builder::new();
        let x = b.input("x");
        let pw = weights(&mut b, [16, 16, 1, 1]);
        let grouped = weights(&mut b, [16, 4, 3, 3]);
        let mut strided = Attrs::default();
        strided.0.insert("strides".into(), Attr::Ints(vec![2, 2]));
        b.node("Conv", &[x, pw], strided);
        let mut g4 = Attrs::default();
        g4.0.insert("group".into(), Attr::Int(4));
        b.node("Conv", &[x, grouped], g4);
        let n0 = &b.g.nodes[0];
        let n1 = &b.g.nodes[1];
        assert_eq!(capability(&b.g, n0), None);
        assert_eq!(capability(&b.g, n1), None);
    }
}
