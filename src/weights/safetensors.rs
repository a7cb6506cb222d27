//! safetensors files: an 8-byte little-endian header length, a JSON header
//! `{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`, then
//! the tensors' raw little-endian bytes.
//!
//! Parsed by hand with serde_json rather than with the `safetensors` crate: the format is one
//! JSON object, we need each tensor's byte range to slice the shared memory map (zero-copy,
//! the header is padded so data stays aligned), and validating here lets every error name
//! the tensor at fault.

use super::{Contents, MetaValue};
use crate::tensor::{checked_numel, DType, Tensor};
use bytes::Bytes;
use serde_json::{Map, Value};

/// Headers larger than this are refused (the reference implementation's limit): real
/// headers are a few hundred bytes per tensor.
const MAX_HEADER_LEN: u64 = 100_000_000;

type Res<T> = Result<T, String>;

/// One tensor's header entry.
struct Entry {
    key: String,
    dtype: DType,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

pub(super) fn load(file: &Bytes) -> Res<Contents> {
    let len_bytes: [u8; 8] = file
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("the file is shorter than the 8-byte header length")?;
    let header_len = u64::from_le_bytes(len_bytes);
    let available = (file.len() - 8) as u64;
    if header_len > MAX_HEADER_LEN || header_len > available {
        return Err(format!(
            "header length {header_len} exceeds the file ({available} bytes after it) or the \
             {MAX_HEADER_LEN}-byte limit"
        ));
    }
    let data_start = 8 + header_len as usize;
    let header = std::str::from_utf8(&file[8..data_start])
        .map_err(|e| format!("header is not UTF-8: {e}"))?;
    let header: Map<String, Value> =
        serde_json::from_str(header).map_err(|e| format!("header is not a JSON object: {e}"))?;
    let data = file.slice(data_start..);

    let mut metadata = Vec::new();
    let mut entries = Vec::with_capacity(header.len());
    for (key, v) in &header {
        if key == "__metadata__" {
            metadata = parse_metadata(v)?;
        } else {
            entries.push(parse_entry(key, v).map_err(|e| format!("tensor '{key}': {e}"))?);
        }
    }
    // File order is data order. The data must be covered exactly, without gaps or overlaps,
    // as the format requires.
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut covered = 0usize;
    let mut tensors = Vec::with_capacity(entries.len());
    for e in entries {
        if e.end > data.len() {
            return Err(format!(
                "tensor '{}': data_offsets [{}, {}] end past the data section ({} bytes): \
                 the file is truncated or corrupt",
                e.key,
                e.begin,
                e.end,
                data.len()
            ));
        }
        if e.begin != covered {
            return Err(format!(
                "tensor '{}': data starts at byte {} but the previous tensor ends at {covered} \
                 (gap or overlap)",
                e.key, e.begin
            ));
        }
        covered = e.end;
        let t = Tensor::from_le_bytes(e.dtype, e.shape, data.slice(e.begin..e.end))
            .map_err(|err| format!("tensor '{}': {err}", e.key))?;
        tensors.push((e.key, t));
    }
    if covered != data.len() {
        return Err(format!(
            "the data section has {} bytes but the tensors cover {covered}",
            data.len()
        ));
    }
    Ok(Contents { tensors, metadata })
}

fn parse_entry(key: &str, v: &Value) -> Res<Entry> {
    let obj = v.as_object().ok_or("header entry is not an object")?;
    let dtype_name = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("missing string field 'dtype'")?;
    let dtype =
        dtype_of(dtype_name).ok_or_else(|| format!("dtype {dtype_name} is not supported"))?;
    let shape = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing array field 'shape'")?
        .iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| format!("shape entry {d} is not a size"))
        })
        .collect::<Res<Vec<usize>>>()?;
    let offsets = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or("missing array field 'data_offsets'")?;
    let offset = |i: usize| {
        offsets
            .get(i)
            .and_then(Value::as_u64)
            .and_then(|o| usize::try_from(o).ok())
    };
    let (Some(begin), Some(end), 2) = (offset(0), offset(1), offsets.len()) else {
        return Err("data_offsets must be two byte offsets [begin, end]".into());
    };
    let expected = checked_numel(&shape)
        .ok()
        .and_then(|n| n.checked_mul(dtype.size()));
    if end < begin || expected != Some(end - begin) {
        return Err(format!(
            "data_offsets [{begin}, {end}] do not hold a {dtype} tensor of shape {shape:?}"
        ));
    }
    Ok(Entry {
        key: key.to_string(),
        dtype,
        shape,
        begin,
        end,
    })
}

fn parse_metadata(v: &Value) -> Res<Vec<(String, MetaValue)>> {
    let obj = v.as_object().ok_or("__metadata__ is not an object")?;
    obj.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), MetaValue::Str(s.to_string()))),
            None => Err(format!("__metadata__ value '{k}' is not a string")),
        })
        .collect()
}

/// The format's dtype names; float8/float4/complex types have no runtime counterpart.
fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "I8" => DType::I8,
        "U64" => DType::U64,
        "U32" => DType::U32,
        "U16" => DType::U16,
        "U8" => DType::U8,
        "BOOL" => DType::Bool,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Bytes {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        Bytes::from(out)
    }

    #[test]
    fn tensors_come_in_data_order_with_their_values() {
        // Data order is b, e (empty), a, although the JSON lists a first; trailing spaces
        // pad headers in real files.
        let header = r#"{"a":{"dtype":"I16","shape":[2],"data_offsets":[1,5]},"b":{"dtype":"U8","shape":[],"data_offsets":[0,1]},"e":{"dtype":"F64","shape":[0,4],"data_offsets":[1,1]}}   "#;
        let c = load(&file(header, &[7, 0xff, 0xff, 2, 0])).unwrap();
        let keys: Vec<&str> = c.tensors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "e", "a"]);
        assert_eq!(c.tensors[0].1.as_slice::<u8>().unwrap(), &[7]);
        assert_eq!(c.tensors[0].1.shape(), &[] as &[usize]);
        assert_eq!(c.tensors[1].1.shape(), &[0, 4]);
        assert_eq!(c.tensors[2].1.as_slice::<i16>().unwrap(), &[-1, 2]);
    }

    #[test]
    fn invalid_headers_are_refused_with_the_reason() {
        let f32x2 = |a: u64, b: u64| {
            format!(r#"{{"w":{{"dtype":"F32","shape":[2],"data_offsets":[{a},{b}]}}}}"#)
        };
        let cases = [
            (f32x2(0, 8), 4, "end past the data section"),
            (f32x2(0, 4), 8, "do not hold a float32 tensor of shape [2]"),
            (f32x2(8, 0), 8, "do not hold"),
            (
                f32x2(4, 12),
                12,
                "data starts at byte 4 but the previous tensor ends at 0",
            ),
            (f32x2(0, 8), 12, "has 12 bytes but the tensors cover 8"),
            (
                r#"{"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#.into(),
                1,
                "tensor 'w': dtype F8_E4M3 is not supported",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#.into(),
                4,
                "shape entry -1 is not a size",
            ),
            (
                r#"{"__metadata__":{"n":1}}"#.into(),
                0,
                "__metadata__ value 'n' is not a string",
            ),
            ("[1, 2]".into(), 0, "header is not a JSON object"),
        ];
        for (header, data_len, want) in cases {
            let err = load(&file(&header, &vec![0; data_len])).err().unwrap();
            assert!(err.contains(want), "{header}: {err}");
        }
    }

    #[test]
    fn header_lengths_are_bounded() {
        let mut f = u64::MAX.to_le_bytes().to_vec();
        f.extend(b"{}");
        let err = load(&Bytes::from(f)).err().unwrap();
        assert!(
            err.contains("header length 18446744073709551615 exceeds"),
            "{err}"
        );
        let err = load(&Bytes::from_static(b"\x02\x00")).err().unwrap();
        assert!(
            err.contains("shorter than the 8-byte header length"),
            "{err}"
        );
    }
}
