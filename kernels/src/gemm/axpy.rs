//! Rows of direct (depthwise) convolutions: `y += Σ_taps w · x[first + i·stride]`, compiled for
//! the best ISA of the CPU like the GEMM microkernels (the loops themselves are left to the
//! compiler's vectorizer, which only needs the wider registers and FMA enabled).

use crate::isa::{isa, Isa};
use std::ops::Range;

/// One kernel tap along a row: outputs `outputs` read the input from index `first` on (one
/// step of the stride per output), weighted by `weights[index]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tap {
    pub index: usize,
    pub outputs: Range<usize>,
    pub first: usize,
}

/// For each tap, `y[o] += weights[tap.index] · x[tap.first + (o - start) · stride]` over its
/// outputs `o` (clipped to `y`): a whole row of a direct convolution in one dispatched call.
pub fn axpy_taps(y: &mut [f32], x: &[f32], weights: &[f32], taps: &[Tap], stride: usize) {
    let stride = stride.max(1);
    match isa() {
        Isa::Portable => taps_body::<false>(y, x, weights, taps, stride),
        // SAFETY (all arms below): `isa()` picked the arm only after detecting its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2(y, x, weights, taps, stride) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512(y, x, weights, taps, stride) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { neon(y, x, weights, taps, stride) },
    }
}

#[inline(always)]
fn taps_body<const FMA: bool>(
    y: &mut [f32],
    x: &[f32],
    weights: &[f32],
    taps: &[Tap],
    stride: usize,
) {
    for tap in taps {
        let (Some(&a), Some(src)) = (weights.get(tap.index), x.get(tap.first..)) else {
            continue;
        };
        let end = tap.outputs.end.min(y.len());
        if let Some(dst) = y.get_mut(tap.outputs.start.min(end)..end) {
            body::<FMA>(dst, a, src, stride);
        }
    }
}

/// The loop, with fused multiply-adds where the ISA has them (without, `mul_add` would be a
/// libm call).
#[inline(always)]
fn body<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32], stride: usize) {
    if stride == 1 {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = if FMA { x.mul_add(a, *y) } else { *y + a * x };
        }
    } else {
        for (y, &x) in y.iter_mut().zip(x.iter().step_by(stride)) {
            *y = if FMA { x.mul_add(a, *y) } else { *y + a * x };
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(y: &mut [f32], x: &[f32], weights: &[f32], taps: &[Tap], stride: usize) {
    taps_body::<true>(y, x, weights, taps, stride)
}

/// # Safety
/// The CPU has AVX-512F (which implies AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512(y: &mut [f32], x: &[f32], weights: &[f32], taps: &[Tap], stride: usize) {
    taps_body::<true>(y, x, weights, taps, stride)
}

/// # Safety
/// None beyond aarch64 itself (NEON is baseline).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn neon(y: &mut [f32], x: &[f32], weights: &[f32], taps: &[Tap], stride: usize) {
    taps_body::<true>(y, x, weights, taps, stride)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y += a · x[::stride]` through the dispatched entry point.
    fn axpy(y: &mut [f32], a: f32, x: &[f32], stride: usize) {
        let tap = Tap {
            index: 0,
            outputs: 0..y.len(),
            first: 0,
        };
        axpy_taps(y, x, &[a], &[tap], stride);
    }

    #[test]
    fn axpy_adds_scaled_strided_values() {
        let x: Vec<f32> = (0..40).map(|i| i as f32).collect();
        let mut y = vec![1.0f32; 19];
        axpy(&mut y, 0.5, &x, 2);
        let want: Vec<f32> = (0..19).map(|i| 1.0 + 0.5 * (2 * i) as f32).collect();
        assert_eq!(y, want);
        // Contiguous, and a y longer than x: the extra elements are left alone.
        let mut y = vec![0.0f32; 45];
        axpy(&mut y, -1.0, &x, 1);
        assert_eq!(&y[..40], &x.iter().map(|v| -v).collect::<Vec<_>>()[..]);
        assert_eq!(&y[40..], &[0.0; 5]);
        // The portable body agrees.
        let mut z = vec![0.0f32; 45];
        body::<false>(&mut z, -1.0, &x, 1);
        assert_eq!(y, z);
    }

    #[test]
    fn taps_cover_a_convolution_row() {
        // x = [1, 2, 3, 4], kernel [1, 10, 100] with padding 1: y[o] = Σ_k w[k] x[o + k - 1].
        let x = [1.0, 2.0, 3.0, 4.0];
        let w = [1.0, 10.0, 100.0];
        let taps = [
            Tap {
                index: 0,
                outputs: 1..4,
                first: 0,
            },
            Tap {
                index: 1,
                outputs: 0..4,
                first: 0,
            },
            Tap {
                index: 2,
                outputs: 0..3,
                first: 1,
            },
        ];
        let mut y = [0.0f32; 4];
        axpy_taps(&mut y, &x, &w, &taps, 1);
        assert_eq!(y, [210.0, 321.0, 432.0, 43.0]);
    }
}
