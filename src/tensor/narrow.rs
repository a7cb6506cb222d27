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

#[path = "narrow_float.rs"]
mod float;

use float::{e8m0_decode, e8m0_encode, E2M1, E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ};

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

    const SAT: CastOptions = CastOptions {
        saturate: true,
        e8m0_rounding: E8m0Rounding::Up,
    };

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
