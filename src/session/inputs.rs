//! Binding caller tensors to graph inputs, with checks against the declared types.

use crate::error::{Error, Result};
use crate::ir::{Dim, Value, ValueId};
use crate::plan::ExecutionPlan;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Binds named inputs; every graph input must be given exactly once.
pub(crate) fn bind_named<'a, I>(plan: &ExecutionPlan, inputs: I) -> Result<Vec<(ValueId, Tensor)>>
where
    I: IntoIterator<Item = (&'a str, Tensor)>,
{
    let mut given: HashMap<&str, Tensor> = HashMap::new();
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
        check(value, &t)?;
        bound.push((id, t));
    }
    Ok(bound)
}

/// Binds inputs in the graph's input order.
pub(crate) fn bind_positional(
    plan: &ExecutionPlan,
    inputs: Vec<Tensor>,
) -> Result<Vec<(ValueId, Tensor)>> {
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
        .map(|(&id, t)| {
            check(&plan.values[id], &t)?;
            Ok((id, t))
        })
        .collect()
}

/// Checks dtype, rank and fixed dimensions against the declaration.
fn check(value: &Value, t: &Tensor) -> Result<()> {
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
