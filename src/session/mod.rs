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

use crate::error::{Error, Result};
use crate::ir::{Graph, ValueType};
use crate::plan::{ExecutionPlan, OptLevel};
use crate::tensor::Tensor;
use execute::ShapeValues;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub(crate) use execute::run_plan;

/// Most iterations one Loop may run: a model whose loop never ends gets an error, not a hang.
pub(crate) const MAX_LOOP_ITERATIONS: u64 = 1 << 24;

/// Most distinct input-shape signatures whose shape-only values are kept.
const SHAPE_CACHE_CAPACITY: usize = 64;

/// Configures and builds a `Session`.
#[derive(Clone, Debug)]
pub struct SessionBuilder {
    threads: Option<usize>,
    opt_level: OptLevel,
}

impl SessionBuilder {
    /// Threads of the session's own pool (default: all available cores).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.max(1));
        self
    }

    /// Graph optimization level (default: `OptLevel::All`).
    pub fn optimization(mut self, level: OptLevel) -> Self {
        self.opt_level = level;
        self
    }

    /// Loads and plans a model: an ONNX file, or a Hugging Face folder (`config.json` beside
    /// its weights). Files are recognized by content, not extension; a weights-only file
    /// (safetensors, PyTorch) is refused, as it says nothing of the architecture.
    pub fn build_from_file(self, path: impl AsRef<Path>) -> Result<Session> {
        let path = path.as_ref();
        let graph = if path.is_dir() {
            crate::arch::load_folder(path)?
        } else if let Some(format) = crate::weights::detect_file_format(path)? {
            // Read it first: a hostile or whole-model pickle gets its own, precise error.
            crate::weights::load_weights(path)?;
            return Err(Error::Format {
                path: path.into(),
                reason: format!(
                    "a {format} weights file holds no architecture: load the Hugging Face \
                     folder with its config.json instead, or inspect it with `infer inspect`"
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
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("infer-{i}"))
            .build()
            .map_err(|e| Error::Input(format!("cannot start {threads} threads: {e}")))?;
        let plan = pool.install(|| ExecutionPlan::build(graph, self.opt_level))?;
        Ok(Session {
            plan,
            pool,
            threads,
            shape_cache: Mutex::new(HashMap::new()),
        })
    }
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
    pool: rayon::ThreadPool,
    threads: usize,
    shape_cache: Mutex<HashMap<Vec<Vec<usize>>, Arc<ShapeValues>>>,
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
            opt_level: OptLevel::All,
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

    /// Threads of this session's pool.
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
        let bound = inputs::bind_named(&self.plan, inputs)?;
        self.run_bound(bound)
    }

    /// Runs the model on inputs given in the model's input order.
    pub fn run_positional(&self, inputs: Vec<Tensor>) -> Result<Outputs> {
        let bound = inputs::bind_positional(&self.plan, inputs)?;
        self.run_bound(bound)
    }

    fn run_bound(&self, bound: Vec<(usize, Tensor)>) -> Result<Outputs> {
        let key: Vec<Vec<usize>> = bound.iter().map(|(_, t)| t.shape().to_vec()).collect();
        let cached = self
            .shape_cache
            .lock()
            .map_err(|_| Error::Input("shape cache poisoned by an earlier panic".into()))?
            .get(&key)
            .cloned();
        let (tensors, recorded) = self
            .pool
            .install(|| execute::execute(&self.plan, bound, cached.as_deref(), true))?;
        if let Some(values) = recorded {
            if let Ok(mut cache) = self.shape_cache.lock() {
                if cache.len() >= SHAPE_CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(key, Arc::new(values));
            }
        }
        let names = self.plan.output_values().map(|v| v.name.clone()).collect();
        Ok(Outputs { names, tensors })
    }
}

/// A run's outputs, in the model's output order; index by position or look up by name.
#[derive(Clone, Debug)]
pub struct Outputs {
    names: Vec<String>,
    tensors: Vec<Tensor>,
}

impl Outputs {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.tensors[i])
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// (name, tensor) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(|s| s.as_str()).zip(&self.tensors)
    }
}

impl std::ops::Index<usize> for Outputs {
    type Output = Tensor;
    fn index(&self, i: usize) -> &Tensor {
        &self.tensors[i]
    }
}

impl IntoIterator for Outputs {
    type Item = (String, Tensor);
    type IntoIter = std::iter::Zip<std::vec::IntoIter<String>, std::vec::IntoIter<Tensor>>;
    fn into_iter(self) -> Self::IntoIter {
        self.names.into_iter().zip(self.tensors)
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
