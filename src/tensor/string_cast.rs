//! `Cast` to and from strings.
//!
//! From strings: decimal and scientific literals ("3.14", "1e-5", "1E8"), and "INF", "+INF",
//! "-INF" and "NaN" in any case; to an integer type, a literal with a fraction truncates
//! ("100.5" → 100). Anything else is an error (the spec leaves it undefined).
//! To strings: integers in decimal; floats in plain notation, shortest round-trip digits
//! ("314.15926", "1e20" as "100000000000000000000"), with "INF", "-INF" and "NaN".

use super::{CastOptions, DType, Tensor};
use crate::error::{Error, Result};

/// The cast, when either side is a string tensor.
pub(super) fn cast(src: &Tensor, to: DType, opts: CastOptions) -> Option<Result<Tensor>> {
    match (src.dtype(), to) {
        (DType::String, _) => Some(parse(src, to, opts)),
        (_, DType::String) => Some(format(src)),
        _ => None,
    }
}

fn parse(src: &Tensor, to: DType, opts: CastOptions) -> Result<Tensor> {
    let strings = src.as_strings()?;
    let shape = src.shape().to_vec();
    // Integers parse exactly when they can: through f64 they would round above 2^53.
    if !to.is_float() && !to.is_narrow() && to != DType::Bool {
        if let Ok(v) = strings
            .iter()
            .map(|s| s.trim().parse::<i64>())
            .collect::<std::result::Result<Vec<i64>, _>>()
        {
            return Tensor::from_vec(shape, v)?.cast_with(to, opts);
        }
    }
    let v = strings
        .iter()
        .map(|s| parse_float(s))
        .collect::<Result<Vec<f64>>>()?;
    Tensor::from_vec(shape, v)?.cast_with(to, opts)
}

fn parse_float(s: &str) -> Result<f64> {
    let t = s.trim();
    let special = match t.to_ascii_uppercase().as_str() {
        "INF" | "+INF" => Some(f64::INFINITY),
        "-INF" => Some(f64::NEG_INFINITY),
        "NAN" | "+NAN" | "-NAN" => Some(f64::NAN),
        _ => None,
    };
    match special {
        Some(v) => Ok(v),
        None => t
            .parse::<f64>()
            .map_err(|_| Error::Op(format!("cannot cast '{s}' to a number"))),
    }
}

fn format(src: &Tensor) -> Result<Tensor> {
    let float = |v: f64, shortest: &dyn Fn() -> String| match v {
        v if v.is_nan() => "NaN".to_string(),
        f64::INFINITY => "INF".to_string(),
        f64::NEG_INFINITY => "-INF".to_string(),
        _ => shortest(),
    };
    let out: Vec<String> = match src.dtype() {
        DType::F64 => src
            .as_slice::<f64>()?
            .iter()
            .map(|&v| float(v, &|| v.to_string()))
            .collect(),
        // Narrower floats print their own shortest digits, as f32s (exactly representable).
        d if d.is_float() || d.is_narrow() => {
            let wide = src.cast(DType::F32)?;
            wide.as_slice::<f32>()?
                .iter()
                .map(|&v| float(v as f64, &|| v.to_string()))
                .collect()
        }
        DType::U64 => src.as_slice::<u64>()?.iter().map(u64::to_string).collect(),
        _ => src.to_i64_vec()?.iter().map(i64::to_string).collect(),
    };
    Tensor::from_strings(src.shape().to_vec(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Tensor {
        Tensor::from_strings(vec![v.len()], v.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    #[test]
    fn strings_parse_to_numbers() {
        let x = strings(&["2.5", "1e-5", "1E8", "-INF", "+inf", "NaN", " 2 "]);
        let y = x.cast(DType::F32).unwrap();
        let v = y.as_slice::<f32>().unwrap();
        assert_eq!(&v[..5], &[2.5, 1e-5, 1e8, f32::NEG_INFINITY, f32::INFINITY]);
        assert!(v[5].is_nan());
        assert_eq!(v[6], 2.0);
        // To integers: exact for integer literals, truncated for fractions.
        let big = strings(&["9007199254740993", "-7"])
            .cast(DType::I64)
            .unwrap();
        assert_eq!(big.as_slice::<i64>().unwrap(), &[9007199254740993, -7]);
        let cut = strings(&["100.5", "-2.7"]).cast(DType::I32).unwrap();
        assert_eq!(cut.as_slice::<i32>().unwrap(), &[100, -2]);
        assert!(strings(&["Hello World!"]).cast(DType::F32).is_err());
    }

    #[test]
    fn numbers_format_plainly() {
        let f =
            Tensor::from_vec(vec![5], vec![314.5f32, 0.1, 1e20, f32::INFINITY, f32::NAN]).unwrap();
        assert_eq!(
            f.cast(DType::String).unwrap().as_strings().unwrap(),
            ["314.5", "0.1", "100000000000000000000", "INF", "NaN"]
        );
        let i = Tensor::from_vec(vec![2], vec![-3i64, 42]).unwrap();
        assert_eq!(
            i.cast(DType::String).unwrap().as_strings().unwrap(),
            ["-3", "42"]
        );
        let u = Tensor::from_vec(vec![1], vec![u64::MAX]).unwrap();
        assert_eq!(
            u.cast(DType::String).unwrap().as_strings().unwrap(),
            ["18446744073709551615"]
        );
    }
}
