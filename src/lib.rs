//! `infer`: a CPU inference runtime.
//!
//! The data path is one line: file → loader (`onnx`) → IR (`ir`) → passes and plan (`plan`)
//! → executor (`session`) → operator kernels (`ops`, over the `infer-kernels` crate).

pub mod error;
pub mod ir;
pub mod onnx;
pub mod ops;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
