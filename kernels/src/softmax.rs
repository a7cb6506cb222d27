//! Softmax over contiguous rows, each row in three passes over L1-resident data (its maximum;
//! `e^(x - max)` stored and summed; the scaling), compiled per instruction set like
//! `elementwise`. Calling the vectorized exp once per row from a generic loop cost a dispatch
//! and two more passes per row: a [12, 128, 128] attention softmax ran at 1.6× onnxruntime's
//! time.

use crate::elementwise::{exp_f32, isa, Isa, BASELINE_FMA, LANE_BLOCK};

/// `out` = softmax of each `n`-long row of `x`, on the calling thread. A row holding NaN
/// gives NaN, a row of only -inf NaN (as `exp(x - max) / sum` does). Panics unless `x` and
/// `out` have the same length, a multiple of `n`.
pub fn softmax_rows(x: &[f32], out: &mut [f32], n: usize) {
    assert!(
        x.len() == out.len() && (n == 0 && x.is_empty() || n > 0 && x.len().is_multiple_of(n)),
        "softmax_rows: {} inputs, {} outputs, rows of {n}",
        x.len(),
        out.len()
    );
    if n == 0 {
        return;
    }
    match isa() {
        // SAFETY: `isa()` returns Avx512 only after detecting avx512f, avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { rows_avx512(x, out, n) },
        // SAFETY: `isa()` returns Avx2Fma only after detecting avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { rows_avx2(x, out, n) },
        Isa::Baseline => rows::<BASELINE_FMA>(x, out, n),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512(x: &[f32], out: &mut [f32], n: usize) {
    rows::<true>(x, out, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(x: &[f32], out: &mut [f32], n: usize) {
    rows::<true>(x, out, n)
}

#[inline(always)]
fn rows<const FMA: bool>(x: &[f32], out: &mut [f32], n: usize) {
    for (x, out) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let m = max(x);
        let inv = 1.0 / exp_shifted_sum::<FMA>(x, m, out);
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

/// The largest element, NaN ignored (a NaN row still ends NaN: `x - max` is NaN there).
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANE_BLOCK];
    let mut blocks = x.chunks_exact(LANE_BLOCK);
    for b in &mut blocks {
        let b: &[f32; LANE_BLOCK] = b.try_into().expect("a whole block");
        for (l, &v) in lanes.iter_mut().zip(b) {
            *l = if v > *l { v } else { *l };
        }
    }
    let lanes_max = fold_lanes(lanes, |m, v| if v > m { v } else { m });
    let tail = blocks.remainder().iter();
    tail.fold(lanes_max, |m, &v| if v > m { v } else { m })
}

/// `op` over the lanes as a tree (five vector steps): a running fold over them would be a
/// chain of 32 dependent scalar operations, on 128-float rows more than the rest of the row.
#[inline(always)]
fn fold_lanes(mut lanes: [f32; LANE_BLOCK], op: impl Fn(f32, f32) -> f32) -> f32 {
    const { assert!(LANE_BLOCK == 32) };
    for i in 0..16 {
        lanes[i] = op(lanes[i], lanes[i + 16]);
    }
    for i in 0..8 {
        lanes[i] = op(lanes[i], lanes[i + 8]);
    }
    for i in 0..4 {
        lanes[i] = op(lanes[i], lanes[i + 4]);
    }
    for i in 0..2 {
        lanes[i] = op(lanes[i], lanes[i + 2]);
    }
    op(lanes[0], lanes[1])
}

/// `out[i] = e^(x[i] - m)`, returning their sum (in `LANE_BLOCK` lanes, so it vectorizes).
#[inline(always)]
fn exp_shifted_sum<const FMA: bool>(x: &[f32], m: f32, out: &mut [f32]) -> f32 {
    let mut sums = [0.0f32; LANE_BLOCK];
    let mut outs = out.chunks_exact_mut(LANE_BLOCK);
    let mut xs = x.chunks_exact(LANE_BLOCK);
    for (o, b) in (&mut outs).zip(&mut xs) {
        let o: &mut [f32; LANE_BLOCK] = o.try_into().expect("a whole block");
        let b: &[f32; LANE_BLOCK] = b.try_into().expect("a whole block");
        for k in 0..LANE_BLOCK {
            let e = exp_f32::<FMA, false>(b[k] - m);
            o[k] = e;
            sums[k] += e;
        }
    }
    let mut sum = fold_lanes(sums, |a, b| a + b);
    let (tail_x, tail_out) = (xs.remainder(), outs.into_remainder());
    if !tail_x.is_empty() {
        // The tail as one padded block (the padding's values are computed, never used).
        let mut block = [0.0f32; LANE_BLOCK];
        block[..tail_x.len()].copy_from_slice(tail_x);
        for v in &mut block {
            *v = exp_f32::<FMA, false>(*v - m);
        }
        tail_out.copy_from_slice(&block[..tail_x.len()]);
        sum += tail_out.iter().sum::<f32>();
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::softmax_rows;

    fn reference(x: &[f32], n: usize) -> Vec<f32> {
        x.chunks(n)
            .flat_map(|row| {
                let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(move |e| (e / s) as f32)
            })
            .collect()
    }

    #[test]
    fn rows_of_every_length_match_a_double_precision_reference() {
        for n in [1, 2, 7, 31, 32, 33, 64, 100, 128, 129, 1000] {
            let x: Vec<f32> = (0..3 * n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37)
                .collect();
            let mut out = vec![f32::NAN; x.len()];
            softmax_rows(&x, &mut out, n);
            for (i, (g, w)) in out.iter().zip(reference(&x, n)).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * w.max(1e-30) + 1e-12,
                    "n={n} [{i}]: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn masked_and_nan_rows() {
        let inf = f32::INFINITY;
        let x = [0.0, -inf, 1.0, 2.0, f32::NAN, 1.0, -inf, -inf];
        let mut out = [0.0; 8];
        softmax_rows(&x, &mut out, 2);
        assert_eq!(out[..2], [1.0, 0.0]);
        let e = std::f32::consts::E;
        assert!((out[2] - 1.0 / (1.0 + e)).abs() < 1e-6 && (out[3] - e / (1.0 + e)).abs() < 1e-6);
        assert!(out[4..].iter().all(|v| v.is_nan()), "{out:?}");
    }
}
