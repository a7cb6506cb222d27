//! Out-of-place transposes of f32 matrices: `dst[j · rows + i] = src[i · cols + j]`.
//!
//! Used where a layer hands its output to the next in the other layout (planes to
//! channels-last cells); on AVX-512 it moves 16×16 blocks through registers (one shuffle per
//! four floats), elsewhere 8×8 blocks of scalars, which keeps both sides' lines in L1.

/// Transposes the row-major `rows × cols` matrix `src` into `dst` (`cols × rows`).
///
/// # Panics
/// If either slice holds fewer than `rows · cols` floats.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_strided(src, cols, rows, cols, dst, rows);
}

/// `dst[j · dst_stride + i] = src[i · src_stride + j]` for `i < rows`, `j < cols`: the
/// transpose between strided views (a channel block's cells into a GEMM panel's rows).
///
/// # Panics
/// If a stride is shorter than its rows or a slice does not hold its view.
pub fn transpose_strided(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let span = |n: usize, stride: usize, len: usize| {
        (n - 1)
            .checked_mul(stride)
            .and_then(|x| x.checked_add(len))
            .expect("transpose size overflows")
    };
    assert!(
        src_stride >= cols && dst_stride >= rows,
        "transpose strides shorter than rows"
    );
    assert!(
        src.len() >= span(rows, src_stride, cols) && dst.len() >= span(cols, dst_stride, rows),
        "transpose slices too short"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::isa::isa() == crate::isa::Isa::Avx512 {
        // SAFETY: `isa()` returns Avx512 only after detecting AVX-512F; the slices hold the
        // views (asserted above).
        unsafe { avx512::transpose_matrix(src, src_stride, rows, cols, dst, dst_stride) };
        return;
    }
    const B: usize = 8;
    for i0 in (0..rows).step_by(B) {
        for j0 in (0..cols).step_by(B) {
            for i in i0..(i0 + B).min(rows) {
                for j in j0..(j0 + B).min(cols) {
                    dst[j * dst_stride + i] = src[i * src_stride + j];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// The mask of lanes `0..k` (`k <= 16`).
    #[inline(always)]
    fn first_lanes(k: usize) -> __mmask16 {
        (((1u32 << k) - 1) & 0xFFFF) as u16
    }

    /// Transposes the 16×16 matrix whose rows are `r` (row `i`, lane `j` → row `j`, lane
    /// `i`): unpacks pair rows, then 2×2 blocks, then 128-bit quarters twice.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[inline(always)]
    pub(crate) unsafe fn transpose(r: &mut [__m512; 16]) {
        // SAFETY: register shuffles only; the caller guarantees AVX-512F.
        unsafe {
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            for i in 0..4 {
                let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
                r[4 * i] = _mm512_shuffle_ps::<0x44>(a, c);
                r[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
                r[4 * i + 2] = _mm512_shuffle_ps::<0x44>(b, d);
                r[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
            }
            for i in 0..2 {
                for j in 0..4 {
                    let (a, b) = (r[8 * i + j], r[8 * i + 4 + j]);
                    t[8 * i + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
                    t[8 * i + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(a, b);
                }
            }
            for j in 0..8 {
                r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
                r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(t[j], t[8 + j]);
            }
        }
    }

    /// One whole 16×16 block, unmasked and unrolled: its rows stay in registers (the
    /// masked, variable-height loop of the edges kept them on the stack, 4–5× slower).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `src` holds 16 rows of 16 floats `src_stride` apart, `dst` 16
    /// such rows `dst_stride` apart.
    #[inline(always)]
    unsafe fn block16(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: the caller's.
        unsafe {
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, row) in r.iter_mut().enumerate() {
                *row = _mm512_loadu_ps(src.add(i * src_stride));
            }
            transpose(&mut r);
            for (j, row) in r.iter().enumerate() {
                _mm512_storeu_ps(dst.add(j * dst_stride), *row);
            }
        }
    }

    /// `transpose_strided` on AVX-512: 16×16 blocks, the edges masked.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `src` and `dst` hold their views (see `transpose_strided`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_matrix(
        src: &[f32],
        src_stride: usize,
        rows: usize,
        cols: usize,
        dst: &mut [f32],
        dst_stride: usize,
    ) {
        for i0 in (0..rows).step_by(16) {
            let h = 16.min(rows - i0);
            for j0 in (0..cols).step_by(16) {
                let w = 16.min(cols - j0);
                if h == 16 && w == 16 {
                    // SAFETY: a whole 16×16 block inside both views (as below).
                    unsafe {
                        block16(
                            src.as_ptr().add(i0 * src_stride + j0),
                            src_stride,
                            dst.as_mut_ptr().add(j0 * dst_stride + i0),
                            dst_stride,
                        )
                    };
                    continue;
                }
                // SAFETY: the loads read columns j0..j0 + w of rows i0..i0 + h and the stores
                // write columns i0..i0 + h of rows j0..j0 + w (masked): all inside the
                // matrices, which the slices hold (caller).
                unsafe {
                    let mut r = [_mm512_setzero_ps(); 16];
                    for (i, row) in r.iter_mut().enumerate().take(h) {
                        *row = _mm512_maskz_loadu_ps(
                            first_lanes(w),
                            src.as_ptr().add((i0 + i) * src_stride + j0),
                        );
                    }
                    transpose(&mut r);
                    for (j, row) in r.iter().enumerate().take(w) {
                        _mm512_mask_storeu_ps(
                            dst.as_mut_ptr().add((j0 + j) * dst_stride + i0),
                            first_lanes(h),
                            *row,
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_shapes_match_the_definition() {
        for (rows, cols) in [
            (1, 1),
            (3, 5),
            (16, 16),
            (17, 33),
            (49, 960),
            (100, 7),
            (0, 4),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        dst[j * rows + i],
                        src[i * cols + j],
                        "{rows}x{cols} ({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn strided_views_keep_the_gaps() {
        for (rows, cols, ss, ds) in [
            (16, 16, 16, 32),
            (5, 3, 16, 7),
            (20, 16, 16, 32),
            (1, 9, 9, 1),
        ] {
            let src: Vec<f32> = (0..rows * ss).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; cols * ds];
            transpose_strided(&src, ss, rows, cols, &mut dst, ds);
            for j in 0..cols {
                for i in 0..ds {
                    let got = dst[j * ds + i];
                    if i < rows {
                        assert_eq!(got, src[i * ss + j], "{rows}x{cols} ({i}, {j})");
                    } else {
                        assert!(got.is_nan(), "{rows}x{cols}: wrote the gap at ({j}, {i})");
                    }
                }
            }
        }
    }
}
