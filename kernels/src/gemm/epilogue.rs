//! What happens to a finished tile of `C` while it is still in L1: scale, bias, residual,
//! activation — in that order.

use super::MatRef;

/// The activation of the epilogue: the one vectorized set shared with the elementwise ops.
pub use crate::elementwise::Activation;

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

impl<'a> Epilogue<'a> {
    /// Whether the epilogue leaves the product untouched.
    pub(crate) fn is_identity(&self) -> bool {
        self.alpha == 1.0
            && matches!(self.bias, Bias::None)
            && self.residual.is_none()
            && self.activation.is_none()
    }

    /// The epilogue as the microkernels apply it while storing a tile — a per-row or
    /// per-column bias that starts the accumulators, a row-major residual added and a Relu/Clip applied before the
    /// store, any other activation left to a pass over each finished block — or `None` when it
    /// needs more (a scale, a column bias, a residual with strided columns), which then all
    /// runs as that pass. Convolutions with bias (+ residual) + Relu/Relu6 never go back over
    /// their output; with SiLU or GELU only for the activation.
    pub(super) fn in_kernel(&self) -> Option<InKernel<'a>> {
        if self.alpha != 1.0 || self.residual.is_some_and(|r| r.col_stride != 1) {
            return None;
        }
        let (row_bias, col_bias) = match self.bias {
            Bias::None => (None, None),
            Bias::PerRow(b) => (Some(b), None),
            Bias::PerCol(b) => (None, Some(b)),
            Bias::Scalar(_) => return None,
        };
        let (clamp, after) = match self.activation {
            None => (None, None),
            Some(Activation::Relu) => (Some((0.0, f32::INFINITY)), None),
            Some(Activation::Clip(lo, hi)) => (Some((lo, hi)), None),
            Some(other) => (None, Some(other)),
        };
        Some(InKernel {
            row_bias,
            col_bias,
            residual: self.residual,
            clamp,
            after,
        })
    }

    /// Applies the epilogue to one row segment of `C`: row `i`, columns `j0..j0 + row.len()`.
    /// Bias and residual shapes were validated against `C` before the product started.
    pub(crate) fn apply_row(&self, row: &mut [f32], i: usize, j0: usize) {
        self.apply_linear(row, i, j0);
        if let Some(act) = self.activation {
            crate::elementwise::apply_activation(act, row);
        }
    }

    /// Applies the epilogue to one column segment of `C`: column `j`, rows `i0..i0 + col.len()`.
    pub(crate) fn apply_col(&self, col: &mut [f32], i0: usize, j: usize) {
        let rows = i0..i0 + col.len();
        if self.alpha != 1.0 {
            col.iter_mut().for_each(|x| *x *= self.alpha);
        }
        match self.bias {
            Bias::None => {}
            Bias::Scalar(b) => col.iter_mut().for_each(|x| *x += b),
            Bias::PerRow(b) => col
                .iter_mut()
                .zip(&b[rows.clone()])
                .for_each(|(x, b)| *x += b),
            Bias::PerCol(b) => {
                let b = b[j];
                col.iter_mut().for_each(|x| *x += b);
            }
        }
        if let Some(r) = self.residual {
            for (x, i) in col.iter_mut().zip(rows) {
                *x += r.data[i * r.row_stride + j * r.col_stride];
            }
        }
        if let Some(act) = self.activation {
            crate::elementwise::apply_activation(act, col);
        }
    }

    /// The epilogue's scale, bias and residual (everything but the activation) on one row
    /// segment, as for `apply_row`.
    pub(super) fn apply_linear(&self, row: &mut [f32], i: usize, j0: usize) {
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
    }
}

/// What the microkernels apply themselves (see [`Epilogue::in_kernel`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct InKernel<'a> {
    /// One value per row of C.
    pub row_bias: Option<&'a [f32]>,
    /// One value per column of C.
    pub col_bias: Option<&'a [f32]>,
    /// Added to the finished product, before the clamp; its columns are contiguous.
    pub residual: Option<MatRef<'a>>,
    /// `Activation::Clip` bounds (Relu is `(0, inf)`).
    pub clamp: Option<(f32, f32)>,
    /// An activation the kernels cannot apply, for the pass after the block is stored.
    pub after: Option<Activation>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
            crate::elementwise::apply_activation(act, &mut y);
            for (g, w) in y.iter().zip(want) {
                assert!((g - w).abs() < 2e-6, "{act:?}: got {y:?}, want {want:?}");
            }
        }
    }
}
