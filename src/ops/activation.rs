//! Unary math and activation functions (Relu, Sigmoid, Erf, Gelu, Clip, ...).
//!
//! Float functions have one generic definition over `Real` (f32 and f64). On f32 tensors the
//! hot ones run the vectorized kernels of `infer_kernels::elementwise` instead; float16 and
//! bfloat16 compute through f32. Ops that also take integers (Relu, Clip, PRelu, Shrink, Abs,
//! Neg, Sign) are generic over `Num`.

use super::elementwise::boxed;
use super::elementwise::broadcast::{binary, map, map_slice};
use super::elementwise::num::{with_num_dtype, Num};
use super::util::{input, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::ir::Attrs;
use crate::tensor::{DType, Elem, Storable, Tensor};
use crate::{ensure, op_err};
use infer_kernels::elementwise::{self as fast, Activation, UnaryF32};
use std::ops::{Add, Div, Mul, Neg, Sub};

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    let attrs = ctx.attrs();
    let kernel = match op {
        "Abs" => boxed(Signed::Abs),
        "Neg" => boxed(Signed::Neg),
        "Sign" => boxed(Signed::Sign),
        "Relu" => boxed(Relu),
        "PRelu" => boxed(PRelu {
            per_channel_slope: ctx.opset < 7,
        }),
        "Clip" => Clip::build(ctx),
        "Shrink" => (|| {
            boxed(Shrink {
                bias: attrs.float_or("bias", 0.0)? as f64,
                lambd: attrs.float_or("lambd", 0.5)? as f64,
            })
        })(),
        _ => {
            return float_fn(op, attrs)
                .transpose()
                .map(|f| f.and_then(|f| boxed(FloatUnary(f))))
        }
    };
    Some(kernel)
}

/// The float function named `op`, with its attributes; `None` for other ops.
fn float_fn(op: &str, attrs: &Attrs) -> Result<Option<FloatFn>> {
    use FloatFn::*;
    let alpha = |default| attrs.float_or("alpha", default);
    Ok(Some(match op {
        "Sqrt" => Sqrt,
        "Reciprocal" => Reciprocal,
        "Exp" => Exp,
        "Log" => Log,
        "Floor" => Floor,
        "Ceil" => Ceil,
        "Round" => Round,
        "Sin" => Sin,
        "Cos" => Cos,
        "Tan" => Tan,
        "Asin" => Asin,
        "Acos" => Acos,
        "Atan" => Atan,
        "Sinh" => Sinh,
        "Cosh" => Cosh,
        "Asinh" => Asinh,
        "Acosh" => Acosh,
        "Atanh" => Atanh,
        "Erf" => Erf,
        "Tanh" => Tanh,
        "Sigmoid" => Sigmoid,
        "HardSigmoid" => HardSigmoid {
            alpha: alpha(0.2)?,
            beta: attrs.float_or("beta", 0.5)?,
        },
        "HardSwish" => HardSwish,
        "LeakyRelu" => LeakyRelu {
            alpha: alpha(0.01)?,
        },
        "Elu" => Elu { alpha: alpha(1.0)? },
        "Selu" => Selu {
            alpha: alpha(1.673_263_2)?,
            gamma: attrs.float_or("gamma", 1.050_701)?,
        },
        "Celu" => Celu { alpha: alpha(1.0)? },
        "Softplus" => Softplus,
        "Softsign" => Softsign,
        "ThresholdedRelu" => ThresholdedRelu { alpha: alpha(1.0)? },
        "Gelu" => match attrs.string_or("approximate", "none")? {
            "none" => Gelu,
            "tanh" => GeluTanh,
            other => {
                return Err(op_err!(
                    "attribute 'approximate' must be none or tanh, got {other:?}"
                ))
            }
        },
        "Mish" => Mish,
        "Swish" => Swish { alpha: alpha(1.0)? },
        _ => return Ok(None),
    }))
}

/// Functions of one float.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FloatFn {
    Sqrt,
    Reciprocal,
    Exp,
    Log,
    Floor,
    Ceil,
    /// Half to even.
    Round,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Erf,
    Tanh,
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Celu {
        alpha: f32,
    },
    Softplus,
    Softsign,
    ThresholdedRelu {
        alpha: f32,
    },
    Gelu,
    GeluTanh,
    Mish,
    Swish {
        alpha: f32,
    },
}

/// A vectorized f32 kernel.
enum Fast {
    Unary(UnaryF32),
    Act(Activation),
}

impl FloatFn {
    fn fast(self) -> Option<Fast> {
        use FloatFn::*;
        Some(match self {
            Exp => Fast::Unary(UnaryF32::Exp),
            Erf => Fast::Unary(UnaryF32::Erf),
            Tanh => Fast::Unary(UnaryF32::Tanh),
            Sigmoid => Fast::Unary(UnaryF32::Sigmoid),
            Mish => Fast::Unary(UnaryF32::Mish),
            HardSigmoid { alpha, beta } => Fast::Act(Activation::HardSigmoid(alpha, beta)),
            HardSwish => Fast::Act(Activation::HardSwish),
            LeakyRelu { alpha } => Fast::Act(Activation::LeakyRelu(alpha)),
            Gelu => Fast::Act(Activation::Gelu),
            GeluTanh => Fast::Act(Activation::GeluTanh),
            Swish { alpha: 1.0 } => Fast::Act(Activation::Silu),
            _ => return None,
        })
    }

    fn run_f32(self, x: &[f32], out: &mut [f32]) {
        match self.fast() {
            Some(Fast::Unary(kind)) => fast::apply(kind, x, out),
            Some(Fast::Act(act)) => fast::activation(act, x, out),
            None => self.apply(x, out),
        }
    }

    /// The definition, for any `Real`.
    fn apply<R: Real>(self, x: &[R], out: &mut [R]) {
        use FloatFn::*;
        let c = R::from_f32;
        let (zero, one, half) = (c(0.0), c(1.0), c(0.5));
        let sigmoid = move |v: R| one / (one + (-v).exp());
        match self {
            Sqrt => map_slice(x, out, R::sqrt),
            Reciprocal => map_slice(x, out, R::recip),
            Exp => map_slice(x, out, R::exp),
            Log => map_slice(x, out, R::ln),
            Floor => map_slice(x, out, R::floor),
            Ceil => map_slice(x, out, R::ceil),
            Round => map_slice(x, out, R::round_ties_even),
            Sin => map_slice(x, out, R::sin),
            Cos => map_slice(x, out, R::cos),
            Tan => map_slice(x, out, R::tan),
            Asin => map_slice(x, out, R::asin),
            Acos => map_slice(x, out, R::acos),
            Atan => map_slice(x, out, R::atan),
            Sinh => map_slice(x, out, R::sinh),
            Cosh => map_slice(x, out, R::cosh),
            Asinh => map_slice(x, out, R::asinh),
            Acosh => map_slice(x, out, R::acosh),
            Atanh => map_slice(x, out, R::atanh),
            Erf => map_slice(x, out, R::erf),
            Tanh => map_slice(x, out, R::tanh),
            Sigmoid => map_slice(x, out, sigmoid),
            HardSigmoid { alpha, beta } => {
                let (a, b) = (c(alpha), c(beta));
                map_slice(x, out, |v| clamp(a * v + b, zero, one))
            }
            HardSwish => {
                let sixth = R::from_f64(1.0 / 6.0);
                map_slice(x, out, |v| v * clamp(v * sixth + half, zero, one))
            }
            LeakyRelu { alpha } => {
                let a = c(alpha);
                map_slice(x, out, |v| if v < zero { a * v } else { v })
            }
            Elu { alpha } => {
                let a = c(alpha);
                map_slice(x, out, |v| if v < zero { a * v.exp_m1() } else { v })
            }
            Selu { alpha, gamma } => {
                let (a, g) = (c(alpha), c(gamma));
                map_slice(
                    x,
                    out,
                    |v| if v > zero { g * v } else { g * a * v.exp_m1() },
                )
            }
            Celu { alpha } => {
                // max(0, x) + min(0, alpha (e^(x/alpha) - 1)), one side at a time.
                let a = c(alpha);
                map_slice(x, out, |v| if v > zero { v } else { a * (v / a).exp_m1() })
            }
            Softplus => {
                // ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), which neither overflows nor
                // rounds small results to 0.
                map_slice(x, out, |v| {
                    let pos = if v > zero { v } else { zero };
                    pos + (-v.abs()).exp().ln_1p()
                })
            }
            Softsign => map_slice(x, out, |v| v / (one + v.abs())),
            ThresholdedRelu { alpha } => {
                let a = c(alpha);
                map_slice(x, out, |v| if v > a { v } else { zero })
            }
            Gelu => {
                let s = R::from_f64(std::f64::consts::FRAC_1_SQRT_2);
                map_slice(x, out, |v| half * v * (one + (v * s).erf()))
            }
            GeluTanh => {
                let k = R::from_f64((2.0 / std::f64::consts::PI).sqrt());
                let cube = R::from_f64(0.044_715);
                map_slice(x, out, |v| {
                    half * v * (one + (k * (v + cube * v * v * v)).tanh())
                })
            }
            Mish => map_slice(x, out, |v| v * v.exp().ln_1p().tanh()),
            Swish { alpha } => {
                let a = c(alpha);
                map_slice(x, out, |v| v * sigmoid(a * v))
            }
        }
    }
}

/// `v` clamped to `[lo, hi]`, NaN kept; `hi` wins when `lo > hi` (ONNX Clip).
#[inline]
fn clamp<T: PartialOrd>(v: T, lo: T, hi: T) -> T {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

/// The float types functions are defined over.
trait Real:
    Storable
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// Converts an attribute. (Mathematical constants convert with `Elem::from_f64`, rounded
    /// once to the type's precision.)
    fn from_f32(v: f32) -> Self;
    fn erf(self) -> Self;
    fn sqrt(self) -> Self;
    fn recip(self) -> Self;
    fn exp(self) -> Self;
    fn exp_m1(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn round_ties_even(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tan(self) -> Self;
    fn asin(self) -> Self;
    fn acos(self) -> Self;
    fn atan(self) -> Self;
    fn sinh(self) -> Self;
    fn cosh(self) -> Self;
    fn asinh(self) -> Self;
    fn acosh(self) -> Self;
    fn atanh(self) -> Self;
    fn tanh(self) -> Self;
    fn abs(self) -> Self;
}

macro_rules! real {
    ($($t:ident),*) => {$(
        impl Real for $t {
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            fn erf(self) -> Self {
                // std has no erf; the f64 series is exact to f32 precision too.
                fast::erf_f64(self as f64) as $t
            }
            real!(@forward $t: sqrt recip exp exp_m1 ln ln_1p floor ceil round_ties_even sin cos
                  tan asin acos atan sinh cosh asinh acosh atanh tanh abs);
        }
    )*};
    (@forward $t:ident: $($f:ident)*) => {$(
        #[inline]
        fn $f(self) -> Self {
            $t::$f(self)
        }
    )*};
}

real!(f32, f64);

/// A float function on a tensor of any float type.
#[derive(Debug)]
struct FloatUnary(FloatFn);

impl Kernel for FloatUnary {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let f = self.0;
        let shape = x.shape().to_vec();
        let y = match x.dtype() {
            DType::F32 => {
                let src = x.as_slice::<f32>()?;
                let mut out = vec![0.0; src.len()];
                f.run_f32(src, &mut out);
                Tensor::from_vec(shape, out)
            }
            DType::F64 => {
                let src = x.as_slice::<f64>()?;
                let mut out = vec![0.0; src.len()];
                f.apply(src, &mut out);
                Tensor::from_vec(shape, out)
            }
            DType::F16 | DType::BF16 => {
                let wide = x.cast(DType::F32)?;
                let src = wide.as_slice::<f32>()?;
                let mut out = vec![0.0; src.len()];
                f.run_f32(src, &mut out);
                Tensor::from_vec(shape, out)?.cast(x.dtype())
            }
            d => Err(op_err!("expected a floating-point tensor, got {d}")),
        }?;
        Ok(vec![y])
    }
}

/// Abs, Neg and Sign, for every numeric type.
#[derive(Clone, Copy, Debug)]
enum Signed {
    Abs,
    Neg,
    Sign,
}

impl Kernel for Signed {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let y = with_num_dtype!(x.dtype(), T, {
            match self {
                Signed::Abs => map(x, <T as Num>::abs),
                Signed::Neg => map(x, <T as Num>::neg),
                Signed::Sign => map(x, <T as Num>::sign),
            }
        })?;
        Ok(vec![y])
    }
}

/// `max(x, 0)`, for floats and signed integers.
#[derive(Debug)]
struct Relu;

impl Kernel for Relu {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        if x.dtype() == DType::F32 {
            return Ok(vec![fast_activation(x, Activation::Relu)?]);
        }
        let y = with_num_dtype!(x.dtype(), T, {
            map(x, |v: T| if v < T::default() { T::default() } else { v })
        })?;
        Ok(vec![y])
    }
}

/// Runs a vectorized activation over an f32 tensor.
fn fast_activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    let src = x.as_slice::<f32>()?;
    let mut out = vec![0.0; src.len()];
    fast::activation(act, src, &mut out);
    Tensor::from_vec(x.shape().to_vec(), out)
}

/// `x < 0 ? slope * x : x`, with the slope broadcast to X's shape.
#[derive(Debug)]
struct PRelu {
    /// Before opset 7 a 1-D slope of length C applies per channel (axis 1), not numpy-style.
    per_channel_slope: bool,
}

impl Kernel for PRelu {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, slope) = (input(inputs, 0)?, input(inputs, 1)?);
        let channel_slope;
        let slope = match (x.shape(), slope.shape()) {
            ([_, c, rest @ ..], [n]) if self.per_channel_slope && n == c && !rest.is_empty() => {
                let mut shape = vec![*c];
                shape.resize(rest.len() + 1, 1);
                channel_slope = slope.reshape(shape)?;
                &channel_slope
            }
            _ => slope,
        };
        ensure!(
            x.dtype() == slope.dtype(),
            "X and slope have different types: {} and {}",
            x.dtype(),
            slope.dtype()
        );
        let y = with_num_dtype!(x.dtype(), T, {
            binary(
                x,
                slope,
                |v: T, s: T| if v < T::default() { Num::mul(v, s) } else { v },
            )
        })?;
        ensure!(
            y.shape() == x.shape(),
            "slope of shape {:?} does not broadcast to X's shape {:?}",
            slope.shape(),
            x.shape()
        );
        Ok(vec![y])
    }
}

/// Clamps to `[min, max]`: attributes before opset 11, optional scalar inputs since (an
/// absent bound does not clamp). When min > max, every value becomes max.
#[derive(Debug)]
struct Clip {
    /// The opset 6 attributes.
    attr_bounds: Option<(f32, f32)>,
}

impl Clip {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let attr_bounds = if ctx.opset < 11 {
            let a = ctx.attrs();
            Some((a.float_or("min", f32::MIN)?, a.float_or("max", f32::MAX)?))
        } else {
            None
        };
        boxed(Clip { attr_bounds })
    }
}

/// The value of an optional scalar bound input, or `default` when it is absent.
fn scalar_bound<T: Storable>(t: Option<&Tensor>, default: T) -> Result<T> {
    let Some(t) = t else { return Ok(default) };
    match t.as_slice::<T>()? {
        [v] => Ok(*v),
        _ => Err(op_err!(
            "min and max must be scalars, got shape {:?}",
            t.shape()
        )),
    }
}

impl Kernel for Clip {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let y = with_num_dtype!(x.dtype(), T, {
            let (lo, hi) = match self.attr_bounds {
                Some((lo, hi)) => (T::from_f64(lo as f64), T::from_f64(hi as f64)),
                None => (
                    scalar_bound(opt_input(inputs, 1), T::LOWEST)?,
                    scalar_bound(opt_input(inputs, 2), T::HIGHEST)?,
                ),
            };
            match x.dtype() {
                DType::F32 => {
                    fast_activation(x, Activation::Clip(lo.to_f64() as f32, hi.to_f64() as f32))
                }
                _ => map(x, |v: T| clamp(v, lo, hi)),
            }
        })?;
        Ok(vec![y])
    }
}

/// `x < -lambd ? x + bias : x > lambd ? x - bias : 0`, for every numeric type (computed in
/// f64 and converted back).
#[derive(Debug)]
struct Shrink {
    bias: f64,
    lambd: f64,
}

impl Kernel for Shrink {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (bias, lambd) = (self.bias, self.lambd);
        let y = with_num_dtype!(x.dtype(), T, {
            map(x, |v: T| {
                let v = v.to_f64();
                T::from_f64(if v < -lambd {
                    v + bias
                } else if v > lambd {
                    v - bias
                } else {
                    0.0
                })
            })
        })?;
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::super::elementwise::tests::{run_op, t};
    use super::*;
    use crate::ir::Attr;
    use half::f16;

    const XS: [f32; 6] = [-3.5, -1.0, -0.25, 0.0, 0.5, 2.5];

    fn eval(op: &str, attrs: &[(&str, Attr)], x: &Tensor) -> Tensor {
        run_op(op, 22, attrs, &[Some(x)]).unwrap().remove(0)
    }

    /// Checks `op` on `XS` in f32 and f64 against reference values (numpy, float64; the
    /// attributes used are exact in f32, so f64 results must be accurate to f64 precision).
    fn check(op: &str, attrs: &[(&str, Attr)], want: [f64; 6]) {
        let y = eval(op, attrs, &t(&[6], XS.to_vec()));
        for (g, w) in y.as_slice::<f32>().unwrap().iter().zip(want) {
            assert!(
                (*g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "{op} f32: {g} vs {w}"
            );
        }
        let x64 = t(&[6], XS.iter().map(|&v| v as f64).collect());
        let y = eval(op, attrs, &x64);
        for (g, w) in y.as_slice::<f64>().unwrap().iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                "{op} f64: {g} vs {w}"
            );
        }
    }

    #[test]
    fn float_functions_match_numpy() {
        check(
            "Exp",
            &[],
            [
                0.0301973834223185,
                0.36787944117144233,
                0.7788007830714049,
                1.0,
                1.6487212707001282,
                12.182493960703473,
            ],
        );
        check(
            "Tanh",
            &[],
            [
                -0.9981778976111987,
                -0.7615941559557649,
                -0.24491866240370913,
                0.0,
                0.46211715726000974,
                0.9866142981514303,
            ],
        );
        check(
            "Erf",
            &[],
            [
                -0.9999992569016276,
                -0.8427007929497149,
                -0.2763263901682369,
                0.0,
                0.5204998778130465,
                0.999593047982555,
            ],
        );
        check(
            "Sigmoid",
            &[],
            [
                0.02931223075135632,
                0.2689414213699951,
                0.43782349911420193,
                0.5,
                0.6224593312018546,
                0.9241418199787566,
            ],
        );
        check(
            "Atan",
            &[],
            [
                -1.2924966677897853,
                -std::f64::consts::FRAC_PI_4,
                -0.24497866312686414,
                0.0,
                0.4636476090008061,
                1.1902899496825317,
            ],
        );
        check(
            "Sinh",
            &[],
            [
                -16.542627287634996,
                -1.1752011936438014,
                -0.2526123168081683,
                0.0,
                0.5210953054937474,
                6.0502044810397875,
            ],
        );
        check(
            "Asinh",
            &[],
            [
                -1.9657204716496515,
                -0.881373587019543,
                -0.24746646154726346,
                0.0,
                0.48121182505960347,
                1.6472311463710958,
            ],
        );
    }

    #[test]
    fn activations_match_numpy() {
        let alpha = |v| [("alpha", Attr::Float(v))];
        check(
            "Elu",
            &alpha(0.5),
            [
                -0.48490130828884076,
                -0.31606027941427883,
                -0.11059960846429756,
                0.0,
                0.5,
                2.5,
            ],
        );
        // With the f32 default attributes alpha = 1.6732632, gamma = 1.050701.
        check(
            "Selu",
            &[],
            [
                -1.7050093462869824,
                -1.1113307412864781,
                -0.3888901986937533,
                0.0,
                0.5253505110740662,
                2.626752555370331,
            ],
        );
        check(
            "Celu",
            &alpha(2.0),
            [
                -1.6524521130991097,
                -0.7869386805747332,
                -0.2350061948308091,
                0.0,
                0.5,
                2.5,
            ],
        );
        check(
            "Softplus",
            &[],
            [
                0.029750418272620566,
                0.31326168751822286,
                0.5759394198788436,
                std::f64::consts::LN_2,
                0.9740769841801067,
                2.5788897342925496,
            ],
        );
        check(
            "Softsign",
            &[],
            [
                -0.7777777777777778,
                -0.5,
                -0.2,
                0.0,
                0.3333333333333333,
                0.7142857142857143,
            ],
        );
        check(
            "Mish",
            &[],
            [
                -0.1040957544863712,
                -0.30340146137410895,
                -0.129926963679141,
                0.0,
                0.3752452113048951,
                2.471392304557881,
            ],
        );
        check(
            "Gelu",
            &[],
            [
                -0.0008142017766243903,
                -0.15865525393145707,
                -0.10032341857926907,
                0.0,
                0.34573123063700656,
                2.4844758366855597,
            ],
        );
        let tanh = [("approximate", Attr::String("tanh".into()))];
        check(
            "Gelu",
            &tanh,
            [
                -0.0006161976553737403,
                -0.1588080093917233,
                -0.100324649298315,
                0.0,
                0.34571400982514394,
                2.484915733910001,
            ],
        );
        check(
            "Swish",
            &alpha(2.0),
            [
                -0.003188679180402259,
                -0.11920292202211755,
                -0.09438516719953635,
                0.0,
                0.36552928931500245,
                2.483267872689288,
            ],
        );
        let hard = [("alpha", Attr::Float(0.25)), ("beta", Attr::Float(0.5))];
        check("HardSigmoid", &hard, [0.0, 0.25, 0.4375, 0.5, 0.625, 1.0]);
        check(
            "HardSwish",
            &[],
            [
                0.0,
                -1.0 / 3.0,
                -0.25 * (0.5 - 0.25 / 6.0),
                0.0,
                0.5 * (0.5 + 0.5 / 6.0),
                2.5 * (0.5 + 2.5 / 6.0),
            ],
        );
        check(
            "LeakyRelu",
            &alpha(0.125),
            [-0.4375, -0.125, -0.03125, 0.0, 0.5, 2.5],
        );
        check(
            "ThresholdedRelu",
            &alpha(0.5),
            [0.0, 0.0, 0.0, 0.0, 0.0, 2.5],
        );
        let approx = [("approximate", Attr::String("erf".into()))];
        assert!(run_op("Gelu", 20, &approx, &[Some(&t(&[1], vec![1.0f32]))]).is_err());
    }

    #[test]
    fn rounding_functions() {
        // np.round is half to even: [0.5, 1.5, 2.5, -0.5, -1.5, 2.4, -2.6] -> [0, 2, 2, -0, -2, 2, -3].
        let x = t(&[7], vec![0.5f32, 1.5, 2.5, -0.5, -1.5, 2.4, -2.6]);
        assert_eq!(
            eval("Round", &[], &x).as_slice::<f32>().unwrap(),
            [0., 2., 2., -0., -2., 2., -3.]
        );
        assert_eq!(
            eval("Floor", &[], &x).as_slice::<f32>().unwrap(),
            [0., 1., 2., -1., -2., 2., -3.]
        );
        assert_eq!(
            eval("Ceil", &[], &x).as_slice::<f32>().unwrap(),
            [1., 2., 3., -0., -1., 3., -2.]
        );
    }

    #[test]
    fn half_types_compute_through_f32() {
        let x = t(
            &[3],
            vec![f16::from_f32(-1.0), f16::from_f32(0.0), f16::from_f32(4.0)],
        );
        let y = eval("Sqrt", &[], &x);
        let y: Vec<f32> = y
            .as_slice::<f16>()
            .unwrap()
            .iter()
            .map(|v| v.to_f32())
            .collect();
        assert!(y[0].is_nan() && y[1] == 0.0 && y[2] == 2.0);
        let y = eval("Sigmoid", &[], &x);
        assert_eq!(y.as_slice::<f16>().unwrap()[1], f16::from_f32(0.5));
        let bad = t(&[1], vec![1i32]);
        assert!(run_op("Sqrt", 22, &[], &[Some(&bad)]).is_err());
    }

    #[test]
    fn relu_and_signed_ops_take_integers() {
        let x = t(&[4], vec![-5i32, 0, 3, i32::MIN]);
        assert_eq!(
            eval("Relu", &[], &x).as_slice::<i32>().unwrap(),
            [0, 0, 3, 0]
        );
        assert_eq!(
            eval("Abs", &[], &x).as_slice::<i32>().unwrap(),
            [5, 0, 3, i32::MIN]
        );
        assert_eq!(
            eval("Neg", &[], &x).as_slice::<i32>().unwrap(),
            [5, 0, -3, i32::MIN]
        );
        assert_eq!(
            eval("Sign", &[], &x).as_slice::<i32>().unwrap(),
            [-1, 0, 1, -1]
        );
        let x = t(&[3], vec![-2.0f32, f32::NAN, 1.5]);
        let y = eval("Relu", &[], &x);
        let y = y.as_slice::<f32>().unwrap();
        assert!(y[0] == 0.0 && y[1].is_nan() && y[2] == 1.5);
    }

    #[test]
    fn prelu_broadcasts_slope_to_x() {
        // X [1, 2, 2] with per-channel slope [2, 1].
        let x = t(&[1, 2, 2], vec![-1.0f32, 2.0, -3.0, 4.0]);
        let slope = t(&[2, 1], vec![0.1f32, 0.5]);
        let y = run_op("PRelu", 16, &[], &[Some(&x), Some(&slope)])
            .unwrap()
            .remove(0);
        assert_eq!(y.as_slice::<f32>().unwrap(), [-0.1, 2.0, -1.5, 4.0]);
        // The slope must not grow X.
        let wide = t(&[2, 2, 2], vec![0.1f32; 8]);
        assert!(run_op("PRelu", 16, &[], &[Some(&x), Some(&wide)]).is_err());
    }

    #[test]
    fn clip_bounds_from_inputs_or_attributes() {
        let x = t(&[5], vec![-3.0f32, -1.0, 0.5, 2.0, f32::NAN]);
        let clip = |inputs: &[Option<&Tensor>]| {
            run_op("Clip", 13, &[], inputs)
                .unwrap()
                .remove(0)
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        let lo = t(&[], vec![-1.5f32]);
        let hi = t(&[], vec![1.0f32]);
        let y = clip(&[Some(&x), Some(&lo), Some(&hi)]);
        assert_eq!(y[..4], [-1.5, -1.0, 0.5, 1.0]);
        assert!(y[4].is_nan());
        // Missing min, missing max, both missing.
        assert_eq!(
            clip(&[Some(&x), None, Some(&hi)])[..4],
            [-3.0, -1.0, 0.5, 1.0]
        );
        assert_eq!(clip(&[Some(&x), Some(&lo)])[..4], [-1.5, -1.0, 0.5, 2.0]);
        assert_eq!(clip(&[Some(&x)])[..4], [-3.0, -1.0, 0.5, 2.0]);
        // min > max: everything becomes max.
        assert_eq!(clip(&[Some(&x), Some(&hi), Some(&lo)])[..4], [-1.5; 4]);
        // Opset 6: attributes.
        let attrs = [("min", Attr::Float(0.0)), ("max", Attr::Float(1.0))];
        let y = run_op("Clip", 6, &attrs, &[Some(&x)]).unwrap().remove(0);
        assert_eq!(y.as_slice::<f32>().unwrap()[..4], [0.0, 0.0, 0.5, 1.0]);
        // Integers, and a non-scalar bound.
        let xi = t(&[4], vec![-300i64, 5, 7, 300]);
        let y = run_op(
            "Clip",
            13,
            &[],
            &[
                Some(&xi),
                Some(&t(&[], vec![0i64])),
                Some(&t(&[], vec![6i64])),
            ],
        );
        assert_eq!(y.unwrap()[0].as_slice::<i64>().unwrap(), [0, 5, 6, 6]);
        assert!(run_op(
            "Clip",
            13,
            &[],
            &[Some(&x), Some(&t(&[2], vec![0.0f32, 1.0]))]
        )
        .is_err());
    }

    #[test]
    fn shrink_on_floats_and_ints() {
        let attrs = [("lambd", Attr::Float(1.5)), ("bias", Attr::Float(1.0))];
        let x = t(&[5], vec![-2.0f32, -1.0, 0.0, 1.5, 3.0]);
        assert_eq!(
            eval("Shrink", &attrs, &x).as_slice::<f32>().unwrap(),
            [-1.0, 0.0, 0.0, 0.0, 2.0]
        );
        let x = t(&[3], vec![-4i8, 1, 4]);
        assert_eq!(
            eval("Shrink", &attrs, &x).as_slice::<i8>().unwrap(),
            [-3, 0, 3]
        );
    }

    #[test]
    fn large_tensors_match_the_scalar_definition() {
        // Above the parallel threshold, through the vectorized kernels.
        let n = 100_003;
        let xs: Vec<f32> = (0..n).map(|i| (i as f32 / n as f32 - 0.5) * 16.0).collect();
        let y = eval("Gelu", &[], &t(&[n], xs.clone()));
        for (&x, &g) in xs.iter().zip(y.as_slice::<f32>().unwrap()) {
            let w = 0.5 * x as f64 * (1.0 + fast::erf_f64(x as f64 / std::f64::consts::SQRT_2));
            assert!((g as f64 - w).abs() < 5e-6, "gelu({x}) = {g}, want {w}");
        }
    }
}
