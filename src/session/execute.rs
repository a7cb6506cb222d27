//! The executor: walks a plan's steps over a per-run value table.

use super::keep_awake::Keeper;
use super::profile::Profile;
use crate::error::{Error, Result};
use crate::ir::ValueId;
use crate::plan::{ExecutionPlan, Step};
use crate::tensor::alloc::RunBytes;
use crate::tensor::spare;
use crate::tensor::{Tensor, Value};
use std::sync::Arc;
use std::time::Instant;

/// Values of the shape-only subgraph for one set of input shapes.
pub(crate) type ShapeValues = Vec<(ValueId, Value)>;

/// Runs a subgraph's plan from inside a kernel (already on the session's pool): `inputs`
/// binds its formal inputs and captures by value id.
pub(crate) fn run_plan(plan: &ExecutionPlan, inputs: Vec<(ValueId, Value)>) -> Result<Vec<Value>> {
    let mut live = RunBytes::nested();
    // No keeper: the enclosing run's steps keep the workers polling (see `keep_awake`).
    execute(plan, inputs, None, false, None, None, &mut live).map(|(outputs, _)| outputs)
}

/// Runs `plan` once.
///
/// With `cached` shape values, shape-only steps are skipped and their outputs taken from the
/// cache; otherwise they run and (when `record`) their outputs are returned for caching.
/// With a `profile`, each step's kernel time is added to it; with a `keeper`, it is poked
/// before each step. Every value stored in the run's table (inputs, cached shape values,
/// outputs of steps) is charged to `live` until its last reader has run.
pub(crate) fn execute(
    plan: &ExecutionPlan,
    inputs: Vec<(ValueId, Value)>,
    cached: Option<&ShapeValues>,
    record: bool,
    mut profile: Option<&mut Profile>,
    keeper: Option<&Arc<Keeper>>,
    live: &mut RunBytes,
) -> Result<(Vec<Value>, Option<ShapeValues>)> {
    if let Some(p) = profile.as_deref_mut() {
        p.begin_run();
    }
    let mut env: Vec<Option<Value>> = vec![None; plan.values.len()];
    for (v, t) in inputs {
        live.charge(value_bytes(&t))
            .map_err(|e| Error::Op(format!("input '{}': {e}", plan.values[v].name)))?;
        env[v] = Some(t);
    }
    if let Some(values) = cached {
        for (v, t) in values {
            live.charge(value_bytes(t))?;
            env[*v] = Some(t.clone());
        }
    }
    let mut recorded = if record && cached.is_none() {
        Some(Vec::new())
    } else {
        None
    };

    for step in &plan.steps {
        if let Some(k) = keeper {
            k.poke();
        }
        if !(step.shape_only && cached.is_some()) {
            let start = profile.is_some().then(Instant::now);
            let outputs = run_step(plan, step, &env)?;
            if let (Some(p), Some(start)) = (profile.as_deref_mut(), start) {
                p.record(&step.name, &step.op_type, start.elapsed(), || {
                    input_shapes(plan, step, &env)
                });
            }
            let produced = outputs.len();
            let mut outputs = outputs.into_iter();
            for (i, slot) in step.outputs.iter().enumerate() {
                let t = outputs.next();
                let (Some(v), Some(t)) = (slot, t) else {
                    if slot.is_some() {
                        return Err(step_error(
                            step,
                            format!("output #{i} was requested but the kernel produced {produced}"),
                        ));
                    }
                    continue;
                };
                check_size(step, &t)?;
                live.charge(value_bytes(&t))
                    .map_err(|e| e.at_node(&step.name, &step.op_type))?;
                if step.shape_only {
                    if let Some(rec) = recorded.as_mut() {
                        rec.push((*v, t.clone()));
                    }
                }
                if let Some(old) = env[*v].replace(t) {
                    live.release(value_bytes(&old));
                }
            }
        }
        for &v in &step.last_use_of {
            if let Some(old) = env[v].take() {
                live.release(value_bytes(&old));
                if let Value::Tensor(t) = old {
                    spare::give_back(t);
                }
            }
        }
    }

    let outputs = plan
        .outputs
        .iter()
        .map(|&v| {
            plan.constants[v]
                .clone()
                .map(Value::Tensor)
                .or_else(|| env[v].clone())
                .ok_or_else(|| {
                    Error::Graph(format!("output '{}' was not computed", plan.values[v].name))
                })
        })
        .collect::<Result<Vec<Value>>>()?;
    Ok((outputs, recorded))
}

/// Runs one step's kernel on its inputs: plain tensors for tensor kernels (the fast path),
/// values for the sequence/optional kernels.
/// `[1,64,56,56] [64,64,3,3] -`: the shapes of a step's inputs (`-` for an absent one), for
/// profiles.
fn input_shapes(plan: &ExecutionPlan, step: &Step, env: &[Option<Value>]) -> String {
    let shape_of = |v: &Option<ValueId>| {
        let shape = v.and_then(|v| match (&plan.constants[v], &env[v]) {
            (Some(t), _) | (None, Some(Value::Tensor(t))) => Some(t.shape().to_vec()),
            _ => None,
        });
        shape.map_or("-".to_string(), |s| {
            let dims: Vec<String> = s.iter().map(usize::to_string).collect();
            format!("[{}]", dims.join(","))
        })
    };
    let shapes: Vec<String> = step.inputs.iter().map(shape_of).collect();
    shapes.join(" ")
}

fn run_step(plan: &ExecutionPlan, step: &Step, env: &[Option<Value>]) -> Result<Vec<Value>> {
    let missing = |v: ValueId| {
        step_error(
            step,
            format!("input '{}' has no value", plan.values[v].name),
        )
    };
    let outputs = if step.kernel.takes_values() {
        let constants: Vec<Option<Value>> = step
            .inputs
            .iter()
            .map(|v| v.and_then(|v| plan.constants[v].clone().map(Value::Tensor)))
            .collect();
        let args = step
            .inputs
            .iter()
            .zip(&constants)
            .map(|(v, constant)| match v {
                None => Ok(None),
                Some(v) => constant
                    .as_ref()
                    .or(env[*v].as_ref())
                    .map(Some)
                    .ok_or_else(|| missing(*v)),
            })
            .collect::<Result<Vec<Option<&Value>>>>()?;
        step.kernel.run_values(&args)
    } else {
        let args = step
            .inputs
            .iter()
            .map(|v| match v {
                None => Ok(None),
                Some(v) => match (plan.constants[*v].as_ref(), env[*v].as_ref()) {
                    (Some(t), _) | (None, Some(Value::Tensor(t))) => Ok(Some(t)),
                    (None, Some(other)) => Err(step_error(
                        step,
                        format!(
                            "input '{}' is a {}; this operator takes tensors",
                            plan.values[*v].name,
                            other.kind()
                        ),
                    )),
                    (None, None) => Err(missing(*v)),
                },
            })
            .collect::<Result<Vec<Option<&Tensor>>>>()?;
        step.kernel
            .run(&args)
            .map(|ts| ts.into_iter().map(Value::Tensor).collect())
    };
    outputs.map_err(|e| e.at_node(&step.name, &step.op_type))
}

/// Refuses an output over the session's tensor limit: the checked allocation path covers
/// shapes computed from data; this covers every other way a kernel builds its output.
fn check_size(step: &Step, v: &Value) -> Result<()> {
    if let Value::Tensor(t) = v {
        // Strings count their characters too: one byte stands for one "element".
        let (n, size) = match t.dtype() {
            crate::tensor::DType::String => (t.nbytes(), 1),
            d => (t.len(), d.size()),
        };
        crate::tensor::check_tensor_bytes(n, size)
            .map_err(|e| e.at_node(&step.name, &step.op_type))?;
    }
    Ok(())
}

/// The bytes a value's tensors hold.
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Tensor(t) => t.len().saturating_mul(t.dtype().size()),
        Value::Sequence(s) => s
            .items()
            .iter()
            .map(|t| t.len().saturating_mul(t.dtype().size()))
            .fold(0, usize::saturating_add),
        Value::Optional(inner) => inner.as_deref().map_or(0, value_bytes),
    }
}

fn step_error(step: &Step, reason: String) -> Error {
    Error::Node {
        node: step.name.clone(),
        op_type: step.op_type.clone(),
        reason,
    }
}
