//! Type conversions: Cast, CastLike (value conversions, with the float8 `saturate` and
//! float8e8m0 `round_mode` options) and BitCast (reinterpretation of the bits).

use super::boxed;
use crate::error::Result;
use crate::ops::util::input;
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{narrow, CastOptions, DType, E8m0Rounding, Tensor};
use crate::{ensure, op_err};

/// The `to` attribute as a supported dtype.
fn target_dtype(ctx: &BuildCtx, op: &str) -> Result<DType> {
    let code = ctx
        .attrs()
        .int("to")?
        .ok_or_else(|| op_err!("missing attribute 'to'"))?;
    let code = i32::try_from(code).map_err(|_| op_err!("invalid data type {code}"))?;
    DType::from_onnx(code)
        .ok_or_else(|| op_err!("{op} to {} is not supported", DType::onnx_name(code)))
}

/// `saturate` (opset 19+) and `round_mode` (opset 24+); absent ones keep their defaults.
fn cast_options(ctx: &BuildCtx) -> Result<CastOptions> {
    let attrs = ctx.attrs();
    let e8m0_rounding = match attrs.string_or("round_mode", "up")? {
        "up" => E8m0Rounding::Up,
        "down" => E8m0Rounding::Down,
        "nearest" => E8m0Rounding::Nearest,
        other => return Err(op_err!("unknown round_mode '{other}'")),
    };
    Ok(CastOptions {
        saturate: attrs.int_or("saturate", 1)? != 0,
        e8m0_rounding,
    })
}

/// Conversion to the type named by `to`.
#[derive(Debug)]
pub(super) struct Cast {
    to: DType,
    opts: CastOptions,
}

impl Cast {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        boxed(Cast {
            to: target_dtype(ctx, "casting")?,
            opts: cast_options(ctx)?,
        })
    }
}

impl Kernel for Cast {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![input(inputs, 0)?.cast_with(self.to, self.opts)?])
    }
}

/// Conversion to the type of the second input.
#[derive(Debug)]
pub(super) struct CastLike {
    opts: CastOptions,
}

impl CastLike {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        boxed(CastLike {
            opts: cast_options(ctx)?,
        })
    }
}

impl Kernel for CastLike {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let to = input(inputs, 1)?.dtype();
        Ok(vec![input(inputs, 0)?.cast_with(to, self.opts)?])
    }
}

/// The same bits read as another type of the same width (little-endian).
#[derive(Debug)]
pub(super) struct BitCast {
    to: DType,
}

impl BitCast {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        boxed(BitCast {
            to: target_dtype(ctx, "bit-casting")?,
        })
    }
}

impl Kernel for BitCast {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.dtype().bit_width() == self.to.bit_width(),
            "cannot bit-cast {} ({} bits) to {} ({} bits)",
            x.dtype(),
            x.dtype().bit_width(),
            self.to,
            self.to.bit_width()
        );
        let shape = x.shape().to_vec();
        let out = if x.dtype().is_narrow() || self.to.is_narrow() {
            // Narrow elements are held unpacked: go through their bit patterns.
            narrow::from_bit_patterns(self.to, shape, &narrow::bit_patterns(x)?)?
        } else {
            Tensor::from_le_slice(self.to, shape, x.as_bytes())?
        };
        Ok(vec![out])
    }
}
