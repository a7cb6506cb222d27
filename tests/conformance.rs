//! ONNX backend conformance: runs every test case shipped in the `onnx` Python package (the
//! node suite and the simple / pytorch-converted / pytorch-operator / light model suites, as
//! written by `conformance/generate.py`) and compares outputs the way the onnx backend runner
//! does. Writes the report `docs/conformance.md`, and fails when a case listed in
//! `conformance/expected_pass.txt` no longer passes.
//!
//! `scripts/conformance.sh` builds the cases and runs this in release mode. By hand:
//!
//! ```text
//! export INFER_CONFORMANCE_DIR=$(conformance/build.sh | tail -1)   # default: .cache/conformance/current
//! cargo test --test conformance -- --ignored --nocapture
//! ```
//!
//! - `INFER_CONFORMANCE_UPDATE=1` rewrites `expected_pass.txt` with what passes now.
//! - `INFER_CONFORMANCE_FILTER=text` runs only the cases whose `suite/name` contains `text` or
//!   whose operator is `text` (then neither the report nor the list is written).
//!
//! Each case runs on its own thread under `catch_unwind` and a timeout, so a panic or a hang is
//! one failed case, not a stopped run.

use infer::onnx::proto::{type_proto, ModelProto, TensorProto, TypeProto};
use infer::onnx::{tensor_from_proto, ExternalData};
use infer::{DType, Sequence, Session, Tensor, Value};
use prost::Message;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, Once};
use std::time::{Duration, Instant};

const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// Cases slower than this are named as they finish (most cases take milliseconds).
const SLOW_CASE: Duration = Duration::from_secs(5);
const WORKERS: usize = 2;
/// Case threads carry this name prefix; the panic hook keeps their panics quiet (the message
/// goes into the report instead).
const CASE_THREAD: &str = "conformance-case";
/// Some kernels recurse or keep large frames in debug builds; the default 2 MiB is tight.
const CASE_STACK: usize = 16 << 20;
/// bfloat16 outputs get two bfloat16 ULPs of relative tolerance, like the onnx runner.
const BF16_RTOL: f64 = 1.0 / 64.0;

#[derive(Deserialize)]
struct CaseList {
    onnx_version: String,
    cases: Vec<Case>,
}

/// One entry of `cases.json` (see `conformance/generate.py`).
#[derive(Clone, Debug, Deserialize)]
struct Case {
    suite: String,
    name: String,
    /// The operator under test (node suite only; `*_expanded` cases count under it too).
    op: Option<String>,
    rtol: f64,
    atol: f64,
    core: bool,
}

impl Case {
    fn id(&self) -> String {
        format!("{}/{}", self.suite, self.name)
    }
}

/// `Err` holds the one-line reason a case failed.
type Outcome = Result<(), String>;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cases_dir() -> PathBuf {
    std::env::var_os("INFER_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join(".cache/conformance/current"))
}

#[test]
#[ignore = "needs the generated cases: scripts/conformance.sh"]
fn onnx_backend_conformance() {
    let dir = cases_dir();
    let list_path = dir.join("cases.json");
    let text = std::fs::read_to_string(&list_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nbuild the cases first: export INFER_CONFORMANCE_DIR=$(conformance/build.sh | tail -1)",
            list_path.display()
        )
    });
    let list: CaseList =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", list_path.display()));
    let filter = std::env::var("INFER_CONFORMANCE_FILTER")
        .ok()
        .filter(|f| !f.is_empty());
    let cases: Vec<Case> = list
        .cases
        .into_iter()
        .filter(|c| match &filter {
            Some(f) => c.id().contains(f.as_str()) || c.op.as_deref() == Some(f.as_str()),
            None => true,
        })
        .collect();
    assert!(
        !cases.is_empty(),
        "no case matches INFER_CONFORMANCE_FILTER={filter:?}"
    );

    let start = Instant::now();
    let outcomes = run_all(&dir, &cases);
    let passed = outcomes.iter().filter(|o| o.is_ok()).count();
    println!(
        "[conformance] {passed}/{} cases passed in {:.1} s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );

    let results: Vec<(&Case, &Outcome)> = cases.iter().zip(&outcomes).collect();
    if filter.is_some() {
        for (case, outcome) in &results {
            if let Err(reason) = outcome {
                println!("  FAIL {}: {reason}", case.id());
            }
        }
    }
    let passing: BTreeSet<String> = results
        .iter()
        .filter(|(_, o)| o.is_ok())
        .map(|(c, _)| c.id())
        .collect();
    let list_path = manifest_dir().join("conformance/expected_pass.txt");
    let expected = std::fs::read_to_string(&list_path)
        .ok()
        .map(|text| parse_expected(&text));
    let regressions = match &expected {
        Some(expected) => regressions(expected, &results, filter.is_some()),
        None => Vec::new(),
    };
    let update = std::env::var("INFER_CONFORMANCE_UPDATE").is_ok_and(|v| v == "1");
    if let Some(expected) = &expected {
        let new: Vec<&String> = passing.difference(expected).collect();
        if !new.is_empty() {
            println!("[conformance] {} newly passing cases:", new.len());
            for id in &new {
                println!("  {id}");
            }
            if !update {
                println!("[conformance] accept them into conformance/expected_pass.txt: INFER_CONFORMANCE_UPDATE=1 scripts/conformance.sh");
            }
        }
    }
    if !regressions.is_empty() {
        println!("[conformance] cases of conformance/expected_pass.txt that fail now:");
        for r in &regressions {
            println!("  {r}");
        }
    }

    if filter.is_none() {
        let report_path = manifest_dir().join("docs/conformance.md");
        std::fs::create_dir_all(manifest_dir().join("docs")).unwrap();
        std::fs::write(&report_path, report(&list.onnx_version, &results)).unwrap();
        println!("[conformance] wrote {}", report_path.display());
        if update || expected.is_none() {
            std::fs::write(&list_path, expected_list(&list.onnx_version, &passing)).unwrap();
            println!(
                "[conformance] wrote {} ({} cases)",
                list_path.display(),
                passing.len()
            );
            return;
        }
    } else if update {
        println!(
            "[conformance] INFER_CONFORMANCE_UPDATE needs a full run (no filter): list not written"
        );
    }
    assert!(
        regressions.is_empty(),
        "{} cases of conformance/expected_pass.txt fail now (listed above)",
        regressions.len()
    );
}

/// The listed cases that did not pass, with their reasons. A listed case that no longer
/// exists counts too, unless only a filtered subset ran.
fn regressions(
    expected: &BTreeSet<String>,
    results: &[(&Case, &Outcome)],
    filtered: bool,
) -> Vec<String> {
    let ran: BTreeMap<String, &Outcome> = results.iter().map(|(c, o)| (c.id(), *o)).collect();
    expected
        .iter()
        .filter_map(|id| match ran.get(id) {
            Some(Ok(())) => None,
            Some(Err(reason)) => Some(format!("{id}: {reason}")),
            None if !filtered => Some(format!("{id}: no such case any more")),
            None => None,
        })
        .collect()
}

/// Runs the cases over `WORKERS` threads; outcomes come back in the cases' order.
fn run_all(dir: &Path, cases: &[Case]) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(vec![None; cases.len()]);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let case_dir = dir.join(&case.suite).join(&case.name);
                let (rtol, atol) = (case.rtol, case.atol);
                let job_dir = case_dir.clone();
                let start = Instant::now();
                let outcome = run_isolated(&case.name, CASE_TIMEOUT, move || {
                    run_case(&job_dir, rtol, atol)
                })
                .map_err(|reason| one_line(&reason, &case_dir));
                let took = start.elapsed();
                if took > SLOW_CASE {
                    let secs = took.as_secs_f64();
                    println!("[conformance] slow: {} ({secs:.1} s)", case.id());
                }
                outcomes.lock().unwrap()[i] = Some(outcome);
            });
        }
    });
    outcomes
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|o| o.expect("every case ran"))
        .collect()
}

/// Runs `job` on its own thread. A panic becomes "panic: ..."; past `timeout` the thread is
/// abandoned (Rust cannot stop it) and the outcome is "timeout".
fn run_isolated(
    label: &str,
    timeout: Duration,
    job: impl FnOnce() -> Outcome + Send + 'static,
) -> Outcome {
    static QUIET_CASE_PANICS: Once = Once::new();
    QUIET_CASE_PANICS.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(CASE_THREAD))
            {
                default(info);
            }
        }));
    });
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("{CASE_THREAD} {label}"))
        .stack_size(CASE_STACK)
        .spawn(move || {
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|payload| {
                    Err(format!("panic: {}", panic_message(payload.as_ref())))
                });
            // The receiver is gone only if the job already timed out.
            let _ = tx.send(outcome);
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(outcome) => outcome,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("timeout ({} s)", timeout.as_secs_f64()))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the case thread died".into()),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string payload)".into()
    }
}

/// The first line of a reason, without the (machine-specific) case folder, at most 200 chars.
fn one_line(reason: &str, case_dir: &Path) -> String {
    let prefix = format!("{}/", case_dir.display());
    let line = reason.lines().next().unwrap_or("").replace(&prefix, "");
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

/// Loads, plans and runs one case folder on every `test_data_set_*`, comparing outputs.
fn run_case(case_dir: &Path, rtol: f64, atol: f64) -> Outcome {
    let model_path = case_dir.join("model.onnx");
    let bytes = std::fs::read(&model_path).map_err(|e| format!("model.onnx: {e}"))?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| format!("model.onnx: {e}"))?;
    let graph = model.graph.unwrap_or_default();
    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|vi| vi.name())
        .filter(|n| !initializers.contains(n))
        .collect();
    // Sequences and optionals of tensors are supported; maps and sparse tensors are not.
    let mut kinds = BTreeMap::new();
    for vi in graph.input.iter().chain(&graph.output) {
        kinds.insert(vi.name(), data_kind(vi.r#type.as_ref())?);
    }
    let kind_of = |name: &str| kinds.get(name).copied().unwrap_or(DataKind::Tensor);
    let output_kinds: Vec<DataKind> = graph.output.iter().map(|vi| kind_of(vi.name())).collect();

    let session = Session::builder()
        .threads(1)
        .build_from_file(&model_path)
        .map_err(|e| e.to_string())?;
    let mut data_sets: Vec<PathBuf> = std::fs::read_dir(case_dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    data_sets.sort();
    if data_sets.is_empty() {
        return Err("no test_data_set_* folder".into());
    }
    for data_set in &data_sets {
        let set = data_set
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut feeds = Vec::new();
        let input_kind = |k: usize| inputs.get(k).map_or(DataKind::Tensor, |n| kind_of(n));
        for (k, (name, value)) in read_pbs(data_set, "input", input_kind)?
            .into_iter()
            .enumerate()
        {
            // The proto's name is the input's when the writer set it; else go by position.
            let bound = match name {
                Some(n) if inputs.contains(&n.as_str()) => n,
                _ => match inputs.get(k) {
                    Some(n) => n.to_string(),
                    None => return Err(format!("{set}: input_{k}.pb has no graph input to go to")),
                },
            };
            feeds.push((bound, value));
        }
        let outputs = session
            .run_values(feeds.iter().map(|(n, v)| (n.as_str(), v.clone())))
            .map_err(|e| e.to_string())?;
        let output_kind = |k: usize| output_kinds.get(k).copied().unwrap_or(DataKind::Tensor);
        let expected = read_pbs(data_set, "output", output_kind)?;
        if outputs.len() != expected.len() {
            return Err(format!(
                "{set}: {} outputs, expected {}",
                outputs.len(),
                expected.len()
            ));
        }
        for (k, (_, want)) in expected.iter().enumerate() {
            compare_values(&outputs.values()[k], want, rtol, atol)
                .map_err(|e| format!("output {k}: {e}"))?;
        }
    }
    Ok(())
}

/// How a test data file is encoded: as a TensorProto, a SequenceProto or an OptionalProto.
#[derive(Clone, Copy, Debug, PartialEq)]
enum DataKind {
    Tensor,
    Sequence,
    Optional,
}

fn data_kind(ty: Option<&TypeProto>) -> Result<DataKind, String> {
    match ty.and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::SequenceType(_)) => Ok(DataKind::Sequence),
        Some(type_proto::Value::OptionalType(_)) => Ok(DataKind::Optional),
        Some(type_proto::Value::MapType(_)) => Err("map types unsupported".into()),
        Some(type_proto::Value::SparseTensorType(_)) => Err("sparse tensors unsupported".into()),
        _ => Ok(DataKind::Tensor),
    }
}

/// onnx-data.proto's SequenceProto, with the fields the backend tests use (tensors and
/// nested sequences); prost skips the others.
#[derive(Clone, PartialEq, prost::Message)]
struct SequenceProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int32, optional, tag = "2")]
    elem_type: Option<i32>,
    #[prost(message, repeated, tag = "3")]
    tensor_values: Vec<TensorProto>,
}

/// onnx-data.proto's OptionalProto: empty, a tensor or a sequence.
#[derive(Clone, PartialEq, prost::Message)]
struct OptionalProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int32, optional, tag = "2")]
    elem_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    tensor_value: Option<TensorProto>,
    #[prost(message, optional, tag = "5")]
    sequence_value: Option<SequenceProto>,
}

fn tensor(proto: &TensorProto) -> Result<Tensor, String> {
    tensor_from_proto(proto, &mut ExternalData::new(None)).map_err(|e| e.to_string())
}

fn sequence(proto: &SequenceProto) -> Result<Value, String> {
    let items = proto
        .tensor_values
        .iter()
        .map(tensor)
        .collect::<Result<Vec<_>, _>>()?;
    // An empty sequence carries no element type the comparison could check: f32 stands in.
    let dtype = items.first().map_or(DType::F32, Tensor::dtype);
    Sequence::new(dtype, items)
        .map(Value::Sequence)
        .map_err(|e| e.to_string())
}

/// Reads `{prefix}_0.pb`, `{prefix}_1.pb`, ... as values of the kinds `kind_of(k)` gives, with
/// the names they carry.
fn read_pbs(
    data_set: &Path,
    prefix: &str,
    kind_of: impl Fn(usize) -> DataKind,
) -> Result<Vec<(Option<String>, Value)>, String> {
    let mut found = Vec::new();
    for k in 0.. {
        let path = data_set.join(format!("{prefix}_{k}.pb"));
        if !path.exists() {
            break;
        }
        let file = format!("{prefix}_{k}.pb");
        let bytes = std::fs::read(&path).map_err(|e| format!("{file}: {e}"))?;
        let bytes = bytes.as_slice();
        let decoded = match kind_of(k) {
            DataKind::Tensor => TensorProto::decode(bytes)
                .map_err(|e| e.to_string())
                .and_then(|p| Ok((p.name.clone(), Value::Tensor(tensor(&p)?)))),
            DataKind::Sequence => SequenceProto::decode(bytes)
                .map_err(|e| e.to_string())
                .and_then(|p| Ok((p.name.clone(), sequence(&p)?))),
            DataKind::Optional => OptionalProto::decode(bytes)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    let inner = match (&p.tensor_value, &p.sequence_value) {
                        (Some(t), _) => Some(Value::Tensor(tensor(t)?)),
                        (None, Some(s)) => Some(sequence(s)?),
                        (None, None) => None,
                    };
                    Ok((p.name.clone(), Value::Optional(inner.map(Box::new))))
                }),
        };
        let (name, value) = decoded.map_err(|e| format!("{file}: {e}"))?;
        found.push((name.filter(|n| !n.is_empty()), value));
    }
    Ok(found)
}

/// `compare` through sequences and optionals (which must match in kind and length).
fn compare_values(got: &Value, want: &Value, rtol: f64, atol: f64) -> Result<(), String> {
    match (got, want) {
        (Value::Tensor(g), Value::Tensor(w)) => compare(g, w, rtol, atol),
        (Value::Sequence(g), Value::Sequence(w)) => {
            if g.len() != w.len() {
                return Err(format!("sequence of {}, expected {}", g.len(), w.len()));
            }
            for (i, (g, w)) in g.items().iter().zip(w.items()).enumerate() {
                compare(g, w, rtol, atol).map_err(|e| format!("item {i}: {e}"))?;
            }
            Ok(())
        }
        (Value::Optional(None), Value::Optional(None)) => Ok(()),
        (Value::Optional(Some(g)), Value::Optional(Some(w))) => compare_values(g, w, rtol, atol),
        // A runtime may hand back an optional's content unwrapped, and vice versa.
        (Value::Optional(Some(g)), w) => compare_values(g, w, rtol, atol),
        (g, Value::Optional(Some(w))) => compare_values(g, w, rtol, atol),
        (g, w) => Err(format!("a {}, expected a {}", describe(g), describe(w))),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Optional(None) => "empty optional",
        other => other.kind(),
    }
}

/// The onnx backend runner's check (`numpy.testing.assert_allclose` after equal shapes and
/// dtypes): floats within `atol + rtol·|expected|`, NaN equal to NaN, infinities equal to
/// themselves; integers and bools exactly.
fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    if got.dtype() == DType::String {
        let (g, w) = (
            got.as_strings().map_err(|e| e.to_string())?,
            want.as_strings().map_err(|e| e.to_string())?,
        );
        return match (0..g.len()).find(|&i| g[i] != w[i]) {
            None => Ok(()),
            Some(i) => Err(format!(
                "{} of {} strings differ; first at {i}: {:?}, expected {:?}",
                (0..g.len()).filter(|&i| g[i] != w[i]).count(),
                g.len(),
                g[i],
                w[i]
            )),
        };
    }
    if !got.dtype().is_float() {
        if got.as_bytes() == want.as_bytes() {
            return Ok(());
        }
        let size = got.dtype().size();
        let (g, w) = (got.as_bytes().chunks(size), want.as_bytes().chunks(size));
        // Narrow floats (float8, float4) have several NaN encodings: any NaN matches any.
        let nan = |t: &Tensor| -> Vec<bool> {
            match t.dtype().is_narrow() {
                true => t
                    .to_f64_vec()
                    .map_or(vec![], |v| v.iter().map(|x| x.is_nan()).collect()),
                false => vec![],
            }
        };
        let (g_nan, w_nan) = (nan(got), nan(want));
        let both_nan =
            |i: usize| g_nan.get(i).is_some_and(|&a| a) && w_nan.get(i).is_some_and(|&b| b);
        let bad: Vec<usize> = g
            .zip(w)
            .enumerate()
            .filter(|&(i, (a, b))| a != b && !both_nan(i))
            .map(|(i, _)| i)
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        let show = |t: &Tensor, i: usize| match t.dtype().is_narrow() {
            true => t.to_f64_vec().map_or("?".into(), |v| v[i].to_string()),
            false => t.to_i64_vec().map_or("?".into(), |v| v[i].to_string()),
        };
        return Err(format!(
            "{} of {} elements differ; first at {}: {}, expected {}",
            bad.len(),
            got.len(),
            bad[0],
            show(got, bad[0]),
            show(want, bad[0])
        ));
    }
    let rtol = if got.dtype() == DType::BF16 {
        rtol.max(BF16_RTOL)
    } else {
        rtol
    };
    let (g, w) = (
        got.to_f64_vec().map_err(|e| e.to_string())?,
        want.to_f64_vec().map_err(|e| e.to_string())?,
    );
    // Like numpy.isclose: NaN and infinities match only themselves (rtol·inf would admit any
    // value next to an infinite expectation).
    let close = |a: f64, b: f64| {
        if a.is_finite() && b.is_finite() {
            (a - b).abs() <= atol + rtol * b.abs()
        } else {
            a == b || (a.is_nan() && b.is_nan())
        }
    };
    let bad: Vec<usize> = (0..g.len()).filter(|&i| !close(g[i], w[i])).collect();
    match bad.first() {
        None => Ok(()),
        Some(&i) => {
            let worst = bad
                .iter()
                .map(|&j| (g[j] - w[j]).abs())
                .fold(0.0f64, |m, d| if d.is_nan() || d > m { d } else { m });
            Err(format!(
                "{} of {} elements differ (rtol {rtol}, atol {atol}); first at {i}: {}, expected {}; max abs diff {worst}",
                bad.len(),
                g.len(),
                g[i],
                w[i]
            ))
        }
    }
}

fn parse_expected(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn expected_list(onnx_version: &str, passing: &BTreeSet<String>) -> String {
    let mut s = format!(
        "# Conformance cases (onnx {onnx_version}) that pass; tests/conformance.rs fails if one stops passing.\n\
         # Regenerate after new passes: INFER_CONFORMANCE_UPDATE=1 scripts/conformance.sh\n"
    );
    for id in passing {
        s.push_str(id);
        s.push('\n');
    }
    s
}

/// Counts over a group of cases.
#[derive(Default)]
struct Tally {
    cases: usize,
    passed: usize,
    core: usize,
    core_passed: usize,
}

impl Tally {
    fn add(&mut self, case: &Case, outcome: &Outcome) {
        self.cases += 1;
        self.passed += outcome.is_ok() as usize;
        self.core += case.core as usize;
        self.core_passed += (case.core && outcome.is_ok()) as usize;
    }

    fn row(&self, label: &str) -> String {
        format!(
            "| {label} | {} | {} | {} | {} |",
            self.cases, self.passed, self.core, self.core_passed
        )
    }
}

/// Markdown table cells cannot hold `|` or raw `<`.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('<', "&lt;")
}

fn report(onnx_version: &str, results: &[(&Case, &Outcome)]) -> String {
    let mut all = Tally::default();
    let mut suites: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut ops: BTreeMap<&str, (Tally, Vec<String>)> = BTreeMap::new();
    let mut models: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for &(case, outcome) in results {
        all.add(case, outcome);
        suites.entry(&case.suite).or_default().add(case, outcome);
        let mark = if case.core { "" } else { "\\*" };
        match &case.op {
            Some(op) => {
                let (tally, failures) = ops.entry(op).or_default();
                tally.add(case, outcome);
                if let Err(reason) = outcome {
                    failures.push(format!("`{}`{mark}: {}", case.name, cell(reason)));
                }
            }
            None => {
                let result = match outcome {
                    Ok(()) => "pass".to_string(),
                    Err(reason) => cell(reason),
                };
                models
                    .entry(&case.suite)
                    .or_default()
                    .push(format!("| `{}`{mark} | {result} |", case.name));
            }
        }
    }

    let mut s = String::new();
    let _ = write!(
        s,
        "# ONNX backend conformance\n\n\
         <!-- Generated by tests/conformance.rs: do not edit. Regenerate with scripts/conformance.sh -->\n\n\
         Generated by `tests/conformance.rs` from the backend test cases of onnx {onnx_version}; \
         regenerate with `scripts/conformance.sh` (with `INFER_CONFORMANCE_UPDATE=1` it also \
         accepts new passes into `conformance/expected_pass.txt`).\n\n\
         A case runs its `model.onnx` on each `test_data_set_*` and must match the expected outputs \
         the way the onnx backend runner checks them: same shape and dtype; floats within \
         |got − expected| ≤ atol + rtol·|expected| (rtol 1e-3, atol 1e-7 unless the case sets its own; \
         NaN equals NaN); integers and bools exactly. **Core** cases leave out training ops, random ops \
         (incl. Dropout in training mode), string / sequence / optional / map values and the exotic \
         dtypes (float8, int4/uint4, int2/uint2, float4, bfloat16); \\* marks the cases outside core.\n\n\
         ## Totals\n\n\
         | suite | cases | passed | core cases | core passed |\n\
         |---|---:|---:|---:|---:|\n"
    );
    let _ = writeln!(s, "{}", all.row("**all**"));
    for (suite, tally) in &suites {
        let _ = writeln!(s, "{}", tally.row(suite));
    }
    let _ = write!(
        s,
        "\n## Node cases by operator\n\n\
         A `*_expanded` case runs the operator's function body (other operators) and counts under \
         the operator it expands.\n\n\
         | op | cases | passed | core cases | core passed | failing cases |\n\
         |---|---:|---:|---:|---:|---|\n"
    );
    for (op, (tally, failures)) in &ops {
        let row = tally.row(op);
        let _ = writeln!(s, "{} {} |", row, failures.join("<br>"));
    }
    for (suite, rows) in &models {
        let _ = write!(
            s,
            "\n## Model suite `{suite}`\n\n| case | result |\n|---|---|\n"
        );
        for row in rows {
            let _ = writeln!(s, "{row}");
        }
    }
    s
}

mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn floats_within_atol_plus_rtol_pass() {
        // |1.0009 - 1| = 9e-4 <= 1e-7 + 1e-3 * 1; |0 - 5e-8| <= 1e-7.
        assert!(compare(&f32s(&[1.0009, 5e-8]), &f32s(&[1.0, 0.0]), 1e-3, 1e-7).is_ok());
    }

    #[test]
    fn floats_beyond_tolerance_fail_naming_the_element() {
        // |1.0011 - 1| = 1.1e-3 > 1e-3 + 1e-7.
        let err = compare(&f32s(&[2.0, 1.0011]), &f32s(&[2.0, 1.0]), 1e-3, 1e-7).unwrap_err();
        assert!(err.starts_with("1 of 2 elements differ"), "{err}");
        assert!(err.contains("first at 1"), "{err}");
        // rtol scales with the expected value, not the actual one: |0 - 1e-6| > 1e-7.
        assert!(compare(&f32s(&[1e-6]), &f32s(&[0.0]), 1e-3, 1e-7).is_err());
    }

    #[test]
    fn nan_equals_nan_and_infinities_match_only_themselves() {
        let inf = f32::INFINITY;
        assert!(compare(
            &f32s(&[f32::NAN, inf, -inf]),
            &f32s(&[f32::NAN, inf, -inf]),
            1e-3,
            1e-7
        )
        .is_ok());
        assert!(compare(&f32s(&[f32::NAN]), &f32s(&[1.0]), 1e-3, 1e-7).is_err());
        assert!(compare(&f32s(&[1.0]), &f32s(&[f32::NAN]), 1e-3, 1e-7).is_err());
        assert!(compare(&f32s(&[inf]), &f32s(&[-inf]), 1e-3, 1e-7).is_err());
        assert!(compare(&f32s(&[f32::MAX]), &f32s(&[inf]), 1e-3, 1e-7).is_err());
    }

    #[test]
    fn integers_and_bools_compare_exactly() {
        let i = |v: Vec<i64>| Tensor::from_vec(vec![v.len()], v).unwrap();
        assert!(compare(&i(vec![3, -7]), &i(vec![3, -7]), 1e-3, 1e-7).is_ok());
        // 1000 vs 1001 is within rtol 1e-3 as floats, but integers must be equal.
        let err = compare(&i(vec![3, 1000]), &i(vec![3, 1001]), 1e-3, 1e-7).unwrap_err();
        assert_eq!(
            err,
            "1 of 2 elements differ; first at 1: 1000, expected 1001"
        );
        // u64 above 2^53 differ by one: exact, not through f64.
        let u = |v: u64| Tensor::from_vec(vec![1], vec![v]).unwrap();
        assert!(compare(&u((1 << 60) + 1), &u(1 << 60), 1e-3, 1e-7).is_err());
        let b = |v: Vec<bool>| Tensor::from_vec(vec![v.len()], v).unwrap();
        assert!(compare(&b(vec![true, false]), &b(vec![true, false]), 1e-3, 1e-7).is_ok());
        assert!(compare(&b(vec![true, true]), &b(vec![true, false]), 1e-3, 1e-7).is_err());
    }

    #[test]
    fn shape_and_dtype_must_match() {
        let m = Tensor::from_vec(vec![1, 2], vec![1.0f32, 2.0]).unwrap();
        assert_eq!(
            compare(&m, &f32s(&[1.0, 2.0]), 1e-3, 1e-7).unwrap_err(),
            "shape [1, 2], expected [2]"
        );
        let d = Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap();
        assert_eq!(
            compare(&d, &f32s(&[1.0, 2.0]), 1e-3, 1e-7).unwrap_err(),
            "dtype float64, expected float32"
        );
    }

    #[test]
    fn bfloat16_gets_two_ulps_of_relative_tolerance() {
        use half::bf16;
        let t = |v: f32| Tensor::from_vec(vec![1], vec![bf16::from_f32(v)]).unwrap();
        // 1.0078125 is one bf16 ULP above 1: beyond rtol 1e-3, within 2^-6.
        assert!(compare(&t(1.0078125), &t(1.0), 1e-3, 1e-7).is_ok());
        assert!(compare(&t(1.03125), &t(1.0), 1e-3, 1e-7).is_err());
    }

    #[test]
    fn isolated_jobs_turn_panics_and_hangs_into_failures() {
        let ok = run_isolated("ok", Duration::from_secs(5), || Ok(()));
        assert_eq!(ok, Ok(()));
        let panicked = run_isolated("panics", Duration::from_secs(5), || panic!("boom {}", 42));
        assert_eq!(panicked, Err("panic: boom 42".into()));
        let start = Instant::now();
        let hung = run_isolated("hangs", Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(())
        });
        assert_eq!(hung, Err("timeout (0.1 s)".into()));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn reasons_are_one_line_without_the_case_folder() {
        let dir = Path::new("/tmp/cases/node/test_abs");
        let reason = "/tmp/cases/node/test_abs/model.onnx: bad graph\nmore detail";
        assert_eq!(one_line(reason, dir), "model.onnx: bad graph");
        let long = "x".repeat(300);
        assert_eq!(one_line(&long, dir).len(), 203);
    }

    #[test]
    fn expected_list_round_trips() {
        let passing: BTreeSet<String> =
            ["node/test_abs".to_string(), "simple/test_a".to_string()].into();
        assert_eq!(parse_expected(&expected_list("1.0", &passing)), passing);
    }
}
