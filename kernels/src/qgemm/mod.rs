//! Dynamically quantized int8 GEMM: `C[m × n] = epilogue(dequantize(A_q · B_q))`.
//!
//! An opt-in, approximate alternative to the fp32 `gemm` for products with constant weights:
//!
//! * `B` (the weights, `k × n`) is quantized once, ahead of time, per output column to
//!   symmetric int8 (`b ≈ scale_b[j] · q`, `q ∈ -127..=127`) and packed (`PackedQB`), with
//!   each column's sum of codes kept for the zero-point correction.
//! * `A` (the activations) is quantized at every call, per row, to asymmetric uint8
//!   (`a ≈ scale_a[i] · (q − zero[i])`, `q ∈ 0..=255`, `zero` such that 0.0 is exact). Rows
//!   of activations are often one-sided (after ReLU/GELU): the zero point spends all 256 codes
//!   on the row's actual range, one more bit of precision than a symmetric code would keep.
//! * The products accumulate exactly in i32, and the epilogue dequantizes
//!   `C[i, j] = scale_a[i] · scale_b[j] · (acc[i, j] − zero[i] · Σ_p B_q[p, j])`, then applies
//!   the usual fp32 `Epilogue` (scale, bias, residual, activation).
//!
//! Results are deterministic (integer sums, fixed per-row quantization) and the same for
//! every kernel and thread count. Activations are assumed finite: a NaN or infinity in a row
//! of A is not propagated as the fp32 product would.
//!
//! Layout and kernels follow the fp32 GEMM: panels of `MR` rows of A and `NR` columns of B
//! (here holding pairs of 16-bit codes along the depth, see `kernel.rs`), one microkernel per
//! ISA chosen at run time (AVX2 `vpmaddwd`, portable code), and a split of the columns across
//! rayon threads. The whole depth is one block: i16 panels are half the bytes of f32 ones.
//!
//! Speed: with AVX2 only, one `vpmaddwd` (16 multiply-adds) plus one `vpaddd` replace two
//! FMAs (16 multiply-adds), so the arithmetic rate barely changes where integer multiplies
//! issue no faster than FMAs (AMD Zen 3: MiniLM at one thread ran 0–7% faster than fp32).
//! The gain needs `vpdpbusd` (AVX-512 VNNI / AVX-VNNI: 64 multiply-adds per instruction on
//! u8 × i8 quads), a microkernel and a packing of quads that this module does not have yet.

mod kernel;

pub use kernel::QKernel;

use crate::gemm::{check_epilogue, err, Epilogue, GemmError, MatMut, MatRef};
use crate::parallel;
use kernel::{MR, NR};
use rayon::prelude::*;
use std::borrow::Cow;
use std::fmt;

/// Largest depth whose i32 accumulation cannot overflow: `k · 255 · 127 ≤ i32::MAX`.
pub const MAX_K: usize = i32::MAX as usize / (255 * 127);

/// Products with fewer multiply-adds than this run on the calling thread (as for `gemm`).
const PARALLEL_MIN_WORK: usize = 1 << 20;

/// Rows of A whose tiles are computed before their epilogue runs: the `MC × n` block of C is
/// still in L2 when the epilogue reads it back.
const MC: usize = 8 * MR;

/// Name of the int8 microkernel this CPU uses, e.g. "avx2 6x16".
pub fn kernel_name() -> &'static str {
    kernel::best().name
}

/// `B` quantized per column to symmetric int8 and packed in panels of `NR` columns.
#[derive(Clone)]
pub struct PackedQB {
    rows: usize,
    cols: usize,
    /// Panel after panel: for each depth pair, each column's two codes (see `kernel.rs`).
    codes: Vec<i16>,
    /// `scale_b[j]`: column `j` is `scale_b[j] · codes`.
    scales: Vec<f32>,
    /// `Σ_p B_q[p, j]`, for the zero-point correction of A.
    col_sums: Vec<i32>,
}

impl PackedQB {
    /// Quantizes and packs `b` (`k × n`, any strides). Fails when `k > MAX_K`.
    pub fn new(b: MatRef) -> Result<Self, GemmError> {
        let (k, n) = (b.rows(), b.cols());
        if k > MAX_K {
            return Err(err(format!(
                "int8 GEMM depth {k} exceeds {MAX_K} (i32 accumulators could overflow)"
            )));
        }
        let kp = k.div_ceil(2);
        let panel_len = kp * NR * 2;
        let mut codes = vec![0i16; n.div_ceil(NR) * panel_len];
        let mut scales = Vec::with_capacity(n);
        let mut col_sums = Vec::with_capacity(n);
        for j in 0..n {
            let max = (0..k).map(|p| b.at(p, j).abs()).fold(0.0f32, f32::max);
            // An all-zero (or non-finite) column gets all-zero codes.
            let inv = if max > 0.0 && max.is_finite() {
                127.0 / max
            } else {
                0.0
            };
            let panel = &mut codes[j / NR * panel_len..][..panel_len];
            let mut sum = 0i32;
            for p in 0..k {
                let q = (b.at(p, j) * inv).round().clamp(-127.0, 127.0) as i16;
                panel[p / 2 * NR * 2 + j % NR * 2 + p % 2] = q;
                sum += i32::from(q);
            }
            scales.push(max / 127.0);
            col_sums.push(sum);
        }
        Ok(PackedQB {
            rows: k,
            cols: n,
            codes,
            scales,
            col_sums,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The packed panel of columns `j..j + NR` (`j` a multiple of `NR`).
    fn panel(&self, j: usize) -> &[i16] {
        let len = self.rows.div_ceil(2) * NR * 2;
        &self.codes[j / NR * len..][..len]
    }
}

impl fmt::Debug for PackedQB {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackedQB({}x{}, int8)", self.rows, self.cols)
    }
}

/// How one row of A was quantized: `a ≈ scale · (q − zero)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct RowQuant {
    scale: f32,
    zero: i32,
}

/// Quantizes `row` to uint8 codes with a zero point, handing each `(p, code)` to `put`.
fn quantize_row(row: &[f32], mut put: impl FnMut(usize, i16)) -> RowQuant {
    let (lo, hi) = row
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let scale = (hi - lo) / 255.0;
    if !(scale > 0.0 && scale.is_finite()) {
        // All zeros (or not finite): every code is the zero point 0.
        row.iter().enumerate().for_each(|(p, _)| put(p, 0));
        return RowQuant {
            scale: 0.0,
            zero: 0,
        };
    }
    let inv = 1.0 / scale;
    let zero = (-lo * inv).round().clamp(0.0, 255.0);
    for (p, &x) in row.iter().enumerate() {
        put(p, (x * inv + zero).round().clamp(0.0, 255.0) as i16);
    }
    RowQuant {
        scale,
        zero: zero as i32,
    }
}

/// `C = epilogue(A · B)` with A quantized per row and B prepacked as int8; multithreaded on
/// the current rayon pool when large enough.
pub fn qgemm(a: MatRef, b: &PackedQB, c: MatMut, epi: &Epilogue) -> Result<(), GemmError> {
    qgemm_with(kernel::best(), a, b, c, epi)
}

fn qgemm_with(
    kern: &'static QKernel,
    a: MatRef,
    b: &PackedQB,
    mut c: MatMut,
    epi: &Epilogue,
) -> Result<(), GemmError> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols);
    if k != b.rows || c.rows() != m || c.cols() != n {
        return Err(err(format!(
            "cannot multiply {m}x{k} by {}x{n} into {}x{}",
            b.rows,
            c.rows(),
            c.cols()
        )));
    }
    check_epilogue(epi, m, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        for i in 0..m {
            let row = c.row_mut(i);
            row.fill(0.0);
            epi.apply_row(row, i, 0);
        }
        return Ok(());
    }
    let qa = QuantizedA::new(a);
    let n_panels = n.div_ceil(NR);
    let tasks = if m * n * k < PARALLEL_MIN_WORK {
        1
    } else {
        parallel::threads().min(n_panels)
    };
    // One contiguous run of column panels per task: every task streams all of (the small,
    // already quantized) A and only its own panels of B.
    let mut parts = Vec::with_capacity(tasks);
    let (mut rest, mut start) = (c, 0);
    for t in 1..=tasks {
        let end = (n_panels * t / tasks * NR).min(n);
        let (part, right) = rest.split_at_col(end - start);
        parts.push((start, part));
        (rest, start) = (right, end);
    }
    parallel::for_each(parts.into_par_iter(), |(j0, part)| {
        columns(kern, &qa, b, j0, part, epi)
    });
    Ok(())
}

/// A, quantized per row and packed in panels of `MR` rows.
struct QuantizedA {
    rows: usize,
    /// Panel after panel: for each depth pair, each row's two codes (see `kernel.rs`).
    codes: Vec<i16>,
    quant: Vec<RowQuant>,
}

impl QuantizedA {
    fn new(a: MatRef) -> Self {
        let (m, k) = (a.rows(), a.cols());
        let panel_len = k.div_ceil(2) * MR * 2;
        let mut codes = vec![0i16; m.div_ceil(MR) * panel_len];
        let mut quant = vec![RowQuant::default(); m];
        parallel::for_each(
            codes
                .par_chunks_mut(panel_len)
                .zip(quant.par_chunks_mut(MR))
                .enumerate(),
            |(q, (panel, rows))| {
                for (r, rq) in rows.iter_mut().enumerate() {
                    let i = q * MR + r;
                    let row = a.contiguous_row(i).map_or_else(
                        || Cow::Owned((0..k).map(|p| a.at(i, p)).collect()),
                        Cow::Borrowed,
                    );
                    *rq = quantize_row(&row, |p, code| {
                        panel[p / 2 * MR * 2 + r * 2 + p % 2] = code;
                    });
                }
            },
        );
        QuantizedA {
            rows: m,
            codes,
            quant,
        }
    }

    /// The packed panel of rows `i..i + MR` (`i` a multiple of `MR`).
    fn panel(&self, i: usize) -> &[i16] {
        let len = self.codes.len() / self.rows.div_ceil(MR);
        &self.codes[i / MR * len..][..len]
    }
}

/// Columns `j0..j0 + c.cols()` of the product (`j0` a multiple of `NR`) into `c`, on the
/// calling thread.
fn columns(kern: &QKernel, a: &QuantizedA, b: &PackedQB, j0: usize, mut c: MatMut, epi: &Epilogue) {
    let (m, width, kp) = (a.rows, c.cols(), b.rows.div_ceil(2));
    let mut acc = [0i32; MR * NR];
    for ic in (0..m).step_by(MC) {
        let block = ic..(ic + MC).min(m);
        for jr in (0..width).step_by(NR) {
            let (j, cols) = (j0 + jr, NR.min(width - jr));
            let b_panel = b.panel(j);
            let (scale_b, sum_b) = (&b.scales[j..j + cols], &b.col_sums[j..j + cols]);
            for ir in block.clone().step_by(MR) {
                let a_panel = a.panel(ir);
                // SAFETY: `kern` came from `kernel::available`, so the CPU runs it; the panels
                // hold `kp` depth pairs of MR and NR code pairs, zero-padded (built above).
                unsafe { (kern.run)(kp, a_panel.as_ptr(), b_panel.as_ptr(), &mut acc) };
                for (r, acc_row) in acc.chunks_exact(NR).take(block.end - ir).enumerate() {
                    let i = ir + r;
                    let RowQuant { scale, zero } = a.quant[i];
                    let out = &mut c.row_mut(i)[jr..jr + cols];
                    for (((o, &s), &sb), &sum) in
                        out.iter_mut().zip(acc_row).zip(scale_b).zip(sum_b)
                    {
                        // Exact in i32: the true value Σ (q_a − zero) · q_b is within
                        // ±k·255·127, so wrapping intermediate arithmetic lands on it.
                        let centered = s.wrapping_sub(zero.wrapping_mul(sum));
                        *o = centered as f32 * (scale * sb);
                    }
                }
            }
        }
        if !epi.is_identity() {
            for i in block {
                epi.apply_row(c.row_mut(i), i, j0);
            }
        }
    }
}

#[cfg(test)]
mod tests;
