//! The one error type of the `infer` crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading, planning or running a model.
///
/// Variants carry the context a user needs to act: the file, the node (name and op type),
/// and the reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a well-formed model of its format.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },

    /// A graph-level problem found while building the plan.
    #[error("invalid graph: {0}")]
    Graph(String),

    /// An operator type with no implementation here.
    #[error("node '{node}': unsupported operator {domain}{op_type} (opset {opset})")]
    UnsupportedOp {
        node: String,
        op_type: String,
        domain: String,
        opset: i64,
    },

    /// A node failed while being planned or executed.
    #[error("node '{node}' ({op_type}): {reason}")]
    Node {
        node: String,
        op_type: String,
        reason: String,
    },

    /// The caller's inputs do not fit the model.
    #[error("input error: {0}")]
    Input(String),

    /// A problem inside an operator, before the node context is attached.
    #[error("{0}")]
    Op(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Attaches node context to an operator-level error.
    pub fn at_node(self, node: &str, op_type: &str) -> Error {
        match self {
            Error::Op(reason) => Error::Node {
                node: node.to_string(),
                op_type: op_type.to_string(),
                reason,
            },
            other => other,
        }
    }
}

/// Shorthand for returning an operator-level error.
#[macro_export]
macro_rules! op_err {
    ($($arg:tt)*) => { $crate::error::Error::Op(format!($($arg)*)) };
}

/// Early-returns an operator-level error unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond { return Err($crate::op_err!($($arg)*)); }
    };
}
