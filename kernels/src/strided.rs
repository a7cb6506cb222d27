//! Strided gathers along a row: `dst[i] = src[i · stride]`, as a strided convolution's input
//! patches read their taps.

/// `dst[i] = src[i · stride]` for every `i < dst.len()`.
///
/// # Panics
/// If `stride` is 0 or `src` is shorter than the last index read.
pub fn copy_strided(src: &[f32], stride: usize, dst: &mut [f32]) {
    assert!(stride > 0, "stride 0");
    let Some(last) = dst.len().checked_sub(1) else {
        return;
    };
    let reach = last.checked_mul(stride).expect("strided copy overflows");
    assert!(reach < src.len(), "strided copy reads past its source");
    if stride == 1 {
        dst.copy_from_slice(&src[..dst.len()]);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if stride == 2 && crate::isa::isa() == crate::isa::Isa::Avx512 {
        // SAFETY: `isa()` returns Avx512 only after detecting AVX-512F; `src` holds every
        // index read (asserted above).
        unsafe { avx512::every_other(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
        *d = *s;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `dst[i] = src[2i]`: 16 outputs from two loads and one two-source permute.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `src` holds index `2 · (dst.len() - 1)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn every_other(src: &[f32], dst: &mut [f32]) {
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let n = dst.len();
        let mut i = 0;
        // SAFETY (whole loop): output chunk `i..i + 16` reads `2i..2i + 32`, inside `src` while
        // `2i + 32 <= src.len()`; the tail masks both its loads to `src` and its store to
        // `dst`.
        unsafe {
            while i + 16 <= n && 2 * i + 32 <= src.len() {
                let a = _mm512_loadu_ps(src.as_ptr().add(2 * i));
                let b = _mm512_loadu_ps(src.as_ptr().add(2 * i + 16));
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_permutex2var_ps(a, evens, b));
                i += 16;
            }
            while i < n {
                let left = (src.len() - 2 * i).min(32);
                let lanes = |k: usize| (((1u32 << k.min(16)) - 1) & 0xFFFF) as u16;
                let a = _mm512_maskz_loadu_ps(lanes(left), src.as_ptr().add(2 * i));
                let b = _mm512_maskz_loadu_ps(
                    lanes(left.saturating_sub(16)),
                    src.as_ptr().add((2 * i + 16).min(src.len())),
                );
                let out = (n - i).min(16);
                let v = _mm512_permutex2var_ps(a, evens, b);
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), lanes(out), v);
                i += out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_and_stride_matches_the_definition() {
        for stride in 1..=4 {
            for n in 0..70 {
                // Sources exactly as long as needed, and a little longer.
                for extra in [0, 1, 17] {
                    let len = if n == 0 {
                        extra
                    } else {
                        (n - 1) * stride + 1 + extra
                    };
                    let src: Vec<f32> = (0..len).map(|i| i as f32).collect();
                    let mut dst = vec![f32::NAN; n];
                    copy_strided(&src, stride, &mut dst);
                    for (i, v) in dst.iter().enumerate() {
                        assert_eq!(*v, src[i * stride], "stride {stride} n {n} extra {extra}");
                    }
                }
            }
        }
    }
}
