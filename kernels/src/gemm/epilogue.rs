//! What happens to a finished tile of `C` while it is still in L1: scale, bias, residual,
//! activation — in that order.

use super::MatRef;

/// An activation applied elementwise at the end of the epilogue.
///
/// Same variants (and parameter meaning) as ONNX's ops of the same names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// `alpha`: slope for negative inputs.
    LeakyRelu(f32),
    /// `(min, max)`.
    Clip(f32, f32),
    Sigmoid,
    /// `(alpha, beta)`: `clamp(alpha·x + beta, 0, 1)`.
    HardSigmoid(f32, f32),
    HardSwish,
    /// Exact, erf-based.
    Gelu,
    /// The tanh approximation.
    GeluTanh,
    Silu,
    Tanh,
}

impl Activation {
    /// Applies the activation in place; every arm is branch-free arithmetic, so it vectorizes.
    pub fn apply(self, xs: &mut [f32]) {
        match self {
            Activation::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
            Activation::LeakyRelu(a) => xs
                .iter_mut()
                .for_each(|x| *x = if *x < 0.0 { *x * a } else { *x }),
            Activation::Clip(lo, hi) => xs.iter_mut().for_each(|x| *x = x.max(lo).min(hi)),
            Activation::Sigmoid => xs.iter_mut().for_each(|x| *x = sigmoid(*x)),
            Activation::HardSigmoid(a, b) => xs
                .iter_mut()
                .for_each(|x| *x = (a * *x + b).clamp(0.0, 1.0)),
            Activation::HardSwish => xs
                .iter_mut()
                .for_each(|x| *x *= (*x / 6.0 + 0.5).clamp(0.0, 1.0)),
            Activation::Gelu => xs
                .iter_mut()
                .for_each(|x| *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2))),
            Activation::GeluTanh => {
                const C: f32 = 0.797_884_6; // sqrt(2 / pi)
                xs.iter_mut()
                    .for_each(|x| *x = 0.5 * *x * (1.0 + tanh(C * (*x + 0.044715 * *x * *x * *x))))
            }
            Activation::Silu => xs.iter_mut().for_each(|x| *x *= sigmoid(*x)),
            Activation::Tanh => xs.iter_mut().for_each(|x| *x = tanh(*x)),
        }
    }
}

/// `e^x` within 2 ulp over the range that matters here, from arithmetic and bit operations
/// only, so loops over it vectorize (the libm call would not). Inputs are clamped to
/// [-87.3, 88.3]: results saturate near the smallest normal and ~2e38 instead of 0 and ∞.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Cephes expf: e^x = 2^n · e^f with n = round(x / ln 2) and |f| <= ln 2 / 2.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let f = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * f + 1.398_199_9e-3;
    let p = p * f + 8.333_452e-3;
    let p = p * f + 4.166_579_6e-2;
    let p = p * f + 0.166_666_65;
    let p = p * f + 0.5;
    let ef = p * f * f + f + 1.0;
    ef * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// erf by Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, i.e. f32 precision.
#[inline]
fn erf(x: f32) -> f32 {
    // The formula holds for x >= 0; erf is odd.
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let t = 1.0 / (1.0 + P * x.abs());
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp(-x * x);
    y.copysign(x)
}

/// A bias added to every element of `C`.
#[derive(Clone, Copy, Debug, Default)]
pub enum Bias<'a> {
    #[default]
    None,
    /// One value for the whole matrix.
    Scalar(f32),
    /// `bias[i]` added to row `i` (length `m`), e.g. a convolution's per-channel bias.
    PerRow(&'a [f32]),
    /// `bias[j]` added to column `j` (length `n`), e.g. a linear layer's bias.
    PerCol(&'a [f32]),
}

/// `C = activation(alpha · A·B + bias + residual)`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub alpha: f32,
    pub bias: Bias<'a>,
    /// An `m × n` matrix added after the bias (a skip connection).
    pub residual: Option<MatRef<'a>>,
    pub activation: Option<Activation>,
}

impl Default for Epilogue<'_> {
    fn default() -> Self {
        Epilogue {
            alpha: 1.0,
            bias: Bias::None,
            residual: None,
            activation: None,
        }
    }
}

impl Epilogue<'_> {
    /// Whether the epilogue leaves the product untouched.
    pub(super) fn is_identity(&self) -> bool {
        self.alpha == 1.0
            && matches!(self.bias, Bias::None)
            && self.residual.is_none()
            && self.activation.is_none()
    }

    /// Applies the epilogue to one row segment of `C`: row `i`, columns `j0..j0 + row.len()`.
    /// Bias and residual shapes were validated against `C` before the product started.
    pub(super) fn apply_row(&self, row: &mut [f32], i: usize, j0: usize) {
        let cols = j0..j0 + row.len();
        if self.alpha != 1.0 {
            row.iter_mut().for_each(|x| *x *= self.alpha);
        }
        match self.bias {
            Bias::None => {}
            Bias::Scalar(b) => row.iter_mut().for_each(|x| *x += b),
            Bias::PerRow(b) => {
                let b = b[i];
                row.iter_mut().for_each(|x| *x += b);
            }
            Bias::PerCol(b) => row
                .iter_mut()
                .zip(&b[cols.clone()])
                .for_each(|(x, b)| *x += b),
        }
        if let Some(r) = self.residual {
            if r.col_stride == 1 {
                let start = i * r.row_stride + j0;
                let src = &r.data[start..start + row.len()];
                row.iter_mut().zip(src).for_each(|(x, r)| *x += r);
            } else {
                for (x, j) in row.iter_mut().zip(cols) {
                    *x += r.data[i * r.row_stride + j * r.col_stride];
                }
            }
        }
        if let Some(act) = self.activation {
            act.apply(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate_over_the_useful_range() {
        let mut worst = 0.0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 3e-7, "max relative error {worst}");
    }

    #[test]
    fn activations_match_reference_values() {
        // Reference values from numpy / scipy.special.erf in float64.
        let x = [-3.0f32, -0.5, 0.0, 0.7, 2.0];
        let cases: [(Activation, [f32; 5]); 10] = [
            (Activation::Relu, [0.0, 0.0, 0.0, 0.7, 2.0]),
            (Activation::LeakyRelu(0.1), [-0.3, -0.05, 0.0, 0.7, 2.0]),
            (Activation::Clip(-1.0, 1.0), [-1.0, -0.5, 0.0, 0.7, 1.0]),
            (
                Activation::Sigmoid,
                [0.047_425_87, 0.377_540_67, 0.5, 0.668_187_8, 0.880_797_1],
            ),
            (
                Activation::HardSigmoid(0.2, 0.5),
                [0.0, 0.4, 0.5, 0.64, 0.9],
            ),
            (
                Activation::HardSwish,
                [-0.0, -0.208_333_33, 0.0, 0.431_666_67, 1.666_666_7],
            ),
            (
                Activation::Gelu,
                [-0.004_049_694, -0.154_268_77, 0.0, 0.530_625_4, 1.954_499_7],
            ),
            (
                Activation::GeluTanh,
                [-0.003_637_392, -0.154_286, 0.0, 0.530_570_1, 1.954_597_7],
            ),
            (
                Activation::Silu,
                [-0.142_277_6, -0.188_770_33, 0.0, 0.467_731_44, 1.761_594_2],
            ),
            (
                Activation::Tanh,
                [-0.995_054_8, -0.462_117_16, 0.0, 0.604_367_8, 0.964_027_6],
            ),
        ];
        for (act, want) in cases {
            let mut y = x;
            act.apply(&mut y);
            for (g, w) in y.iter().zip(want) {
                assert!((g - w).abs() < 2e-6, "{act:?}: got {y:?}, want {want:?}");
            }
        }
    }
}
