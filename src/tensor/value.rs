//! Runtime values beyond plain tensors: ONNX sequences and optionals.
//!
//! Nearly every value a model computes is a tensor, and kernels see `&Tensor`s. Only the
//! sequence and optional operators (and control flow that carries such values) work on
//! `Value`s; the executor hands everything else plain tensors.

use super::{DType, Tensor};
use crate::error::{Error, Result};

/// A value flowing between nodes.
#[derive(Clone, Debug)]
pub enum Value {
    Tensor(Tensor),
    Sequence(Sequence),
    /// An optional: `None` is the empty optional; otherwise a tensor or a sequence.
    Optional(Option<Box<Value>>),
}

/// An ONNX sequence: tensors of one element type, whose shapes may differ.
#[derive(Clone, Debug)]
pub struct Sequence {
    dtype: DType,
    items: Vec<Tensor>,
}

impl Sequence {
    /// A sequence of `items`, all of element type `dtype`.
    pub fn new(dtype: DType, items: Vec<Tensor>) -> Result<Sequence> {
        if let Some(t) = items.iter().find(|t| t.dtype() != dtype) {
            return Err(Error::Op(format!(
                "a sequence of {dtype} cannot hold a {} tensor",
                t.dtype()
            )));
        }
        Ok(Sequence { dtype, items })
    }

    /// A sequence of the tensors in `items`, typed by the first (`None` when empty).
    pub fn from_tensors(items: Vec<Tensor>) -> Option<Result<Sequence>> {
        let dtype = items.first()?.dtype();
        Some(Sequence::new(dtype, items))
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn items(&self) -> &[Tensor] {
        &self.items
    }

    pub fn into_items(self) -> Vec<Tensor> {
        self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Value {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Tensor(_) => "tensor",
            Value::Sequence(_) => "sequence",
            Value::Optional(_) => "optional",
        }
    }

    pub fn as_tensor(&self) -> Result<&Tensor> {
        match self {
            Value::Tensor(t) => Ok(t),
            other => Err(Error::Op(format!(
                "expected a tensor, got a {}",
                other.kind()
            ))),
        }
    }

    pub fn into_tensor(self) -> Result<Tensor> {
        match self {
            Value::Tensor(t) => Ok(t),
            other => Err(Error::Op(format!(
                "expected a tensor, got a {}",
                other.kind()
            ))),
        }
    }

    pub fn as_sequence(&self) -> Result<&Sequence> {
        match self {
            Value::Sequence(s) => Ok(s),
            other => Err(Error::Op(format!(
                "expected a sequence, got a {}",
                other.kind()
            ))),
        }
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Value {
        Value::Tensor(t)
    }
}

impl From<Sequence> for Value {
    fn from(s: Sequence) -> Value {
        Value::Sequence(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_holds_one_element_type() {
        let a = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
        assert!(Sequence::new(DType::F32, vec![a.clone()]).is_ok());
        assert!(Sequence::new(DType::F32, vec![a, b]).is_err());
        assert!(Sequence::from_tensors(vec![]).is_none());
    }

    #[test]
    fn accessors_name_the_kind_they_found() {
        let s = Value::Sequence(Sequence::new(DType::F32, vec![]).unwrap());
        let err = s.as_tensor().unwrap_err().to_string();
        assert!(err.contains("got a sequence"), "{err}");
        assert!(Value::Optional(None).as_sequence().is_err());
    }
}
