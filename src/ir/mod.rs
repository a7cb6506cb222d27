//! The one intermediate representation every loader produces.
//!
//! A `Graph` is a list of nodes over numbered values. Values are produced by exactly one of:
//! a graph input, an initializer (constant), or a node output. Node order is not assumed to
//! be topological; the planner sorts.

mod attr;

pub use attr::{Attr, Attrs};

use crate::tensor::{DType, Tensor};
use std::collections::HashMap;
use std::fmt;

/// Index of a value in `Graph::values`.
pub type ValueId = usize;

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    /// A named dimension (e.g. `batch`), bound at run time.
    Symbol(String),
    /// Unknown, unnamed.
    Any,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Any => f.write_str("?"),
        }
    }
}

/// A value's declared type: what kind of value, and the element type and (possibly symbolic)
/// shape of its tensors, each optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValueType {
    pub kind: ValueKind,
    pub dtype: Option<DType>,
    pub shape: Option<Vec<Dim>>,
}

/// Tensor, or one of the ONNX containers of tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValueKind {
    #[default]
    Tensor,
    Sequence,
    /// An optional tensor.
    Optional,
    /// An optional sequence of tensors.
    OptionalSequence,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (open, close) = match self.kind {
            ValueKind::Tensor => ("", ""),
            ValueKind::Sequence => ("seq(", ")"),
            ValueKind::Optional => ("optional(", ")"),
            ValueKind::OptionalSequence => ("optional(seq(", "))"),
        };
        f.write_str(open)?;
        self.fmt_tensor(f)?;
        f.write_str(close)
    }
}

impl ValueType {
    fn fmt_tensor(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("?")?,
        }
        match &self.shape {
            Some(dims) => {
                let s: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
                write!(f, "[{}]", s.join(", "))
            }
            None => f.write_str("[..]"),
        }
    }
}

/// A named value of the graph.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub ty: ValueType,
}

/// One operator application.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    /// Operator domain; empty for the default ONNX domain.
    pub domain: String,
    /// `None` marks an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<Option<ValueId>>,
    pub attrs: Attrs,
}

/// A computation graph with its constants.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub initializers: HashMap<ValueId, Tensor>,
    /// Values of a subgraph that stand for values of the enclosing graph (read by name), bound
    /// at run time like inputs. The node owning the subgraph lists the outer values as extra
    /// inputs after its own, in this order, so its explicit input count is
    /// `node.inputs.len() - captures.len()`. Empty for a top-level graph.
    pub captures: Vec<ValueId>,
    /// Opset version per domain ("" is the default ONNX domain).
    pub opsets: HashMap<String, i64>,
    /// The memory-mapped files the initializers view (released after planning).
    pub mapped_files: Vec<crate::mapped::MappedFile>,
}

impl Graph {
    /// Adds a value and returns its id.
    pub fn add_value(&mut self, name: impl Into<String>, ty: ValueType) -> ValueId {
        self.values.push(Value {
            name: name.into(),
            ty,
        });
        self.values.len() - 1
    }

    pub fn value_name(&self, id: ValueId) -> &str {
        self.values.get(id).map(|v| v.name.as_str()).unwrap_or("?")
    }

    /// Opset of the default ONNX domain.
    pub fn onnx_opset(&self) -> i64 {
        self.opsets.get("").copied().unwrap_or(1)
    }

    /// Total number of parameters and their bytes, over initializers.
    pub fn parameter_count(&self) -> (usize, usize) {
        self.initializers
            .values()
            .fold((0, 0), |(n, b), t| (n + t.len(), b + t.nbytes()))
    }
}
