//! The float8 and float4 encodings: sign / exponent / mantissa minifloats rounded to nearest
//! even like ml_dtypes (the ONNX reference), and float8e8m0's powers of two.

use super::{CastOptions, E8m0Rounding};

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
pub(super) struct MiniFloat {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    specials: Specials,
}

pub(super) const E4M3FN: MiniFloat = MiniFloat {
    exp_bits: 4,
    man_bits: 3,
    bias: 7,
    specials: Specials::FiniteNan,
};
pub(super) const E4M3FNUZ: MiniFloat = MiniFloat {
    exp_bits: 4,
    man_bits: 3,
    bias: 8,
    specials: Specials::Fnuz,
};
pub(super) const E5M2: MiniFloat = MiniFloat {
    exp_bits: 5,
    man_bits: 2,
    bias: 15,
    specials: Specials::Ieee,
};
pub(super) const E5M2FNUZ: MiniFloat = MiniFloat {
    exp_bits: 5,
    man_bits: 2,
    bias: 16,
    specials: Specials::Fnuz,
};
pub(super) const E2M1: MiniFloat = MiniFloat {
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

    pub(super) fn decode(self, bits: u8) -> f32 {
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
    pub(super) fn encode(self, v: f32, saturate: bool) -> u8 {
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
pub(super) fn e8m0_decode(bits: u8) -> f32 {
    if bits == 0xFF {
        f32::NAN
    } else {
        pow2(bits as i32 - 127) as f32
    }
}

/// Follows `onnx.numpy_helper.to_float8e8m0`: the f32 exponent, moved up one when rounding
/// says so (never past the largest value when saturating); NaN and infinities give 0xFF.
pub(super) fn e8m0_encode(v: f32, opts: CastOptions) -> u8 {
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

#[cfg(test)]
mod tests {
    use crate::tensor::narrow::*;
    use crate::tensor::{CastOptions, E8m0Rounding, Narrow};

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
}
