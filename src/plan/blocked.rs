//! Chooses the values handed between convolutions in channel blocks of 16 (NCHW16c).
//!
//! A depthwise convolution computes 16 channels per vector. On NCHW planes it first
//! transposes 16 planes into channel-minor cells and its outputs back (on MobileNet-v2 that
//! made its depthwise layers twice onnxruntime's time, whose layers read and write blocks).
//! In blocks, a group of 16 channels is one contiguous range of cells on either side: the
//! pointwise convolution before it writes the blocks from its GEMM's tiles (the channels as
//! columns, `gemm::MatMut::column_blocked`), and the one after packs its GEMM panels from the
//! blocks with register transposes (`gemm::BlockedRhs`) — MobileNet's and EfficientNet's
//! expand → depthwise → project chains. Unlike channels last (`plan::channels_last`), a
//! group never reads 16 channels out of a wider cell.
//!
//! An edge (a value) is handed blocked when a Conv that can write blocks produces it — a
//! pointwise or depthwise 2-D Conv with constant f32 weights, whole blocks of output
//! channels and no fused residual — every reader is such a Conv reading it as its input
//! (not as a residual), it is not a graph output, and it is not a pointwise → pointwise edge
//! unless the microkernel reads blocks in place (`gemm::Lhs::Blocked`, AVX-512 or AVX2;
//! elsewhere a pointwise layer reads blocks only into NCHW planes). A pointwise layer that could both
//! read and write blocks keeps its output edge (the expand → depthwise one). Any other
//! one-group 2-D Conv (a stem) writes blocks from its patches, but only to depthwise
//! readers and 2-D max pools: those gain from blocks (MobileNet-v2's first depthwise layer,
//! 112×112, reads its stem's output; SqueezeNet's and ResNet's stems feed a pool, which takes
//! one vector per cell and writes planes, and which the stem then takes in:
//! `ops::conv_pool`), where a pointwise reader would only trade plain
//! panel copies for transposes; and not one that would lose its Winograd path
//! (`ops::conv::takes_winograd`). A depthwise layer also hands blocks to a GlobalAveragePool
//! (a squeeze-and-excitation pool beside the projection its block scales, `fuse::conv_scale`),
//! which writes planes. Shapes need not be known: the
//! marked Convs check their tensors when they run.

use super::channels_last::{capability, Capable};
use super::fuse::{output0, remove_nodes, Uses};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node, ValueId};
use crate::ops::conv::takes_winograd;
use crate::ops::conv_layouts::{layout_code, INPUT_ATTR, OUTPUT_ATTR};
use crate::ops::conv_pool::POOL_PREFIX;
use crate::DType;
use infer_kernels::depthwise_lanes::Layout;
use infer_kernels::gemm::{reads_blocked_lhs, COL_BLOCK};
use infer_kernels::max_pool::pools_blocks_in_vectors;

/// Marks the convolution → convolution edges that are handed in channel blocks.
pub fn choose(g: &mut Graph) -> Result<()> {
    let capable: Vec<Option<Blockable>> = g.nodes.iter().map(|n| blockable(g, n)).collect();
    let kind = |i: usize| capable[i].map(|c| c.kind);
    let uses = Uses::of(g);
    // A pointwise layer reads blocks into blocks where the microkernel reads its input straight
    // from them (`gemm::Lhs::Blocked`); elsewhere it would pack them, and reads them only
    // into planes.
    let pointwise_reads_into_blocks = reads_blocked_lhs();
    // (producer, value, readers) of every edge that may be blocked.
    let mut edges: Vec<(usize, ValueId, Vec<usize>)> = Vec::new();
    for (i, c) in capable.iter().enumerate() {
        let Some(c) = c.filter(|c| c.writes) else {
            continue;
        };
        let Some(y) = output0(g, i) else { continue };
        let readers = uses.consumers(y);
        let fits = |&r: &usize| {
            let reads_as_input = g.nodes[r]
                .inputs
                .iter()
                .enumerate()
                .all(|(slot, v)| *v != Some(y) || slot == 0);
            let pointwise_pair = c.kind == Kind::Pointwise
                && kind(r) == Some(Kind::Pointwise)
                && !pointwise_reads_into_blocks;
            let gains_from_patches = matches!(kind(r), Some(Kind::Depthwise | Kind::MaxPool));
            // A pool reads blocks from a depthwise layer, which would transpose its output
            // into planes; a pointwise one writes planes as cheaply (MobileNet-v2's last 1×1
            // layer, 7×7 positions as rows for blocks: 0.52 against 0.44 ms).
            let pools_depthwise = kind(r) != Some(Kind::GlobalPool) || c.kind == Kind::Depthwise;
            capable[r].is_some_and(|r| r.reads)
                && reads_as_input
                && !pointwise_pair
                && pools_depthwise
                && (c.kind != Kind::Patches || gains_from_patches)
        };
        if readers.is_empty() || !readers.iter().all(fits) || uses.is_graph_output(y) {
            continue;
        }
        edges.push((i, y, readers.to_vec()));
    }
    // Else a pointwise layer writing blocks reads planes: drop the edges into such layers.
    if !pointwise_reads_into_blocks {
        let writes: Vec<usize> = edges.iter().map(|(i, _, _)| *i).collect();
        edges.retain(|(_, _, readers)| {
            readers
                .iter()
                .all(|r| kind(*r) != Some(Kind::Pointwise) || !writes.contains(r))
        });
    }
    // A stem handing blocks to its max pool only takes the pool in (`ops::conv_pool`).
    let pooled: Vec<(usize, usize)> = edges
        .iter()
        .filter(|(i, _, readers)| {
            kind(*i) == Some(Kind::Patches)
                && readers.len() == 1
                && kind(readers[0]) == Some(Kind::MaxPool)
        })
        .map(|(i, _, readers)| (*i, readers[0]))
        .collect();
    let code = Attr::Int(layout_code(Layout::Blocked));
    for (i, y, readers) in edges {
        g.nodes[i].attrs.0.insert(OUTPUT_ATTR.into(), code.clone());
        for r in readers {
            g.nodes[r].attrs.0.insert(INPUT_ATTR.into(), code.clone());
        }
        // Its declared NCHW shape no longer describes it.
        g.values[y].ty.shape = None;
    }
    let mut removed = vec![false; g.nodes.len()];
    for (conv, pool) in pooled {
        let attrs: Vec<(String, Attr)> = g.nodes[pool]
            .attrs
            .0
            .iter()
            .filter(|(k, _)| k.as_str() != INPUT_ATTR)
            .map(|(k, v)| (format!("{POOL_PREFIX}{k}"), v.clone()))
            .collect();
        let outputs = g.nodes[pool].outputs.iter().take(1).copied().collect();
        let node = &mut g.nodes[conv];
        node.attrs.0.extend(attrs);
        node.outputs = outputs;
        removed[pool] = true;
    }
    remove_nodes(g, &removed);
    Ok(())
}

/// What a Conv can do with blocks: write them (whole blocks of output channels, no fused
/// residual, which a blocked output takes none of) and read them (whole blocks of input
/// channels).
#[derive(Clone, Copy, Debug)]
struct Blockable {
    kind: Kind,
    writes: bool,
    reads: bool,
}

/// The kinds of Conv that handle blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pointwise,
    Depthwise,
    /// Any other one-group 2-D Conv: writes blocks from its patches, reads only planes.
    Patches,
    /// A 2-D f32 MaxPool without indices: reads blocks (one vector per cell), writes planes.
    MaxPool,
    /// GlobalAveragePool: reads blocks (a squeeze-and-excitation pool beside the pointwise
    /// Conv that the excitation scales, `fuse::conv_scale`), writes planes.
    GlobalPool,
}

fn blockable(g: &Graph, n: &Node) -> Option<Blockable> {
    if n.op_type == "MaxPool" && n.domain.is_empty() && pools_blocks_in_vectors() {
        let two_d = matches!(n.attrs.ints("kernel_shape"), Ok(Some(k)) if k.len() == 2);
        let indices = n.outputs.get(1).is_some_and(Option::is_some);
        return (two_d && !indices).then_some(Blockable {
            kind: Kind::MaxPool,
            writes: false,
            reads: true,
        });
    }
    if n.op_type == "GlobalAveragePool" && n.domain.is_empty() {
        return Some(Blockable {
            kind: Kind::GlobalPool,
            writes: false,
            reads: true,
        });
    }
    let capable = capability(g, n);
    if capable.is_none() && (n.op_type != "Conv" || !n.domain.is_empty()) {
        return None;
    }
    let w = g.initializers.get(&n.inputs.get(1).copied().flatten()?)?;
    let s = w.shape();
    let residual = n.inputs.get(3).copied().flatten().is_some();
    let writes = s.len() == 4 && s[0].is_multiple_of(COL_BLOCK) && !residual;
    let blockable = |kind, input_channels: usize| Blockable {
        kind,
        writes,
        reads: input_channels.is_multiple_of(COL_BLOCK),
    };
    match capable {
        Some(Capable::Pointwise) => Some(blockable(Kind::Pointwise, s[1])),
        Some(Capable::Depthwise) => Some(blockable(Kind::Depthwise, s[0])),
        None => {
            let dense = n.attrs.int_or("group", 1).ok()? == 1;
            // The Winograd path writes planes.
            let winograd = takes_winograd(&n.attrs, w);
            (dense && !winograd && w.dtype() == DType::F32 && s.len() == 4).then_some(Blockable {
                kind: Kind::Patches,
                writes,
                reads: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::channels_last::tests::{depthwise_attrs, weights};
    use super::*;
    use crate::ir::Attrs;
    use crate::plan::fuse::test_util::Builder;

    /// (input blocked, output blocked) of node `node`.
    fn layout(b: &Builder, node: usize) -> (bool, bool) {
        let a = &b.g.nodes[node].attrs;
        let blocked = |name| a.int_or(name, 0).unwrap() == layout_code(Layout::Blocked);
        (blocked(INPUT_ATTR), blocked(OUTPUT_ATTR))
    }

    #[test]
    fn expand_depthwise_project_chains_are_handed_blocked() {
        let mut b = Builder::new();
        let x = b.input("x");
        let stem_w = weights(&mut b, [16, 3, 3, 3]);
        let dw16 = weights(&mut b, [16, 1, 3, 3]);
        let project24_w = weights(&mut b, [24, 16, 1, 1]);
        let expand_w = weights(&mut b, [96, 24, 1, 1]);
        let dw96 = weights(&mut b, [96, 1, 3, 3]);
        let project_w = weights(&mut b, [24, 96, 1, 1]);
        let mut stride2 = Attrs::default();
        stride2.0.insert("strides".into(), Attr::Ints(vec![2, 2]));
        let stem = b.node("Conv", &[x, stem_w], stride2);
        // First block: depthwise straight after the stem, then project.
        let d0 = b.node("Conv", &[stem, dw16], depthwise_attrs(16));
        let p0 = b.node("Conv", &[d0, project24_w], Attrs::default());
        // Second: expand (from 24 channels: it reads no blocks but writes them), depthwise, project with the block input as its fused residual.
        let e = b.node("Conv", &[p0, expand_w], Attrs::default());
        let d = b.node("Conv", &[e, dw96], depthwise_attrs(96));
        let p = b.node("Conv", &[d, project_w], Attrs::default());
        b.g.nodes[5].inputs.extend([None, Some(p0)]);
        let pool = b.node("GlobalAveragePool", &[p], Attrs::default());
        b.g.outputs.push(pool);
        choose(&mut b.g).unwrap();
        assert_eq!(layout(&b, 0), (false, true), "stem");
        assert_eq!(layout(&b, 1), (true, true), "first depthwise");
        assert_eq!(layout(&b, 2), (true, false), "first project");
        assert_eq!(layout(&b, 3), (false, true), "expand");
        assert_eq!(layout(&b, 4), (true, true), "depthwise");
        assert_eq!(layout(&b, 5), (true, false), "project");
        for v in [stem, d0, e, d] {
            assert_eq!(b.g.values[v].ty.shape, None);
        }
    }

    #[test]
    fn stems_take_their_max_pool_in() {
        let mut b = Builder::new();
        let x = b.input("x");
        let stem_w = weights(&mut b, [64, 3, 3, 3]);
        let mut stride2 = Attrs::default();
        stride2.0.insert("strides".into(), Attr::Ints(vec![2, 2]));
        let stem = b.node("Conv", &[x, stem_w], stride2);
        let mut pool_attrs = Attrs::default();
        pool_attrs
            .0
            .insert("kernel_shape".into(), Attr::Ints(vec![3, 3]));
        let pool = b.node("MaxPool", &[stem], pool_attrs);
        b.g.outputs.push(pool);
        choose(&mut b.g).unwrap();
        if !pools_blocks_in_vectors() {
            // No blocks into a pool here: the two stay apart, in NCHW.
            assert_eq!(b.g.nodes.len(), 2);
            assert_eq!(layout(&b, 0), (false, false), "stem");
            return;
        }
        // The stem writes blocks for the pool fused into it, which writes the pooled output.
        assert_eq!(b.g.nodes.len(), 1, "the pool is fused");
        let conv = &b.g.nodes[0];
        assert_eq!(layout(&b, 0), (false, true), "stem");
        assert_eq!(conv.outputs, vec![Some(pool)]);
        let kernel = conv.attrs.0.get(&format!("{POOL_PREFIX}kernel_shape"));
        assert!(matches!(kernel, Some(Attr::Ints(k)) if k == &[3, 3]));
    }

    #[test]
    fn excited_depthwise_outputs_are_handed_blocked_to_the_pool_and_projection() {
        use crate::ops::conv::SCALE_SLOT;
        let mut b = Builder::new();
        let x = b.input("x");
        let expand_w = weights(&mut b, [32, 16, 1, 1]);
        let dw = weights(&mut b, [32, 1, 3, 3]);
        let fc1 = weights(&mut b, [8, 32, 1, 1]);
        let fc2 = weights(&mut b, [32, 8, 1, 1]);
        let project_w = weights(&mut b, [16, 32, 1, 1]);
        let e = b.node("Conv", &[x, expand_w], Attrs::default());
        let d = b.node("Conv", &[e, dw], depthwise_attrs(32));
        let pooled = b.node("GlobalAveragePool", &[d], Attrs::default());
        let h = b.node("Conv", &[pooled, fc1], Attrs::default());
        let s = b.node("Conv", &[h, fc2], Attrs::default());
        let p = b.node("Conv", &[d, project_w], Attrs::default());
        b.g.nodes[5].inputs.resize(SCALE_SLOT, None);
        b.g.nodes[5].inputs.push(Some(s));
        b.g.outputs.push(p);
        choose(&mut b.g).unwrap();
        assert_eq!(layout(&b, 1), (true, true), "depthwise");
        assert_eq!(layout(&b, 2), (true, false), "pool");
        assert_eq!(layout(&b, 3), (false, false), "fc1");
        assert_eq!(layout(&b, 5), (true, false), "projection");
    }

    #[test]
    fn partial_blocks_residuals_and_other_readers_stay_nchw() {
        let mut b = Builder::new();
        let x = b.input("x");
        let pw24 = weights(&mut b, [24, 16, 1, 1]);
        let dw24 = weights(&mut b, [24, 1, 3, 3]);
        let pw = weights(&mut b, [16, 16, 1, 1]);
        let dw = weights(&mut b, [16, 1, 3, 3]);
        // 24 channels: not whole blocks.
        let a = b.node("Conv", &[x, pw24], Attrs::default());
        b.node("Conv", &[a, dw24], depthwise_attrs(24));
        // Read by a Relu too.
        let c = b.node("Conv", &[x, pw], Attrs::default());
        b.node("Conv", &[c, dw], depthwise_attrs(16));
        let relu = b.node("Relu", &[c], Attrs::default());
        // A depthwise layer with a fused residual cannot write blocks.
        let d = b.node("Conv", &[x, dw], depthwise_attrs(16));
        b.g.nodes[5].inputs.extend([None, Some(x)]);
        let p = b.node("Conv", &[d, pw], Attrs::default());
        // Pointwise into pointwise.
        let q = b.node("Conv", &[p, pw], Attrs::default());
        // A 3×3 dense layer into a pointwise one: patches write blocks only to depthwise.
        let mut stride2 = Attrs::default();
        stride2.0.insert("strides".into(), Attr::Ints(vec![2, 2]));
        let dense = weights(&mut b, [16, 16, 3, 3]);
        let r = b.node("Conv", &[q, dense], stride2);
        let pw32 = weights(&mut b, [32, 16, 1, 1]);
        let t = b.node("Conv", &[r, pw32], Attrs::default());
        // A 3×3 stride-1 one into a depthwise one: it keeps its Winograd path.
        let winograd = weights(&mut b, [16, 32, 3, 3]);
        let u = b.node("Conv", &[t, winograd], Attrs::default());
        let v = b.node("Conv", &[u, dw], depthwise_attrs(16));
        b.g.outputs.extend([relu, v]);
        choose(&mut b.g).unwrap();
        for i in 0..b.g.nodes.len() {
            // Pointwise into pointwise is blocked where the kernel reads blocks in place.
            let want = match i {
                6 if reads_blocked_lhs() => (false, true),
                7 if reads_blocked_lhs() => (true, false),
                _ => (false, false),
            };
            assert_eq!(layout(&b, i), want, "node {i}");
        }
    }
}
