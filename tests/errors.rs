//! Bad input gets a clear error naming the problem — never a panic.

mod common;

use common::*;
use infer::{Error, Session, Tensor};

const F32: i32 = 1;

/// y = Relu(x) over a [2, d1] input.
fn relu_model() -> Vec<u8> {
    bytes(&model(
        vec![node("Relu", &["x"], &["y"])],
        vec![value_info("x", F32, &[2, -1])],
        vec![value_info("y", F32, &[2, -1])],
        vec![],
    ))
}

fn session(bytes: Vec<u8>) -> infer::Result<Session> {
    Session::builder().threads(1).build_from_bytes(bytes)
}

fn write_temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("infer-errors-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.onnx");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn truncated_and_corrupt_files_name_the_file() {
    let full = relu_model();
    for cut in [1, full.len() / 3, full.len() - 1] {
        let path = write_temp(&format!("trunc{cut}"), &full[..cut]);
        // A prefix can be a valid (smaller) protobuf; it must just not panic.
        if let Err(e) = Session::builder().build_from_file(&path) {
            assert!(e.to_string().contains("model.onnx"), "{e}");
        }
    }
    let path = write_temp("garbage", b"\xff\xff\xff\xff not a model at all");
    let err = Session::builder().build_from_file(&path).unwrap_err();
    assert!(err.to_string().contains("not a valid ONNX model"), "{err}");
    let err = Session::builder()
        .build_from_file("/nonexistent/model.onnx")
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model.onnx"), "{err}");
}

#[test]
fn wrong_inputs_are_rejected_with_the_reason() {
    let s = session(relu_model()).unwrap();
    let good = Tensor::from_vec(vec![2, 3], vec![1.0f32; 6]).unwrap();
    let err = s.run([("nope", good.clone())]).unwrap_err();
    assert!(err.to_string().contains("no input named 'nope'"), "{err}");
    let err = s.run(std::iter::empty()).unwrap_err();
    assert!(err.to_string().contains("missing input 'x'"), "{err}");
    let ints = Tensor::from_vec(vec![2, 3], vec![1i64; 6]).unwrap();
    let err = s.run([("x", ints)]).unwrap_err();
    assert!(err.to_string().contains("must be float32"), "{err}");
    let rank3 = Tensor::from_vec(vec![2, 3, 1], vec![1.0f32; 6]).unwrap();
    let err = s.run([("x", rank3)]).unwrap_err();
    assert!(err.to_string().contains("rank 2"), "{err}");
    let bad_dim = Tensor::from_vec(vec![3, 2], vec![1.0f32; 6]).unwrap();
    let err = s.run([("x", bad_dim)]).unwrap_err();
    assert!(err.to_string().contains("dimension 0 must be 2"), "{err}");
    // The symbolic dimension takes any size.
    let out = s
        .run([(
            "x",
            Tensor::from_vec(vec![2, 1], vec![-1.0f32, 2.0]).unwrap(),
        )])
        .unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0.0, 2.0]);
}

#[test]
fn unsupported_op_names_op_type_and_node() {
    let m = model(
        vec![node("FrobnicateTensor", &["x"], &["y"])],
        vec![value_info("x", F32, &[1])],
        vec![value_info("y", F32, &[1])],
        vec![],
    );
    let err = session(bytes(&m)).unwrap_err();
    assert!(matches!(err, Error::UnsupportedOp { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("FrobnicateTensor") && msg.contains("FrobnicateTensor_node"),
        "{msg}"
    );
}

#[test]
fn graph_errors_are_reported() {
    // Reads a value nothing defines.
    let m = model(
        vec![node("Relu", &["ghost"], &["y"])],
        vec![value_info("x", F32, &[1])],
        vec![value_info("y", F32, &[1])],
        vec![],
    );
    let err = session(bytes(&m)).unwrap_err();
    assert!(err.to_string().contains("'ghost'"), "{err}");
    // A cycle.
    let m = model(
        vec![node("Relu", &["b"], &["a"]), node("Relu", &["a"], &["b"])],
        vec![value_info("x", F32, &[1])],
        vec![value_info("b", F32, &[1])],
        vec![],
    );
    let err = session(bytes(&m)).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    // Two producers of one value.
    let m = model(
        vec![node("Relu", &["x"], &["y"]), node("Relu", &["x"], &["y"])],
        vec![value_info("x", F32, &[1])],
        vec![value_info("y", F32, &[1])],
        vec![],
    );
    let err = session(bytes(&m)).unwrap_err();
    assert!(err.to_string().contains("defined twice"), "{err}");
}

#[test]
fn initializer_size_mismatch_is_an_error() {
    let m = model(
        vec![node("Add", &["x", "w"], &["y"])],
        vec![value_info("x", F32, &[2])],
        vec![value_info("y", F32, &[2])],
        vec![f32_initializer("w", &[3], &[1.0, 2.0])],
    );
    let err = session(bytes(&m)).unwrap_err();
    assert!(err.to_string().contains("tensor 'w'"), "{err}");
}

#[test]
fn external_data_must_stay_inside_the_model_folder() {
    use infer::onnx::proto::{tensor_proto::DataLocation, StringStringEntryProto};
    for (location, why) in [
        ("../outside.bin", "inside the model's folder"),
        ("/etc/passwd", "inside the model's folder"),
        ("missing.bin", "No such file"),
    ] {
        let mut w = f32_initializer("w", &[2], &[]);
        w.data_location = Some(DataLocation::External as i32);
        w.external_data = vec![StringStringEntryProto {
            key: Some("location".into()),
            value: Some(location.into()),
        }];
        let m = model(
            vec![node("Add", &["x", "w"], &["y"])],
            vec![value_info("x", F32, &[2])],
            vec![value_info("y", F32, &[2])],
            vec![w],
        );
        let path = write_temp(&format!("ext{}", location.len()), &bytes(&m));
        let err = Session::builder().build_from_file(&path).unwrap_err();
        assert!(err.to_string().contains(why), "{location}: {err}");
    }
}
