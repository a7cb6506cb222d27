//! Sequence and optional values: SequenceEmpty, SequenceConstruct, SequenceAt, SequenceInsert,
//! SequenceErase, SequenceLength, ConcatFromSequence, SplitToSequence, Optional,
//! OptionalHasElement and OptionalGetElement. (SequenceMap runs a subgraph: see `control`.)
//!
//! Sequences hold shared tensors, so building one never copies element data.

use super::movement::{concat_tensors, split_tensor};
use super::strings::Positions;
use super::util::normalize_axis;
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{DType, Sequence, Tensor, Value};
use crate::{ensure, op_err};

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    let attrs = ctx.attrs();
    let kernel: Result<SequenceOp> = match op {
        "SequenceEmpty" => element_type(ctx).map(SequenceOp::Empty),
        "SequenceConstruct" => Ok(SequenceOp::Construct),
        "SequenceAt" => Ok(SequenceOp::At),
        "SequenceInsert" => Ok(SequenceOp::Insert),
        "SequenceErase" => Ok(SequenceOp::Erase),
        "SequenceLength" => Ok(SequenceOp::Length),
        "ConcatFromSequence" => (|| {
            let axis = attrs
                .int("axis")?
                .ok_or_else(|| op_err!("ConcatFromSequence needs an 'axis' attribute"))?;
            let new_axis = attrs.int_or("new_axis", 0)? != 0;
            Ok(SequenceOp::Concat { axis, new_axis })
        })(),
        "SplitToSequence" => (|| {
            Ok(SequenceOp::Split {
                axis: attrs.int_or("axis", 0)?,
                keepdims: attrs.int_or("keepdims", 1)? != 0,
            })
        })(),
        "Optional" => Ok(SequenceOp::Optional),
        "OptionalHasElement" => Ok(SequenceOp::HasElement),
        "OptionalGetElement" => Ok(SequenceOp::GetElement),
        _ => return None,
    };
    Some(kernel.map(|k| Box::new(k) as Box<dyn Kernel>))
}

/// SequenceEmpty's element type: the `dtype` attribute, float by default.
fn element_type(ctx: &BuildCtx) -> Result<DType> {
    match ctx.attrs().int("dtype")? {
        None => Ok(DType::F32),
        Some(code) => i32::try_from(code)
            .ok()
            .and_then(DType::from_onnx)
            .ok_or_else(|| op_err!("unsupported sequence element type {code}")),
    }
}

#[derive(Debug)]
enum SequenceOp {
    Empty(DType),
    Construct,
    At,
    Insert,
    Erase,
    Length,
    Concat { axis: i64, new_axis: bool },
    Split { axis: i64, keepdims: bool },
    Optional,
    HasElement,
    GetElement,
}

impl Kernel for SequenceOp {
    fn takes_values(&self) -> bool {
        true
    }

    fn run_values(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>> {
        let arg = |i: usize| -> Result<&Value> {
            inputs
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| op_err!("missing input #{i}"))
        };
        let opt_tensor = |i: usize| -> Result<Option<&Tensor>> {
            inputs
                .get(i)
                .copied()
                .flatten()
                .map(Value::as_tensor)
                .transpose()
        };
        let out = match self {
            SequenceOp::Empty(dtype) => Value::Sequence(Sequence::new(*dtype, Vec::new())?),
            SequenceOp::Construct => {
                let items = (0..inputs.len())
                    .map(|i| arg(i)?.as_tensor().cloned())
                    .collect::<Result<Vec<Tensor>>>()?;
                let seq = Sequence::from_tensors(items)
                    .ok_or_else(|| op_err!("SequenceConstruct needs at least one tensor"))??;
                Value::Sequence(seq)
            }
            SequenceOp::At => {
                let seq = arg(0)?.as_sequence()?;
                let at = position(opt_tensor(1)?, seq.len(), false)?
                    .ok_or_else(|| op_err!("SequenceAt needs a position"))?;
                Value::Tensor(seq.items()[at].clone())
            }
            SequenceOp::Insert => {
                let seq = arg(0)?.as_sequence()?;
                let t = arg(1)?.as_tensor()?;
                let at = position(opt_tensor(2)?, seq.len(), true)?.unwrap_or(seq.len());
                let mut items = seq.items().to_vec();
                items.insert(at, t.clone());
                Value::Sequence(Sequence::new(seq.dtype(), items)?)
            }
            SequenceOp::Erase => {
                let seq = arg(0)?.as_sequence()?;
                ensure!(!seq.is_empty(), "cannot erase from an empty sequence");
                let at = position(opt_tensor(1)?, seq.len(), false)?.unwrap_or(seq.len() - 1);
                let mut items = seq.items().to_vec();
                items.remove(at);
                Value::Sequence(Sequence::new(seq.dtype(), items)?)
            }
            SequenceOp::Length => {
                let n = arg(0)?.as_sequence()?.len();
                Value::Tensor(Tensor::scalar(n as i64))
            }
            SequenceOp::Concat { axis, new_axis } => {
                let seq = arg(0)?.as_sequence()?;
                Value::Tensor(concat_from_sequence(seq, *axis, *new_axis)?)
            }
            SequenceOp::Split { axis, keepdims } => {
                let x = arg(0)?.as_tensor()?;
                let items = split_to_sequence(x, opt_tensor(1)?, *axis, *keepdims)?;
                Value::Sequence(Sequence::new(x.dtype(), items)?)
            }
            SequenceOp::Optional => {
                let inner = inputs.first().copied().flatten().cloned();
                Value::Optional(inner.map(Box::new))
            }
            SequenceOp::HasElement => {
                let has = match inputs.first().copied().flatten() {
                    None | Some(Value::Optional(None)) => false,
                    Some(_) => true,
                };
                Value::Tensor(Tensor::scalar(has))
            }
            SequenceOp::GetElement => match arg(0)? {
                Value::Optional(Some(inner)) => (**inner).clone(),
                Value::Optional(None) => return Err(op_err!("the optional input is empty")),
                plain => plain.clone(),
            },
        };
        Ok(vec![out])
    }
}

/// A position into a sequence of `len` items: negative counts from the back; with `insert`,
/// `len` itself (the end) is valid too. `None` when the position input is omitted.
fn position(t: Option<&Tensor>, len: usize, insert: bool) -> Result<Option<usize>> {
    let Some(t) = t else { return Ok(None) };
    let v = t.to_i64_vec()?;
    ensure!(
        v.len() == 1,
        "the position must be a scalar, got shape {:?}",
        t.shape()
    );
    let p = v[0];
    let n = len as i64;
    let limit = if insert { n } else { n - 1 };
    ensure!(
        (-n..=limit).contains(&p),
        "position {p} is out of range for a sequence of {len}"
    );
    Ok(Some(if p < 0 { p + n } else { p } as usize))
}

/// ConcatFromSequence: the items joined along `axis`, or stacked along a new `axis`.
fn concat_from_sequence(seq: &Sequence, axis: i64, new_axis: bool) -> Result<Tensor> {
    let first = seq
        .items()
        .first()
        .ok_or_else(|| op_err!("cannot concatenate an empty sequence"))?;
    if seq.dtype() == DType::String {
        let mut positions = Positions::default();
        let items = seq
            .items()
            .iter()
            .map(|t| positions.of(t))
            .collect::<Result<_>>()?;
        let moved = concat_from_sequence(&Sequence::new(DType::I64, items)?, axis, new_axis)?;
        return positions.strings(&moved);
    }
    if !new_axis {
        let items: Vec<&Tensor> = seq.items().iter().collect();
        return concat_tensors(&items, axis);
    }
    let at = normalize_axis(axis, first.rank() + 1)?;
    let expanded = seq
        .items()
        .iter()
        .map(|t| {
            let mut shape = t.shape().to_vec();
            shape.insert(at, 1);
            t.reshape(shape)
        })
        .collect::<Result<Vec<Tensor>>>()?;
    let items: Vec<&Tensor> = expanded.iter().collect();
    concat_tensors(&items, at as i64)
}

/// SplitToSequence: pieces of the given sizes (a scalar `split` means equal chunks, the last
/// possibly shorter); without `split`, every index along `axis`, squeezed unless `keepdims`.
fn split_to_sequence(
    x: &Tensor,
    split: Option<&Tensor>,
    axis: i64,
    keepdims: bool,
) -> Result<Vec<Tensor>> {
    if x.dtype() == DType::String {
        let mut positions = Positions::default();
        let parts = split_to_sequence(&positions.of(x)?, split, axis, keepdims)?;
        return parts.iter().map(|p| positions.strings(p)).collect();
    }
    let axis = normalize_axis(axis, x.rank())?;
    let n = x.shape()[axis];
    let to_size = |s: i64| {
        usize::try_from(s).map_err(|_| op_err!("split sizes must be non-negative, got {s}"))
    };
    let sizes = match split {
        None => vec![1; n],
        Some(s) if s.rank() == 0 => {
            let chunk = to_size(s.to_i64_vec()?[0])?;
            ensure!(chunk > 0, "the split chunk size must be positive");
            let mut sizes = vec![chunk; n / chunk];
            if !n.is_multiple_of(chunk) {
                sizes.push(n % chunk);
            }
            sizes
        }
        Some(s) => s
            .to_i64_vec()?
            .into_iter()
            .map(to_size)
            .collect::<Result<_>>()?,
    };
    let parts = split_tensor(x, axis, &sizes)?;
    if split.is_some() || keepdims {
        return Ok(parts);
    }
    parts
        .into_iter()
        .map(|t| {
            let mut shape = t.shape().to_vec();
            shape.remove(axis);
            t.reshape(shape)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Attrs, Node};

    fn kernel(op: &str, attrs: &[(&str, Attr)]) -> Box<dyn Kernel> {
        let node = Node {
            name: "test".into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: Vec::new(),
            outputs: vec![Some(0)],
            attrs: Attrs(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        };
        let ctx = BuildCtx {
            node: &node,
            opset: 18,
            constants: Vec::new(),
            options: Default::default(),
        };
        build(op, &ctx).unwrap().unwrap()
    }

    fn run(op: &str, attrs: &[(&str, Attr)], inputs: &[Option<Value>]) -> Result<Value> {
        let refs: Vec<Option<&Value>> = inputs.iter().map(Option::as_ref).collect();
        let mut out = kernel(op, attrs).run_values(&refs)?;
        Ok(out.remove(0))
    }

    fn t(shape: &[usize], v: &[f32]) -> Value {
        Value::Tensor(Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap())
    }

    fn i(v: i64) -> Value {
        Value::Tensor(Tensor::scalar(v))
    }

    fn shapes(v: &Value) -> Vec<Vec<usize>> {
        v.as_sequence()
            .unwrap()
            .items()
            .iter()
            .map(|t| t.shape().to_vec())
            .collect()
    }

    #[test]
    fn construct_insert_erase_at_and_length() {
        let seq = run(
            "SequenceConstruct",
            &[],
            &[Some(t(&[1], &[1.0])), Some(t(&[2], &[2.0, 3.0]))],
        )
        .unwrap();
        // Insert at the front (position -2 == 0), then erase the last.
        let seq = run(
            "SequenceInsert",
            &[],
            &[Some(seq), Some(t(&[3], &[4.0, 5.0, 6.0])), Some(i(-2))],
        )
        .unwrap();
        assert_eq!(shapes(&seq), vec![vec![3], vec![1], vec![2]]);
        let seq = run("SequenceErase", &[], &[Some(seq), None]).unwrap();
        assert_eq!(shapes(&seq), vec![vec![3], vec![1]]);
        let at = run("SequenceAt", &[], &[Some(seq.clone()), Some(i(-1))]).unwrap();
        assert_eq!(at.as_tensor().unwrap().as_slice::<f32>().unwrap(), &[1.0]);
        let len = run("SequenceLength", &[], &[Some(seq.clone())]).unwrap();
        assert_eq!(len.as_tensor().unwrap().as_slice::<i64>().unwrap(), &[2]);
        assert!(run("SequenceAt", &[], &[Some(seq), Some(i(2))]).is_err());
    }

    #[test]
    fn split_then_concat_round_trips() {
        let x = t(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let seq = run("SplitToSequence", &[], &[Some(x.clone()), Some(i(2))]).unwrap();
        assert_eq!(shapes(&seq), vec![vec![2, 2], vec![1, 2]]);
        let back = run(
            "ConcatFromSequence",
            &[("axis", Attr::Int(0))],
            &[Some(seq)],
        )
        .unwrap();
        assert_eq!(
            back.as_tensor().unwrap().as_slice::<f32>().unwrap(),
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        // Stacking the rows along a new last axis gives the transpose.
        let s = rows_stacked_as_columns(x);
        assert_eq!(s.shape(), &[2, 3]);
        assert_eq!(
            s.as_slice::<f32>().unwrap(),
            &[1.0, 3.0, 5.0, 2.0, 4.0, 6.0]
        );
    }

    /// A `[3, 2]` tensor split into its three rows (each `[2]`), then stacked along a new last
    /// axis.
    fn rows_stacked_as_columns(x: Value) -> Tensor {
        let rows = run(
            "SplitToSequence",
            &[("keepdims", Attr::Int(0))],
            &[Some(x), None],
        )
        .unwrap();
        assert_eq!(shapes(&rows), vec![vec![2], vec![2], vec![2]]);
        let stacked = run(
            "ConcatFromSequence",
            &[("axis", Attr::Int(-1)), ("new_axis", Attr::Int(1))],
            &[Some(rows)],
        )
        .unwrap();
        stacked.as_tensor().unwrap().clone()
    }

    #[test]
    fn strings_split_and_concat_through_sequences() {
        let words = ["a", "b", "c", "d", "e", "f"].map(String::from).to_vec();
        let x = Value::Tensor(Tensor::from_strings(vec![3, 2], words).unwrap());
        let s = rows_stacked_as_columns(x);
        assert_eq!(s.shape(), &[2, 3]);
        assert_eq!(s.as_strings().unwrap(), ["a", "c", "e", "b", "d", "f"]);
    }

    #[test]
    fn optionals_wrap_test_and_unwrap() {
        let some = run("Optional", &[], &[Some(t(&[1], &[7.0]))]).unwrap();
        let none = run("Optional", &[], &[None]).unwrap();
        let has = |v: Option<Value>| {
            let out = run("OptionalHasElement", &[], &[v]).unwrap();
            out.as_tensor().unwrap().as_slice::<bool>().unwrap()[0]
        };
        assert!(has(Some(some.clone())));
        assert!(!has(Some(none.clone())));
        assert!(!has(None));
        let got = run("OptionalGetElement", &[], &[Some(some)]).unwrap();
        assert_eq!(got.as_tensor().unwrap().as_slice::<f32>().unwrap(), &[7.0]);
        assert!(run("OptionalGetElement", &[], &[Some(none)]).is_err());
    }
}
