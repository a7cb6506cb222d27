//! Per-type arithmetic for the elementwise ops: traits implemented once per element type, so
//! that each op is one generic function, and dtype-dispatch macros for type subsets.
//!
//! Semantics follow onnxruntime and numpy (the ONNX reference): integers wrap on overflow,
//! integer division truncates toward zero, and integer division or remainder by zero gives
//! 0 (numpy's result; onnxruntime would trap). float16 and bfloat16 compute in f32.

use crate::tensor::Storable;
use half::{bf16, f16};

/// Numeric element types (every dtype but bool).
pub(crate) trait Num: Storable + PartialOrd {
    /// The bounds of the type's range: ±inf for floats, so that clamping to them is a no-op.
    const LOWEST: Self;
    const HIGHEST: Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C `fmod`, ONNX Mod with fmod=1).
    fn rem_trunc(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor (Python `%`, ONNX Mod with fmod=0).
    fn rem_floor(self, o: Self) -> Self;
    /// The larger value; NaN if either is NaN (numpy `maximum`).
    fn max(self, o: Self) -> Self;
    /// The smaller value; NaN if either is NaN (numpy `minimum`).
    fn min(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    /// -1, 0 or 1 (NaN for NaN).
    fn sign(self) -> Self;
}

/// Integer element types.
pub(crate) trait Int: Num {
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn not(self) -> Self;
    /// `self << o`; 0 when `o` is negative or at least the bit width.
    fn shl(self, o: Self) -> Self;
    /// `self >> o`, arithmetic for signed types; when `o` is negative or at least the bit
    /// width, only the sign fill remains (-1 for negative `self`, else 0), as BitShift-28 says.
    fn shr(self, o: Self) -> Self;
}

/// Floating-point element types.
pub(crate) trait Float: Num {
    fn is_nan(self) -> bool;
    fn is_infinite(self) -> bool;
    fn is_sign_negative(self) -> bool;
    fn powf(self, e: Self) -> Self;
    fn sqrt(self) -> Self;
}

/// The operations integer types implement the same way, signed or not.
macro_rules! int_common {
    ($t:ty) => {
        const LOWEST: Self = <$t>::MIN;
        const HIGHEST: Self = <$t>::MAX;
        fn add(self, o: Self) -> Self {
            self.wrapping_add(o)
        }
        fn sub(self, o: Self) -> Self {
            self.wrapping_sub(o)
        }
        fn mul(self, o: Self) -> Self {
            self.wrapping_mul(o)
        }
        fn div(self, o: Self) -> Self {
            if o == 0 {
                0
            } else {
                self.wrapping_div(o)
            }
        }
        fn rem_trunc(self, o: Self) -> Self {
            if o == 0 {
                0
            } else {
                self.wrapping_rem(o)
            }
        }
        fn max(self, o: Self) -> Self {
            Ord::max(self, o)
        }
        fn min(self, o: Self) -> Self {
            Ord::min(self, o)
        }
        fn neg(self) -> Self {
            self.wrapping_neg()
        }
    };
}

macro_rules! int_bits {
    ($t:ty) => {
        fn and(self, o: Self) -> Self {
            self & o
        }
        fn or(self, o: Self) -> Self {
            self | o
        }
        fn xor(self, o: Self) -> Self {
            self ^ o
        }
        fn not(self) -> Self {
            !self
        }
        fn shl(self, o: Self) -> Self {
            match u32::try_from(o) {
                Ok(s) if s < <$t>::BITS => self << s,
                _ => 0,
            }
        }
    };
}

macro_rules! signed_int {
    ($($t:ty),*) => {$(
        impl Num for $t {
            int_common!($t);
            fn rem_floor(self, o: Self) -> Self {
                let r = self.rem_trunc(o);
                if r != 0 && (r < 0) != (o < 0) { r.wrapping_add(o) } else { r }
            }
            fn abs(self) -> Self {
                self.wrapping_abs()
            }
            fn sign(self) -> Self {
                self.signum()
            }
        }
        impl Int for $t {
            int_bits!($t);
            fn shr(self, o: Self) -> Self {
                match u32::try_from(o) {
                    Ok(s) if s < <$t>::BITS => self >> s,
                    _ => self >> (<$t>::BITS - 1),
                }
            }
        }
    )*};
}

macro_rules! unsigned_int {
    ($($t:ty),*) => {$(
        impl Num for $t {
            int_common!($t);
            fn rem_floor(self, o: Self) -> Self {
                self.rem_trunc(o)
            }
            fn abs(self) -> Self {
                self
            }
            fn sign(self) -> Self {
                (self != 0) as $t
            }
        }
        impl Int for $t {
            int_bits!($t);
            fn shr(self, o: Self) -> Self {
                match u32::try_from(o) {
                    Ok(s) if s < <$t>::BITS => self >> s,
                    _ => 0,
                }
            }
        }
    )*};
}

signed_int!(i8, i16, i32, i64);
unsigned_int!(u8, u16, u32, u64);

/// The type a float computes in: itself for f32 and f64, f32 for the half types.
trait Widen: Copy {
    type Wide;
    fn widen(self) -> Self::Wide;
    fn narrow(v: Self::Wide) -> Self;
}

macro_rules! widen {
    ($($t:ty => $w:ty, $widen:expr, $narrow:expr);*) => {$(
        impl Widen for $t {
            type Wide = $w;
            #[inline(always)]
            fn widen(self) -> $w {
                $widen(self)
            }
            #[inline(always)]
            fn narrow(v: $w) -> Self {
                $narrow(v)
            }
        }
    )*};
}

widen!(
    f32 => f32, |v| v, |v| v;
    f64 => f64, |v| v, |v| v;
    f16 => f32, f16::to_f32, f16::from_f32;
    bf16 => f32, bf16::to_f32, bf16::from_f32
);

macro_rules! float {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            fn add(self, o: Self) -> Self {
                Self::narrow(self.widen() + o.widen())
            }
            fn sub(self, o: Self) -> Self {
                Self::narrow(self.widen() - o.widen())
            }
            fn mul(self, o: Self) -> Self {
                Self::narrow(self.widen() * o.widen())
            }
            fn div(self, o: Self) -> Self {
                Self::narrow(self.widen() / o.widen())
            }
            fn rem_trunc(self, o: Self) -> Self {
                Self::narrow(self.widen() % o.widen())
            }
            fn rem_floor(self, o: Self) -> Self {
                let (a, b) = (self.widen(), o.widen());
                let r = a % b;
                // fmod has the dividend's sign; shift into the divisor's. A zero result takes
                // the divisor's sign too (Mod-28's special cases); NaN stays NaN.
                let r = if r == 0.0 {
                    r.copysign(b)
                } else if (r < 0.0) != (b < 0.0) {
                    r + b
                } else {
                    r
                };
                Self::narrow(r)
            }
            fn max(self, o: Self) -> Self {
                if self.is_nan() || self > o { self } else { o }
            }
            fn min(self, o: Self) -> Self {
                if self.is_nan() || self < o { self } else { o }
            }
            fn neg(self) -> Self {
                -self
            }
            fn abs(self) -> Self {
                Self::narrow(self.widen().abs())
            }
            fn sign(self) -> Self {
                let v = self.widen();
                Self::narrow(if v > 0.0 { 1.0 } else if v < 0.0 { -1.0 } else { v })
            }
        }
        impl Float for $t {
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn is_infinite(self) -> bool {
                <$t>::is_infinite(self)
            }
            fn is_sign_negative(self) -> bool {
                <$t>::is_sign_negative(self)
            }
            fn powf(self, e: Self) -> Self {
                Self::narrow(self.widen().powf(e.widen()))
            }
            fn sqrt(self) -> Self {
                Self::narrow(self.widen().sqrt())
            }
        }
    )*};
}

float!(f32, f64, f16, bf16);

/// Runs `$body` with `$T` bound to the numeric type of `$dtype`; bool is an error.
macro_rules! with_num_dtype {
    ($dtype:expr, $T:ident, $body:block) => {{
        use $crate::tensor::DType as __D;
        match $dtype {
            __D::F32 => {
                type $T = f32;
                $body
            }
            __D::F64 => {
                type $T = f64;
                $body
            }
            __D::F16 => {
                type $T = half::f16;
                $body
            }
            __D::BF16 => {
                type $T = half::bf16;
                $body
            }
            __D::I64 => {
                type $T = i64;
                $body
            }
            __D::I32 => {
                type $T = i32;
                $body
            }
            __D::I16 => {
                type $T = i16;
                $body
            }
            __D::I8 => {
                type $T = i8;
                $body
            }
            __D::U64 => {
                type $T = u64;
                $body
            }
            __D::U32 => {
                type $T = u32;
                $body
            }
            __D::U16 => {
                type $T = u16;
                $body
            }
            __D::U8 => {
                type $T = u8;
                $body
            }
            other => Err($crate::op_err!(
                "{other} tensors are not supported by this operator"
            )),
        }
    }};
}

/// Runs `$body` with `$T` bound to the integer type of `$dtype`; other types are an error.
macro_rules! with_int_dtype {
    ($dtype:expr, $T:ident, $body:block) => {{
        use $crate::tensor::DType as __D;
        match $dtype {
            __D::I64 => {
                type $T = i64;
                $body
            }
            __D::I32 => {
                type $T = i32;
                $body
            }
            __D::I16 => {
                type $T = i16;
                $body
            }
            __D::I8 => {
                type $T = i8;
                $body
            }
            __D::U64 => {
                type $T = u64;
                $body
            }
            __D::U32 => {
                type $T = u32;
                $body
            }
            __D::U16 => {
                type $T = u16;
                $body
            }
            __D::U8 => {
                type $T = u8;
                $body
            }
            d => Err($crate::op_err!("expected an integer tensor, got {d}")),
        }
    }};
}

/// Runs `$body` with `$T` bound to the floating-point type of `$dtype`; others are an error.
macro_rules! with_float_dtype {
    ($dtype:expr, $T:ident, $body:block) => {{
        use $crate::tensor::DType as __D;
        match $dtype {
            __D::F32 => {
                type $T = f32;
                $body
            }
            __D::F64 => {
                type $T = f64;
                $body
            }
            __D::F16 => {
                type $T = half::f16;
                $body
            }
            __D::BF16 => {
                type $T = half::bf16;
                $body
            }
            d => Err($crate::op_err!("expected a floating-point tensor, got {d}")),
        }
    }};
}

pub(crate) use {with_float_dtype, with_int_dtype, with_num_dtype};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_division_truncates_and_wraps() {
        assert_eq!(Num::div(-7i32, 2), -3);
        assert_eq!(Num::div(7i32, -2), -3);
        assert_eq!(Num::div(i32::MIN, -1), i32::MIN);
        assert_eq!(Num::div(5u8, 0), 0);
        assert_eq!(Num::add(250u8, 10), 4);
    }

    #[test]
    fn remainders_take_the_sign_of_dividend_or_divisor() {
        // numpy: np.fmod([-7, 7, -7, 7], [3, -3, -3, 3]) and np.mod of the same.
        let pairs = [(-7i64, 3i64), (7, -3), (-7, -3), (7, 3)];
        let trunc: Vec<i64> = pairs.iter().map(|&(a, b)| a.rem_trunc(b)).collect();
        let floor: Vec<i64> = pairs.iter().map(|&(a, b)| a.rem_floor(b)).collect();
        assert_eq!(trunc, [-1, 1, -1, 1]);
        assert_eq!(floor, [2, -2, -1, 1]);
        assert_eq!(7u32.rem_floor(0), 0);
        // Floats: np.fmod(-7.5, 2) = -1.5, np.mod(-7.5, 2) = 0.5, Mod-28 zero and inf cases.
        assert_eq!((-7.5f32).rem_trunc(2.0), -1.5);
        assert_eq!((-7.5f32).rem_floor(2.0), 0.5);
        assert!(0.0f32.rem_floor(-3.0).is_sign_negative());
        assert_eq!(5.0f64.rem_floor(f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert_eq!(5.0f64.rem_floor(f64::INFINITY), 5.0);
        assert!(1.0f32.rem_floor(0.0).is_nan());
    }

    #[test]
    fn shifts_past_the_width_keep_only_the_sign_fill() {
        assert_eq!(1u8.shl(7), 128);
        assert_eq!(1u8.shl(8), 0);
        assert_eq!(200u8.shr(9), 0);
        assert_eq!((-16i32).shr(2), -4);
        assert_eq!((-16i32).shr(40), -1);
        assert_eq!(16i32.shr(-1), 0);
        assert_eq!(1i8.shl(7), i8::MIN);
    }

    #[test]
    fn float_max_min_propagate_nan() {
        assert!(Num::max(f32::NAN, 1.0).is_nan());
        assert!(Num::max(1.0, f32::NAN).is_nan());
        assert!(Num::min(f16::NAN, f16::ONE).is_nan());
        assert_eq!(Num::max(-2.0f64, 3.0), 3.0);
        assert_eq!(Num::sign(-0.5f32), -1.0);
        assert_eq!(Num::sign(0u16), 0);
        assert_eq!(Num::sign(-9i8), -1);
    }
}
