//! Concurrency stress: one `Session` shared by 16 threads × 200 runs with mixed input shapes,
//! every output bit-identical to a single-threaded run of the same inputs.
//!
//! Runs on the zoo's all-MiniLM-L6-v2 export (dynamic batch and sequence, so the shape cache,
//! the attention masks and the shape-only subgraph are all exercised); `INFER_ZOO_DIR` points
//! at the zoo (`models/build_zoo.sh`, which `scripts/test.sh` runs).

use infer::{Session, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

const THREADS: usize = 16;
const RUNS_PER_THREAD: usize = 200;

/// Deterministic token batches: (batch, sequence) shapes, ids below the vocabulary size and a
/// mask that pads the tail of every other row.
fn inputs(batch: usize, seq: usize, seed: u64) -> Vec<(&'static str, Tensor)> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let n = batch * seq;
    let ids: Vec<i64> = (0..n).map(|_| 1000 + (next() % 20000) as i64).collect();
    let mask: Vec<i64> = (0..n)
        .map(|i| {
            let (row, col) = (i / seq, i % seq);
            i64::from(row % 2 == 0 || col < seq.div_ceil(2))
        })
        .collect();
    let shape = vec![batch, seq];
    vec![
        ("input_ids", Tensor::from_vec(shape.clone(), ids).unwrap()),
        (
            "attention_mask",
            Tensor::from_vec(shape.clone(), mask).unwrap(),
        ),
        (
            "token_type_ids",
            Tensor::from_vec(shape, vec![0i64; n]).unwrap(),
        ),
    ]
}

fn run(session: &Session, feeds: &[(&'static str, Tensor)]) -> Vec<Tensor> {
    let outputs = session
        .run(feeds.iter().map(|(n, t)| (*n, t.clone())))
        .unwrap();
    (0..outputs.len()).map(|i| outputs[i].clone()).collect()
}

#[test]
#[ignore = "needs the model zoo: set INFER_ZOO_DIR (scripts/test.sh does)"]
fn sixteen_threads_share_one_session_with_mixed_shapes() {
    let zoo = PathBuf::from(std::env::var("INFER_ZOO_DIR").expect("INFER_ZOO_DIR"));
    let session = Session::builder()
        .threads(2)
        .build_from_file(zoo.join("minilm/model.onnx"))
        .unwrap();
    let shapes = [(1, 5), (2, 8), (3, 13), (1, 16), (4, 3), (2, 21)];
    let cases: Vec<Vec<(&'static str, Tensor)>> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(b, s))| inputs(b, s, i as u64))
        .collect();
    let expected: Vec<Vec<Tensor>> = cases.iter().map(|c| run(&session, c)).collect();

    let session = Arc::new(session);
    let cases = Arc::new(cases);
    let expected = Arc::new(expected);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (session, cases, expected) = (
                Arc::clone(&session),
                Arc::clone(&cases),
                Arc::clone(&expected),
            );
            std::thread::spawn(move || {
                for r in 0..RUNS_PER_THREAD {
                    let k = (t * 7 + r * 5) % cases.len();
                    let got = run(&session, &cases[k]);
                    for (g, w) in got.iter().zip(&expected[k]) {
                        assert_eq!(g.shape(), w.shape(), "thread {t} run {r} case {k}");
                        assert!(
                            g.as_bytes() == w.as_bytes(),
                            "thread {t} run {r} case {k}: output differs from the sequential run"
                        );
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a stress thread panicked");
    }
}
