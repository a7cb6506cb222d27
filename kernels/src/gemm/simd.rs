//! The few SIMD operations the microkernels (and the Winograd transforms) need, one
//! implementation per ISA.
//!
//! Each ISA is a zero-sized marker type. Every method is `#[inline(always)]` and has no
//! `#[target_feature]` of its own: it is only ever called from a kernel instance that is
//! compiled with the ISA's features enabled (see `kernel.rs`, `winograd.rs`), into which it
//! inlines, so the intrinsics it calls are inlined too. Calling one anywhere else is undefined
//! behaviour on a CPU without the feature, hence `unsafe`.

/// A vector of `LANES` f32 lanes.
pub(crate) trait Simd {
    const LANES: usize;
    type V: Copy;

    /// # Safety
    /// The CPU supports the ISA (true inside the microkernel instance for it).
    unsafe fn zero() -> Self::V;
    /// # Safety
    /// As for `zero`.
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `LANES` floats.
    /// # Safety
    /// As for `zero`; `p..p + LANES` is readable.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Unaligned store of `LANES` floats.
    /// # Safety
    /// As for `zero`; `p..p + LANES` is writable.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Hints that the cache line holding `p` will be read and written soon. Never faults.
    /// # Safety
    /// As for `zero` (`p` may point anywhere).
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        let _ = p;
    }
    /// Hints that the cache line holding `p` will be read later: fetched into L2, not L1
    /// (where it would evict lines in use). Never faults.
    /// # Safety
    /// As for `zero` (`p` may point anywhere).
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const f32) {
        let _ = p;
    }
    /// `acc + a * b`, fused where the ISA has it.
    /// # Safety
    /// As for `zero`.
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// # Safety
    /// As for `zero`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Per lane `if a > b { a } else { b }` (so `b` when either is NaN: `max(lo, x)` keeps a NaN
    /// `x`, as the scalar activations do).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Per lane `if a < b { a } else { b }`.
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
}

/// Plain arrays: LLVM vectorizes these loops for whatever baseline the target has.
pub(crate) struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    type V = [f32; 8];

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees 8 readable floats at `p`; `read_unaligned` has no
        // alignment requirement.
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        // Not `f32::mul_add`: without hardware FMA that is a slow libm call.
        let mut r = acc;
        for ((r, a), b) in r.iter_mut().zip(a).zip(b) {
            *r += a * b;
        }
        r
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        for (r, b) in r.iter_mut().zip(b) {
            *r += b;
        }
        r
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        let mut r = b;
        for (r, a) in r.iter_mut().zip(a) {
            if a > *r {
                *r = a;
            }
        }
        r
    }
    #[inline(always)]
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V {
        let mut r = b;
        for (r, a) in r.iter_mut().zip(a) {
            if a < *r {
                *r = a;
            }
        }
        r
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX2 + FMA, 8 lanes.
    pub(crate) struct Avx2;

    impl Simd for Avx2 {
        #[inline(always)]
        unsafe fn prefetch(p: *const f32) {
            // SAFETY: SSE is baseline on x86_64; prefetches never fault, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
        }
        #[inline(always)]
        unsafe fn prefetch_l2(p: *const f32) {
            // SAFETY: as for `prefetch`.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast::<i8>()) }
        }

        const LANES: usize = 8;
        type V = __m256;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: the caller guarantees AVX (trait contract).
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: AVX available and 8 readable floats at `p` (trait contract).
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: AVX available and 8 writable floats at `p` (trait contract).
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn mul_add(acc: __m256, a: __m256, b: __m256) -> __m256 {
            // SAFETY: the caller guarantees FMA (trait contract).
            unsafe { _mm256_fmadd_ps(a, b, acc) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            // SAFETY: the caller guarantees AVX (trait contract).
            unsafe { _mm256_add_ps(a, b) }
        }
        // `max`/`min` return the second operand unless the comparison holds: the trait's
        // contract exactly, NaN and signed zeros included.
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            // SAFETY: the caller guarantees AVX (trait contract).
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            // SAFETY: the caller guarantees AVX (trait contract).
            unsafe { _mm256_min_ps(a, b) }
        }
    }

    /// AVX-512F, 16 lanes.
    pub(crate) struct Avx512;

    impl Simd for Avx512 {
        #[inline(always)]
        unsafe fn prefetch(p: *const f32) {
            // SAFETY: SSE is baseline on x86_64; prefetches never fault, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
        }
        #[inline(always)]
        unsafe fn prefetch_l2(p: *const f32) {
            // SAFETY: as for `prefetch`.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast::<i8>()) }
        }

        const LANES: usize = 16;
        type V = __m512;

        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: AVX-512F available and 16 readable floats at `p` (trait contract).
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            // SAFETY: AVX-512F available and 16 writable floats at `p` (trait contract).
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn mul_add(acc: __m512, a: __m512, b: __m512) -> __m512 {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { _mm512_fmadd_ps(a, b, acc) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { _mm512_add_ps(a, b) }
        }
        // `max`/`min` return the second operand unless the comparison holds: the trait's
        // contract exactly, NaN and signed zeros included.
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { _mm512_min_ps(a, b) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Simd;
    use std::arch::aarch64::*;

    /// NEON (Advanced SIMD), 4 lanes; part of the aarch64 baseline.
    pub(crate) struct Neon;

    impl Simd for Neon {
        const LANES: usize = 4;
        type V = float32x4_t;

        #[inline(always)]
        unsafe fn zero() -> float32x4_t {
            // SAFETY: NEON is always present on aarch64.
            unsafe { vdupq_n_f32(0.0) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vdupq_n_f32(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> float32x4_t {
            // SAFETY: 4 readable floats at `p` (trait contract); vld1q has no alignment need.
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: float32x4_t) {
            // SAFETY: 4 writable floats at `p` (trait contract).
            unsafe { vst1q_f32(p, v) }
        }
        #[inline(always)]
        unsafe fn mul_add(acc: float32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: NEON is always present on aarch64.
            unsafe { vfmaq_f32(acc, a, b) }
        }
        #[inline(always)]
        unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vaddq_f32(a, b) }
        }
        // A compare and select rather than `vmaxq_f32`, whose NaN and signed-zero rules differ
        // from the trait's contract.
        #[inline(always)]
        unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vbslq_f32(vcgtq_f32(a, b), a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vbslq_f32(vcltq_f32(a, b), a, b) }
        }
    }
}
