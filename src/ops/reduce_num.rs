//! Arithmetic over every tensor element type, for reductions, scans and scatter reductions.
//!
//! `Elem` only converts through f64, which is inexact for 64-bit integers and slow on hot
//! loops. `Numeric` instead names, per element type, the accumulator arithmetic is done in:
//! f32 for the half types (so sums do not round at every step), the type itself otherwise, and
//! u8 for bool (where max is "any" and min is "all"). Integer arithmetic wraps, like numpy.

use crate::tensor::Storable;

/// The type arithmetic is carried out in.
pub(crate) trait Acc: Copy + Send + Sync + PartialOrd + 'static {
    const ZERO: Self;
    const ONE: Self;
    /// The identity of `max`: -inf for floats, the minimum for integers.
    const LOWEST: Self;
    /// The identity of `min`.
    const HIGHEST: Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// The larger value; NaN wins, as in numpy.
    fn max(self, o: Self) -> Self;
    /// The smaller value; NaN wins.
    fn min(self, o: Self) -> Self;
    fn abs(self) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

/// An element type with the accumulator it computes in.
pub(crate) trait Numeric: Storable + PartialOrd {
    type Acc: Acc;
    fn widen(self) -> Self::Acc;
    fn narrow(a: Self::Acc) -> Self;
}

macro_rules! float_acc {
    ($($t:ty),*) => {$(
        impl Acc for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            fn add(self, o: Self) -> Self { self + o }
            fn mul(self, o: Self) -> Self { self * o }
            fn max(self, o: Self) -> Self { if o > self || o.is_nan() { o } else { self } }
            fn min(self, o: Self) -> Self { if o < self || o.is_nan() { o } else { self } }
            fn abs(self) -> Self { <$t>::abs(self) }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}
float_acc!(f32, f64);

macro_rules! int_acc {
    ($($t:ty),*) => {$(
        impl Acc for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn max(self, o: Self) -> Self { Ord::max(self, o) }
            fn min(self, o: Self) -> Self { Ord::min(self, o) }
            #[allow(unused_comparisons)]
            fn abs(self) -> Self { if self < 0 { (0 as $t).wrapping_sub(self) } else { self } }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}
int_acc!(i64, i32, i16, i8, u64, u32, u16, u8);

macro_rules! self_numeric {
    ($($t:ty),*) => {$(
        impl Numeric for $t {
            type Acc = $t;
            fn widen(self) -> $t { self }
            fn narrow(a: $t) -> $t { a }
        }
    )*};
}
self_numeric!(f32, f64, i64, i32, i16, i8, u64, u32, u16, u8);

macro_rules! half_numeric {
    ($($t:ty),*) => {$(
        impl Numeric for $t {
            type Acc = f32;
            fn widen(self) -> f32 { self.to_f32() }
            fn narrow(a: f32) -> $t { <$t>::from_f32(a) }
        }
    )*};
}
half_numeric!(half::f16, half::bf16);

impl Numeric for bool {
    type Acc = u8;
    fn widen(self) -> u8 {
        self as u8
    }
    fn narrow(a: u8) -> bool {
        a != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_max_and_min_propagate_nan() {
        assert!(Acc::max(1.0f32, f32::NAN).is_nan());
        assert!(Acc::max(f32::NAN, 1.0f32).is_nan());
        assert!(Acc::min(f64::NAN, 1.0).is_nan());
        assert_eq!(Acc::max(1.0f32, 2.0), 2.0);
    }

    #[test]
    fn integer_arithmetic_wraps() {
        assert_eq!(Acc::add(i8::MAX, 1), i8::MIN);
        assert_eq!(Acc::abs(i8::MIN), i8::MIN);
        assert_eq!(Acc::abs(-5i32), 5);
        assert_eq!(Acc::abs(5u8), 5);
    }

    #[test]
    fn bool_max_is_any_and_min_is_all() {
        let any = bool::narrow(Acc::max(false.widen(), true.widen()));
        let all = bool::narrow(Acc::min(false.widen(), true.widen()));
        assert!(any);
        assert!(!all);
    }
}
