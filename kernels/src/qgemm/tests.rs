//! Every int8 kernel this CPU can run, against exact integer references and the fp32 product.

use super::*;
use crate::gemm::tests::values;
use crate::gemm::{Activation, Bias};

/// An `m × k` A whose rows quantize losslessly: integers in `-100..=155` with both ends
/// present, so scale 1 and zero point 100 (row 0 of a k = 1 matrix is the one exception: it
/// has one value, handled by `lossless_a` callers choosing k ≥ 2).
fn lossless_a(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let v = values(m * k, seed);
    let mut a: Vec<f32> = v
        .iter()
        .map(|x| ((x + 1.0) * 127.5).floor() - 100.0)
        .collect();
    for row in a.chunks_exact_mut(k) {
        row[0] = -100.0;
        row[k - 1] = 155.0;
    }
    a
}

/// A `k × n` B whose columns quantize losslessly: integers in `-127..=127` with 127 present.
fn lossless_b(k: usize, n: usize, seed: u64) -> Vec<f32> {
    let v = values(k * n, seed);
    let mut b: Vec<f32> = v.iter().map(|x| (x * 127.0).round()).collect();
    b[..n].fill(127.0);
    b
}

/// `A · B` in f64.
fn reference(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                out[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
        }
    }
    out
}

fn run(
    kern: &'static QKernel,
    a: &[f32],
    b: &PackedQB,
    (m, k, n): (usize, usize, usize),
    epi: &Epilogue,
) -> Vec<f32> {
    let mut c = vec![f32::NAN; m * n];
    let a = MatRef::row_major(a, m, k).unwrap();
    qgemm_with(kern, a, b, MatMut::row_major(&mut c, m, n).unwrap(), epi).unwrap();
    c
}

/// Odd sizes: 1, below, at and past the 6 × 16 tile, several tiles and row blocks (MC = 48),
/// and one large enough to split across threads.
const SIZES: [(usize, usize, usize); 10] = [
    (1, 2, 1),
    (1, 3, 17),
    (5, 7, 16),
    (6, 2, 15),
    (7, 33, 31),
    (13, 64, 48),
    (49, 5, 33),
    (50, 129, 70),
    (97, 300, 20),
    (70, 300, 90),
];

#[test]
fn lossless_operands_give_the_exact_integer_product() {
    // Every code is exact and every product below 2^24, so the f32 result equals the f64 one.
    for kern in kernel::available() {
        for (m, k, n) in SIZES {
            let (a, b) = (lossless_a(m, k, 1), lossless_b(k, n, 2));
            let packed = PackedQB::new(MatRef::row_major(&b, k, n).unwrap()).unwrap();
            let got = run(kern, &a, &packed, (m, k, n), &Epilogue::default());
            let want = reference(&a, &b, (m, k, n));
            for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(*g as f64, *w, "{} {m}x{k}x{n}: element {idx}", kern.name);
            }
        }
    }
}

#[test]
fn every_kernel_matches_the_portable_one_bit_for_bit() {
    for kern in kernel::available() {
        for (m, k, n) in SIZES {
            let (a, b) = (values(m * k, 3), values(k * n, 4));
            let packed = PackedQB::new(MatRef::row_major(&b, k, n).unwrap()).unwrap();
            let got = run(kern, &a, &packed, (m, k, n), &Epilogue::default());
            let want = run(
                &kernel::PORTABLE,
                &a,
                &packed,
                (m, k, n),
                &Epilogue::default(),
            );
            assert_eq!(got, want, "{} {m}x{k}x{n}", kern.name);
        }
    }
}

#[test]
fn random_operands_stay_within_the_quantization_error() {
    // Per element, the error is about k · (Δa/2 · |b| + Δb/2 · |a|) with steps Δa = 2/255,
    // Δb = 1/127 for values in [-1, 1]: the mean |error| of a dot of k uniform terms is
    // ~sqrt(k) · 0.004; the bound below is loose, the cosine tight.
    let (m, k, n) = (37, 256, 45);
    let (a, b) = (values(m * k, 5), values(k * n, 6));
    let packed = PackedQB::new(MatRef::row_major(&b, k, n).unwrap()).unwrap();
    let got = qgemm_to_vec(&a, &packed, (m, k, n), &Epilogue::default());
    let want = reference(&a, &b, (m, k, n));
    let (mut dot, mut gg, mut ww) = (0.0, 0.0, 0.0);
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (*g as f64 - w).abs() < 0.1 * (k as f64).sqrt(),
            "{g} vs {w}"
        );
        dot += *g as f64 * w;
        gg += *g as f64 * *g as f64;
        ww += w * w;
    }
    let cosine = dot / (gg.sqrt() * ww.sqrt());
    assert!(cosine > 0.9999, "cosine {cosine}");
}

fn qgemm_to_vec(
    a: &[f32],
    b: &PackedQB,
    (m, k, n): (usize, usize, usize),
    e: &Epilogue,
) -> Vec<f32> {
    let mut c = vec![f32::NAN; m * n];
    let a = MatRef::row_major(a, m, k).unwrap();
    qgemm(a, b, MatMut::row_major(&mut c, m, n).unwrap(), e).unwrap();
    c
}

#[test]
fn epilogue_and_transposed_views_apply() {
    // relu(2 · A·B + bias[j]) with A given transposed (column-major storage) and B transposed.
    let (m, k, n) = (9, 20, 18);
    let (a, b) = (lossless_a(m, k, 7), lossless_b(k, n, 8));
    let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
    let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
    let bias: Vec<f32> = (0..n).map(|j| j as f32 * 1000.0 - 9000.0).collect();
    let epi = Epilogue {
        alpha: 2.0,
        bias: Bias::PerCol(&bias),
        activation: Some(Activation::Relu),
        ..Default::default()
    };
    let packed = PackedQB::new(MatRef::row_major(&bt, n, k).unwrap().t()).unwrap();
    let mut c = vec![f32::NAN; m * n];
    let a_view = MatRef::row_major(&at, k, m).unwrap().t();
    qgemm(
        a_view,
        &packed,
        MatMut::row_major(&mut c, m, n).unwrap(),
        &epi,
    )
    .unwrap();
    let want = reference(&a, &b, (m, k, n));
    for (idx, (g, w)) in c.iter().zip(&want).enumerate() {
        let w = (2.0 * w + bias[idx % n] as f64).max(0.0);
        assert_eq!(*g as f64, w, "element {idx}");
    }
}

#[test]
fn rows_quantize_with_an_exact_zero() {
    // [-1, 0, 3]: range 4 over 255 codes, zero point round(1 / (4/255)) = 64.
    let mut codes = [0i16; 3];
    let q = quantize_row(&[-1.0, 0.0, 3.0], |p, c| codes[p] = c);
    assert_eq!(
        q,
        RowQuant {
            scale: 4.0 / 255.0,
            zero: 64
        }
    );
    assert_eq!(codes, [0, 64, 255]);
    // One-sided rows keep zero at code 0 (positive) or 255 (negative); a zero row is all 0.
    let q = quantize_row(&[0.5, 2.0], |p, c| codes[p] = c);
    assert_eq!((q.zero, codes[..2].to_vec()), (0, vec![64, 255]));
    let q = quantize_row(&[-2.0, -1.0], |p, c| codes[p] = c);
    assert_eq!((q.zero, codes[..2].to_vec()), (255, vec![0, 128]));
    let q = quantize_row(&[0.0, 0.0], |p, c| codes[p] = c);
    assert_eq!((q, codes[..2].to_vec()), (RowQuant::default(), vec![0, 0]));
}

#[test]
fn shapes_are_checked() {
    let b = PackedQB::new(MatRef::row_major(&[1.0; 6], 3, 2).unwrap()).unwrap();
    let a = [1.0; 8];
    let mut c = [0.0; 8];
    let a = MatRef::row_major(&a, 4, 2).unwrap();
    let c = MatMut::row_major(&mut c, 4, 2).unwrap();
    assert!(qgemm(a, &b, c, &Epilogue::default()).is_err());
    let empty = MatRef::row_major(&[], MAX_K + 1, 0).unwrap();
    assert!(PackedQB::new(empty).is_err());
}

#[test]
fn zero_depth_gives_the_epilogue_of_zero() {
    let b = PackedQB::new(MatRef::row_major(&[], 0, 3).unwrap()).unwrap();
    let mut c = [f32::NAN; 6];
    let a = MatRef::row_major(&[], 2, 0).unwrap();
    let epi = Epilogue {
        bias: Bias::Scalar(1.5),
        ..Default::default()
    };
    qgemm(a, &b, MatMut::row_major(&mut c, 2, 3).unwrap(), &epi).unwrap();
    assert_eq!(c, [1.5; 6]);
}
