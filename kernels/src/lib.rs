//! Compute kernels for `infer`: the only home of SIMD code and most `unsafe`.
//!
//! Each kernel family has one portable implementation and per-ISA variants chosen once at run
//! time by CPU feature detection.

pub mod cache;
pub mod depthwise;
pub mod depthwise_lanes;
pub mod elementwise;
pub mod gemm;
pub mod huge_pages;
mod isa;
pub mod max_pool;
pub mod parallel;
pub mod qgemm;
pub mod reduce;
pub mod softmax;
pub mod stem;
pub mod strided;
pub mod transpose;
pub mod weight_arena;
pub mod winograd;
