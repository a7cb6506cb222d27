//! Chooses the values handed channels last (NHWC) from a pointwise to a depthwise
//! convolution.
//!
//! A depthwise convolution computes 16 channels per vector, so on NCHW planes it first
//! transposes its input into channel-minor cells. A pointwise convolution before it can write
//! those cells directly instead (its product is a GEMM either way round:
//! `Y[HW, M] = X[HW, C] · Wᵀ[C, M]`), and the depthwise layer then only copies 16 channels
//! per cell into its scratch. That is MobileNet's and EfficientNet's expand → depthwise edge.
//!
//! Measured per layer on MobileNet-v2 (1 thread, Zen 4), keeping whole chains channels last
//! lost: the project convolutions with few output channels (24, 32) waste most of a 32-wide
//! tile when the channels are the GEMM's columns, and depthwise layers storing channels-last
//! outputs were slower than de-interleaving into planes. So only the expand → depthwise edge
//! changes layout; the kernels take either layout on either side (`ops::conv_layouts`).
//!
//! Even so it is off by default (`SessionBuilder::channels_last`): over whole networks it
//! measured up to 6 % slower (MobileNet-v2, EfficientNet-B0, 1 and 2 threads, `examples/
//! ab_options.rs`): the 56×56 and 28×28 layers gained, but the 112×112 stride-2 depthwise
//! layer lost 0.15–0.35 ms reading its 16 channels out of 96-channel cells, and the 14×14
//! expansions (computed in planes and transposed: too few positions for the other
//! orientation) lost ~0.09 ms each.
//!
//! A value is handed channels last when a pointwise 2-D Conv (1×1, stride 1, unpadded, one
//! group, constant f32 weights) produces it, every reader is a depthwise Conv with constant
//! f32 weights reading it as its input, and it is not a graph output. Shapes need not be
//! known: the marked Convs check their tensors when they run.

use super::fuse::{output0, Uses};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node};
use crate::ops::conv_layouts::{layout_code, INPUT_ATTR, OUTPUT_ATTR};
use crate::tensor::DType;
use infer_kernels::depthwise_lanes::Layout;

/// What a Conv node can do channels last (or blocked, `plan::blocked`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Capable {
    Pointwise,
    Depthwise,
}

/// Marks the pointwise → depthwise edges that are handed channels last.
pub fn choose(g: &mut Graph) -> Result<()> {
    let capable: Vec<Option<Capable>> = g.nodes.iter().map(|n| capability(g, n)).collect();
    let uses = Uses::of(g);
    for (i, c) in capable.iter().enumerate() {
        if *c != Some(Capable::Pointwise) {
            continue;
        }
        let Some(y) = output0(g, i) else { continue };
        let readers = uses.consumers(y);
        let all_depthwise = readers.iter().all(|&r| {
            capable[r] == Some(Capable::Depthwise)
                && g.nodes[r]
                    .inputs
                    .iter()
                    .enumerate()
                    .all(|(slot, v)| *v != Some(y) || slot == 0)
        });
        if readers.is_empty() || !all_depthwise || uses.is_graph_output(y) {
            continue;
        }
        let code = Attr::Int(layout_code(Layout::ChannelsLast));
        g.nodes[i].attrs.0.insert(OUTPUT_ATTR.into(), code.clone());
        for &r in readers {
            g.nodes[r].attrs.0.insert(INPUT_ATTR.into(), code.clone());
        }
        // Its declared NCHW shape no longer describes it.
        g.values[y].ty.shape = None;
    }
    Ok(())
}

/// Whether `n` is a 2-D Conv with constant f32 weights that runs channels last: pointwise
/// (1×1, stride 1, unpadded, one group) or depthwise.
pub(super) fn capability(g: &Graph, n: &Node) -> Option<Capable> {
    if n.op_type != "Conv" || !n.domain.is_empty() {
        return None;
    }
    let w = g.initializers.get(&n.inputs.get(1).copied().flatten()?)?;
    let s = w.shape();
    if w.dtype() != DType::F32 || s.len() != 4 {
        return None;
    }
    let group = n.attrs.int_or("group", 1).ok()?;
    let all = |name: &str, value: i64| ints_all(n, name, value);
    let auto_pad = n.attrs.string_or("auto_pad", "NOTSET").ok()?;
    if group == 1 && s[2..] == [1, 1] {
        let unpadded = matches!(auto_pad, "NOTSET" | "VALID") && all("pads", 0);
        return (unpadded && all("strides", 1)).then_some(Capable::Pointwise);
    }
    (s[1] == 1 && group > 1 && s[0] as i64 == group).then_some(Capable::Depthwise)
}

/// Whether every value of `n`'s ints attribute `name` is `value` (true when it is absent).
pub(super) fn ints_all(n: &Node, name: &str, value: i64) -> bool {
    n.attrs
        .ints(name)
        .ok()
        .is_some_and(|v| v.is_none_or(|v| v.iter().all(|&x| x == value)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;

    /// Constant Conv weights of `shape` (also the blocked pass's tests').
    pub(in crate::plan) fn weights(b: &mut Builder, shape: [usize; 4]) -> crate::ir::ValueId {
        let n = shape.iter().product();
        b.constant(
            "w",
            Tensor::from_vec(shape.to_vec(), vec![0.5f32; n]).unwrap(),
        )
    }

    /// A padded 3×3 depthwise Conv's attributes for `c` channels.
    pub(in crate::plan) fn depthwise_attrs(c: i64) -> Attrs {
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
    fn the_expand_to_depthwise_edge_is_handed_channels_last() {
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
        assert_eq!(layout(&b, 0), (false, false), "stem");
        assert_eq!(layout(&b, 1), (false, true), "expand");
        assert_eq!(layout(&b, 2), (true, false), "depthwise");
        assert_eq!(layout(&b, 3), (false, false), "project");
        assert_eq!(layout(&b, 4), (false, false), "expand before the pool");
        assert_eq!(b.g.values[e].ty.shape, None);
    }

    #[test]
    fn values_read_by_other_ops_or_as_graph_outputs_stay_nchw() {
        let mut b = Builder::new();
        let x = b.input("x");
        let pw = weights(&mut b, [16, 16, 1, 1]);
        let dw = weights(&mut b, [16, 1, 3, 3]);
        // Read by the depthwise conv and by a Relu.
        let a = b.node("Conv", &[x, pw], Attrs::default());
        b.node("Conv", &[a, dw], depthwise_attrs(16));
        let relu = b.node("Relu", &[a], Attrs::default());
        // A graph output.
        let a2 = b.node("Conv", &[x, pw], Attrs::default());
        let d2 = b.node("Conv", &[a2, dw], depthwise_attrs(16));
        // Read by a depthwise conv as its residual.
        let a3 = b.node("Conv", &[x, pw], Attrs::default());
        let d3 = b.node("Conv", &[x, dw], depthwise_attrs(16));
        b.g.nodes[6].inputs.extend([None, Some(a3)]);
        b.g.outputs.extend([relu, a2, d2, d3]);
        choose(&mut b.g).unwrap();
        for i in 0..b.g.nodes.len() {
            assert_eq!(layout(&b, i), (false, false), "node {i}");
        }
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
