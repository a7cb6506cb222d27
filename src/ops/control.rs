//! Control flow: If, Loop and Scan, which run planned subgraphs.
//!
//! A subgraph reads outer values through its `captures`; the loader appended those outer
//! values to the node's inputs, after the node's own ONNX inputs. Captures that are constants
//! at build time are folded into the subgraph before it is planned.

use super::util::{input, normalize_axis, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::{Error, Result};
use crate::ir::ValueId;
use crate::plan::{ExecutionPlan, OptLevel};
use crate::session::{run_plan, MAX_LOOP_ITERATIONS};
use crate::tensor::{DType, Sequence, Tensor, Value};
use crate::{ensure, op_err, with_dtype};

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "If" => If::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "Loop" => Loop::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "Scan" => Scan::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "SequenceMap" => SequenceMap::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        _ => return None,
    })
}

/// A planned subgraph and how the node's values bind to it.
#[derive(Debug)]
pub(super) struct Body {
    /// The attribute it came from, for error messages.
    attr: &'static str,
    plan: ExecutionPlan,
    inputs: Vec<ValueId>,
    /// Index of the node's first capture input (= its number of ONNX inputs).
    first_capture: usize,
    /// Captures bound at run time: (position among the node's captures, subgraph value).
    captures: Vec<(usize, ValueId)>,
    /// Declared element type of each output, where known.
    output_dtypes: Vec<Option<DType>>,
}

impl Body {
    pub(super) fn build(ctx: &BuildCtx, attr: &'static str) -> Result<Body> {
        let g = ctx
            .attrs()
            .graph(attr)?
            .ok_or_else(|| op_err!("missing graph attribute '{attr}'"))?;
        let first_capture = ctx
            .node
            .inputs
            .len()
            .checked_sub(g.captures.len())
            .ok_or_else(|| op_err!("'{attr}' captures more values than the node reads"))?;
        let mut g = (**g).clone();
        let mut captures = Vec::new();
        for (i, &v) in g.captures.iter().enumerate() {
            match ctx.constant(first_capture + i) {
                Some(t) => {
                    g.initializers.insert(v, t.clone());
                }
                None => captures.push((i, v)),
            }
        }
        let inputs = g.inputs.clone();
        let output_dtypes = g.outputs.iter().map(|&v| g.values[v].ty.dtype).collect();
        let plan = ExecutionPlan::build(g, OptLevel::All, ctx.options)
            .map_err(|e| op_err!("in '{attr}': {e}"))?;
        Ok(Body {
            attr,
            plan,
            inputs,
            first_capture,
            captures,
            output_dtypes,
        })
    }

    /// Runs the subgraph on its formal inputs `args`; `node_input(i)` is the node's input
    /// `i`, whose tail holds the captured outer values.
    fn run(
        &self,
        args: Vec<Value>,
        node_input: &dyn Fn(usize) -> Result<Value>,
    ) -> Result<Vec<Value>> {
        ensure!(
            args.len() == self.inputs.len(),
            "'{}' takes {} inputs, got {}",
            self.attr,
            self.inputs.len(),
            args.len()
        );
        let mut bound: Vec<(ValueId, Value)> = self.inputs.iter().copied().zip(args).collect();
        for &(i, v) in &self.captures {
            bound.push((v, node_input(self.first_capture + i)?));
        }
        run_plan(&self.plan, bound).map_err(|e| match e {
            Error::Node { .. } | Error::Op(_) => op_err!("in '{}': {e}", self.attr),
            other => other,
        })
    }

    fn num_outputs(&self) -> usize {
        self.output_dtypes.len()
    }

    /// Runs a body whose inputs and outputs are all tensors (Scan's).
    pub(super) fn run_tensors(
        &self,
        args: Vec<Tensor>,
        node_inputs: &[Option<&Tensor>],
    ) -> Result<Vec<Tensor>> {
        let args = args.into_iter().map(Value::Tensor).collect();
        self.run(args, &|i| input(node_inputs, i).cloned().map(Value::Tensor))?
            .into_iter()
            .map(Value::into_tensor)
            .collect()
    }
}

/// Node input `i` as a value, for control-flow kernels that carry sequences and optionals.
fn value_input(inputs: &[Option<&Value>], i: usize) -> Result<Value> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .cloned()
        .ok_or_else(|| op_err!("missing input #{i}"))
}

fn scalar_bool(t: &Tensor, what: &str) -> Result<bool> {
    let v = t.as_slice::<bool>()?;
    ensure!(
        v.len() == 1,
        "{what} must hold one bool, got shape {:?}",
        t.shape()
    );
    Ok(v[0])
}

fn scalar_i64(t: &Tensor, what: &str) -> Result<i64> {
    let v = t.as_slice::<i64>()?;
    ensure!(
        v.len() == 1,
        "{what} must hold one int64, got shape {:?}",
        t.shape()
    );
    Ok(v[0])
}

/// `If`: runs `then_branch` or `else_branch`; their outputs may differ in shape.
#[derive(Debug)]
struct If {
    then_branch: Body,
    else_branch: Body,
}

impl If {
    fn build(ctx: &BuildCtx) -> Result<If> {
        let k = If {
            then_branch: Body::build(ctx, "then_branch")?,
            else_branch: Body::build(ctx, "else_branch")?,
        };
        ensure!(
            k.then_branch.num_outputs() == k.else_branch.num_outputs(),
            "the branches have {} and {} outputs",
            k.then_branch.num_outputs(),
            k.else_branch.num_outputs()
        );
        Ok(k)
    }
}

impl Kernel for If {
    fn takes_values(&self) -> bool {
        true
    }

    fn run_values(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>> {
        let cond = value_input(inputs, 0)?;
        let branch = if scalar_bool(cond.as_tensor()?, "the condition")? {
            &self.then_branch
        } else {
            &self.else_branch
        };
        branch.run(Vec::new(), &|i| value_input(inputs, i))
    }
}

/// `Loop`: body(iteration_num, cond, carried...) -> (cond, carried..., scan outputs...),
/// repeated while the trip count (input M) and the condition allow; scan outputs are stacked
/// along a new axis 0.
#[derive(Debug)]
struct Loop {
    body: Body,
    carried: usize,
}

impl Loop {
    fn build(ctx: &BuildCtx) -> Result<Loop> {
        let body = Body::build(ctx, "body")?;
        let carried = body
            .inputs
            .len()
            .checked_sub(2)
            .ok_or_else(|| op_err!("the body must take iteration_num and cond"))?;
        ensure!(
            body.first_capture == 2 + carried,
            "the body takes {carried} loop-carried values, the node gives {}",
            body.first_capture.saturating_sub(2)
        );
        ensure!(
            body.num_outputs() > carried,
            "the body must return cond and {carried} loop-carried values"
        );
        Ok(Loop { body, carried })
    }
}

impl Kernel for Loop {
    fn takes_values(&self) -> bool {
        true
    }

    fn run_values(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>> {
        let opt_tensor = |i: usize| inputs.get(i).copied().flatten().map(Value::as_tensor);
        let trip_count = opt_tensor(0)
            .transpose()?
            .map(|t| scalar_i64(t, "the trip count M"))
            .transpose()?;
        let mut cond = match opt_tensor(1).transpose()? {
            Some(t) => scalar_bool(t, "the condition")?,
            None => true,
        };
        let mut carried = (2..2 + self.carried)
            .map(|i| value_input(inputs, i))
            .collect::<Result<Vec<Value>>>()?;
        let mut scans: Vec<Vec<Tensor>> =
            vec![Vec::new(); self.body.num_outputs() - 1 - carried.len()];
        let mut i: i64 = 0;
        while cond && trip_count.is_none_or(|m| i < m) {
            ensure!(
                (i as u64) < MAX_LOOP_ITERATIONS,
                "the loop runs past {MAX_LOOP_ITERATIONS} iterations"
            );
            let mut args = vec![
                Value::Tensor(Tensor::scalar(i)),
                Value::Tensor(Tensor::scalar(cond)),
            ];
            args.append(&mut carried);
            let mut outs = self
                .body
                .run(args, &|i| value_input(inputs, i))?
                .into_iter();
            cond = match outs.next() {
                Some(t) => scalar_bool(t.as_tensor()?, "the body's condition output")?,
                None => return Err(op_err!("the body returned no condition")),
            };
            carried.extend(outs.by_ref().take(self.carried));
            for (scan, t) in scans.iter_mut().zip(outs) {
                scan.push(t.into_tensor()?);
            }
            i += 1;
        }
        let scan_dtypes = &self.body.output_dtypes[1 + self.carried..];
        for (scan, dtype) in scans.into_iter().zip(scan_dtypes) {
            carried.push(Value::Tensor(stack(&scan, 0, dtype.unwrap_or(DType::F32))?));
        }
        Ok(carried)
    }
}

/// `Scan`: body(state..., slices...) -> (state..., output slices...), once per position along
/// the scan axis of the scan inputs; output slices are stacked along their scan axes.
/// Opset 8's form has a leading batch axis on every input and output and an optional
/// `sequence_lens` input (only full-length sequences are supported).
#[derive(Debug)]
struct Scan {
    body: Body,
    states: usize,
    /// Opset 8: inputs start with `sequence_lens`, and axis 0 is a batch axis.
    batched: bool,
    input_axes: Vec<i64>,
    input_reversed: Vec<bool>,
    output_axes: Vec<i64>,
    output_reversed: Vec<bool>,
}

impl Scan {
    fn build(ctx: &BuildCtx) -> Result<Scan> {
        let attrs = ctx.attrs();
        let body = Body::build(ctx, "body")?;
        let batched = ctx.opset < 9;
        let scan_inputs = attrs
            .int("num_scan_inputs")?
            .ok_or_else(|| op_err!("missing attribute 'num_scan_inputs'"))?;
        let scan_inputs = usize::try_from(scan_inputs)
            .ok()
            .filter(|&m| m >= 1 && m <= body.inputs.len())
            .ok_or_else(|| op_err!("num_scan_inputs {scan_inputs} is out of range"))?;
        let states = body.inputs.len() - scan_inputs;
        ensure!(
            body.first_capture == states + scan_inputs + usize::from(batched),
            "the body takes {} inputs, the node gives {}",
            states + scan_inputs,
            body.first_capture
        );
        ensure!(
            body.num_outputs() >= states,
            "the body must return the {states} state values"
        );
        let scan_outputs = body.num_outputs() - states;
        let flags = |name: &str, n: usize| -> Result<Vec<bool>> {
            match attrs.ints(name)? {
                None => Ok(vec![false; n]),
                Some(v) => {
                    ensure!(v.len() == n, "'{name}' must have {n} entries");
                    Ok(v.iter().map(|&d| d != 0).collect())
                }
            }
        };
        let axes = |name: &str, n: usize| -> Result<Vec<i64>> {
            match attrs.ints(name)? {
                None => Ok(vec![0; n]),
                Some(v) => {
                    ensure!(v.len() == n, "'{name}' must have {n} entries");
                    Ok(v.to_vec())
                }
            }
        };
        let (input_axes, input_reversed, output_axes, output_reversed) = if batched {
            (
                vec![0; scan_inputs],
                flags("directions", scan_inputs)?,
                vec![0; scan_outputs],
                vec![false; scan_outputs],
            )
        } else {
            (
                axes("scan_input_axes", scan_inputs)?,
                flags("scan_input_directions", scan_inputs)?,
                axes("scan_output_axes", scan_outputs)?,
                flags("scan_output_directions", scan_outputs)?,
            )
        };
        Ok(Scan {
            body,
            states,
            batched,
            input_axes,
            input_reversed,
            output_axes,
            output_reversed,
        })
    }

    /// One scan over unbatched `states` and `scanned` inputs: final states, then outputs.
    fn scan(
        &self,
        mut states: Vec<Tensor>,
        scanned: &[&Tensor],
        node_inputs: &[Option<&Tensor>],
    ) -> Result<Vec<Tensor>> {
        let axes = scanned
            .iter()
            .zip(&self.input_axes)
            .map(|(t, &a)| normalize_axis(a, t.rank()))
            .collect::<Result<Vec<usize>>>()?;
        let len = scanned[0].shape()[axes[0]];
        for (t, &a) in scanned.iter().zip(&axes) {
            ensure!(
                t.shape()[a] == len,
                "scan inputs disagree on the sequence length ({} vs {len})",
                t.shape()[a]
            );
        }
        let mut outputs: Vec<Vec<Tensor>> = vec![Vec::new(); self.output_axes.len()];
        for step in 0..len {
            let mut args = std::mem::take(&mut states);
            for ((t, &a), &rev) in scanned.iter().zip(&axes).zip(&self.input_reversed) {
                args.push(slice_at(t, a, if rev { len - 1 - step } else { step })?);
            }
            let mut outs = self.body.run_tensors(args, node_inputs)?.into_iter();
            states.extend(outs.by_ref().take(self.states));
            for (out, t) in outputs.iter_mut().zip(outs) {
                out.push(t);
            }
        }
        let dtypes = &self.body.output_dtypes[self.states..];
        for (i, mut out) in outputs.into_iter().enumerate() {
            if self.output_reversed[i] {
                out.reverse();
            }
            let rank = out.first().map_or(0, |t| t.rank()) + 1;
            let axis = normalize_axis(self.output_axes[i], rank)?;
            states.push(stack(&out, axis, dtypes[i].unwrap_or(DType::F32))?);
        }
        Ok(states)
    }
}

impl Kernel for Scan {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let first = usize::from(self.batched);
        let states = (first..first + self.states)
            .map(|i| input(inputs, i).cloned())
            .collect::<Result<Vec<Tensor>>>()?;
        let scanned = (first + self.states..self.body.first_capture)
            .map(|i| input(inputs, i))
            .collect::<Result<Vec<&Tensor>>>()?;
        if !self.batched {
            return self.scan(states, &scanned, inputs);
        }
        // Opset 8: one scan per batch entry, results stacked back along the batch axis.
        let batch = states
            .iter()
            .chain(scanned.iter().copied())
            .map(|t| t.shape().first().copied())
            .next()
            .flatten()
            .ok_or_else(|| op_err!("batched Scan inputs need a batch axis"))?;
        if let Some(lens) = opt_input(inputs, 0) {
            let full = scanned[0].shape().get(1).copied().unwrap_or(0);
            ensure!(
                lens.to_i64_vec()?.iter().all(|&l| l == full as i64),
                "sequence_lens shorter than the scan inputs are not supported"
            );
        }
        let mut per_batch: Vec<Vec<Tensor>> = Vec::with_capacity(batch);
        for b in 0..batch {
            let s = states
                .iter()
                .map(|t| slice_at(t, 0, b))
                .collect::<Result<Vec<Tensor>>>()?;
            let x = scanned
                .iter()
                .map(|t| slice_at(t, 0, b))
                .collect::<Result<Vec<Tensor>>>()?;
            per_batch.push(self.scan(s, &x.iter().collect::<Vec<_>>(), inputs)?);
        }
        let outputs = self.body.num_outputs();
        (0..outputs)
            .map(|i| {
                let column: Vec<Tensor> = per_batch.iter().map(|r| r[i].clone()).collect();
                stack(&column, 0, self.body.output_dtypes[i].unwrap_or(DType::F32))
            })
            .collect()
    }
}

/// `SequenceMap`: runs `body` once per item of the input sequence; each extra input is
/// either a sequence (its item at the same position is passed) or a tensor (passed every
/// time). Each body output is collected into an output sequence.
#[derive(Debug)]
struct SequenceMap {
    body: Body,
}

impl SequenceMap {
    fn build(ctx: &BuildCtx) -> Result<SequenceMap> {
        let body = Body::build(ctx, "body")?;
        ensure!(
            body.first_capture == body.inputs.len(),
            "the body takes {} inputs, the node gives {}",
            body.inputs.len(),
            body.first_capture
        );
        Ok(SequenceMap { body })
    }
}

impl Kernel for SequenceMap {
    fn takes_values(&self) -> bool {
        true
    }

    fn run_values(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>> {
        let args = (0..self.body.first_capture)
            .map(|i| value_input(inputs, i))
            .collect::<Result<Vec<Value>>>()?;
        let len = args
            .first()
            .ok_or_else(|| op_err!("SequenceMap needs an input sequence"))?
            .as_sequence()?
            .len();
        for a in &args {
            if let Value::Sequence(s) = a {
                ensure!(
                    s.len() == len,
                    "the input sequences have different lengths ({len} and {})",
                    s.len()
                );
            }
        }
        let mut outputs: Vec<Vec<Tensor>> = vec![Vec::new(); self.body.num_outputs()];
        for i in 0..len {
            let step_args = args
                .iter()
                .map(|a| match a {
                    Value::Sequence(s) => Ok(Value::Tensor(s.items()[i].clone())),
                    Value::Tensor(t) => Ok(Value::Tensor(t.clone())),
                    Value::Optional(_) => Err(op_err!("SequenceMap takes no optional inputs")),
                })
                .collect::<Result<Vec<Value>>>()?;
            let outs = self.body.run(step_args, &|i| value_input(inputs, i))?;
            for (collected, out) in outputs.iter_mut().zip(outs) {
                collected.push(out.into_tensor()?);
            }
        }
        outputs
            .into_iter()
            .zip(&self.body.output_dtypes)
            .map(|(items, dtype)| {
                let dtype = items
                    .first()
                    .map(Tensor::dtype)
                    .or(*dtype)
                    .unwrap_or(DType::F32);
                Ok(Value::Sequence(Sequence::new(dtype, items)?))
            })
            .collect()
    }
}

/// The sub-tensor at `index` along `axis` (which is dropped from the shape).
fn slice_at(t: &Tensor, axis: usize, index: usize) -> Result<Tensor> {
    let shape = t.shape();
    ensure!(
        axis < shape.len() && index < shape[axis],
        "cannot take index {index} along axis {axis} of shape {shape:?}"
    );
    let inner: usize = shape[axis + 1..].iter().product();
    let n = shape[axis];
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    if inner == 0 {
        return Tensor::zeros(t.dtype(), out_shape);
    }
    // Strings are not a `with_dtype!` type, but they slice the same way.
    if let Ok(s) = t.as_strings() {
        return Tensor::from_strings(out_shape, block_at(s, n * inner, index * inner, inner));
    }
    with_dtype!(t.dtype(), T, {
        let data = t.as_slice::<T>()?;
        Tensor::from_vec(out_shape, block_at(data, n * inner, index * inner, inner))
    })
}

/// From each `block`-long piece of `data`, the `len` elements at `start`.
fn block_at<T: Clone>(data: &[T], block: usize, start: usize, len: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(data.len() / block.max(1) * len);
    for b in data.chunks_exact(block) {
        out.extend_from_slice(&b[start..start + len]);
    }
    out
}

/// Stacks same-shaped tensors along a new `axis`. With no parts, an empty 1-d tensor of
/// `dtype` (the shape of a part is unknown then).
fn stack(parts: &[Tensor], axis: usize, dtype: DType) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return Tensor::zeros(dtype, vec![0]);
    };
    for p in parts {
        ensure!(
            p.shape() == first.shape() && p.dtype() == first.dtype(),
            "stacked values differ: {} {:?} vs {} {:?}",
            p.dtype(),
            p.shape(),
            first.dtype(),
            first.shape()
        );
    }
    let mut shape = first.shape().to_vec();
    ensure!(axis <= shape.len(), "stack axis {axis} is out of range");
    let inner: usize = shape[axis..].iter().product();
    shape.insert(axis, parts.len());
    if first.dtype() == DType::String {
        let slices = parts
            .iter()
            .map(|p| p.as_strings())
            .collect::<Result<Vec<&[String]>>>()?;
        return Tensor::from_strings(shape, interleave(&slices, inner));
    }
    with_dtype!(first.dtype(), T, {
        let slices = parts
            .iter()
            .map(|p| p.as_slice::<T>())
            .collect::<Result<Vec<&[T]>>>()?;
        Tensor::from_vec(shape, interleave(&slices, inner))
    })
}

/// The `inner`-long runs of each slice in turn, run by run: the stacking of the slices.
fn interleave<T: Clone>(slices: &[&[T]], inner: usize) -> Vec<T> {
    let total = slices.iter().map(|s| s.len()).sum();
    let mut out = Vec::with_capacity(total);
    let outer = slices
        .first()
        .map_or(0, |s| s.len())
        .checked_div(inner)
        .unwrap_or(0);
    for o in 0..outer {
        for s in slices {
            out.extend_from_slice(&s[o * inner..(o + 1) * inner]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::ir::{Attr, Attrs, Graph, Node, ValueId, ValueType};
    use crate::{Session, Tensor};
    use std::collections::HashMap;
    use std::sync::Arc;

    /// A graph under construction: values by name, nodes as (op, inputs, outputs, attrs).
    #[derive(Default)]
    struct G(Graph);

    impl G {
        fn new() -> G {
            let mut g = Graph::default();
            g.opsets.insert(String::new(), 17);
            G(g)
        }

        fn v(&mut self, name: &str) -> ValueId {
            match self.0.values.iter().position(|v| v.name == name) {
                Some(id) => id,
                None => self.0.add_value(name, ValueType::default()),
            }
        }

        fn inputs(mut self, names: &[&str]) -> G {
            self.0.inputs = names.iter().map(|n| self.v(n)).collect();
            self
        }

        fn captures(mut self, names: &[&str]) -> G {
            self.0.captures = names.iter().map(|n| self.v(n)).collect();
            self
        }

        fn outputs(mut self, names: &[&str]) -> G {
            self.0.outputs = names.iter().map(|n| self.v(n)).collect();
            self
        }

        fn init(mut self, name: &str, t: Tensor) -> G {
            let id = self.v(name);
            self.0.initializers.insert(id, t);
            self
        }

        fn node(mut self, op: &str, ins: &[&str], outs: &[&str], attrs: Vec<(&str, Attr)>) -> G {
            let n = Node {
                name: format!("{op}_{}", self.0.nodes.len()),
                op_type: op.into(),
                domain: String::new(),
                inputs: ins
                    .iter()
                    .map(|n| (!n.is_empty()).then(|| self.v(n)))
                    .collect(),
                outputs: outs.iter().map(|n| Some(self.v(n))).collect(),
                attrs: Attrs(
                    attrs
                        .into_iter()
                        .map(|(k, a)| (k.to_string(), a))
                        .collect::<HashMap<_, _>>(),
                ),
            };
            self.0.nodes.push(n);
            self
        }

        fn graph(self) -> Attr {
            Attr::Graph(Arc::new(self.0))
        }

        fn session(self) -> Session {
            Session::builder()
                .threads(1)
                .build_from_graph(self.0)
                .unwrap()
        }
    }

    fn f32s(t: &Tensor) -> (Vec<usize>, Vec<f32>) {
        (t.shape().to_vec(), t.as_slice::<f32>().unwrap().to_vec())
    }

    fn vec1(v: &[f32]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    /// If whose branches read `t = Neg(x)`, which no outer node but the If reads.
    fn if_model() -> G {
        let then_branch = G::new()
            .captures(&["t"])
            .node("Add", &["t", "t"], &["y"], vec![])
            .outputs(&["y"]);
        let else_branch = G::new().captures(&["t"]).outputs(&["t"]);
        G::new()
            .inputs(&["c", "x"])
            .node("Neg", &["x"], &["t"], vec![])
            .node(
                "If",
                &["c", "t"],
                &["out"],
                vec![
                    ("then_branch", then_branch.graph()),
                    ("else_branch", else_branch.graph()),
                ],
            )
            .outputs(&["out"])
    }

    #[test]
    fn if_runs_the_taken_branch_with_captured_values() {
        let s = if_model().session();
        let x = vec1(&[1.0, -2.0]);
        let out = s
            .run_positional(vec![Tensor::scalar(true), x.clone()])
            .unwrap();
        assert_eq!(f32s(&out[0]), (vec![2], vec![-2.0, 4.0]));
        let out = s.run_positional(vec![Tensor::scalar(false), x]).unwrap();
        assert_eq!(f32s(&out[0]), (vec![2], vec![-1.0, 2.0]));
    }

    #[test]
    fn if_rejects_a_non_bool_condition() {
        let s = if_model().session();
        let err = s
            .run_positional(vec![Tensor::scalar(1.0f32), vec1(&[1.0])])
            .unwrap_err();
        assert!(err.to_string().contains("If"), "{err}");
    }

    #[test]
    fn if_on_constants_is_folded_away() {
        let mut m = if_model();
        m.0.inputs.clear();
        let m = m.init("c", Tensor::scalar(false)).init("x", vec1(&[3.0]));
        let s = m.session();
        assert_eq!(s.plan().num_steps(), 0);
        let out = s.run_positional(vec![]).unwrap();
        assert_eq!(f32s(&out[0]), (vec![1], vec![-3.0]));
    }

    /// Loop doubling `v` until it reaches `limit` (a capture), with `v` as scan output too.
    fn doubling_loop() -> G {
        let body = G::new()
            .inputs(&["i", "cond_in", "v"])
            .captures(&["limit"])
            .node("Add", &["v", "v"], &["v_out"], vec![])
            .node("Less", &["v_out", "limit"], &["cond_out"], vec![])
            .node("Identity", &["v_out"], &["scan"], vec![])
            .outputs(&["cond_out", "v_out", "scan"]);
        G::new()
            .inputs(&["m", "v0", "limit"])
            .init("c0", Tensor::scalar(true))
            .node(
                "Loop",
                &["m", "c0", "v0", "limit"],
                &["v_final", "scans"],
                vec![("body", body.graph())],
            )
            .outputs(&["v_final", "scans"])
    }

    #[test]
    fn loop_stops_on_the_condition_or_the_trip_count() {
        let s = doubling_loop().session();
        // 1 → 2, 4, 8: the condition 8 < 5 ends it after three iterations.
        let out = s
            .run_positional(vec![Tensor::scalar(10i64), vec1(&[1.0]), vec1(&[5.0])])
            .unwrap();
        assert_eq!(f32s(&out[0]), (vec![1], vec![8.0]));
        assert_eq!(f32s(&out[1]), (vec![3, 1], vec![2.0, 4.0, 8.0]));
        // The trip count ends it first.
        let out = s
            .run_positional(vec![Tensor::scalar(2i64), vec1(&[1.0]), vec1(&[100.0])])
            .unwrap();
        assert_eq!(f32s(&out[1]), (vec![2, 1], vec![2.0, 4.0]));
        // No iteration at all: the carried value passes through, the scan output is empty.
        let out = s
            .run_positional(vec![Tensor::scalar(0i64), vec1(&[1.0]), vec1(&[100.0])])
            .unwrap();
        assert_eq!(f32s(&out[0]), (vec![1], vec![1.0]));
        assert_eq!(out[1].shape(), &[0]);
    }

    /// `Scan(s0, xs) -> (s_final, ys)` over `body`, one scan input, with `attrs` added.
    fn scan_session(body: G, attrs: Vec<(&str, Attr)>) -> Session {
        let mut all = vec![("body", body.graph()), ("num_scan_inputs", Attr::Int(1))];
        all.extend(attrs);
        G::new()
            .inputs(&["s0", "xs"])
            .node("Scan", &["s0", "xs"], &["s_final", "ys"], all)
            .outputs(&["s_final", "ys"])
            .session()
    }

    #[test]
    fn scan_reverses_inputs_and_stacks_on_the_requested_axis() {
        let body = G::new()
            .inputs(&["s", "x"])
            .node("Add", &["s", "x"], &["s_out"], vec![])
            .node("Identity", &["s_out"], &["y"], vec![])
            .outputs(&["s_out", "y"]);
        let s = scan_session(
            body,
            vec![
                ("scan_input_directions", Attr::Ints(vec![1])),
                ("scan_output_axes", Attr::Ints(vec![-1])),
            ],
        );
        let xs = Tensor::from_vec(vec![3, 2], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let out = s.run_positional(vec![vec1(&[0.0, 0.0]), xs]).unwrap();
        // Rows in reverse: [5,6], [3,4], [1,2]; running sums [5,6], [8,10], [9,12].
        assert_eq!(f32s(&out[0]), (vec![2], vec![9.0, 12.0]));
        assert_eq!(
            f32s(&out[1]),
            (vec![2, 3], vec![5.0, 8.0, 9.0, 6.0, 10.0, 12.0])
        );
    }

    #[test]
    fn scan_slices_and_stacks_strings() {
        // Each step concatenates the state with a row: states "", "a", "ac", and the body
        // also emits each row, stacked back along axis 1.
        let body = G::new()
            .inputs(&["s", "x"])
            .node("StringConcat", &["s", "x"], &["s_out"], vec![])
            .node("Identity", &["x"], &["y"], vec![])
            .outputs(&["s_out", "y"]);
        let s = scan_session(body, vec![("scan_output_axes", Attr::Ints(vec![1]))]);
        let strings = |shape: Vec<usize>, v: &[&str]| {
            Tensor::from_strings(shape, v.iter().map(|s| s.to_string()).collect()).unwrap()
        };
        let xs = strings(vec![2, 2], &["a", "b", "c", "d"]);
        let out = s
            .run_positional(vec![strings(vec![2], &["", "-"]), xs])
            .unwrap();
        assert_eq!(out[0].as_strings().unwrap(), ["ac", "-bd"]);
        assert_eq!(out[1].shape(), &[2, 2]);
        assert_eq!(out[1].as_strings().unwrap(), ["a", "c", "b", "d"]);
    }
}
