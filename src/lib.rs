//! `infer`: a CPU inference runtime.
//!
//! The data path is one line: file → loader (`onnx`) → IR (`ir`) → passes and plan (`plan`)
//! → executor (`session`) → operator kernels (`ops`, over the `infer-kernels` crate).
//!
//! ```no_run
//! let session = infer::Session::builder().threads(2).build_from_file("model.onnx")?;
//! let input = infer::Tensor::from_vec(vec![1, 4], vec![0.0f32, 1.0, 2.0, 3.0])?;
//! let outputs = session.run([("x", input)])?;
//! for (name, value) in outputs.iter() {
//!     let tensor = value.as_tensor()?; // outputs may also be sequences or optionals
//!     println!("{name}: {:?} {:?}", tensor.dtype(), tensor.shape());
//! }
//! # Ok::<(), infer::Error>(())
//! ```

// Architecture builders live under models/ (the issue's layout), but the Session and the CLI
// of this crate need them, so they are compiled into the library rather than into a crate of
// their own (which would depend on `infer` and so could not be used by it).
#[path = "../models/arch/mod.rs"]
pub mod arch;
pub mod error;
pub mod ir;
pub mod mapped;
pub mod npy;
pub mod onnx;
pub mod ops;
pub mod plan;
pub mod session;
pub mod tensor;
pub mod weights;

pub use error::{Error, Result};
pub use plan::OptLevel;
pub use session::{IoInfo, NodeTime, OpTime, Outputs, Profile, Session, SessionBuilder};
pub use tensor::{DType, Sequence, Tensor, Value};
