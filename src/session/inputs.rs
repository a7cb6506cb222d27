//! Binding caller values to graph inputs, with checks against the declared types.

use crate::error::{Error, Result};
use crate::ir::{Dim, Value as Declared, ValueId, ValueKind};
use crate::plan::ExecutionPlan;
use crate::tensor::{Tensor, Value};
use std::collections::HashMap;

/// Binds named inputs; every graph input must be given exactly once.
pub(crate) fn bind_named<'a, I>(plan: &ExecutionPlan, inputs: I) -> Result<Vec<(ValueId, Value)>>
where
    I: IntoIterator<Item = (&'a str, Value)>,
{
    let mut given: HashMap<&str, Value> = HashMap::new();
    for (name, t) in inputs {
        if !plan.input_values().any(|v| v.name == name) {
            let names: Vec<&str> = plan.input_values().map(|v| v.name.as_str()).collect();
            return Err(Error::Input(format!(
                "the model has no input named '{name}' (its inputs: {})",
                names.join(", ")
            )));
        }
        if given.insert(name, t).is_some() {
            return Err(Error::Input(format!("input '{name}' is given twice")));
        }
    }
    let mut bound = Vec::with_capacity(plan.inputs.len());
    for &id in &plan.inputs {
        let value = &plan.values[id];
        let t = given.remove(value.name.as_str()).ok_or_else(|| {
            Error::Input(format!("missing input '{}' ({})", value.name, value.ty))
        })?;
        bound.push((id, check(value, t)?));
    }
    Ok(bound)
}

/// Binds inputs in the graph's input order.
pub(crate) fn bind_positional(
    plan: &ExecutionPlan,
    inputs: Vec<Value>,
) -> Result<Vec<(ValueId, Value)>> {
    if inputs.len() != plan.inputs.len() {
        let names: Vec<&str> = plan.input_values().map(|v| v.name.as_str()).collect();
        return Err(Error::Input(format!(
            "the model takes {} inputs ({}), got {}",
            plan.inputs.len(),
            names.join(", "),
            inputs.len()
        )));
    }
    plan.inputs
        .iter()
        .zip(inputs)
        .map(|(&id, t)| Ok((id, check(&plan.values[id], t)?)))
        .collect()
}

/// Checks a value against its declaration: its kind, then each tensor's dtype, rank and fixed
/// dimensions. A bare tensor or sequence given for an optional input is wrapped.
fn check(decl: &Declared, value: Value) -> Result<Value> {
    let mismatch = |got: &Value| {
        Error::Input(format!(
            "input '{}' must be a {}, got a {}",
            decl.name,
            decl.ty,
            got.kind()
        ))
    };
    match (decl.ty.kind, value) {
        (ValueKind::Tensor, Value::Tensor(t)) => check_tensor(decl, &t).map(|_| Value::Tensor(t)),
        (ValueKind::Sequence, Value::Sequence(s)) => {
            for t in s.items() {
                check_tensor(decl, t)?;
            }
            Ok(Value::Sequence(s))
        }
        (ValueKind::Optional | ValueKind::OptionalSequence, Value::Optional(None)) => {
            Ok(Value::Optional(None))
        }
        (ValueKind::Optional | ValueKind::OptionalSequence, Value::Optional(Some(inner))) => {
            let inner_kind = if decl.ty.kind == ValueKind::Optional {
                ValueKind::Tensor
            } else {
                ValueKind::Sequence
            };
            let mut inner_decl = decl.clone();
            inner_decl.ty.kind = inner_kind;
            let inner = check(&inner_decl, *inner)?;
            Ok(Value::Optional(Some(Box::new(inner))))
        }
        (ValueKind::Optional, Value::Tensor(t)) => {
            check_tensor(decl, &t)?;
            Ok(Value::Optional(Some(Box::new(Value::Tensor(t)))))
        }
        (ValueKind::OptionalSequence, Value::Sequence(s)) => {
            for t in s.items() {
                check_tensor(decl, t)?;
            }
            Ok(Value::Optional(Some(Box::new(Value::Sequence(s)))))
        }
        (_, other) => Err(mismatch(&other)),
    }
}

/// Checks dtype, rank and fixed dimensions against the declaration.
fn check_tensor(value: &Declared, t: &Tensor) -> Result<()> {
    if let Some(d) = value.ty.dtype {
        if d != t.dtype() {
            return Err(Error::Input(format!(
                "input '{}' must be {d}, got {}",
                value.name,
                t.dtype()
            )));
        }
    }
    if let Some(dims) = &value.ty.shape {
        if dims.len() != t.rank() {
            return Err(Error::Input(format!(
                "input '{}' must have rank {} ({}), got shape {:?}",
                value.name,
                dims.len(),
                value.ty,
                t.shape()
            )));
        }
        for (i, (d, &n)) in dims.iter().zip(t.shape()).enumerate() {
            if let Dim::Known(k) = d {
                if *k != n {
                    return Err(Error::Input(format!(
                        "input '{}' dimension {i} must be {k}, got shape {:?}",
                        value.name,
                        t.shape()
                    )));
                }
            }
        }
    }
    Ok(())
}
