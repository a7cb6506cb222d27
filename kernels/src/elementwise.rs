//! Vectorized elementwise f32 math (exp, tanh, erf, sigmoid, GELU, ...) with run-time ISA
//! dispatch.
//!
//! Each function is written once, as a scalar body without branches or libm calls (selects
//! instead of early returns, bit tricks instead of `ldexp`), so that LLVM vectorizes the loop
//! that applies it. That loop is compiled once per instruction set (AVX-512, AVX2+FMA, and
//! the baseline of the target) and the best one the CPU supports is chosen at first use.
//!
//! Accuracy against f64 references, over the dense sweeps in the tests: exp, sigmoid and tanh
//! within 1e-6 relative error (subnormal results included for exp), erf within 1e-6
//! absolute error, the composite functions (GELU, SiLU, Mish) within 1e-6 relative error
//! plus the propagated erf error. NaN inputs give NaN; infinities give the limits.

use crate::parallel;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Slices at least this long are split across the rayon pool.
const PAR_MIN_LEN: usize = 1 << 15;
/// Elements per parallel task: large enough to amortize scheduling, small enough to balance.
const PAR_CHUNK: usize = 1 << 14;

/// Unary math functions with a vectorized implementation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryF32 {
    Exp,
    Erf,
    Tanh,
    Sigmoid,
    /// `x * tanh(softplus(x))`.
    Mish,
}

/// Activations that GEMM and convolution fuse into their epilogues.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// `x` if `x >= 0`, else `alpha * x`.
    LeakyRelu(f32),
    /// Clamp to `[min, max]`; gives `max` everywhere when `min > max` (ONNX Clip).
    Clip(f32, f32),
    Sigmoid,
    /// `clamp(alpha * x + beta, 0, 1)`.
    HardSigmoid(f32, f32),
    /// `x * clamp(x / 6 + 1/2, 0, 1)`.
    HardSwish,
    /// `x/2 * (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`.
    GeluTanh,
    /// `x * sigmoid(x)`, also called Swish.
    Silu,
    Tanh,
}

/// `out[i] = exp(x[i])`. Panics if the lengths differ.
pub fn exp(x: &[f32], out: &mut [f32]) {
    apply(UnaryF32::Exp, x, out);
}

/// `out[i] = tanh(x[i])`. Panics if the lengths differ.
pub fn tanh(x: &[f32], out: &mut [f32]) {
    apply(UnaryF32::Tanh, x, out);
}

/// `out[i] = erf(x[i])`. Panics if the lengths differ.
pub fn erf(x: &[f32], out: &mut [f32]) {
    apply(UnaryF32::Erf, x, out);
}

/// `out[i] = 1 / (1 + exp(-x[i]))`. Panics if the lengths differ.
pub fn sigmoid(x: &[f32], out: &mut [f32]) {
    apply(UnaryF32::Sigmoid, x, out);
}

/// `out[i] = kind(x[i])`. Panics if the lengths differ.
pub fn apply(kind: UnaryF32, x: &[f32], out: &mut [f32]) {
    apply_on(isa(), kind, x, out);
}

fn apply_on(isa: Isa, kind: UnaryF32, x: &[f32], out: &mut [f32]) {
    match kind {
        UnaryF32::Exp => map(isa, Exp, x, out),
        UnaryF32::Erf => map(isa, Erf, x, out),
        UnaryF32::Tanh => map(isa, Tanh, x, out),
        UnaryF32::Sigmoid => map(isa, Sigmoid, x, out),
        UnaryF32::Mish => map(isa, Mish, x, out),
    }
}

/// `xs[i] = kind(xs[i])`.
pub fn apply_inplace(kind: UnaryF32, xs: &mut [f32]) {
    match kind {
        UnaryF32::Exp => map_inplace(Exp, xs),
        UnaryF32::Erf => map_inplace(Erf, xs),
        UnaryF32::Tanh => map_inplace(Tanh, xs),
        UnaryF32::Sigmoid => map_inplace(Sigmoid, xs),
        UnaryF32::Mish => map_inplace(Mish, xs),
    }
}

/// `out[i] = act(x[i])`. Panics if the lengths differ.
pub fn activation(act: Activation, x: &[f32], out: &mut [f32]) {
    activation_on(isa(), act, x, out);
}

fn activation_on(isa: Isa, act: Activation, x: &[f32], out: &mut [f32]) {
    match act {
        Activation::Relu => map(isa, Relu, x, out),
        Activation::LeakyRelu(alpha) => map(isa, LeakyRelu(alpha), x, out),
        Activation::Clip(lo, hi) => map(isa, Clip(lo, hi), x, out),
        Activation::Sigmoid => map(isa, Sigmoid, x, out),
        Activation::HardSigmoid(alpha, beta) => map(isa, HardSigmoid(alpha, beta), x, out),
        Activation::HardSwish => map(isa, HardSwish, x, out),
        Activation::Gelu => map(isa, Gelu, x, out),
        Activation::GeluTanh => map(isa, GeluTanh, x, out),
        Activation::Silu => map(isa, Silu, x, out),
        Activation::Tanh => map(isa, Tanh, x, out),
    }
}

/// `xs[i] = act(xs[i])`, e.g. on a freshly computed GEMM tile.
pub fn apply_activation(act: Activation, xs: &mut [f32]) {
    match act {
        Activation::Relu => map_inplace(Relu, xs),
        Activation::LeakyRelu(alpha) => map_inplace(LeakyRelu(alpha), xs),
        Activation::Clip(lo, hi) => map_inplace(Clip(lo, hi), xs),
        Activation::Sigmoid => map_inplace(Sigmoid, xs),
        Activation::HardSigmoid(alpha, beta) => map_inplace(HardSigmoid(alpha, beta), xs),
        Activation::HardSwish => map_inplace(HardSwish, xs),
        Activation::Gelu => map_inplace(Gelu, xs),
        Activation::GeluTanh => map_inplace(GeluTanh, xs),
        Activation::Silu => map_inplace(Silu, xs),
        Activation::Tanh => map_inplace(Tanh, xs),
    }
}

/// `apply_activation` over several rows with a single ISA dispatch: the GEMM epilogue applies
/// it to each strip of C it has just computed, whose rows are short (one register tile wide),
/// so a dispatch per row would cost more than the activation itself.
pub fn apply_activation_rows<'a, I>(act: Activation, rows: I)
where
    I: Iterator<Item = &'a mut [f32]>,
{
    match act {
        Activation::Relu => inplace_rows(Relu, rows),
        Activation::LeakyRelu(alpha) => inplace_rows(LeakyRelu(alpha), rows),
        Activation::Clip(lo, hi) => inplace_rows(Clip(lo, hi), rows),
        Activation::Sigmoid => inplace_rows(Sigmoid, rows),
        Activation::HardSigmoid(alpha, beta) => inplace_rows(HardSigmoid(alpha, beta), rows),
        Activation::HardSwish => inplace_rows(HardSwish, rows),
        Activation::Gelu => inplace_rows(Gelu, rows),
        Activation::GeluTanh => inplace_rows(GeluTanh, rows),
        Activation::Silu => inplace_rows(Silu, rows),
        Activation::Tanh => inplace_rows(Tanh, rows),
    }
}

/// erf in double precision (absolute error below 2e-15): the Maclaurin series up to 2,
/// `1 - erfc` by its continued fraction beyond. Scalar; for f64 tensors and as a test oracle.
pub fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let r = if a <= 2.0 {
        // erf(a) = 2/sqrt(pi) * sum_n (-1)^n a^(2n+1) / (n! (2n+1)); the largest term is
        // below e^4, so at most two digits are lost to cancellation.
        let mut sum = 0.0;
        let mut power = a; // (-1)^n a^(2n+1) / n!
        for n in 0..100 {
            let term = power / (2 * n + 1) as f64;
            sum += term;
            if term.abs() <= 1e-17 * sum.abs() {
                break;
            }
            power *= -a * a / (n + 1) as f64;
        }
        std::f64::consts::FRAC_2_SQRT_PI * sum
    } else {
        // erfc(a) = exp(-a^2)/sqrt(pi) / (a + (1/2)/(a + 1/(a + (3/2)/(a + ...)))); 60 terms
        // converge to full precision for a > 2.
        let mut t = a;
        for k in (1..=60).rev() {
            t = a + (k as f64 / 2.0) / t;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * t)
    };
    r.copysign(x)
}

// ---------------------------------------------------------------------------------------
// Scalar bodies. `FMA` says whether `mul_add` is a hardware instruction: without it, it is a
// slow libm call, so the bodies fall back to a separate multiply and add.

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x` as `2^n * e^r`, `n = round(x / ln 2)`, `|r| <= ln(2)/2`, with the Cephes `expf`
/// polynomial for `e^r` (relative error about 1e-7), or with `FAST` a shorter one (2e-7).
#[inline(always)]
pub(crate) fn exp_f32<const FMA: bool, const FAST: bool>(x: f32) -> f32 {
    // Beyond these bounds e^x is 0 or inf in f32; clamping keeps `n` in [-150, 128].
    // NaN passes through the clamp to the result.
    let (er, ni) = exp_reduced::<FMA, FAST>(x.clamp(-104.0, 89.0));
    // 2^n as two factors that are each normal floats, so the products underflow gradually
    // (subnormal results) or overflow to inf exactly where e^x does.
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f32::from_bits(((n1 + 127) << 23) as u32);
    let s2 = f32::from_bits(((n2 + 127) << 23) as u32);
    er * s1 * s2
}

/// `e^x` with one power-of-two factor: `x` is clamped to [-87, 89], so results are never
/// subnormal (e^-87 at the low end) and overflow to inf from x ≈ 88.03 on (a little before
/// e^x does). For callers whose result does not depend on those ends.
#[inline(always)]
fn exp_normal_f32<const FMA: bool>(x: f32) -> f32 {
    // `n` is in [-126, 128]; 128 makes the factor's bits those of inf.
    let (er, ni) = exp_reduced::<FMA, true>(x.clamp(-87.0, 89.0));
    er * f32::from_bits(((ni + 127) << 23) as u32)
}

/// `(e^r, n)` with `e^x = e^r · 2^n`, for `x` already inside [-104, 89].
#[inline(always)]
fn exp_reduced<const FMA: bool, const FAST: bool>(x: f32) -> (f32, i32) {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for |n| < 2^15 (Cody-Waite reduction).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer that lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let t = fmadd::<FMA>(x, LOG2_E, ROUND);
    let n = t - ROUND;
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = fmadd::<FMA>(n, -LN2_HI, x);
    let r = fmadd::<FMA>(n, -LN2_LO, r);
    let p = if FAST {
        // A degree-5 polynomial fitted for relative error on |r| <= ln(2)/2 (1.7e-7 in f32
        // arithmetic): three operations fewer than the Cephes form below, which bound SiLU
        // and sigmoid on cores with one 512-bit FMA pipe (Zen 4).
        let mut p = 8.290_309e-3;
        p = fmadd::<FMA>(p, r, 4.189_793_4e-2);
        p = fmadd::<FMA>(p, r, 1.666_763_6e-1);
        p = fmadd::<FMA>(p, r, 4.999_915e-1);
        p = fmadd::<FMA>(p, r, 9.999_997e-1);
        fmadd::<FMA>(p, r, 1.0)
    } else {
        // Cephes `expf`: `1 + r + r² P(r)`, within an ulp or so.
        let mut p = 1.987_569_1e-4;
        p = fmadd::<FMA>(p, r, 1.398_199_9e-3);
        p = fmadd::<FMA>(p, r, 8.333_452e-3);
        p = fmadd::<FMA>(p, r, 4.166_579_6e-2);
        p = fmadd::<FMA>(p, r, 1.666_666_5e-1);
        p = fmadd::<FMA>(p, r, 0.5);
        fmadd::<FMA>(p, r * r, r) + 1.0
    };
    (p, ni)
}

/// `1 / (1 + e^-x)`, computed from `e^-|x|` so that neither side overflows or cancels:
/// for negative x it is `e / (1 + e)`, which keeps subnormal results.
#[inline(always)]
fn sigmoid_f32<const FMA: bool>(x: f32) -> f32 {
    let e = exp_f32::<FMA, true>(-x.abs());
    let s = 1.0 / (1.0 + e);
    if x < 0.0 {
        e * s
    } else {
        s
    }
}

/// tanh: the Cephes odd polynomial for |x| < 0.625, where `1 - 2/(e^2x + 1)` would lose
/// digits to cancellation, and that formula beyond.
#[inline(always)]
fn tanh_f32<const FMA: bool>(x: f32) -> f32 {
    let z = x * x;
    let mut p = -5.704_988_7e-3;
    p = fmadd::<FMA>(p, z, 2.063_909e-2);
    p = fmadd::<FMA>(p, z, -5.373_971_6e-2);
    p = fmadd::<FMA>(p, z, 1.333_144_2e-1);
    p = fmadd::<FMA>(p, z, -3.333_328e-1);
    let small = fmadd::<FMA>(p * z, x, x);
    let a = x.abs();
    let large = (1.0 - 2.0 / (exp_f32::<FMA, false>(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// erf as `x P(x^2) / Q(x^2)` on [-4, 4] (the Eigen/XLA rational approximation, absolute
/// error below 5e-7 in f32 arithmetic, and accurate relative to x near 0); erf is ±1 in f32
/// beyond.
#[inline(always)]
fn erf_f32<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let z = x * x;
    let mut p = -2.726_142_3e-10;
    p = fmadd::<FMA>(p, z, 2.770_681_4e-8);
    p = fmadd::<FMA>(p, z, -2.101_024e-6);
    p = fmadd::<FMA>(p, z, -5.692_506_4e-5);
    p = fmadd::<FMA>(p, z, -7.349_906_3e-4);
    p = fmadd::<FMA>(p, z, -2.954_6e-3);
    p = fmadd::<FMA>(p, z, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5;
    q = fmadd::<FMA>(q, z, -2.133_740_6e-4);
    q = fmadd::<FMA>(q, z, -1.682_827e-3);
    q = fmadd::<FMA>(q, z, -7.373_329e-3);
    q = fmadd::<FMA>(q, z, -1.426_474e-2);
    // The rational function overshoots 1 by a few ulps below 4, and falls short of it in
    // places beyond 3.92, from where erf rounds to exactly ±1 in f32.
    // x times the ratio rather than the ratio of x P: keeps subnormal x accurate.
    let r = (x * (p / q)).clamp(-1.0, 1.0);
    if x.abs() >= 3.92 {
        1.0f32.copysign(x)
    } else {
        r
    }
}

/// `x` clamped to `[lo, hi]`, NaN kept; `hi` wins when `lo > hi`.
#[inline(always)]
fn clamp_f32(x: f32, lo: f32, hi: f32) -> f32 {
    let y = if x < lo { lo } else { x };
    if y > hi {
        hi
    } else {
        y
    }
}

// ---------------------------------------------------------------------------------------
// One zero-sized (or parameter-holding) type per function, so that each loop is
// monomorphized with its body inlined.

trait MapF32: Copy + Send + Sync {
    /// Whether the function returns its input unchanged on one side of a comparison (Relu,
    /// LeakyRelu): see `apply_block`.
    const PASSES_INPUT: bool = false;
    fn apply<const FMA: bool>(self, x: f32) -> f32;
}

macro_rules! map_fn {
    ($name:ident $(($($field:ty),*))?, |$s:ident, $x:ident, $fma:ident| $body:expr) => {
        map_fn!($name $(($($field),*))?, false, |$s, $x, $fma| $body);
    };
    ($name:ident $(($($field:ty),*))?, $passes:expr, |$s:ident, $x:ident, $fma:ident| $body:expr) => {
        #[derive(Clone, Copy)]
        struct $name $(($($field),*))?;
        impl MapF32 for $name {
            const PASSES_INPUT: bool = $passes;
            #[inline(always)]
            fn apply<const $fma: bool>($s, $x: f32) -> f32 {
                $body
            }
        }
    };
}

map_fn!(Exp, |self, x, FMA| exp_f32::<FMA, false>(x));
map_fn!(Erf, |self, x, FMA| erf_f32::<FMA>(x));
map_fn!(Tanh, |self, x, FMA| tanh_f32::<FMA>(x));
map_fn!(Sigmoid, |self, x, FMA| sigmoid_f32::<FMA>(x));
map_fn!(Mish, |self, x, FMA| {
    // tanh(ln(1 + e^x)) = n / (n + 2) with n = e^x (e^x + 2). The ratio is exactly 1 in f32
    // from x = 9 on, so clamping the exponent at 20 avoids inf/inf without changing results.
    let e = exp_f32::<FMA, false>(if x > 20.0 { 20.0 } else { x });
    let n = e * (e + 2.0);
    x * n / (n + 2.0)
});
map_fn!(Relu, true, |self, x, FMA| if x < 0.0 { 0.0 } else { x });
map_fn!(LeakyRelu(f32), true, |self, x, FMA| if x < 0.0 {
    self.0 * x
} else {
    x
});
map_fn!(Clip(f32, f32), |self, x, FMA| clamp_f32(x, self.0, self.1));
map_fn!(HardSigmoid(f32, f32), |self, x, FMA| {
    clamp_f32(fmadd::<FMA>(self.0, x, self.1), 0.0, 1.0)
});
map_fn!(HardSwish, |self, x, FMA| {
    x * clamp_f32(fmadd::<FMA>(x, 1.0 / 6.0, 0.5), 0.0, 1.0)
});
map_fn!(Gelu, |self, x, FMA| {
    0.5 * x * (1.0 + erf_f32::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2))
});
map_fn!(GeluTanh, |self, x, FMA| {
    // (1 + tanh(u)) / 2 = sigmoid(2u): same function, no cancellation for negative x.
    const TWO_SQRT_2_OVER_PI: f32 = 2.0 * 0.797_884_6;
    let u2 = TWO_SQRT_2_OVER_PI * fmadd::<FMA>(0.044_715 * x * x, x, x);
    x * sigmoid_f32::<FMA>(u2)
});
// `x / (1 + e^-x)`: fewer operations than `x · sigmoid(x)` (no |x|, no select), 1.25× the
// throughput with the one-factor exponential, 1.6× in all (criterion `activation/silu`).
// Its early overflow only changes results below 1e-36 in magnitude (they become -0), and
// x = -inf still gives NaN (-inf / inf), as x · sigmoid(x) does.
map_fn!(Silu, |self, x, FMA| x / (1.0 + exp_normal_f32::<FMA>(-x)));

// ---------------------------------------------------------------------------------------
// Loops and ISA dispatch.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    Baseline,
}

/// Whether the target's baseline already has fused multiply-add (always on aarch64).
pub(crate) const BASELINE_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// The best instruction set this CPU supports, detected once.
pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| supported()[0])
}

/// The instruction sets this CPU supports, best first.
fn supported() -> Vec<Isa> {
    let mut isas = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use crate::isa::{x86_has, X86Level};
        if x86_has(X86Level::Avx512) {
            isas.push(Isa::Avx512);
        }
        if x86_has(X86Level::Avx2) {
            isas.push(Isa::Avx2Fma);
        }
    }
    isas.push(Isa::Baseline);
    isas
}

#[inline(always)]
fn map_loop<F: MapF32, const FMA: bool>(f: F, x: &[f32], out: &mut [f32]) {
    let n = out.len().min(x.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    let mut outs = out.chunks_exact_mut(LANE_BLOCK);
    for (o, x) in (&mut outs).zip(x.chunks_exact(LANE_BLOCK)) {
        let o: &mut [f32; LANE_BLOCK] = o.try_into().expect("a whole block");
        let x: &[f32; LANE_BLOCK] = x.try_into().expect("a whole block");
        for (o, &v) in o.iter_mut().zip(x) {
            *o = f.apply::<FMA>(v);
        }
    }
    let tail = outs.into_remainder();
    if !tail.is_empty() {
        let mut block = [0.0; LANE_BLOCK];
        block[..tail.len()].copy_from_slice(&x[n - tail.len()..]);
        apply_block::<F, FMA>(f, &mut block);
        let k = tail.len();
        tail.copy_from_slice(&block[..k]);
    }
}

#[inline(always)]
fn inplace_loop<F: MapF32, const FMA: bool>(f: F, xs: &mut [f32]) {
    let mut blocks = xs.chunks_exact_mut(LANE_BLOCK);
    for block in &mut blocks {
        let block: &mut [f32; LANE_BLOCK] = block.try_into().expect("a whole block");
        apply_block::<F, FMA>(f, block);
    }
    let tail = blocks.into_remainder();
    if !tail.is_empty() {
        let mut block = [0.0; LANE_BLOCK];
        block[..tail.len()].copy_from_slice(tail);
        apply_block::<F, FMA>(f, &mut block);
        let n = tail.len();
        tail.copy_from_slice(&block[..n]);
    }
}

/// Floats per vectorized step: four AVX2 / two AVX-512 vectors, and the unit that tails are
/// padded to. An open loop leaves up to one unrolled step (31 floats here) to a scalar loop,
/// which on the short rows of small feature maps (7×7 = 49 columns) was most of the work.
pub(crate) const LANE_BLOCK: usize = 32;

/// `f` over one block: a fixed-length loop, which the compiler vectorizes completely.
#[inline(always)]
fn apply_block<F: MapF32, const FMA: bool>(f: F, block: &mut [f32; LANE_BLOCK]) {
    // A function that returns its input on one side of a comparison (Relu: `if x < 0 { 0 }
    // else { x }`), applied in place, lets LLVM skip the store of the unchanged lanes and
    // emit a masked store, which AMD cores microcode (an in-place Relu ran at ~2.5 cycles per
    // float). Read through an opaque copy, the inputs are not known to equal what is stored,
    // so every lane is stored; the copy costs a few vector moves, paid only where needed.
    let x = if F::PASSES_INPUT {
        std::hint::black_box(*block)
    } else {
        *block
    };
    for (o, v) in block.iter_mut().zip(x) {
        *o = f.apply::<FMA>(v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn map_avx512<F: MapF32>(f: F, x: &[f32], out: &mut [f32]) {
    map_loop::<F, true>(f, x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2<F: MapF32>(f: F, x: &[f32], out: &mut [f32]) {
    map_loop::<F, true>(f, x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn inplace_avx512<F: MapF32>(f: F, xs: &mut [f32]) {
    inplace_loop::<F, true>(f, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn inplace_avx2<F: MapF32>(f: F, xs: &mut [f32]) {
    inplace_loop::<F, true>(f, xs)
}

fn map_seq<F: MapF32>(isa: Isa, f: F, x: &[f32], out: &mut [f32]) {
    match isa {
        // SAFETY: an `Isa` other than Baseline comes from `isa()` (or `supported()` in tests),
        // which returns it only after detecting its features on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { map_avx512(f, x, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { map_avx2(f, x, out) },
        Isa::Baseline => map_loop::<F, BASELINE_FMA>(f, x, out),
    }
}

fn inplace_seq<F: MapF32>(f: F, xs: &mut [f32]) {
    match isa() {
        // SAFETY: `isa()` returns Avx512 only after detecting avx512f, avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { inplace_avx512(f, xs) },
        // SAFETY: `isa()` returns Avx2Fma only after detecting avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { inplace_avx2(f, xs) },
        Isa::Baseline => inplace_loop::<F, BASELINE_FMA>(f, xs),
    }
}

fn inplace_rows<'a, F: MapF32, I: Iterator<Item = &'a mut [f32]>>(f: F, rows: I) {
    match isa() {
        // SAFETY: `isa()` returns Avx512 only after detecting avx512f, avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { inplace_rows_avx512(f, rows) },
        // SAFETY: `isa()` returns Avx2Fma only after detecting avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { inplace_rows_avx2(f, rows) },
        Isa::Baseline => rows.for_each(|r| inplace_loop::<F, BASELINE_FMA>(f, r)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn inplace_rows_avx512<'a, F: MapF32, I: Iterator<Item = &'a mut [f32]>>(f: F, rows: I) {
    rows.for_each(|r| inplace_loop::<F, true>(f, r))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn inplace_rows_avx2<'a, F: MapF32, I: Iterator<Item = &'a mut [f32]>>(f: F, rows: I) {
    rows.for_each(|r| inplace_loop::<F, true>(f, r))
}

fn map<F: MapF32>(isa: Isa, f: F, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "input and output lengths differ");
    if x.len() >= PAR_MIN_LEN {
        parallel::for_each(
            out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)),
            |(o, x)| map_seq(isa, f, x, o),
        );
    } else {
        map_seq(isa, f, x, out);
    }
}

fn map_inplace<F: MapF32>(f: F, xs: &mut [f32]) {
    if xs.len() >= PAR_MIN_LEN {
        parallel::for_each(xs.par_chunks_mut(PAR_CHUNK), |c| inplace_seq(f, c));
    } else {
        inplace_seq(f, xs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense sweep: every 2003rd f32 bit pattern in [-lim, lim] (about 500 values per
    /// binade, subnormals included), both signs, plus specials.
    fn sweep(lim: f32) -> Vec<f32> {
        let mut xs: Vec<f32> = (0..lim.to_bits())
            .step_by(2003)
            .map(f32::from_bits)
            .flat_map(|x| [x, -x])
            .collect();
        xs.extend([
            0.0,
            -0.0,
            lim,
            -lim,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        xs
    }

    /// Runs `kind` on every instruction set this CPU has, checking each result with `check`,
    /// and checks that the in-place path agrees with the out-of-place one.
    fn each_isa(kind: UnaryF32, xs: &[f32], check: impl Fn(&[f32])) {
        for isa in supported() {
            let mut out = vec![0.0; xs.len()];
            apply_on(isa, kind, xs, &mut out);
            check(&out);
        }
        let mut out = vec![0.0; xs.len()];
        apply(kind, xs, &mut out);
        let mut inplace = xs.to_vec();
        apply_inplace(kind, &mut inplace);
        assert!(out
            .iter()
            .zip(&inplace)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// Like `each_isa`, for activations.
    fn each_isa_act(act: Activation, xs: &[f32], check: impl Fn(&[f32])) {
        for isa in supported() {
            let mut out = vec![0.0; xs.len()];
            activation_on(isa, act, xs, &mut out);
            check(&out);
        }
        let mut out = vec![0.0; xs.len()];
        activation(act, xs, &mut out);
        let mut inplace = xs.to_vec();
        apply_activation(act, &mut inplace);
        assert!(out
            .iter()
            .zip(&inplace)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// Asserts |got - want(x)| / max(|want(x)|, floor) < bound for every x, with `want` in
    /// f64: relative error above `floor`, absolute (scaled) below. NaN references need NaN
    /// results, and results that overflow f32 must be infinite with the right sign (within
    /// 1e-6 of the threshold either way).
    fn assert_close(xs: &[f32], got: &[f32], want: impl Fn(f64) -> f64, floor: f64, bound: f64) {
        let mut worst = (0.0, 0.0);
        for (&x, &y) in xs.iter().zip(got) {
            let w = want(x as f64);
            if w.is_nan() {
                assert!(y.is_nan(), "f({x}) = {y}, expected NaN");
                continue;
            }
            if y.is_infinite() || (w as f32).is_infinite() {
                let near_max = |v: f64| v.abs() >= f32::MAX as f64 * (1.0 - 1e-6);
                let same_sign = (y as f64).signum() == w.signum();
                assert!(
                    near_max(y as f64) && near_max(w) && same_sign,
                    "f({x}) = {y}, want {w}"
                );
                continue;
            }
            let e = (y as f64 - w).abs() / w.abs().max(floor);
            if e > worst.0 {
                worst = (e, x);
            }
        }
        assert!(worst.0 < bound, "max error {} at x = {}", worst.0, worst.1);
    }

    #[test]
    fn exp_relative_error_below_1e6_including_subnormals() {
        let xs = sweep(120.0);
        // Subnormal results hold fewer digits: compare them at the subnormal spacing.
        let floor = f32::MIN_POSITIVE as f64 * 1e6;
        each_isa(UnaryF32::Exp, &xs, |got| {
            assert_close(&xs, got, f64::exp, floor, 1e-6)
        });
        let mut out = [0.0; 4];
        exp(&[0.0, 1.0, -200.0, 88.8], &mut out);
        assert_eq!(out, [1.0, std::f32::consts::E, 0.0, f32::INFINITY]);
    }

    #[test]
    fn sigmoid_relative_error_below_1e6() {
        let xs = sweep(120.0);
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        each_isa(UnaryF32::Sigmoid, &xs, |got| {
            assert_close(&xs, got, sigmoid, 1e-30, 1e-6)
        });
    }

    #[test]
    fn tanh_relative_error_below_1e6() {
        let xs = sweep(50.0);
        each_isa(UnaryF32::Tanh, &xs, |got| {
            assert_close(&xs, got, f64::tanh, 1e-38, 1e-6)
        });
    }

    #[test]
    fn erf_absolute_error_below_1e6_and_relative_near_zero() {
        let xs = sweep(10.0);
        each_isa(UnaryF32::Erf, &xs, |got| {
            assert_close(&xs, got, erf_f64, 1.0, 1e-6)
        });
        // Near 0, erf(x) ~ 1.128 x must be accurate relative to x (conformance atol 1e-7);
        // subnormal results only to their spacing.
        let small: Vec<f32> = xs.iter().copied().filter(|x| x.abs() < 0.1).collect();
        let floor = f32::MIN_POSITIVE as f64;
        each_isa(UnaryF32::Erf, &small, |got| {
            assert_close(&small, got, erf_f64, floor, 1e-6)
        });
    }

    #[test]
    fn erf_f64_matches_published_values() {
        // Abramowitz & Stegun table 7.1 / mpmath, 16 digits.
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!((erf_f64(x) - want).abs() < 2e-15, "erf({x})");
        }
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        assert!(erf_f64(f64::NAN).is_nan());
    }

    #[test]
    fn mish_matches_definition() {
        let xs = sweep(100.0);
        let mish = |x: f64| x * (x.exp().ln_1p()).tanh();
        each_isa(UnaryF32::Mish, &xs, |got| {
            assert_close(&xs, got, mish, 1e-30, 2e-6)
        });
    }

    #[test]
    fn gelu_variants_match_their_definitions() {
        let xs = sweep(20.0);
        let gelu = |x: f64| 0.5 * x * (1.0 + erf_f64(x / std::f64::consts::SQRT_2));
        // Absolute: the erf error (below 1e-6) times |x|/2, where |x| < 3.92 sqrt 2 (erf is
        // exactly ±1 beyond).
        each_isa_act(Activation::Gelu, &xs, |got| {
            assert_close(&xs, got, gelu, 1.0, 3e-6)
        });
        let c = (2.0 / std::f64::consts::PI).sqrt();
        // x/2 (1 + tanh u) written as x / (1 + e^-2u), which f64 evaluates without the
        // cancellation of 1 + tanh u for very negative u.
        let gelu_tanh = |x: f64| x / (1.0 + (-2.0 * c * (x + 0.044715 * x * x * x)).exp());
        // For very negative x the result is about x e^(2u), and the f32 rounding error of 2u
        // (a few 1e-8 |2u|) becomes its relative error: compare absolutely below 1e-3.
        each_isa_act(Activation::GeluTanh, &xs, |got| {
            assert_close(&xs, got, gelu_tanh, 1e-3, 2e-6)
        });
        let silu = |x: f64| x / (1.0 + (-x).exp());
        // Also where its e^-x saturates or overflows early (x < -87).
        let mut xs = xs;
        xs.extend([-86.9, -87.5, -88.1, -88.5, -89.5, -100.0, 88.5, 100.0]);
        each_isa_act(Activation::Silu, &xs, |got| {
            assert_close(&xs, got, silu, 1e-30, 2e-6)
        });
    }

    #[test]
    fn piecewise_activations_on_hand_values() {
        let xs = [-3.0, -1.0, -0.0, 0.5, 2.0, 4.0, f32::NAN];
        let check = |act, want: [f32; 6]| {
            each_isa_act(act, &xs, |got| {
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() <= 1e-7, "{act:?}: got {got:?}, want {want:?}");
                }
                assert!(got[6].is_nan(), "{act:?} keeps NaN");
            })
        };
        check(Activation::Relu, [0.0, 0.0, -0.0, 0.5, 2.0, 4.0]);
        check(
            Activation::LeakyRelu(0.1),
            [-0.3, -0.1, -0.0, 0.5, 2.0, 4.0],
        );
        check(
            Activation::Clip(-1.0, 2.0),
            [-1.0, -1.0, -0.0, 0.5, 2.0, 2.0],
        );
        // min > max: every value becomes max.
        check(Activation::Clip(3.0, 1.0), [1.0; 6]);
        check(
            Activation::HardSigmoid(0.2, 0.5),
            [0.0, 0.3, 0.5, 0.6, 0.9, 1.0],
        );
        check(
            Activation::HardSwish,
            [
                -0.0,
                -1.0 / 3.0,
                -0.0,
                0.5 * (0.5 / 6.0 + 0.5),
                2.0 * (2.0 / 6.0 + 0.5),
                4.0,
            ],
        );
    }

    #[test]
    fn long_slices_take_the_parallel_path() {
        let xs: Vec<f32> = (0..100_000).map(|i| (i as f32 - 50_000.0) * 1e-3).collect();
        let mut par = vec![0.0; xs.len()];
        tanh(&xs, &mut par);
        let mut seq = vec![0.0; xs.len()];
        map_seq(isa(), Tanh, &xs, &mut seq);
        assert!(par
            .iter()
            .zip(&seq)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn results_do_not_depend_on_length_alignment_or_position() {
        // Each element alone (a length-1 slice, all tail) is the reference; unaligned slices
        // of every length up to a few vectors, on every instruction set, must match it bit
        // for bit.
        let mut s = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut pool: Vec<f32> = (0..200)
            .map(|_| (next() >> 40) as f32 / (1u64 << 20) as f32 - 8.0)
            .collect();
        pool.extend([
            0.0,
            -0.0,
            1e-40,
            -1e-40,
            88.0,
            -104.0,
            f32::INFINITY,
            f32::NAN,
        ]);
        let kinds = [
            UnaryF32::Exp,
            UnaryF32::Erf,
            UnaryF32::Tanh,
            UnaryF32::Sigmoid,
            UnaryF32::Mish,
        ];
        let acts = [
            Activation::Relu,
            Activation::LeakyRelu(0.1),
            Activation::Clip(-0.5, 2.0),
            Activation::Sigmoid,
            Activation::HardSigmoid(0.2, 0.5),
            Activation::HardSwish,
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Silu,
            Activation::Tanh,
        ];
        type Run<'a> = Box<dyn Fn(Isa, &[f32], &mut [f32]) + 'a>;
        let runs: Vec<(String, Run)> = kinds
            .iter()
            .map(|&k| {
                let run: Run = Box::new(move |isa, x, out| apply_on(isa, k, x, out));
                (format!("{k:?}"), run)
            })
            .chain(acts.iter().map(|&a| {
                let run: Run = Box::new(move |isa, x, out| activation_on(isa, a, x, out));
                (format!("{a:?}"), run)
            }))
            .collect();
        for isa in supported() {
            for (name, run) in &runs {
                for _ in 0..40 {
                    let len = (next() % 70) as usize;
                    let offset = 1 + (next() % 3) as usize;
                    let store: Vec<f32> = (0..len + offset)
                        .map(|_| pool[(next() % pool.len() as u64) as usize])
                        .collect();
                    let x = &store[offset..];
                    let mut out_store = vec![0.0; len + 1];
                    let out = &mut out_store[1..];
                    run(isa, x, out);
                    for (i, (&v, &got)) in x.iter().zip(out.iter()).enumerate() {
                        let mut alone = [0.0];
                        run(isa, &[v], &mut alone);
                        // Bit for bit, except that any NaN matches any NaN: which operand's
                        // NaN (sign, payload) an instruction passes on depends on the operand
                        // order the compiler picked at each inlined call site.
                        assert!(
                            got.to_bits() == alone[0].to_bits()
                                || (got.is_nan() && alone[0].is_nan()),
                            "{isa:?} {name} at {i} of {len}: f({v}) = {got}, alone {}",
                            alone[0]
                        );
                    }
                }
            }
        }
    }
}
