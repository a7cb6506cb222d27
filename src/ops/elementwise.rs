//! Elementwise arithmetic, comparison and logic with numpy broadcasting (Add, Mul, Where,
//! Equal, ...); type conversions (Cast, CastLike, BitCast) are in `cast`.
//!
//! Every op is one generic function over the element traits of `num`, instantiated per dtype
//! by the `with_*_dtype!` macros, and run by the broadcast loops of `broadcast`.

#[path = "elementwise_broadcast.rs"]
pub(super) mod broadcast;
#[path = "elementwise_cast.rs"]
mod cast;
#[path = "elementwise_num.rs"]
pub(super) mod num;

use self::broadcast::{binary, map, ternary};
use self::num::{with_float_dtype, with_int_dtype, with_num_dtype, Float, Int, Num};
use super::util::{input, normalize_axis};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{DType, Elem, Tensor};
use crate::{ensure, op_err, with_dtype};
use std::borrow::Cow;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    use BinOp::*;
    let attrs = ctx.attrs();
    let kernel = match op {
        "Add" => Binary::build(Add, ctx),
        "Sub" => Binary::build(Sub, ctx),
        "Mul" => Binary::build(Mul, ctx),
        "Div" => Binary::build(Div, ctx),
        "Pow" => Binary::build(Pow, ctx),
        "Mod" => match attrs.int_or("fmod", 0) {
            Ok(0) => Binary::build(Mod { fmod: false }, ctx),
            Ok(1) => Binary::build(Mod { fmod: true }, ctx),
            Ok(v) => Err(op_err!("attribute 'fmod' must be 0 or 1, got {v}")),
            Err(e) => Err(e),
        },
        "BitShift" => match attrs.string("direction") {
            Ok(Some("LEFT")) => Binary::build(BitShift { left: true }, ctx),
            Ok(Some("RIGHT")) => Binary::build(BitShift { left: false }, ctx),
            Ok(d) => Err(op_err!(
                "attribute 'direction' must be LEFT or RIGHT, got {d:?}"
            )),
            Err(e) => Err(e),
        },
        "BitwiseAnd" => Binary::build(BitAnd, ctx),
        "BitwiseOr" => Binary::build(BitOr, ctx),
        "BitwiseXor" => Binary::build(BitXor, ctx),
        "Equal" => Binary::build(Equal, ctx),
        "Less" => Binary::build(Less, ctx),
        "LessOrEqual" => Binary::build(LessOrEqual, ctx),
        "Greater" => Binary::build(Greater, ctx),
        "GreaterOrEqual" => Binary::build(GreaterOrEqual, ctx),
        "And" => Binary::build(And, ctx),
        "Or" => Binary::build(Or, ctx),
        "Xor" => Binary::build(Xor, ctx),
        "Sum" => boxed(Variadic {
            op: Add,
            mean: false,
        }),
        "Mean" => boxed(Variadic {
            op: Add,
            mean: true,
        }),
        "Max" => boxed(Variadic {
            op: Max,
            mean: false,
        }),
        "Min" => boxed(Variadic {
            op: Min,
            mean: false,
        }),
        "Not" => boxed(Unary::Not),
        "BitwiseNot" => boxed(Unary::BitwiseNot),
        "IsNaN" => boxed(Unary::IsNaN),
        "IsInf" => (|| {
            boxed(Unary::IsInf {
                negative: attrs.int_or("detect_negative", 1)? != 0,
                positive: attrs.int_or("detect_positive", 1)? != 0,
            })
        })(),
        "Where" => boxed(Where),
        "Cast" => cast::Cast::build(ctx),
        "CastLike" => cast::CastLike::build(ctx),
        "BitCast" => cast::BitCast::build(ctx),
        _ => return None,
    };
    Some(kernel)
}

pub(super) fn boxed(kernel: impl Kernel + 'static) -> Result<Box<dyn Kernel>> {
    Ok(Box::new(kernel))
}

/// Two-input elementwise operations.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Mod { fmod: bool },
    Max,
    Min,
    BitShift { left: bool },
    BitAnd,
    BitOr,
    BitXor,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

impl BinOp {
    /// `op(a, b)` with numpy broadcasting.
    fn eval(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        use BinOp::*;
        // Pow alone takes an exponent of another type.
        if self != Pow {
            ensure!(
                a.dtype() == b.dtype(),
                "inputs have different types: {} and {}",
                a.dtype(),
                b.dtype()
            );
        }
        let dtype = a.dtype();
        match self {
            Add => with_num_dtype!(dtype, T, { binary(a, b, <T as Num>::add) }),
            Sub => with_num_dtype!(dtype, T, { binary(a, b, <T as Num>::sub) }),
            Mul => with_num_dtype!(dtype, T, { binary(a, b, <T as Num>::mul) }),
            Div => with_num_dtype!(dtype, T, { binary(a, b, <T as Num>::div) }),
            Pow => pow(a, b),
            Mod { fmod: true } => {
                with_num_dtype!(dtype, T, { binary(a, b, <T as Num>::rem_trunc) })
            }
            Mod { fmod: false } => {
                with_num_dtype!(dtype, T, { binary(a, b, <T as Num>::rem_floor) })
            }
            Max => with_num_dtype!(dtype, T, { binary(a, b, <T as Num>::max) }),
            Min => with_num_dtype!(dtype, T, { binary(a, b, <T as Num>::min) }),
            BitShift { left: true } => with_int_dtype!(dtype, T, { binary(a, b, <T as Int>::shl) }),
            BitShift { left: false } => {
                with_int_dtype!(dtype, T, { binary(a, b, <T as Int>::shr) })
            }
            BitAnd => with_int_dtype!(dtype, T, { binary(a, b, <T as Int>::and) }),
            BitOr => with_int_dtype!(dtype, T, { binary(a, b, <T as Int>::or) }),
            BitXor => with_int_dtype!(dtype, T, { binary(a, b, <T as Int>::xor) }),
            Equal if dtype == DType::String => super::strings::equal(a, b),
            Equal => with_dtype!(dtype, T, { binary(a, b, |x: T, y: T| x == y) }),
            Less => with_num_dtype!(dtype, T, { binary(a, b, |x: T, y: T| x < y) }),
            LessOrEqual => with_num_dtype!(dtype, T, { binary(a, b, |x: T, y: T| x <= y) }),
            Greater => with_num_dtype!(dtype, T, { binary(a, b, |x: T, y: T| x > y) }),
            GreaterOrEqual => with_num_dtype!(dtype, T, { binary(a, b, |x: T, y: T| x >= y) }),
            And => binary(a, b, |x: bool, y: bool| x & y),
            Or => binary(a, b, |x: bool, y: bool| x | y),
            Xor => binary(a, b, |x: bool, y: bool| x ^ y),
        }
    }
}

/// `base ^ exponent`. Float bases compute in their own type (the exponent is cast to it);
/// integer bases in f64, truncated back, as onnxruntime's `std::pow` does.
fn pow(base: &Tensor, exponent: &Tensor) -> Result<Tensor> {
    let dtype = base.dtype();
    if !dtype.is_float() {
        let e = exponent.cast(DType::F64)?;
        return with_int_dtype!(dtype, T, {
            binary(base, &e, |x: T, e: f64| T::from_f64(x.to_f64().powf(e)))
        });
    }
    let e = exponent.cast(dtype)?;
    with_float_dtype!(dtype, T, {
        // Scalar exponents of 2 and 3 (variance, GELU's cube) and 1/2 skip the general
        // `powf`, when the output takes the base's shape.
        if let ([k], true) = (e.as_slice::<T>()?, e.rank() <= base.rank()) {
            match k.to_f64() {
                2.0 => return map(base, |x: T| x.mul(x)),
                3.0 => return map(base, |x: T| x.mul(x).mul(x)),
                0.5 => return map(base, <T as Float>::sqrt),
                _ => {}
            }
        }
        binary(base, &e, <T as Float>::powf)
    })
}

/// A two-input op, with the pre-opset-7 broadcast attributes when present.
#[derive(Debug)]
struct Binary {
    op: BinOp,
    /// Before opset 7, `broadcast=1` aligned B's first dim with A's dim `axis` (trailing
    /// alignment when absent); numpy broadcasting does the rest once B is reshaped.
    legacy_axis: Option<i64>,
}

impl Binary {
    fn build(op: BinOp, ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let attrs = ctx.attrs();
        let legacy_axis = if ctx.opset < 7 && attrs.int_or("broadcast", 0)? != 0 {
            attrs.int("axis")?
        } else {
            None
        };
        boxed(Binary { op, legacy_axis })
    }
}

impl Kernel for Binary {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let a = input(inputs, 0)?;
        let b = input(inputs, 1)?;
        let b = match self.legacy_axis {
            Some(axis) => {
                let axis = normalize_axis(axis, a.rank())?;
                ensure!(
                    axis + b.rank() <= a.rank(),
                    "shape {:?} does not fit in {:?} from axis {axis}",
                    b.shape(),
                    a.shape()
                );
                let mut shape = b.shape().to_vec();
                shape.resize(a.rank() - axis, 1);
                Cow::Owned(b.reshape(shape)?)
            }
            None => Cow::Borrowed(b),
        };
        Ok(vec![self.op.eval(a, &b)?])
    }
}

/// Sum, Mean, Max and Min: a left fold of the binary op over any number of inputs.
#[derive(Debug)]
struct Variadic {
    op: BinOp,
    /// Divide the sum by the input count.
    mean: bool,
}

impl Kernel for Variadic {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let mut acc = input(inputs, 0)?.clone();
        for i in 1..inputs.len() {
            acc = self.op.eval(&acc, input(inputs, i)?)?;
        }
        if self.mean {
            acc = with_float_dtype!(acc.dtype(), T, {
                let n = T::from_f64(inputs.len() as f64);
                map(&acc, |x: T| x.div(n))
            })?;
        }
        Ok(vec![acc])
    }
}

/// One-input ops that are not math functions.
#[derive(Clone, Copy, Debug)]
enum Unary {
    Not,
    BitwiseNot,
    IsNaN,
    IsInf { negative: bool, positive: bool },
}

impl Kernel for Unary {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let y = match *self {
            Unary::Not => map(x, |v: bool| !v),
            Unary::BitwiseNot => with_int_dtype!(x.dtype(), T, { map(x, <T as Int>::not) }),
            Unary::IsNaN => with_float_dtype!(x.dtype(), T, { map(x, <T as Float>::is_nan) }),
            Unary::IsInf { negative, positive } => with_float_dtype!(x.dtype(), T, {
                map(x, |v: T| {
                    let wanted = if Float::is_sign_negative(v) {
                        negative
                    } else {
                        positive
                    };
                    wanted && Float::is_infinite(v)
                })
            }),
        }?;
        Ok(vec![y])
    }
}

/// `condition ? x : y`, all three broadcast.
#[derive(Debug)]
struct Where;

impl Kernel for Where {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (c, x, y) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        ensure!(
            c.dtype() == DType::Bool,
            "condition must be bool, got {}",
            c.dtype()
        );
        ensure!(
            x.dtype() == y.dtype(),
            "X and Y have different types: {} and {}",
            x.dtype(),
            y.dtype()
        );
        let out = with_dtype!(x.dtype(), T, {
            ternary(c, x, y, |c: bool, x: T, y: T| if c { x } else { y })
        })?;
        Ok(vec![out])
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::tensor::Storable;

    /// Builds `op` at `opset` with `attrs` and runs it on `inputs` (the shared test helper).
    pub(crate) use crate::ops::movement::testing::run_op;

    pub(crate) fn t<T: Storable>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    /// Runs a single-output op on required inputs.
    fn eval(op: &str, attrs: &[(&str, Attr)], inputs: &[&Tensor]) -> Result<Tensor> {
        let inputs: Vec<Option<&Tensor>> = inputs.iter().copied().map(Some).collect();
        Ok(run_op(op, 21, attrs, &inputs)?.remove(0))
    }

    fn vals<T: Storable>(y: &Tensor) -> Vec<T> {
        y.as_slice::<T>().unwrap().to_vec()
    }

    #[test]
    fn arithmetic_broadcasts_bias_and_channel_operands() {
        // [2, 3] + [3] (bias) and [1, 2, 2, 1] * [2, 1, 1] (per-channel scale).
        let x = t(&[2, 3], vec![1.0f32, 2., 3., 4., 5., 6.]);
        let y = eval("Add", &[], &[&x, &t(&[3], vec![10.0f32, 20., 30.])]).unwrap();
        assert_eq!(vals::<f32>(&y), [11., 22., 33., 14., 25., 36.]);
        let x = t(&[1, 2, 2, 1], vec![1.0f32, 2., 3., 4.]);
        let y = eval("Mul", &[], &[&x, &t(&[2, 1, 1], vec![10.0f32, -1.])]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 2, 1]);
        assert_eq!(vals::<f32>(&y), [10., 20., -3., -4.]);
        let y = eval("Sub", &[], &[&t(&[], vec![1i64]), &t(&[2], vec![5i64, -5])]).unwrap();
        assert_eq!(vals::<i64>(&y), [-4, 6]);
        let y = t(&[2], vec![1.0f32, 2.]);
        assert!(eval("Add", &[], &[&t(&[2, 3], vec![0.0f32; 6]), &y]).is_err());
        assert!(eval("Add", &[], &[&x, &t(&[1], vec![1.0f64])]).is_err());
        assert!(eval("Add", &[], &[&t(&[1], vec![true]), &t(&[1], vec![true])]).is_err());
    }

    #[test]
    fn integer_division_truncates_toward_zero() {
        // C semantics: -7 / 2 = -3 (numpy's floor division would give -4).
        let a = t(&[4], vec![-7i32, 7, -7, 7]);
        let b = t(&[4], vec![2i32, -2, -2, 0]);
        assert_eq!(
            vals::<i32>(&eval("Div", &[], &[&a, &b]).unwrap()),
            [-3, -3, 3, 0]
        );
        let y = eval(
            "Div",
            &[],
            &[&t(&[2], vec![1.0f32, -1.0]), &t(&[1], vec![0.0f32])],
        )
        .unwrap();
        assert_eq!(vals::<f32>(&y), [f32::INFINITY, f32::NEG_INFINITY]);
    }

    #[test]
    fn mod_follows_fmod_attribute() {
        // numpy: np.mod([-4, 7, 5, -5], [3, -3, 2, -2]) = [2, -2, 1, -1];
        //        np.fmod(...) = [-1, 1, 1, -1].
        let a = t(&[4], vec![-4i64, 7, 5, -5]);
        let b = t(&[4], vec![3i64, -3, 2, -2]);
        let floor = eval("Mod", &[], &[&a, &b]).unwrap();
        assert_eq!(vals::<i64>(&floor), [2, -2, 1, -1]);
        let trunc = eval("Mod", &[("fmod", Attr::Int(1))], &[&a, &b]).unwrap();
        assert_eq!(vals::<i64>(&trunc), [-1, 1, 1, -1]);
        let a = t(&[2], vec![-4.5f32, 4.5]);
        let b = t(&[1], vec![2.0f32]);
        let y = eval("Mod", &[("fmod", Attr::Int(1))], &[&a, &b]).unwrap();
        assert_eq!(vals::<f32>(&y), [-0.5, 0.5]);
        let y = eval("Mod", &[], &[&a, &b]).unwrap();
        assert_eq!(vals::<f32>(&y), [1.5, 0.5]);
        assert!(eval("Mod", &[("fmod", Attr::Int(2))], &[&a, &b]).is_err());
    }

    #[test]
    fn pow_takes_any_exponent_type() {
        let x = t(&[3], vec![2.0f32, -3.0, 4.0]);
        let y = eval("Pow", &[], &[&x, &t(&[], vec![2i64])]).unwrap();
        assert_eq!(vals::<f32>(&y), [4.0, 9.0, 16.0]);
        let y = eval("Pow", &[], &[&x, &t(&[], vec![3.0f32])]).unwrap();
        assert_eq!(vals::<f32>(&y), [8.0, -27.0, 64.0]);
        let y = eval("Pow", &[], &[&x, &t(&[3], vec![0.5f32, 1.0, -0.5])]).unwrap();
        let y = vals::<f32>(&y);
        assert!((y[0] - std::f32::consts::SQRT_2).abs() < 1e-6 && y[1] == -3.0 && y[2] == 0.5);
        let y = eval("Pow", &[], &[&x, &t(&[], vec![0.5f32])]).unwrap();
        assert!(vals::<f32>(&y)[1].is_nan());
        // Integer base: computed in f64 and truncated, so 2^-1 = 0 and 4^0.5 = 2.
        let b = t(&[3], vec![2i64, 4, -3]);
        let y = eval("Pow", &[], &[&b, &t(&[3], vec![-1.0f32, 0.5, 3.0])]).unwrap();
        assert_eq!(vals::<i64>(&y), [0, 2, -27]);
        // A [1, 1] exponent broadcasts the output to rank 2.
        let y = eval("Pow", &[], &[&x, &t(&[1, 1], vec![2.0f32])]).unwrap();
        assert_eq!(y.shape(), &[1, 3]);
    }

    #[test]
    fn comparisons_and_logic_give_bools() {
        let a = t(&[4], vec![1.0f32, 2.0, f32::NAN, -0.0]);
        let b = t(&[4], vec![2.0f32, 2.0, f32::NAN, 0.0]);
        let cmp = |op| vals::<bool>(&eval(op, &[], &[&a, &b]).unwrap());
        assert_eq!(cmp("Equal"), [false, true, false, true]);
        assert_eq!(cmp("Less"), [true, false, false, false]);
        assert_eq!(cmp("LessOrEqual"), [true, true, false, true]);
        assert_eq!(cmp("Greater"), [false, false, false, false]);
        assert_eq!(cmp("GreaterOrEqual"), [false, true, false, true]);
        let p = t(&[2, 1], vec![true, false]);
        let q = t(&[2], vec![true, false]);
        let logic = |op| vals::<bool>(&eval(op, &[], &[&p, &q]).unwrap());
        assert_eq!(logic("And"), [true, false, false, false]);
        assert_eq!(logic("Or"), [true, true, true, false]);
        assert_eq!(logic("Xor"), [false, true, true, false]);
        assert_eq!(logic("Equal"), [true, false, false, true]);
        assert_eq!(
            vals::<bool>(&eval("Not", &[], &[&q]).unwrap()),
            [false, true]
        );
        assert!(eval("Less", &[], &[&p, &p]).is_err());
    }

    #[test]
    fn bitwise_ops_and_shifts() {
        let a = t(&[3], vec![0b1100u8, 0b1010, 255]);
        let b = t(&[3], vec![0b1010u8, 0b0110, 1]);
        assert_eq!(
            vals::<u8>(&eval("BitwiseAnd", &[], &[&a, &b]).unwrap()),
            [8, 2, 1]
        );
        assert_eq!(
            vals::<u8>(&eval("BitwiseOr", &[], &[&a, &b]).unwrap()),
            [14, 14, 255]
        );
        assert_eq!(
            vals::<u8>(&eval("BitwiseXor", &[], &[&a, &b]).unwrap()),
            [6, 12, 254]
        );
        assert_eq!(
            vals::<u8>(&eval("BitwiseNot", &[], &[&a]).unwrap()),
            [243, 245, 0]
        );
        let left = [("direction", Attr::String("LEFT".into()))];
        let right = [("direction", Attr::String("RIGHT".into()))];
        let x = t(&[3], vec![1u32, 4, 8]);
        let s = t(&[3], vec![1u32, 1, 40]);
        assert_eq!(
            vals::<u32>(&eval("BitShift", &left, &[&x, &s]).unwrap()),
            [2, 8, 0]
        );
        assert_eq!(
            vals::<u32>(&eval("BitShift", &right, &[&x, &s]).unwrap()),
            [0, 2, 0]
        );
        let x = t(&[2], vec![-8i16, 8]);
        let s = t(&[1], vec![1i16]);
        assert_eq!(
            vals::<i16>(&eval("BitShift", &right, &[&x, &s]).unwrap()),
            [-4, 4]
        );
        assert!(eval("BitShift", &[], &[&x, &s]).is_err());
        assert!(eval(
            "BitwiseAnd",
            &[],
            &[&t(&[1], vec![1.0f32]), &t(&[1], vec![1.0f32])]
        )
        .is_err());
    }

    #[test]
    fn variadic_ops_fold_with_broadcasting() {
        let a = t(&[2], vec![1.0f32, 6.0]);
        let b = t(&[2, 1], vec![3.0f32, f32::NAN]);
        let c = t(&[], vec![2.0f32]);
        let y = eval("Sum", &[], &[&a, &b, &c]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(vals::<f32>(&y)[..2], [6.0, 11.0]);
        let y = eval("Mean", &[], &[&a, &c]).unwrap();
        assert_eq!(vals::<f32>(&y), [1.5, 4.0]);
        let y = vals::<f32>(&eval("Max", &[], &[&a, &b, &c]).unwrap());
        assert_eq!(y[..2], [3.0, 6.0]);
        assert!(y[2].is_nan() && y[3].is_nan());
        let y = eval(
            "Min",
            &[],
            &[&t(&[3], vec![5i32, -1, 7]), &t(&[1], vec![0i32])],
        )
        .unwrap();
        assert_eq!(vals::<i32>(&y), [0, -1, 0]);
        assert!(eval("Max", &[], &[&a]).unwrap().bit_eq(&a));
        assert!(eval("Mean", &[], &[&t(&[1], vec![1i32])]).is_err());
    }

    #[test]
    fn where_selects_with_three_way_broadcast() {
        let c = t(&[2, 1], vec![true, false]);
        let x = t(&[1, 3], vec![1i64, 2, 3]);
        let y = t(&[], vec![-1i64]);
        let out = eval("Where", &[], &[&c, &x, &y]).unwrap();
        assert_eq!(out.shape(), &[2, 3]);
        assert_eq!(vals::<i64>(&out), [1, 2, 3, -1, -1, -1]);
        assert!(eval("Where", &[], &[&x, &x, &y]).is_err());
        assert!(eval("Where", &[], &[&c, &x, &t(&[], vec![1.0f32])]).is_err());
    }

    #[test]
    fn cast_and_cast_like_convert_types() {
        let x = t(&[4], vec![-1.5f32, 0.0, 2.7, f32::NAN]);
        let to_i32 = [("to", Attr::Int(DType::I32.onnx_code() as i64))];
        assert_eq!(
            vals::<i32>(&eval("Cast", &to_i32, &[&x]).unwrap()),
            [-1, 0, 2, 0]
        );
        let to_bool = [("to", Attr::Int(9))];
        assert_eq!(
            vals::<bool>(&eval("Cast", &to_bool, &[&x]).unwrap()),
            [true, false, true, true]
        );
        let like = t(&[0], Vec::<f64>::new());
        let y = eval("CastLike", &[], &[&t(&[2], vec![3i64, -2]), &like]).unwrap();
        assert_eq!(vals::<f64>(&y), [3.0, -2.0]);
        // Strings (8) are supported (see tensor::string_cast), float6 (27) is not; 'to' is
        // required.
        let y = eval("Cast", &[("to", Attr::Int(8))], &[&x]).unwrap();
        assert_eq!(y.as_strings().unwrap(), ["-1.5", "0", "2.7", "NaN"]);
        assert!(eval("Cast", &[("to", Attr::Int(27))], &[&x]).is_err());
        assert!(eval("Cast", &[], &[&x]).is_err());
    }

    #[test]
    fn nan_and_inf_detection() {
        let x = t(&[4], vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0]);
        assert_eq!(
            vals::<bool>(&eval("IsNaN", &[], &[&x]).unwrap()),
            [true, false, false, false]
        );
        assert_eq!(
            vals::<bool>(&eval("IsInf", &[], &[&x]).unwrap()),
            [false, true, true, false]
        );
        let neg_only = [("detect_positive", Attr::Int(0))];
        assert_eq!(
            vals::<bool>(&eval("IsInf", &neg_only, &[&x]).unwrap()),
            [false, false, true, false]
        );
        assert!(eval("IsNaN", &[], &[&t(&[1], vec![1i32])]).is_err());
    }

    #[test]
    fn legacy_broadcast_aligns_at_axis() {
        // Opset 6, broadcast=1, axis=1: B [3] lines up with A's dim 1 of [2, 3, 2].
        let a = t(&[2, 3, 2], vec![0.0f32; 12]);
        let b = t(&[3], vec![1.0f32, 2.0, 3.0]);
        let attrs = [("broadcast", Attr::Int(1)), ("axis", Attr::Int(1))];
        let y = run_op("Add", 6, &attrs, &[Some(&a), Some(&b)])
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), &[2, 3, 2]);
        assert_eq!(vals::<f32>(&y)[..6], [1., 1., 2., 2., 3., 3.]);
        assert!(run_op("Add", 21, &attrs, &[Some(&a), Some(&b)]).is_err());
    }

    #[test]
    fn missing_inputs_are_errors() {
        assert!(run_op("Add", 21, &[], &[Some(&t(&[1], vec![1.0f32])), None]).is_err());
        assert!(run_op("Sum", 21, &[], &[]).is_err());
    }
}
