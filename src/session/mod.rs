//! The embedding API: build a `Session` once, run it from any number of threads.
//!
//! ```no_run
//! use infer::{Session, Tensor};
//!
//! let session = Session::builder().threads(4).build_from_file("model.onnx")?;
//! let x = Tensor::from_vec(vec![1, 3, 224, 224], vec![0.5f32; 3 * 224 * 224])?;
//! let outputs = session.run([("input", x)])?;
//! let logits = outputs[0].view::<f32>()?;
//! println!("{:?}", logits.shape());
//! # Ok::<(), infer::Error>(())
//! ```

mod execute;
mod inputs;
mod keep_awake;
mod profile;
mod run_slots;
mod runner;

use crate::error::{Error, Result};
use crate::ir::{Graph, ValueType};
use crate::ops::BuildOptions;
use crate::plan::{ExecutionPlan, OptLevel};
use crate::tensor::{self, Tensor, Value};
use execute::ShapeValues;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub(crate) use execute::run_plan;
pub use profile::{NodeTime, OpTime, Profile};

/// Most iterations one Loop may run: a model whose loop never ends gets an error, not a hang.
pub(crate) const MAX_LOOP_ITERATIONS: u64 = 1 << 24;

/// Most distinct input-shape signatures whose shape-only values are kept.
const SHAPE_CACHE_CAPACITY: usize = 64;

/// Configures and builds a `Session`.
#[derive(Clone, Debug)]
pub struct SessionBuilder {
    threads: Option<usize>,
    spin: bool,
    opt_level: OptLevel,
    limits: Limits,
    options: BuildOptions,
}

/// Resource limits of a session (see docs/security.md).
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_tensor_bytes: usize,
    max_total_bytes: usize,
    max_nodes: usize,
    max_subgraph_depth: usize,
}

/// Default limit on the nodes of a graph, subgraphs included.
pub const DEFAULT_MAX_NODES: usize = 1_000_000;
/// Default limit on the nesting of subgraphs (If branches, Loop and Scan bodies).
pub const DEFAULT_MAX_SUBGRAPH_DEPTH: usize = 32;

impl SessionBuilder {
    /// Threads a run uses (default: all available cores). One thread runs on the caller's
    /// thread, with no pool; more run on the session's own pool, which the caller waits on.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.max(1));
        self
    }

    /// Whether idle workers keep spinning between the steps of a run (default on), so that the
    /// next parallel step starts on every thread at once instead of waiting for sleeping ones
    /// to wake (tens of µs per step on a VM). Costs CPU time while a run waits on serial
    /// steps, and up to ~0.3 ms after each run; turn it off when sharing cores with other work
    /// matters more than latency (onnxruntime's `allow_spinning`).
    pub fn spin_wait(mut self, on: bool) -> Self {
        self.spin = on;
        self
    }

    /// Graph optimization level (default: `OptLevel::All`).
    pub fn optimization(mut self, level: OptLevel) -> Self {
        self.opt_level = level;
        self
    }

    /// Runs MatMul and Gemm nodes whose weight is a constant f32 matrix on a dynamically
    /// quantized int8 GEMM (default off): weights quantized per output column to int8 once,
    /// activations per row to uint8 at each run, exact i32 accumulation, fp32 epilogue.
    /// An accuracy cost for speed where integer dot products are fast (`infer_kernels::qgemm`
    /// has the details); results stay deterministic. Every other node is unchanged.
    pub fn int8_matmul(mut self, on: bool) -> Self {
        self.options.int8_matmul = on;
        self
    }

    /// Runs constant 3×3 stride-1 convolutions (up to 256×256 channels) as Winograd
    /// F(4×4, 3×3) (default on): a quarter of the multiplies and 4× those layers' weight
    /// memory, at a slightly larger rounding error (ResNet-50's logits within 2e-5 of the
    /// largest against onnxruntime, 1e-5 without). Off, they run on the im2col GEMM as
    /// onnxruntime's do.
    pub fn winograd(mut self, on: bool) -> Self {
        self.options.winograd = on;
        self
    }

    /// Hands the output of a pointwise convolution to the depthwise convolutions reading it
    /// channels last (MobileNet's and EfficientNet's expand → depthwise edge), so the
    /// depthwise layer needs no transpose into its 16-channel vectors. Off by default: on
    /// MobileNet-v2 and EfficientNet-B0 it measured up to 6 % slower overall (faster 56×56 and
    /// 28×28 layers, slower 112×112 stride-2 depthwise and 14×14 expansions; BENCHMARKS.md
    /// section 16). Results are the same up to rounding order.
    pub fn channels_last(mut self, on: bool) -> Self {
        self.options.channels_last = on;
        self
    }

    /// Hands channel-blocked (NCHW16c) tensors between the convolutions that read and write
    /// them (MobileNet's and EfficientNet's expand → depthwise → project chains), so depthwise
    /// layers need no transposes into and out of their 16-channel vectors (see
    /// `plan::blocked`). On by default; `channels_last` takes precedence. Results are the same
    /// up to rounding order.
    pub fn blocked_layout(mut self, on: bool) -> Self {
        self.options.blocked_layout = on;
        self
    }

    /// Largest tensor, in bytes, that the session may create (default
    /// `infer::tensor::DEFAULT_MAX_TENSOR_BYTES`, 16 GiB). Checked before allocation on every
    /// thread of the session's pool, for shapes computed from data, and again on every
    /// kernel output; an oversized tensor is an error naming the node.
    pub fn max_tensor_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_tensor_bytes = bytes;
        self
    }

    /// Most bytes of tensors one run may hold at once (default
    /// `infer::tensor::DEFAULT_MAX_TOTAL_BYTES`, 32 GiB): the run's inputs and the
    /// intermediates and outputs it has computed and not yet dropped, subgraph runs included
    /// (model weights are not counted). Checked as each kernel returns; going over is an error
    /// naming the node. Each run has its own count: concurrent runs of one session are bounded
    /// separately, so the process may hold this much per run in flight. On top of it, a
    /// session keeps up to 64 MiB of dead activations' buffers for reuse by later outputs
    /// (freed with the session).
    pub fn max_total_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_total_bytes = bytes;
        self
    }

    /// Most nodes the loaded graph may hold, subgraphs included (default 1,000,000).
    pub fn max_nodes(mut self, n: usize) -> Self {
        self.limits.max_nodes = n;
        self
    }

    /// Deepest nesting of subgraphs the loaded graph may have (default 32; the top-level
    /// graph is depth 0, an If branch of it depth 1).
    pub fn max_subgraph_depth(mut self, depth: usize) -> Self {
        self.limits.max_subgraph_depth = depth;
        self
    }

    /// Loads and plans a model: an ONNX file, a Keras model (`.keras`, legacy `.h5`) or a
    /// Hugging Face folder (`config.json` beside its weights). Files are recognized by
    /// content, not extension; a weights-only file (safetensors, PyTorch, Keras
    /// `.weights.h5`, TensorFlow bundle) is refused, as it says nothing of the architecture.
    pub fn build_from_file(self, path: impl AsRef<Path>) -> Result<Session> {
        use crate::weights::WeightFormat;
        let path = path.as_ref();
        let format = match crate::weights::tf_bundle_index(path) {
            Some(_) => Some(WeightFormat::TfBundle),
            None if path.is_dir() => None,
            None => crate::weights::detect_file_format(path)?,
        };
        let graph = if let Some(WeightFormat::Keras | WeightFormat::Hdf5) = format {
            crate::arch::keras::load_file(path)?
        } else if path.is_dir() && format.is_none() {
            crate::arch::load_folder(path)?
        } else if let Some(format) = format {
            // Read it first: a hostile or whole-model pickle gets its own, precise error.
            crate::weights::load_weights(path)?;
            return Err(Error::Format {
                path: path.into(),
                reason: format!(
                    "a {format} weights file holds no architecture: load the Hugging Face \
                     folder with its config.json instead, or inspect it with `infer inspect` \
                     (TensorFlow graphs are not executed)"
                ),
            });
        } else {
            crate::onnx::load_file(path)?
        };
        self.build_from_graph(graph).map_err(|e| match e {
            Error::Graph(reason) => Error::Format {
                path: path.into(),
                reason,
            },
            other => other,
        })
    }

    /// Loads and plans an ONNX model held in memory.
    pub fn build_from_bytes(self, bytes: impl Into<bytes::Bytes>) -> Result<Session> {
        let graph = crate::onnx::load_bytes(bytes.into(), None)?;
        self.build_from_graph(graph)
    }

    /// Plans an IR graph (from any loader).
    pub fn build_from_graph(self, graph: Graph) -> Result<Session> {
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        check_graph_size(&graph, &self.limits)?;
        let runner = runner::Runner::new(threads, self.limits)?;
        // The session's spare pool is current while the plan is built: weights decoded to be
        // prepacked borrow its buffers, which the first runs then reuse for activations.
        let spares: Arc<tensor::spare::SparePool> = Arc::default();
        let plan = runner.run(|| {
            let _spares = tensor::spare::RunScope::enter(spares.clone());
            // Small prepacked weights share huge pages instead of faulting in 4 KiB at a time.
            let _arena = infer_kernels::weight_arena::ArenaScope::enter();
            if let Some(n) = largest_undecoded_weight(&graph) {
                tensor::spare::reserve_for_decoding(n);
            }
            ExecutionPlan::build(graph, self.opt_level, self.options)
        })?;
        Ok(Session {
            plan,
            runner,
            threads,
            shape_cache: Mutex::new(HashMap::new()),
            spares,
            keeper: (self.spin && threads > 1).then(keep_awake::Keeper::new),
        })
    }
}

/// Elements of the largest misaligned `f32` weight that a MatMul or Gemm prepacks, which
/// planning decodes into a temporary copy first (see `spare::reserve_for_decoding`). A Conv
/// reads its weights a few output channels at a time as it packs them; other constants (an
/// embedding table read by Gather) keep a decoded copy of their own.
fn largest_undecoded_weight(graph: &Graph) -> Option<usize> {
    graph
        .nodes
        .iter()
        .filter(|n| n.domain.is_empty() && matches!(n.op_type.as_str(), "MatMul" | "Gemm"))
        .filter_map(|n| graph.initializers.get(&(*n.inputs.get(1)?)?))
        .filter_map(Tensor::undecoded_f32_len)
        .max()
}

/// Refuses a graph with more nodes or deeper subgraphs than `limits` allow.
fn check_graph_size(graph: &Graph, limits: &Limits) -> Result<()> {
    /// Adds the nodes of `g` and its subgraphs to `count`; returns their deepest nesting.
    fn walk(g: &Graph, depth: usize, limits: &Limits, count: &mut usize) -> Result<usize> {
        if depth > limits.max_subgraph_depth {
            return Err(Error::Graph(format!(
                "subgraphs nest deeper than the {}-level limit",
                limits.max_subgraph_depth
            )));
        }
        *count += g.nodes.len();
        let mut deepest = depth;
        for sub in g.nodes.iter().flat_map(|n| n.attrs.graphs()) {
            deepest = deepest.max(walk(sub, depth + 1, limits, count)?);
        }
        Ok(deepest)
    }
    let mut count = 0;
    walk(graph, 0, limits, &mut count)?;
    if count > limits.max_nodes {
        return Err(Error::Graph(format!(
            "the graph has {count} nodes, over the {}-node limit",
            limits.max_nodes
        )));
    }
    Ok(())
}

/// Name and declared type of a model input or output.
#[derive(Clone, Debug)]
pub struct IoInfo {
    pub name: String,
    pub ty: ValueType,
}

/// A loaded, planned model. `Send + Sync`: share it (e.g. in an `Arc`) and call `run` from
/// many threads at once.
pub struct Session {
    plan: ExecutionPlan,
    /// Inline on the caller's thread, or the session's pool.
    runner: runner::Runner,
    threads: usize,
    shape_cache: Mutex<HashMap<Vec<Vec<usize>>, Arc<ShapeValues>>>,
    /// Dead activations' buffers, reused by later outputs of this session's runs.
    spares: Arc<tensor::spare::SparePool>,
    /// Keeps idle workers spinning during runs (`None`: one thread, or spinning turned off).
    keeper: Option<Arc<keep_awake::Keeper>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("threads", &self.threads)
            .field("steps", &self.plan.num_steps())
            .finish()
    }
}

impl Session {
    pub fn builder() -> SessionBuilder {
        SessionBuilder {
            threads: None,
            spin: true,
            opt_level: OptLevel::All,
            limits: Limits {
                max_tensor_bytes: tensor::DEFAULT_MAX_TENSOR_BYTES,
                max_total_bytes: tensor::DEFAULT_MAX_TOTAL_BYTES,
                max_nodes: DEFAULT_MAX_NODES,
                max_subgraph_depth: DEFAULT_MAX_SUBGRAPH_DEPTH,
            },
            options: BuildOptions::default(),
        }
    }

    /// The model's inputs, in order.
    pub fn inputs(&self) -> Vec<IoInfo> {
        self.plan
            .input_values()
            .map(|v| IoInfo {
                name: v.name.clone(),
                ty: v.ty.clone(),
            })
            .collect()
    }

    /// The model's outputs, in order.
    pub fn outputs(&self) -> Vec<IoInfo> {
        self.plan
            .output_values()
            .map(|v| IoInfo {
                name: v.name.clone(),
                ty: v.ty.clone(),
            })
            .collect()
    }

    /// Threads a run uses (see `SessionBuilder::threads`).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The execution plan (for inspection and tooling).
    pub fn plan(&self) -> &ExecutionPlan {
        &self.plan
    }

    /// Runs the model on named inputs; returns every output, in the model's order.
    pub fn run<'a, I>(&self, inputs: I) -> Result<Outputs>
    where
        I: IntoIterator<Item = (&'a str, Tensor)>,
    {
        self.run_values(inputs.into_iter().map(|(n, t)| (n, Value::Tensor(t))))
    }

    /// Like `run`, for models whose inputs include sequences or optionals.
    pub fn run_values<'a, I>(&self, inputs: I) -> Result<Outputs>
    where
        I: IntoIterator<Item = (&'a str, Value)>,
    {
        let bound = inputs::bind_named(&self.plan, inputs)?;
        self.run_bound(bound, None)
    }

    /// Like `run`, adding each kernel's time to `profile` (per operator type).
    pub fn run_profiled<'a, I>(&self, inputs: I, profile: &mut Profile) -> Result<Outputs>
    where
        I: IntoIterator<Item = (&'a str, Tensor)>,
    {
        let values = inputs.into_iter().map(|(n, t)| (n, Value::Tensor(t)));
        let bound = inputs::bind_named(&self.plan, values)?;
        self.run_bound(bound, Some(profile))
    }

    /// Runs the model on inputs given in the model's input order.
    pub fn run_positional(&self, inputs: Vec<Tensor>) -> Result<Outputs> {
        let values = inputs.into_iter().map(Value::Tensor).collect();
        let bound = inputs::bind_positional(&self.plan, values)?;
        self.run_bound(bound, None)
    }

    fn run_bound(
        &self,
        bound: Vec<(usize, Value)>,
        profile: Option<&mut Profile>,
    ) -> Result<Outputs> {
        let key = shape_signature(&bound);
        let cached = self
            .shape_cache
            .lock()
            .map_err(|_| Error::Input("shape cache poisoned by an earlier panic".into()))?
            .get(&key)
            .cloned();
        let (values, recorded) = self.runner.run(|| {
            // Created on the pool's thread, which carries the session's total limit.
            let mut live = tensor::alloc::RunBytes::top_level();
            let _spares = tensor::spare::RunScope::enter(self.spares.clone());
            execute::execute(
                &self.plan,
                bound,
                cached.as_deref(),
                true,
                profile,
                self.keeper.as_ref(),
                &mut live,
            )
        })?;
        if let Some(recorded) = recorded {
            if let Ok(mut cache) = self.shape_cache.lock() {
                if cache.len() >= SHAPE_CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(key, Arc::new(recorded));
            }
        }
        let names = self.plan.output_values().map(|v| v.name.clone()).collect();
        Ok(Outputs { names, values })
    }
}

/// The shapes of every bound input tensor (sequence items and optional contents included,
/// with a marker per container), which decide the shape-only values.
fn shape_signature(bound: &[(usize, Value)]) -> Vec<Vec<usize>> {
    fn push(v: &Value, key: &mut Vec<Vec<usize>>) {
        match v {
            Value::Tensor(t) => key.push(t.shape().to_vec()),
            Value::Sequence(s) => {
                key.push(vec![usize::MAX, s.len()]);
                key.extend(s.items().iter().map(|t| t.shape().to_vec()));
            }
            Value::Optional(inner) => {
                key.push(vec![usize::MAX - 1, usize::from(inner.is_some())]);
                if let Some(inner) = inner {
                    push(inner, key);
                }
            }
        }
    }
    let mut key = Vec::with_capacity(bound.len());
    for (_, v) in bound {
        push(v, &mut key);
    }
    key
}

/// A run's outputs, in the model's output order; index by position or look up by name.
#[derive(Clone, Debug)]
pub struct Outputs {
    names: Vec<String>,
    values: Vec<Value>,
}

impl Outputs {
    /// The tensor output called `name` (`None` if there is none, or it is not a tensor).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        match self.get_value(name)? {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The output called `name`, whatever its kind.
    pub fn get_value(&self, name: &str) -> Option<&Value> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.values[i])
    }

    /// Every output, in order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// (name, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.names.iter().map(|s| s.as_str()).zip(&self.values)
    }
}

/// Output `i` as a tensor.
///
/// # Panics
/// If `i` is out of range or output `i` is a sequence or optional (use `values()` for those).
impl std::ops::Index<usize> for Outputs {
    type Output = Tensor;
    fn index(&self, i: usize) -> &Tensor {
        match &self.values[i] {
            Value::Tensor(t) => t,
            other => panic!(
                "output '{}' is a {}, not a tensor; read it with Outputs::values",
                self.names[i],
                other.kind()
            ),
        }
    }
}

impl IntoIterator for Outputs {
    type Item = (String, Value);
    type IntoIter = std::iter::Zip<std::vec::IntoIter<String>, std::vec::IntoIter<Value>>;
    fn into_iter(self) -> Self::IntoIter {
        self.names.into_iter().zip(self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn session_is_send_and_sync() {
        assert_send_sync::<Session>();
    }
}
