//! Hostile shapes and resource limits: every size read from data is checked, and a model
//! that asks for too much memory, too many nodes or too deep a nesting gets an error naming
//! the node or the limit — never an abort, a hang or an attempt to allocate.

mod common;

use common::*;
use infer::onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, NodeProto, ValueInfoProto,
};
use infer::{Session, SessionBuilder, Tensor};

const F32: i32 = 1;
const I64: i32 = 7;
const BOOL: i32 = 9;

/// A model of one `op` node reading `inputs` (all graph inputs, fed at run time so that
/// nothing is folded at plan time) and writing `y`.
fn one_node(op: &str, inputs: &[(&str, i32, usize)], attrs: Vec<AttributeProto>) -> Vec<u8> {
    let names: Vec<&str> = inputs.iter().map(|(n, _, _)| *n).collect();
    let mut n = node(op, &names, &["y"]);
    n.attribute = attrs;
    // Every dimension symbolic: d1, d2, ...
    let dims = |rank: usize| (1..=rank as i64).map(|i| -i).collect::<Vec<_>>();
    bytes(&model(
        vec![n],
        inputs
            .iter()
            .filter(|(name, _, _)| !name.is_empty())
            .map(|&(name, ty, rank)| value_info(name, ty, &dims(rank)))
            .collect(),
        vec![untyped("y")],
        vec![],
    ))
}

fn untyped(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

fn f32s(shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), vec![1.0f32; n]).unwrap()
}

/// Runs the model and returns the error text, failing the test if it succeeds.
fn run_err(builder: SessionBuilder, model: Vec<u8>, feeds: Vec<(&str, Tensor)>) -> String {
    let session = match builder.build_from_bytes(model) {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    match session.run(feeds) {
        Ok(out) => panic!("expected an error, got {:?}", out[0].shape()),
        Err(e) => e.to_string(),
    }
}

fn small() -> SessionBuilder {
    Session::builder().threads(1)
}

/// Asserts the error names the node and mentions one of `why`.
fn assert_names_node(err: &str, op: &str, why: &[&str]) {
    assert!(err.contains(&format!("{op}_node")), "node not named: {err}");
    assert!(
        why.iter().any(|w| err.contains(w)),
        "expected one of {why:?}: {err}"
    );
}

const TOO_BIG: &[&str] = &[
    "more elements than fit",
    "bytes",
    "limit",
    "cannot allocate",
];

#[test]
fn expand_to_2_pow_80_elements_is_an_error() {
    let m = one_node("Expand", &[("x", F32, 1), ("shape", I64, 1)], vec![]);
    for shape in [
        vec![1 << 40, 1 << 40],
        vec![1 << 20, 1 << 20, 1 << 20, 1 << 20],
        vec![1 << 17, 1 << 17, 1],
    ] {
        let err = run_err(
            small(),
            m.clone(),
            vec![("x", f32s(&[1])), ("shape", i64s(&shape))],
        );
        assert_names_node(&err, "Expand", TOO_BIG);
    }
    let err = run_err(
        small(),
        m,
        vec![("x", f32s(&[1])), ("shape", i64s(&[2, -3]))],
    );
    assert_names_node(&err, "Expand", &["negative", "-3"]);
}

#[test]
fn constant_of_shape_checks_its_shape() {
    let m = one_node("ConstantOfShape", &[("shape", I64, 1)], vec![]);
    for (shape, why) in [
        (vec![1i64 << 62, 4], TOO_BIG),
        (vec![1 << 31, 1 << 31], TOO_BIG),
        (vec![3, -1], &["negative", "-1"][..]),
    ] {
        let err = run_err(small(), m.clone(), vec![("shape", i64s(&shape))]);
        assert_names_node(&err, "ConstantOfShape", why);
    }
}

#[test]
fn tile_with_huge_repeats_is_an_error() {
    let m = one_node("Tile", &[("x", F32, 2), ("repeats", I64, 1)], vec![]);
    for (reps, why) in [
        (vec![i64::MAX, i64::MAX], TOO_BIG),
        (vec![1 << 20, 1 << 20], TOO_BIG),
        (vec![2, -1], &["negative", "-1"][..]),
    ] {
        let err = run_err(
            small(),
            m.clone(),
            vec![("x", f32s(&[2, 2])), ("repeats", i64s(&reps))],
        );
        assert_names_node(&err, "Tile", why);
    }
}

#[test]
fn range_overflow_and_huge_counts_are_errors() {
    let m = one_node(
        "Range",
        &[("start", I64, 0), ("limit", I64, 0), ("delta", I64, 0)],
        vec![],
    );
    for (start, limit, delta) in [
        (i64::MIN, i64::MAX, 1i64),
        (0, i64::MAX, 1),
        (i64::MAX, i64::MIN, -1),
        (0, 10, 0),
    ] {
        let feeds = vec![
            ("start", Tensor::scalar(start)),
            ("limit", Tensor::scalar(limit)),
            ("delta", Tensor::scalar(delta)),
        ];
        let err = run_err(small(), m.clone(), feeds);
        assert_names_node(
            &err,
            "Range",
            &["Range", "elements", "delta", "zero", "limit"],
        );
    }
}

#[test]
fn resize_with_absurd_scales_or_sizes_is_an_error() {
    let m = one_node(
        "Resize",
        &[("x", F32, 2), ("", F32, 0), ("scales", F32, 1)],
        vec![],
    );
    for scales in [
        [1e30f32, 1e30],
        [f32::INFINITY, 1.0],
        [f32::NAN, 1.0],
        [-2.0, 1.0],
        [65536.0, 65536.0],
    ] {
        let scales = Tensor::from_vec(vec![2], scales.to_vec()).unwrap();
        let err = run_err(
            small(),
            m.clone(),
            vec![("x", f32s(&[2, 2])), ("scales", scales)],
        );
        assert!(err.contains("Resize_node"), "{err}");
    }
    let m = one_node(
        "Resize",
        &[("x", F32, 2), ("", F32, 0), ("", F32, 0), ("sizes", I64, 1)],
        vec![],
    );
    for sizes in [[i64::MAX, 2], [-4, 2], [1 << 20, 1 << 20]] {
        let err = run_err(
            small(),
            m.clone(),
            vec![("x", f32s(&[2, 2])), ("sizes", i64s(&sizes))],
        );
        assert!(err.contains("Resize_node"), "{err}");
    }
}

#[test]
fn pad_with_huge_or_too_negative_pads_is_an_error() {
    let m = one_node("Pad", &[("x", F32, 2), ("pads", I64, 1)], vec![]);
    for pads in [
        [0, 0, i64::MAX, i64::MAX],
        [i64::MAX, 0, i64::MAX, 0],
        [1 << 20, 1 << 20, 1 << 20, 1 << 20],
        [-5, 0, 0, 0],
        [i64::MIN, 0, 0, 0],
    ] {
        let err = run_err(
            small(),
            m.clone(),
            vec![("x", f32s(&[2, 2])), ("pads", i64s(&pads))],
        );
        assert!(err.contains("Pad_node"), "{pads:?}: {err}");
    }
}

#[test]
fn reshape_with_impossible_shapes_is_an_error() {
    let m = one_node("Reshape", &[("x", F32, 1), ("shape", I64, 1)], vec![]);
    for shape in [
        vec![-1, -1],
        vec![i64::MAX, 2],
        vec![-5, 2],
        vec![1 << 32, 1 << 32, 0, -1],
        vec![i64::MIN],
        vec![0, -1, 1 << 62, 1 << 62],
    ] {
        let err = run_err(
            small(),
            m.clone(),
            vec![("x", f32s(&[6])), ("shape", i64s(&shape))],
        );
        assert!(err.contains("Reshape_node"), "{shape:?}: {err}");
    }
}

#[test]
fn slice_with_extreme_bounds_is_clamped_or_an_error() {
    let m = one_node(
        "Slice",
        &[
            ("x", F32, 1),
            ("starts", I64, 1),
            ("ends", I64, 1),
            ("axes", I64, 1),
            ("steps", I64, 1),
        ],
        vec![],
    );
    for (start, end, step) in [
        (i64::MIN, i64::MAX, 1),
        (i64::MAX, i64::MIN, -1),
        (i64::MAX, i64::MIN, i64::MIN),
        (i64::MIN, i64::MAX, i64::MAX),
        (0, 4, 0),
    ] {
        let feeds = vec![
            ("x", f32s(&[4])),
            ("starts", i64s(&[start])),
            ("ends", i64s(&[end])),
            ("axes", i64s(&[0])),
            ("steps", i64s(&[step])),
        ];
        // Out-of-range starts and ends clamp (the spec); a zero step is an error.
        let session = small().build_from_bytes(m.clone()).unwrap();
        match session.run(feeds) {
            Ok(out) => assert!(out[0].len() <= 4),
            Err(e) => assert!(e.to_string().contains("Slice_node"), "{e}"),
        }
    }
    let feeds = vec![
        ("x", f32s(&[4])),
        ("starts", i64s(&[0])),
        ("ends", i64s(&[4])),
        ("axes", i64s(&[i64::MIN])),
        ("steps", i64s(&[1])),
    ];
    assert!(run_err(small(), m, feeds).contains("Slice_node"));
}

#[test]
fn one_hot_and_compress_with_hostile_sizes_are_errors() {
    let m = one_node(
        "OneHot",
        &[("i", I64, 1), ("depth", I64, 0), ("values", F32, 1)],
        vec![],
    );
    for depth in [i64::MAX, 1 << 40, -3] {
        let feeds = vec![
            ("i", i64s(&[0, 1])),
            ("depth", Tensor::scalar(depth)),
            ("values", f32s(&[2])),
        ];
        assert!(run_err(small(), m.clone(), feeds).contains("OneHot_node"));
    }
    let m = one_node(
        "Compress",
        &[("x", F32, 1), ("c", BOOL, 1)],
        vec![int_attr("axis", 5)],
    );
    let c = Tensor::from_vec(vec![2], vec![true, false]).unwrap();
    assert!(run_err(small(), m, vec![("x", f32s(&[2])), ("c", c)]).contains("Compress_node"));
}

#[test]
fn the_session_tensor_limit_names_the_node() {
    // 64 × 64 f32 = 16 KiB, over a 4 KiB limit; the input itself (256 B) is under it.
    let m = one_node("Expand", &[("x", F32, 1), ("shape", I64, 1)], vec![]);
    let builder = || small().max_tensor_bytes(4096);
    let err = run_err(
        builder(),
        m.clone(),
        vec![("x", f32s(&[64])), ("shape", i64s(&[64, 64]))],
    );
    assert_names_node(&err, "Expand", &["4096"]);
    // Under the limit, the same model runs.
    let s = builder().build_from_bytes(m).unwrap();
    let out = s
        .run([("x", f32s(&[64])), ("shape", i64s(&[8, 64]))])
        .unwrap();
    assert_eq!(out[0].shape(), &[8, 64]);
    // Kernels that build their output without the checked path are caught by the executor.
    let m = one_node("Relu", &[("x", F32, 1)], vec![]);
    let s = small().max_tensor_bytes(1024).build_from_bytes(m).unwrap();
    let err = s.run([("x", f32s(&[1024]))]).unwrap_err().to_string();
    assert_names_node(&err, "Relu", &["1024"]);
}

/// `a = Relu(x), b = Neg(a), c = Abs(b), y = Sum(a, b, c)`: a, b and c are live at once.
fn three_live_intermediates() -> Vec<u8> {
    let mut nodes = vec![
        node("Relu", &["x"], &["a"]),
        node("Neg", &["a"], &["b"]),
        node("Abs", &["b"], &["c"]),
        node("Sum", &["a", "b", "c"], &["y"]),
    ];
    for n in &mut nodes {
        n.name = Some(format!("{}_node", n.op_type()));
    }
    bytes(&model(
        nodes,
        vec![value_info("x", F32, &[-1])],
        vec![untyped("y")],
        vec![],
    ))
}

#[test]
fn the_total_limit_bounds_the_live_tensors_of_a_run() {
    // x is 4 KiB of f32 and freed once Relu has read it; a, b, c are 4 KiB each, live until
    // Sum: 12 KiB at once, over a 10,000-byte total (each tensor is under the tensor limit).
    let session = |total: usize| {
        small()
            .optimization(infer::OptLevel::None)
            .max_total_bytes(total)
            .build_from_bytes(three_live_intermediates())
            .unwrap()
    };
    let err = session(10_000)
        .run([("x", f32s(&[1024]))])
        .unwrap_err()
        .to_string();
    assert_names_node(&err, "Abs", &["10000-byte total limit"]);

    // 4 KiB each of a, b, c and y: 16 KiB at most. Runs one after another and at once each
    // get their own count: a count leaking from one run into the next, or shared between
    // concurrent runs, would fail here.
    let s = std::sync::Arc::new(session(16 << 10));
    for _ in 0..3 {
        assert_eq!(s.run([("x", f32s(&[1024]))]).unwrap()[0].shape(), &[1024]);
    }
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    s.run([("x", f32s(&[1024]))]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // An input alone over the total is refused before anything runs, naming it.
    let err = s.run([("x", f32s(&[8192]))]).unwrap_err().to_string();
    assert!(
        err.contains("input 'x'") && err.contains("total limit"),
        "{err}"
    );
}

#[test]
fn the_total_limit_counts_subgraph_runs_on_top_of_their_parent() {
    // The parent holds cond, x (4 KiB) and z (1 KiB): 5,121 bytes. The branch holds its
    // captures of x and z, t = Relu(z) and u = ReduceSum(x): 6,148 bytes. Alone, each fits a
    // 6,500-byte total (the parent peaks at 6,149 bytes, with the If's outputs); together
    // they do not.
    let branch = GraphProto {
        node: vec![
            node("Relu", &["z"], &["t"]),
            node("ReduceSum", &["x"], &["u"]),
        ],
        output: vec![untyped("t"), untyped("u")],
        ..Default::default()
    };
    let mut if_node = node("If", &["cond"], &["y", "x_sum"]);
    if_node.attribute = vec![
        graph_attr("then_branch", branch.clone()),
        graph_attr("else_branch", branch),
    ];
    let m = bytes(&model(
        vec![if_node],
        vec![
            value_info("cond", BOOL, &[]),
            value_info("x", F32, &[-1]),
            value_info("z", F32, &[-1]),
        ],
        vec![untyped("y"), untyped("x_sum")],
        vec![],
    ));
    let feeds = || {
        vec![
            ("cond", Tensor::scalar(true)),
            ("x", f32s(&[1024])),
            ("z", f32s(&[256])),
        ]
    };
    let builder = || small().optimization(infer::OptLevel::None);
    let err = run_err(builder().max_total_bytes(6500), m.clone(), feeds());
    assert_names_node(&err, "If", &["6500-byte total limit"]);
    // With a 1-element x, both together hold about 3 KiB, and the same total is enough.
    let out = builder()
        .max_total_bytes(6500)
        .build_from_bytes(m)
        .unwrap()
        .run([
            ("cond", Tensor::scalar(true)),
            ("x", f32s(&[1])),
            ("z", f32s(&[256])),
        ])
        .unwrap();
    assert_eq!(out[0].shape(), &[256]);
}

#[test]
fn the_node_limit_is_checked_after_loading() {
    let relu = |i: usize| node("Relu", &[&format!("v{i}")], &[&format!("v{}", i + 1)]);
    let m = bytes(&model(
        (0..10).map(relu).collect(),
        vec![value_info("v0", F32, &[2])],
        vec![value_info("v10", F32, &[2])],
        vec![],
    ));
    let err = small()
        .max_nodes(9)
        .build_from_bytes(m.clone())
        .unwrap_err();
    assert!(
        err.to_string().contains("10 nodes") && err.to_string().contains("9"),
        "{err}"
    );
    assert!(small().max_nodes(10).build_from_bytes(m).is_ok());
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

/// `If(cond) -> out`, its then-branch nesting `depth - 1` more Ifs; every innermost
/// branch copies the outer `x`.
fn nested_if(depth: usize, out: &str) -> NodeProto {
    let branch = |n: NodeProto| GraphProto {
        name: Some("branch".into()),
        output: vec![untyped(&n.output[0])],
        node: vec![n],
        ..Default::default()
    };
    let then = if depth > 1 {
        nested_if(depth - 1, &format!("t{depth}"))
    } else {
        node("Identity", &["x"], &[&format!("t{depth}")])
    };
    let mut n = node("If", &["cond"], &[out]);
    n.name = Some(format!("If_{depth}"));
    n.attribute = vec![
        graph_attr("then_branch", branch(then)),
        graph_attr(
            "else_branch",
            branch(node("Identity", &["x"], &[&format!("e{depth}")])),
        ),
    ];
    n
}

#[test]
fn the_subgraph_depth_limit_is_checked_after_loading() {
    let deep = |depth| {
        bytes(&model(
            vec![nested_if(depth, "y")],
            vec![value_info("cond", BOOL, &[]), value_info("x", F32, &[1])],
            vec![value_info("y", F32, &[1])],
            vec![],
        ))
    };
    let err = small()
        .max_subgraph_depth(3)
        .build_from_bytes(deep(4))
        .unwrap_err();
    assert!(err.to_string().contains("nest"), "{err}");
    let s = small()
        .max_subgraph_depth(4)
        .build_from_bytes(deep(4))
        .unwrap();
    let out = s
        .run([("cond", Tensor::scalar(true)), ("x", f32s(&[1]))])
        .unwrap();
    assert_eq!(out[0].shape(), &[1]);
    // 40 levels: refused by the default limit (32) or by the decoder's recursion limit.
    assert!(small().build_from_bytes(deep(40)).is_err());
}
