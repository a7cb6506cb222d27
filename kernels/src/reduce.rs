//! Reductions over contiguous `f32` runs (global average pooling's plane sums), compiled for
//! the best ISA of the CPU like the other autovectorized kernels.
//!
//! Floating-point addition does not reassociate, so a plain `iter().sum()` is one serial chain
//! of adds; here 64 running sums (four 16-lane vectors, enough to cover the add latency) take
//! every 64th element, and are added pairwise at the end. That is also a little more accurate
//! than one long chain: each sum holds `1/64` of the terms.

use crate::isa::{isa, Isa};

/// Running sums kept apart: four vectors of `LANES`.
const SUMS: usize = 4 * LANES;
const LANES: usize = 16;

/// `Σ x`.
pub fn sum(x: &[f32]) -> f32 {
    match isa() {
        Isa::Portable => sum_body(x),
        // SAFETY (all arms below): `isa()` picked the arm only after detecting its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { sum_avx2(x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { sum_avx512(x) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { sum_neon(x) },
    }
}

/// Lane by lane sums of 16-lane cells (`x.len()` a multiple of 16): `out[l] = Σ_i x[16·i + l]`,
/// the sums of a channel-blocked image's 16 channels (`ops::pool`'s blocked global pool).
///
/// # Panics
/// If `x.len()` is not a multiple of 16.
pub fn sum_lanes(x: &[f32]) -> [f32; LANES] {
    assert!(x.len().is_multiple_of(LANES), "whole 16-lane cells");
    match isa() {
        Isa::Portable => sum_lanes_body(x),
        // SAFETY (all arms below): `isa()` picked the arm only after detecting its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { sum_lanes_avx2(x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { sum_lanes_avx512(x) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { sum_lanes_neon(x) },
    }
}

#[inline(always)]
fn sum_lanes_body(x: &[f32]) -> [f32; LANES] {
    // Four cells' running sums kept apart, as in `sum_body`.
    let mut sums = [0.0f32; SUMS];
    let chunks = x.chunks_exact(SUMS);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (s, v) in sums.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    let mut out = [0.0f32; LANES];
    for (i, s) in out.iter_mut().enumerate() {
        *s = (sums[i] + sums[i + LANES]) + (sums[i + 2 * LANES] + sums[i + 3 * LANES]);
    }
    for cell in rest.chunks_exact(LANES) {
        for (s, v) in out.iter_mut().zip(cell) {
            *s += v;
        }
    }
    out
}

/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_lanes_avx2(x: &[f32]) -> [f32; LANES] {
    sum_lanes_body(x)
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn sum_lanes_avx512(x: &[f32]) -> [f32; LANES] {
    sum_lanes_body(x)
}

/// # Safety
/// None beyond aarch64 itself (NEON is baseline).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn sum_lanes_neon(x: &[f32]) -> [f32; LANES] {
    sum_lanes_body(x)
}

#[inline(always)]
fn sum_body(x: &[f32]) -> f32 {
    let mut sums = [0.0f32; SUMS];
    let chunks = x.chunks_exact(SUMS);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (s, v) in sums.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    // Down to one vector's worth, which also takes what is left in whole vectors (short
    // planes, such as 7×7 maps, are mostly that part), then pairwise to one.
    let mut narrow = [0.0f32; LANES];
    for (i, s) in narrow.iter_mut().enumerate() {
        *s = (sums[i] + sums[i + LANES]) + (sums[i + 2 * LANES] + sums[i + 3 * LANES]);
    }
    let vectors = rest.chunks_exact(LANES);
    let tail: f32 = vectors.remainder().iter().sum();
    for v in vectors {
        for (s, v) in narrow.iter_mut().zip(v) {
            *s += v;
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            narrow[i] += narrow[i + width];
        }
    }
    narrow[0] + tail
}

/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(x: &[f32]) -> f32 {
    sum_body(x)
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn sum_avx512(x: &[f32]) -> f32 {
    sum_body(x)
}

/// # Safety
/// None beyond aarch64 itself (NEON is baseline).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn sum_neon(x: &[f32]) -> f32 {
    sum_body(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_match_a_wide_reference() {
        for cells in [0, 1, 3, 4, 5, 49, 196, 3136] {
            let x: Vec<f32> = (0..cells * LANES)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let got = sum_lanes(&x);
            for (l, got) in got.iter().enumerate() {
                let lane = x.iter().skip(l).step_by(LANES);
                let want: f64 = lane.clone().map(|&v| v as f64).sum();
                let scale: f64 = lane.map(|&v| v.abs() as f64).sum::<f64>().max(1.0);
                assert!(
                    (*got as f64 - want).abs() <= 1e-6 * scale,
                    "{cells} cells, lane {l}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn sums_match_a_wide_reference_at_every_length() {
        for n in [0, 1, 5, 63, 64, 65, 127, 200, 1000, 12544] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let want: f64 = x.iter().map(|&v| v as f64).sum();
            let got = sum(&x) as f64;
            let scale: f64 = x.iter().map(|&v| v.abs() as f64).sum::<f64>().max(1.0);
            assert!(
                (got - want).abs() <= 1e-6 * scale,
                "n = {n}: {got} vs {want}"
            );
        }
    }
}
