//! Operator kernels, grouped by family. Each op is built once at plan time (attributes parsed,
//! constant weights prepacked) into a `Kernel`, then run many times.
//!
//! To add an op: implement it in its family's file and add its name to `build` below.

pub mod activation;
pub mod attention;
pub mod control;
pub mod conv;
pub(crate) mod conv_concat;
pub mod conv_deform;
pub(crate) mod conv_layouts;
mod conv_patches;
pub(crate) mod conv_pool;
mod conv_scale;
mod conv_winograd;
pub mod crop;
pub mod detection;
pub mod einsum;
pub mod elementwise;
pub mod gradient;
pub mod grid_sample;
pub mod linalg;
pub mod loss;
pub mod matmul;
pub mod ml;
pub mod ml_label_encoder;
pub mod movement;
pub mod norm;
pub mod pool;
pub mod pool_unpool;
pub mod quantize;
pub mod recurrent;
pub mod reduce;
pub mod resize;
pub mod sequence;
pub mod shape;
pub mod signal;
pub mod strings;
pub mod tfidf;
pub mod training;
pub mod unique;
pub mod util;

use crate::error::{Error, Result};
use crate::ir::{Attrs, Node};
use crate::tensor::{Tensor, Value};
use std::fmt::Debug;

/// What an op sees while being built.
pub struct BuildCtx<'a> {
    pub node: &'a Node,
    /// Opset version of the node's domain.
    pub opset: i64,
    /// For each input, its value when it is a constant known at plan time.
    pub constants: Vec<Option<&'a Tensor>>,
    /// The session's choices that change how kernels compute.
    pub options: BuildOptions,
}

/// Session options that kernels read at build time (see `SessionBuilder`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// MatMul and Gemm with a constant f32 weight matrix run on the dynamically quantized
    /// int8 GEMM (`infer_kernels::qgemm`): faster, approximate, off by default.
    pub int8_matmul: bool,
    /// Constant 3×3 stride-1 Conv kernels take the Winograd path (`conv_winograd`): on by
    /// default.
    pub winograd: bool,
    /// Pointwise convolutions hand their output to depthwise ones channels last
    /// (`plan::channels_last`): off by default (measured slower overall, see there).
    pub channels_last: bool,
    /// Convolutions hand each other channel-blocked (NCHW16c) tensors where both sides can
    /// (`plan::blocked`; `channels_last` takes precedence).
    pub blocked_layout: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            int8_matmul: false,
            winograd: true,
            channels_last: false,
            blocked_layout: true,
        }
    }
}

impl BuildCtx<'_> {
    pub fn attrs(&self) -> &Attrs {
        &self.node.attrs
    }

    /// The constant value of input `i`, if it is one.
    pub fn constant(&self, i: usize) -> Option<&Tensor> {
        self.constants.get(i).copied().flatten()
    }
}

/// A built operator, ready to run. Kernels are shared between threads.
///
/// Tensor kernels (nearly all) implement `run`. Kernels that take or produce sequences or
/// optionals implement `run_values` and say so with `takes_values`; the executor then hands
/// them `Value`s instead of tensors.
pub trait Kernel: Send + Sync + Debug {
    /// Computes the node's outputs. `inputs[i]` is `None` for an omitted optional input.
    /// Kernels may use rayon; the executor runs them inside the session's thread pool.
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let _ = inputs;
        Err(Error::Op(
            "this operator works on sequence or optional values".into(),
        ))
    }

    /// Whether the executor must call `run_values` rather than `run`.
    fn takes_values(&self) -> bool {
        false
    }

    /// Computes the node's outputs from values of any kind.
    fn run_values(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>> {
        let tensors = inputs
            .iter()
            .map(|v| v.map(Value::as_tensor).transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok(self.run(&tensors)?.into_iter().map(Value::Tensor).collect())
    }
}

/// A family's builder: `None` when the op type is not one of the family's.
type FamilyBuilder = fn(&str, &BuildCtx) -> Option<Result<Box<dyn Kernel>>>;

/// Builds the kernel for one node of the default ONNX domain, infer's own fused ops, or the
/// `ai.onnx.ml` / `ai.onnx.preview.training` ops (whose families check the domain).
pub fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
    let op = ctx.node.op_type.as_str();
    let domain = ctx.node.domain.as_str();
    // ai.onnx.preview holds FlexAttention (whose builder checks the domain itself); the ml
    // and training families claim only nodes of their own domains.
    const DOMAINS: [&str; 6] = [
        "",
        "ai.onnx",
        "infer",
        "ai.onnx.ml",
        "ai.onnx.preview",
        "ai.onnx.preview.training",
    ];
    if !DOMAINS.contains(&domain) {
        return Err(unsupported(ctx));
    }
    // Each family claims the op types it implements.
    let families: &[FamilyBuilder] = &[
        elementwise::build,
        activation::build,
        shape::build,
        movement::build,
        reduce::build,
        matmul::build,
        conv::build,
        pool::build,
        norm::build,
        attention::build,
        resize::build,
        loss::build,
        control::build,
        sequence::build,
        quantize::build,
        recurrent::build,
        einsum::build,
        grid_sample::build,
        signal::build,
        detection::build,
        pool_unpool::build,
        crop::build,
        training::build,
        gradient::build,
        ml::build,
        ml_label_encoder::build,
        unique::build,
        linalg::build,
        tfidf::build,
        conv_deform::build,
        strings::build,
    ];
    for family in families {
        if let Some(kernel) = family(op, ctx) {
            return kernel
                .map(|k| strings::moving_strings(op, k))
                .map_err(|e| e.at_node(&ctx.node.name, op));
        }
    }
    Err(unsupported(ctx))
}

fn unsupported(ctx: &BuildCtx) -> Error {
    Error::UnsupportedOp {
        node: ctx.node.name.clone(),
        op_type: ctx.node.op_type.clone(),
        domain: if ctx.node.domain.is_empty() {
            String::new()
        } else {
            format!("{}.", ctx.node.domain)
        },
        opset: ctx.opset,
    }
}
