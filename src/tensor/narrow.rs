//! Storage-only element types narrower than a byte's worth of range: the float8 family,
//! float4, and 4- and 2-bit integers.
//!
//! Each is held unpacked, one byte per element (a newtype over its bit pattern, or over the
//! integer value for the small integer types), so tensors of them slice, reshape and copy like
//! any 1-byte type. Nothing computes on them directly: `Cast`, `QuantizeLinear` and
//! `DequantizeLinear` convert them to and from f32 (or i64 for the integers) with the exact
//! ONNX semantics implemented here. Sub-byte types are unpacked on load (`from_packed`),
//! low bits first as `TensorProto` stores them (nothing serializes tensors yet).

use super::{DType, Elem, Storable, Tensor};
use crate::error::{Error, Result};

/// How a conversion to a narrow float handles values it cannot represent.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CastOptions {
    /// Out-of-range values (and infinities) become the largest finite value instead of
    /// infinity or NaN (ONNX `Cast`'s `saturate`, default on). Only the float8 types care.
    pub saturate: bool,
    /// Rounding of float8e8m0, which only holds powers of two.
    pub e8m0_rounding: E8m0Rounding,
}

impl Default for CastOptions {
    fn default() -> Self {
        CastOptions {
            saturate: true,
            e8m0_rounding: E8m0Rounding::Up,
        }
    }
}

/// ONNX `Cast`'s `round_mode` for float8e8m0.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum E8m0Rounding {
    Up,
    Down,
    Nearest,
}

/// How a minifloat format spends its special encodings.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Specials {
    /// IEEE-like: the all-ones exponent holds ±inf (zero mantissa) and NaNs (float8e5m2).
    Ieee,
    /// No infinity; only the all-ones exponent and mantissa is NaN (float8e4m3fn).
    FiniteNan,
    /// "Unsigned zero": no infinity, no -0; the negative-zero pattern 0x80 is the only NaN.
    Fnuz,
    /// Every pattern is a finite number (float4e2m1).
    FiniteOnly,
}

/// A sign / exponent / mantissa float format of at most 8 bits.
#[derive(Copy, Clone, Debug)]
struct MiniFloat {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    specials: Specials,
}

const E4M3FN: MiniFloat = MiniFloat {
    exp_bits: 4,
    man_bits: 3,
    bias: 7,
    specials: Specials::FiniteNan,
};
const E4M3FNUZ: MiniFloat = MiniFloat {
    exp_bits: 4,
    man_bits: 3,
    bias: 8,
    specials: Specials::Fnuz,
};
const E5M2: MiniFloat = MiniFloat {
    exp_bits: 5,
    man_bits: 2,
    bias: 15,
    specials: Specials::Ieee,
};
const E5M2FNUZ: MiniFloat = MiniFloat {
    exp_bits: 5,
    man_bits: 2,
    bias: 16,
    specials: Specials::Fnuz,
};
const E2M1: MiniFloat = MiniFloat {
    exp_bits: 2,
    man_bits: 1,
    bias: 1,
    specials: Specials::FiniteOnly,
};

/// `2^e` exactly (e within f64's normal range).
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

impl MiniFloat {
    fn sign_bit(self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    fn max_exp_field(self) -> u32 {
        (1 << self.exp_bits) - 1
    }

    /// The largest finite value.
    fn max(self) -> f64 {
        let (top_exp, top_man) = match self.specials {
            // The all-ones exponent is reserved for inf/NaN.
            Specials::Ieee => (self.max_exp_field() - 1, (1 << self.man_bits) - 1),
            // Only the all-ones mantissa is NaN there.
            Specials::FiniteNan => (self.max_exp_field(), (1 << self.man_bits) - 2),
            Specials::Fnuz | Specials::FiniteOnly => {
                (self.max_exp_field(), (1 << self.man_bits) - 1)
            }
        };
        (1.0 + top_man as f64 / (1u32 << self.man_bits) as f64) * pow2(top_exp as i32 - self.bias)
    }

    fn nan(self, negative: bool) -> u8 {
        let all = (1u8 << (self.exp_bits + self.man_bits)) - 1;
        match self.specials {
            Specials::Fnuz => 0x80,
            // Matches ml_dtypes (the ONNX reference), which has no NaN to give here.
            Specials::FiniteOnly => self.sign_bit(),
            // e4m3fn has a single NaN pattern; e5m2 gets the quiet NaN (top mantissa bit).
            Specials::FiniteNan => all | if negative { self.sign_bit() } else { 0 },
            Specials::Ieee => {
                let quiet =
                    ((self.max_exp_field() as u8) << self.man_bits) | (1 << (self.man_bits - 1));
                quiet | if negative { self.sign_bit() } else { 0 }
            }
        }
    }

    fn decode(self, bits: u8) -> f32 {
        let negative = bits & self.sign_bit() != 0;
        let exp = (bits as u32 >> self.man_bits) & self.max_exp_field();
        let man = bits as u32 & ((1 << self.man_bits) - 1);
        match self.specials {
            Specials::Fnuz if bits == 0x80 => return f32::NAN,
            Specials::FiniteNan if exp == self.max_exp_field() && man + 1 == 1 << self.man_bits => {
                return f32::NAN
            }
            Specials::Ieee if exp == self.max_exp_field() => {
                let v = if man == 0 { f32::INFINITY } else { f32::NAN };
                return if negative { -v } else { v };
            }
            _ => {}
        }
        let magnitude = if exp == 0 {
            man as f64 * pow2(1 - self.bias - self.man_bits as i32)
        } else {
            (man as f64 + (1u32 << self.man_bits) as f64)
                * pow2(exp as i32 - self.bias - self.man_bits as i32)
        };
        // Exact: every value of these formats is representable in f32.
        (if negative { -magnitude } else { magnitude }) as f32
    }

    /// Rounds to nearest, ties to even, as ml_dtypes (the ONNX reference) does.
    fn encode(self, v: f32, saturate: bool) -> u8 {
        let negative = v.is_sign_negative();
        let sign = if negative { self.sign_bit() } else { 0 };
        if v.is_nan() {
            return self.nan(negative);
        }
        let max = self.max();
        let overflow = || {
            if saturate || self.specials == Specials::FiniteOnly {
                sign | self.encode_exact(max)
            } else if self.specials == Specials::Ieee {
                sign | ((self.max_exp_field() as u8) << self.man_bits)
            } else {
                self.nan(negative)
            }
        };
        let a = v.abs() as f64;
        if a.is_infinite() {
            return overflow();
        }
        let min_exp = 1 - self.bias;
        // The binade of `a`, clamped to the subnormal range's spacing below it.
        let binade = if a == 0.0 {
            min_exp
        } else {
            ((a.to_bits() >> 52) as i32 - 1023).max(min_exp)
        };
        let quantum = pow2(binade - self.man_bits as i32);
        let rounded = (a / quantum).round_ties_even() * quantum;
        if rounded > max {
            return overflow();
        }
        if rounded == 0.0 && self.specials == Specials::Fnuz {
            return 0;
        }
        sign | self.encode_exact(rounded)
    }

    /// The bits of a representable non-negative value.
    fn encode_exact(self, a: f64) -> u8 {
        if a == 0.0 {
            return 0;
        }
        let binade = (a.to_bits() >> 52) as i32 - 1023;
        let min_exp = 1 - self.bias;
        if binade < min_exp {
            let man = a / pow2(min_exp - self.man_bits as i32);
            return man as u8;
        }
        let man = a / pow2(binade - self.man_bits as i32) - (1u32 << self.man_bits) as f64;
        (((binade + self.bias) as u8) << self.man_bits) | man as u8
    }
}

/// float8e8m0: an unsigned power of two `2^(bits - 127)`; 0xFF is NaN.
fn e8m0_decode(bits: u8) -> f32 {
    if bits == 0xFF {
        f32::NAN
    } else {
        pow2(bits as i32 - 127) as f32
    }
}

/// Follows `onnx.numpy_helper.to_float8e8m0`: the f32 exponent, moved up one when rounding
/// says so (never past the largest value when saturating); NaN and infinities give 0xFF.
fn e8m0_encode(v: f32, opts: CastOptions) -> u8 {
    let bits = v.to_bits();
    let exp = (bits >> 23) & 0xFF;
    if exp == 0xFF {
        return 0xFF;
    }
    let fraction = bits & 0x7F_FFFF;
    let up = match opts.e8m0_rounding {
        E8m0Rounding::Down => false,
        E8m0Rounding::Up => fraction != 0,
        E8m0Rounding::Nearest => {
            let (g, r, s) = (
                bits & 0x40_0000 != 0,
                bits & 0x20_0000 != 0,
                bits & 0x1F_FFFF != 0,
            );
            g && (r || s || exp > 0)
        }
    };
    let up = up && !(opts.saturate && exp == 0xFE);
    (exp + up as u32) as u8
}

/// A storage-only element type: how it converts to and from the types that compute.
pub trait Narrow: Storable {
    /// Whether it holds integers (converted through i64) rather than floats (through f32).
    const INTEGER: bool;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32, opts: CastOptions) -> Self;
    /// Wraps modulo 2^bits like a C integer conversion (integer types); floats round.
    fn from_i64(v: i64) -> Self;
    /// The element encoded by the low bits of `raw` (integers sign-extend).
    fn from_bits(raw: u8) -> Self;
    /// The encoding, in the low bits.
    fn bits(self) -> u8;
}

macro_rules! narrow_float {
    ($($(#[$doc:meta])* $name:ident => $dtype:ident, $decode:expr, $encode:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Copy, Clone, Default, PartialEq, Eq, Debug)]
        #[repr(transparent)]
        pub struct $name(pub u8);

        impl Elem for $name {
            const DTYPE: DType = DType::$dtype;
            const POD: bool = true;
            fn to_f64(self) -> f64 {
                self.to_f32() as f64
            }
            fn from_f64(v: f64) -> Self {
                Self::from_f32(v as f32, CastOptions::default())
            }
        }

        impl Narrow for $name {
            const INTEGER: bool = false;
            fn to_f32(self) -> f32 {
                ($decode)(self.0)
            }
            fn from_f32(v: f32, opts: CastOptions) -> Self {
                $name(($encode)(v, opts))
            }
            fn from_i64(v: i64) -> Self {
                Self::from_f32(v as f32, CastOptions::default())
            }
            fn from_bits(raw: u8) -> Self {
                $name(raw)
            }
            fn bits(self) -> u8 {
                self.0
            }
        }
    )*};
}

narrow_float! {
    /// float8 with 4 exponent bits, 3 mantissa bits, no infinity (max 448).
    F8E4M3FN => F8E4M3FN, |b| E4M3FN.decode(b), |v, o: CastOptions| E4M3FN.encode(v, o.saturate);
    /// float8 e4m3 with a single NaN (0x80) and no -0 (max 240).
    F8E4M3FNUZ => F8E4M3FNUZ, |b| E4M3FNUZ.decode(b), |v, o: CastOptions| E4M3FNUZ.encode(v, o.saturate);
    /// float8 with 5 exponent bits, 2 mantissa bits and IEEE infinities (max 57344).
    F8E5M2 => F8E5M2, |b| E5M2.decode(b), |v, o: CastOptions| E5M2.encode(v, o.saturate);
    /// float8 e5m2 with a single NaN (0x80) and no -0 or infinity (max 57344).
    F8E5M2FNUZ => F8E5M2FNUZ, |b| E5M2FNUZ.decode(b), |v, o: CastOptions| E5M2FNUZ.encode(v, o.saturate);
    /// float8 power-of-two scale, `2^(bits - 127)`.
    F8E8M0 => F8E8M0, e8m0_decode, e8m0_encode;
    /// float4 with 2 exponent bits and 1 mantissa bit (±{0, 0.5, 1, 1.5, 2, 3, 4, 6}).
    F4E2M1 => F4E2M1, |b| E2M1.decode(b), |v, _| E2M1.encode(v, true);
}

macro_rules! narrow_int {
    ($($(#[$doc:meta])* $name:ident($repr:ty) => $dtype:ident, $bits:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Copy, Clone, Default, PartialEq, Eq, Debug)]
        #[repr(transparent)]
        pub struct $name(pub $repr);

        impl Elem for $name {
            const DTYPE: DType = DType::$dtype;
            const POD: bool = true;
            fn to_f64(self) -> f64 {
                self.0 as f64
            }
            fn from_f64(v: f64) -> Self {
                Self::from_i64(v as i64)
            }
        }

        impl Narrow for $name {
            const INTEGER: bool = true;
            fn to_f32(self) -> f32 {
                self.0 as f32
            }
            /// Truncates toward zero, then wraps (ml_dtypes' `astype`, the ONNX reference).
            fn from_f32(v: f32, _: CastOptions) -> Self {
                Self::from_i64(v as i64)
            }
            fn from_i64(v: i64) -> Self {
                Self::from_bits(v as u8)
            }
            fn from_bits(raw: u8) -> Self {
                let shift = 8 - $bits;
                $name(((raw << shift) as $repr) >> shift)
            }
            fn bits(self) -> u8 {
                self.0 as u8 & ((1u8 << $bits) - 1)
            }
        }
    )*};
}

narrow_int! {
    /// Signed 4-bit integer, -8..=7.
    I4(i8) => I4, 4;
    /// Unsigned 4-bit integer, 0..=15.
    U4(u8) => U4, 4;
    /// Signed 2-bit integer, -2..=1.
    I2(i8) => I2, 2;
    /// Unsigned 2-bit integer, 0..=3.
    U2(u8) => U2, 2;
}

/// Runs `$body` with `$T` bound to the Rust type of a narrow `$dtype`; `$other` otherwise.
#[macro_export]
macro_rules! with_narrow_dtype {
    ($dtype:expr, $T:ident, $body:block, $other:block) => {{
        use $crate::tensor::narrow as __n;
        use $crate::tensor::DType as __D;
        match $dtype {
            __D::F8E4M3FN => {
                type $T = __n::F8E4M3FN;
                $body
            }
            __D::F8E4M3FNUZ => {
                type $T = __n::F8E4M3FNUZ;
                $body
            }
            __D::F8E5M2 => {
                type $T = __n::F8E5M2;
                $body
            }
            __D::F8E5M2FNUZ => {
                type $T = __n::F8E5M2FNUZ;
                $body
            }
            __D::F8E8M0 => {
                type $T = __n::F8E8M0;
                $body
            }
            __D::F4E2M1 => {
                type $T = __n::F4E2M1;
                $body
            }
            __D::I4 => {
                type $T = __n::I4;
                $body
            }
            __D::U4 => {
                type $T = __n::U4;
                $body
            }
            __D::I2 => {
                type $T = __n::I2;
                $body
            }
            __D::U2 => {
                type $T = __n::U2;
                $body
            }
            _ => $other,
        }
    }};
}

/// Bits per element of the sub-byte types, as stored packed in `TensorProto`.
fn packed_bits(dtype: DType) -> Option<usize> {
    Some(dtype.bit_width()).filter(|&b| b < 8)
}

/// Bytes that `n` elements of `dtype` take in `TensorProto` raw data (`None` on overflow).
pub fn stored_len(dtype: DType, n: usize) -> Option<usize> {
    match packed_bits(dtype) {
        Some(bits) => Some(n.div_ceil(8 / bits)),
        None => n.checked_mul(dtype.size()),
    }
}

/// Builds a narrow tensor from `raw` bytes as `TensorProto` stores them: sub-byte types packed
/// low bits first, the others one byte per element.
pub fn from_packed(dtype: DType, shape: Vec<usize>, raw: &[u8]) -> Result<Tensor> {
    let n = super::checked_numel(&shape)?;
    let bits = packed_bits(dtype).unwrap_or(8);
    let per_byte = 8 / bits;
    if raw.len() != n.div_ceil(per_byte) {
        return Err(Error::Op(format!(
            "{dtype} tensor of shape {shape:?} needs {} bytes, found {}",
            n.div_ceil(per_byte),
            raw.len()
        )));
    }
    let mask = ((1u16 << bits) - 1) as u8;
    let unpacked: Vec<u8> = (0..n)
        .map(|i| (raw[i / per_byte] >> ((i % per_byte) * bits)) & mask)
        .collect();
    from_bit_patterns(dtype, shape, &unpacked)
}

/// Each element's bit pattern in the low bits of one byte (BitCast's view of a 1-byte or
/// narrower tensor).
pub fn bit_patterns(t: &Tensor) -> Result<Vec<u8>> {
    with_narrow_dtype!(
        t.dtype(),
        T,
        { Ok(t.as_slice::<T>()?.iter().map(|x| x.bits()).collect()) },
        {
            if t.dtype().size() != 1 {
                return Err(Error::Op(format!("{} is wider than a byte", t.dtype())));
            }
            Ok(t.as_bytes().to_vec())
        }
    )
}

/// The tensor whose elements have the bit patterns `bits` (one per byte, low bits).
pub fn from_bit_patterns(dtype: DType, shape: Vec<usize>, bits: &[u8]) -> Result<Tensor> {
    with_narrow_dtype!(
        dtype,
        T,
        {
            let v: Vec<T> = bits.iter().map(|&b| T::from_bits(b)).collect();
            Tensor::from_vec(shape, v)
        },
        { Tensor::from_le_slice(dtype, shape, bits) }
    )
}

/// Converts `src` to `to` when either side is a narrow type (`None` otherwise): narrow floats
/// go through f32 and narrow integers through i64, both exact.
pub(super) fn cast(src: &Tensor, to: DType, opts: CastOptions) -> Option<Result<Tensor>> {
    if !src.dtype().is_narrow() && !to.is_narrow() {
        return None;
    }
    Some(cast_narrow(src, to, opts))
}

fn cast_narrow(src: &Tensor, to: DType, opts: CastOptions) -> Result<Tensor> {
    // Widen a narrow source first.
    let wide = with_narrow_dtype!(
        src.dtype(),
        S,
        {
            let s = src.as_slice::<S>()?;
            if S::INTEGER {
                let v: Vec<i64> = s.iter().map(|x| x.to_f64() as i64).collect();
                Tensor::from_vec(src.shape().to_vec(), v)?
            } else {
                let v: Vec<f32> = s.iter().map(|x| x.to_f32()).collect();
                Tensor::from_vec(src.shape().to_vec(), v)?
            }
        },
        { src.clone() }
    );
    if !to.is_narrow() {
        return wide.cast(to);
    }
    with_narrow_dtype!(
        to,
        D,
        {
            let out: Vec<D> = if wide.dtype().is_float() {
                let f = wide.cast(DType::F32)?;
                f.as_slice::<f32>()?
                    .iter()
                    .map(|&x| D::from_f32(x, opts))
                    .collect()
            } else {
                let i = wide.cast(DType::I64)?;
                i.as_slice::<i64>()?
                    .iter()
                    .map(|&x| D::from_i64(x))
                    .collect()
            };
            Tensor::from_vec(src.shape().to_vec(), out)
        },
        { Err(Error::Op(format!("{to} is not a narrow type"))) }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: CastOptions = CastOptions {
        saturate: false,
        e8m0_rounding: E8m0Rounding::Up,
    };
    const SAT: CastOptions = CastOptions {
        saturate: true,
        e8m0_rounding: E8m0Rounding::Up,
    };

    /// Inputs of the encoding tables below: zeros, exact values, round-to-nearest-even ties
    /// (464 between 448 and 480; 3·2^-10 between e4m3fn subnormals), overflow, subnormals.
    const INPUTS: [f32; 16] = [
        0.0,
        -0.0,
        1.0,
        -1.75,
        0.1,
        448.0,
        464.0,
        465.0,
        1e6,
        -1e6,
        0.0009765625, // 2^-10
        0.0029296875, // 3·2^-10
        f32::INFINITY,
        f32::NEG_INFINITY,
        240.0,
        1.5 / 65536.0,
    ];

    fn encode<T: Narrow>(opts: CastOptions) -> Vec<u8> {
        INPUTS
            .iter()
            .map(|&v| T::from_f32(v, opts).bits())
            .collect()
    }

    // Expected bit patterns from ml_dtypes `astype` (the ONNX reference), saturating ones
    // from `np.clip(x, finfo.min, finfo.max).astype(...)`.
    #[test]
    fn e4m3fn_encoding() {
        let plain = [
            0x00, 0x80, 0x38, 0xbe, 0x1d, 0x7e, 0x7e, 0x7f, 0x7f, 0xff, 0x00, 0x02, 0x7f, 0xff,
            0x77, 0x00,
        ];
        let sat = [
            0x00, 0x80, 0x38, 0xbe, 0x1d, 0x7e, 0x7e, 0x7e, 0x7e, 0xfe, 0x00, 0x02, 0x7e, 0xfe,
            0x77, 0x00,
        ];
        assert_eq!(encode::<F8E4M3FN>(PLAIN), plain);
        assert_eq!(encode::<F8E4M3FN>(SAT), sat);
        assert!(F8E4M3FN::from_f32(f32::NAN, SAT).to_f32().is_nan());
    }

    #[test]
    fn e4m3fnuz_encoding() {
        // No -0 (it is the NaN 0x80): -0.0 encodes as 0, overflow as NaN unless saturating.
        let plain = [
            0x00, 0x00, 0x40, 0xc6, 0x25, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x03, 0x80, 0x80,
            0x7f, 0x00,
        ];
        let sat = [
            0x00, 0x00, 0x40, 0xc6, 0x25, 0x7f, 0x7f, 0x7f, 0x7f, 0xff, 0x01, 0x03, 0x7f, 0xff,
            0x7f, 0x00,
        ];
        assert_eq!(encode::<F8E4M3FNUZ>(PLAIN), plain);
        assert_eq!(encode::<F8E4M3FNUZ>(SAT), sat);
        assert_eq!(F8E4M3FNUZ::from_f32(f32::NAN, SAT).0, 0x80);
    }

    #[test]
    fn e5m2_encoding() {
        // Infinities survive unless saturating; 1.5·2^-16 ties to the even subnormal 2·2^-16.
        let plain = [
            0x00, 0x80, 0x3c, 0xbf, 0x2e, 0x5f, 0x5f, 0x5f, 0x7c, 0xfc, 0x14, 0x1a, 0x7c, 0xfc,
            0x5c, 0x02,
        ];
        let sat = [
            0x00, 0x80, 0x3c, 0xbf, 0x2e, 0x5f, 0x5f, 0x5f, 0x7b, 0xfb, 0x14, 0x1a, 0x7b, 0xfb,
            0x5c, 0x02,
        ];
        assert_eq!(encode::<F8E5M2>(PLAIN), plain);
        assert_eq!(encode::<F8E5M2>(SAT), sat);
        assert_eq!(F8E5M2::from_f32(f32::NAN, SAT).0, 0x7e);
    }

    #[test]
    fn e5m2fnuz_encoding() {
        let plain = [
            0x00, 0x00, 0x40, 0xc3, 0x32, 0x63, 0x63, 0x63, 0x80, 0x80, 0x18, 0x1e, 0x80, 0x80,
            0x60, 0x03,
        ];
        let sat = [
            0x00, 0x00, 0x40, 0xc3, 0x32, 0x63, 0x63, 0x63, 0x7f, 0xff, 0x18, 0x1e, 0x7f, 0xff,
            0x60, 0x03,
        ];
        assert_eq!(encode::<F8E5M2FNUZ>(PLAIN), plain);
        assert_eq!(encode::<F8E5M2FNUZ>(SAT), sat);
    }

    #[test]
    fn e2m1_encoding_always_saturates() {
        let want = [
            0x0, 0x8, 0x2, 0xc, 0x0, 0x7, 0x7, 0x7, 0x7, 0xf, 0x0, 0x0, 0x7, 0xf, 0x7, 0x0,
        ];
        assert_eq!(encode::<F4E2M1>(PLAIN), want);
        // 0.25 ties to 0 and 2.5 to 2 (even mantissas); NaN becomes -0 like ml_dtypes.
        assert_eq!(F4E2M1::from_f32(0.25, SAT).to_f32(), 0.0);
        assert_eq!(F4E2M1::from_f32(2.5, SAT).to_f32(), 2.0);
        assert_eq!(F4E2M1::from_f32(f32::NAN, SAT).0, 0x8);
    }

    #[test]
    fn float8_decoding() {
        let bits = [
            0x00u8, 0x01, 0x08, 0x38, 0x7f, 0x80, 0x81, 0xfe, 0xff, 0x7c, 0x7b,
        ];
        let decode = |f: fn(u8) -> f32| -> Vec<f32> { bits.iter().map(|&b| f(b)).collect() };
        let same = |got: Vec<f32>, want: [f32; 11]| {
            for (g, w) in got.iter().zip(want) {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{got:?}"
                );
            }
        };
        let nan = f32::NAN;
        same(
            decode(|b| F8E4M3FN(b).to_f32()),
            [
                0.0,
                0.001953125,
                0.015625,
                1.0,
                nan,
                -0.0,
                -0.001953125,
                -448.0,
                nan,
                384.0,
                352.0,
            ],
        );
        same(
            decode(|b| F8E4M3FNUZ(b).to_f32()),
            [
                0.0,
                0.0009765625,
                0.0078125,
                0.5,
                240.0,
                nan,
                -0.0009765625,
                -224.0,
                -240.0,
                192.0,
                176.0,
            ],
        );
        same(
            decode(|b| F8E5M2(b).to_f32()),
            [
                0.0,
                1.5258789e-05,
                0.00012207031,
                0.5,
                nan,
                -0.0,
                -1.5258789e-05,
                nan,
                nan,
                f32::INFINITY,
                57344.0,
            ],
        );
        same(
            decode(|b| F8E5M2FNUZ(b).to_f32()),
            [
                0.0,
                7.6293945e-06,
                6.1035156e-05,
                0.25,
                57344.0,
                nan,
                -7.6293945e-06,
                -49152.0,
                -57344.0,
                32768.0,
                28672.0,
            ],
        );
    }

    #[test]
    fn e8m0_rounds_per_mode() {
        let enc = |v: f32, mode, saturate| {
            F8E8M0::from_f32(
                v,
                CastOptions {
                    saturate,
                    e8m0_rounding: mode,
                },
            )
            .0
        };
        // 1.1 lies between 2^0 (127) and 2^1 (128); 1.5 is the nearest-mode tie (rounds up).
        assert_eq!(enc(1.1, E8m0Rounding::Up, true), 128);
        assert_eq!(enc(1.1, E8m0Rounding::Down, true), 127);
        assert_eq!(enc(1.1, E8m0Rounding::Nearest, true), 127);
        assert_eq!(enc(1.5, E8m0Rounding::Nearest, true), 128);
        assert_eq!(enc(f32::MAX, E8m0Rounding::Up, true), 254);
        assert_eq!(enc(f32::MAX, E8m0Rounding::Up, false), 255);
        assert_eq!(enc(f32::NAN, E8m0Rounding::Up, true), 255);
        assert_eq!(F8E8M0(0).to_f32(), 5.877472e-39);
        assert!(F8E8M0(255).to_f32().is_nan());
    }

    #[test]
    fn small_integers_wrap_and_unpack() {
        // Casts truncate and wrap like ml_dtypes: -9 → 7, 8 → -8 for int4; 5 → 1 for uint2.
        let ints: Vec<i8> = [-9.6f32, -8.0, 7.9, 8.0]
            .iter()
            .map(|&v| I4::from_f32(v, SAT).0)
            .collect();
        assert_eq!(ints, [7, -8, 7, -8]);
        assert_eq!(U2::from_i64(5).0, 1);
        assert_eq!(I2::from_bits(0b11).0, -1);
        // Two int4 per byte, low nibble first; an odd count leaves the last high nibble unused.
        let t = from_packed(DType::I4, vec![3], &[0x8F, 0x07]).unwrap();
        assert_eq!(t.as_slice::<I4>().unwrap(), &[I4(-1), I4(-8), I4(7)]);
        let t = from_packed(DType::U2, vec![5], &[0b1110_0100, 0b11]).unwrap();
        assert_eq!(
            t.as_slice::<U2>().unwrap(),
            &[U2(0), U2(1), U2(2), U2(3), U2(3)]
        );
        assert!(from_packed(DType::U4, vec![3], &[0]).is_err());
    }

    #[test]
    fn tensor_casts_go_through_f32_and_i64() {
        let x = Tensor::from_vec(vec![3], vec![1e6f32, -0.3, 2.5]).unwrap();
        let y = x.cast(DType::F8E4M3FN).unwrap();
        assert_eq!(
            y.cast(DType::F32).unwrap().as_slice::<f32>().unwrap(),
            &[448.0, -0.3125, 2.5]
        );
        let i = Tensor::from_vec(vec![2], vec![-3i64, 20]).unwrap();
        let q = i.cast(DType::U4).unwrap();
        assert_eq!(q.as_slice::<U4>().unwrap(), &[U4(13), U4(4)]);
        assert_eq!(
            q.cast(DType::I8).unwrap().as_slice::<i8>().unwrap(),
            &[13, 4]
        );
        // Arithmetic refuses narrow types rather than computing on them.
        assert!(y.to_i64_vec().is_err());
    }
}
