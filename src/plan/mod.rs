//! From an IR `Graph` to an `ExecutionPlan`: optimizer passes, topological order, kernels
//! built once (weights prepacked), value lifetimes, and the shape-only subgraph.

mod blocked;
mod channels_last;
mod fold;
pub mod fuse;
mod gradient;
mod topo;

pub use topo::topological_order;

use crate::error::{Error, Result};
use crate::ir::{Graph, Value, ValueId};
use crate::ops::{self, BuildCtx, BuildOptions, Kernel};
use crate::tensor::Tensor;
use infer_kernels::parallel;
use rayon::prelude::*;

/// How much the planner rewrites the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptLevel {
    /// Only what execution needs: topological order and dead-node removal.
    None,
    /// Constant folding and fusions (the default).
    All,
}

/// One node, ready to run.
#[derive(Debug)]
pub(crate) struct Step {
    pub name: String,
    pub op_type: String,
    pub kernel: Box<dyn Kernel>,
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<Option<ValueId>>,
    /// Runtime values whose last reader is this step: dropped right after it runs, so peak
    /// memory follows the largest live set.
    pub last_use_of: Vec<ValueId>,
    /// The step's outputs depend only on input shapes and constants (the `Shape → Gather →
    /// Concat → Reshape` chains of exported models), so they are cached per input shapes.
    pub shape_only: bool,
}

/// A planned model: steps in execution order over numbered values.
#[derive(Debug)]
pub struct ExecutionPlan {
    pub(crate) values: Vec<Value>,
    pub(crate) inputs: Vec<ValueId>,
    pub(crate) outputs: Vec<ValueId>,
    /// Constant value of each value id (initializers and folded results), if any.
    pub(crate) constants: Vec<Option<Tensor>>,
    pub(crate) steps: Vec<Step>,
}

impl ExecutionPlan {
    /// Optimizes `g` and builds its plan, its kernels built with `options`.
    pub fn build(mut g: Graph, level: OptLevel, options: BuildOptions) -> Result<ExecutionPlan> {
        check_outputs_defined(&g)?;
        gradient::expand_gradients(&mut g)?;
        if level == OptLevel::All {
            fold::fold_constants(&mut g)?;
            fold::remove_dead_nodes(&mut g);
            fuse::run_all(&mut g)?;
            if options.channels_last {
                channels_last::choose(&mut g)?;
            } else if options.blocked_layout {
                blocked::choose(&mut g)?;
            }
        }
        fold::remove_dead_nodes(&mut g);

        let order = topological_order(&g)?;
        let mut constants: Vec<Option<Tensor>> = vec![None; g.values.len()];
        for (v, t) in g.initializers.drain() {
            constants[v] = Some(t);
        }
        let default_opset = g.onnx_opset();
        // Kernels are built (their weights prepacked) in parallel on the session's pool: the
        // nodes are independent here, and prepacking is most of planning a CNN. Each node's
        // mapped weight pages are dropped as soon as its kernel holds the packed copy, so
        // only the nodes in flight have theirs resident.
        // The caller's spare pool, if any, serves the temporary decoded copies of weights.
        let spares = crate::tensor::spare::current();
        let kernels: Vec<Result<Box<dyn Kernel>>> =
            parallel::collect_vec(order.par_iter().map(|&i| {
                let _spares = spares.clone().map(crate::tensor::spare::RunScope::enter);
                let node = &g.nodes[i];
                let ctx = BuildCtx {
                    node,
                    opset: g.opsets.get(&node.domain).copied().unwrap_or(default_opset),
                    constants: node
                        .inputs
                        .iter()
                        .map(|v| v.and_then(|v| constants[v].as_ref()))
                        .collect(),
                    options,
                };
                let kernel = ops::build(&ctx);
                release_mapped_pages(&g, &node.inputs, &constants);
                kernel
            }));
        let mut steps = Vec::with_capacity(order.len());
        // In topological order, so the error reported is the first node's, as when sequential.
        for (i, kernel) in order.into_iter().zip(kernels) {
            let node = &g.nodes[i];
            let kernel = kernel?;
            drop_decoded_copies(&node.inputs, &mut constants);
            steps.push(Step {
                name: node.name.clone(),
                op_type: node.op_type.clone(),
                kernel,
                inputs: node.inputs.clone(),
                outputs: node.outputs.clone(),
                last_use_of: Vec::new(),
                shape_only: false,
            });
        }
        for file in &g.mapped_files {
            file.release_resident_pages();
        }
        let mut plan = ExecutionPlan {
            values: g.values,
            inputs: g.inputs,
            outputs: g.outputs,
            constants,
            steps,
        };
        plan.mark_last_uses();
        plan.mark_shape_only();
        Ok(plan)
    }

    /// Records, for each runtime value, the step after which nothing reads it.
    fn mark_last_uses(&mut self) {
        let mut last: Vec<Option<usize>> = vec![None; self.values.len()];
        for (i, s) in self.steps.iter().enumerate() {
            for v in s.inputs.iter().flatten() {
                last[*v] = Some(i);
            }
        }
        for &o in &self.outputs {
            last[o] = None;
        }
        for (v, step) in last.into_iter().enumerate() {
            if let Some(i) = step {
                if self.constants[v].is_none() {
                    self.steps[i].last_use_of.push(v);
                }
            }
        }
    }

    fn mark_shape_only(&mut self) {
        let mut shape_only = vec![false; self.values.len()];
        for s in &mut self.steps {
            let reads_shape_of_input = matches!(s.op_type.as_str(), "Shape" | "Size");
            let mut any_shape = false;
            let all_known = s.inputs.iter().flatten().all(|&v| {
                any_shape |= shape_only[v];
                shape_only[v] || self.constants[v].is_some()
            });
            s.shape_only = reads_shape_of_input || (all_known && any_shape);
            if s.shape_only {
                for v in s.outputs.iter().flatten() {
                    shape_only[*v] = true;
                }
            }
        }
    }

    /// The graph's input values, in declaration order.
    pub fn input_values(&self) -> impl Iterator<Item = &Value> {
        self.inputs.iter().map(|&v| &self.values[v])
    }

    /// The graph's output values, in declaration order.
    pub fn output_values(&self) -> impl Iterator<Item = &Value> {
        self.outputs.iter().map(|&v| &self.values[v])
    }

    /// Number of steps (nodes) left after optimization.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Op types of the planned steps, in execution order.
    pub fn step_op_types(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.op_type.as_str())
    }
}

/// After a kernel is built, its constant inputs have usually been prepacked: drop their
/// resident file pages (and, in `drop_decoded_copies`, their decoded copies), so that weights
/// are not held twice. Constants still read at run time simply fault in / decode again on
/// first use.
fn release_mapped_pages(g: &Graph, inputs: &[Option<ValueId>], constants: &[Option<Tensor>]) {
    for v in inputs.iter().flatten() {
        if let Some(bytes) = constants[*v].as_ref().and_then(Tensor::backing_bytes) {
            for file in &g.mapped_files {
                file.release_range(bytes);
            }
        }
    }
}

/// Drops the decoded copies the inputs' constants may have cached while a kernel was built.
fn drop_decoded_copies(inputs: &[Option<ValueId>], constants: &mut [Option<Tensor>]) {
    for v in inputs.iter().flatten() {
        if let Some(t) = constants[*v].as_mut() {
            *t = t.without_decoded_copy();
        }
    }
}

fn check_outputs_defined(g: &Graph) -> Result<()> {
    for &o in &g.outputs {
        let produced = g.initializers.contains_key(&o)
            || g.inputs.contains(&o)
            || g.captures.contains(&o)
            || g.nodes.iter().any(|n| n.outputs.contains(&Some(o)));
        if !produced {
            return Err(Error::Graph(format!(
                "graph output '{}' is never computed",
                g.value_name(o)
            )));
        }
    }
    Ok(())
}
