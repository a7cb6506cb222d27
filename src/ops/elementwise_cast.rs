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

#[cfg(test)]
mod tests {
    use crate::ir::Attr;
    use crate::ops::movement::testing::{run1, t};
    use crate::tensor::narrow::{F8E5M2, I4};
    use crate::tensor::{DType, Tensor};

    fn to(d: DType) -> (&'static str, Attr) {
        ("to", Attr::Int(d.onnx_code() as i64))
    }

    #[test]
    fn cast_to_float8_saturates_unless_told_not_to() {
        let x = t(&[3], vec![1e6f32, -1e6, 0.3]);
        let sat = run1("Cast", 19, &[to(DType::F8E5M2)], &[&x]).unwrap();
        assert_eq!(sat.to_f64_vec().unwrap(), [57344.0, -57344.0, 0.3125]);
        let attrs = [to(DType::F8E5M2), ("saturate", Attr::Int(0))];
        let plain = run1("Cast", 19, &attrs, &[&x]).unwrap();
        assert_eq!(
            plain.to_f64_vec().unwrap(),
            [f64::INFINITY, f64::NEG_INFINITY, 0.3125]
        );
        // CastLike takes the type of its second input and the same options.
        let like = t(&[0], Vec::<F8E5M2>::new());
        let y = run1("CastLike", 19, &[("saturate", Attr::Int(0))], &[&x, &like]).unwrap();
        assert!(y.bit_eq(&plain));
    }

    #[test]
    fn cast_e8m0_follows_round_mode() {
        let x = t(&[2], vec![1.1f32, 0.124]);
        let attrs = [
            to(DType::F8E8M0),
            ("round_mode", Attr::String("down".into())),
        ];
        let y = run1("Cast", 25, &attrs, &[&x]).unwrap();
        assert_eq!(y.to_f64_vec().unwrap(), [1.0, 0.0625]);
        let bad = [
            to(DType::F8E8M0),
            ("round_mode", Attr::String("odd".into())),
        ];
        assert!(run1("Cast", 25, &bad, &[&x]).is_err());
    }

    #[test]
    fn bitcast_reinterprets_bits_of_equal_width() {
        let x = t(&[2], vec![1.0f32, -2.0]);
        let y = run1("BitCast", 26, &[to(DType::I32)], &[&x]).unwrap();
        assert_eq!(
            y.as_slice::<i32>().unwrap(),
            &[0x3f80_0000, 0xc000_0000u32 as i32]
        );
        // int4 and uint4 share their 4 bits: -1 is 0b1111 = 15.
        let n = t(&[2], vec![I4(-1), I4(3)]);
        let u = run1("BitCast", 26, &[to(DType::U4)], &[&n]).unwrap();
        assert_eq!(
            u.cast(DType::I64).unwrap().as_slice::<i64>().unwrap(),
            &[15, 3]
        );
        // Widths must match.
        assert!(run1("BitCast", 26, &[to(DType::I64)], &[&x]).is_err());
        assert!(run1("BitCast", 26, &[to(DType::U8)], &[&Tensor::scalar(1i16)]).is_err());
    }
}
