//! `TensorProto` → `Tensor`, including external data kept inside the model's folder.

use super::proto::{tensor_proto, TensorProto};
use crate::error::{Error, Result};
use crate::mapped::MappedFile;
use crate::tensor::{checked_numel, narrow, DType, Tensor};
use half::{bf16, f16};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// Resolves and memory-maps external data files, each once.
pub struct ExternalData {
    /// The model's folder; external files must resolve inside it.
    dir: Option<PathBuf>,
    maps: HashMap<PathBuf, bytes::Bytes>,
    mapped: Vec<MappedFile>,
}

impl ExternalData {
    /// External data of tensors read from `model_path` (its folder bounds what they may name);
    /// `None` for tensors that do not come from a file, which then cannot use external data.
    pub fn new(model_path: Option<&Path>) -> ExternalData {
        let dir = model_path.map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        });
        ExternalData {
            dir,
            maps: HashMap::new(),
            mapped: Vec::new(),
        }
    }

    /// The files mapped so far.
    pub fn into_mapped_files(self) -> Vec<MappedFile> {
        self.mapped
    }

    /// Maps `location`, refusing anything that is not a regular file inside the model folder.
    fn file(&mut self, location: &str) -> Result<bytes::Bytes> {
        let dir = self
            .dir
            .clone()
            .ok_or_else(|| Error::Op("external data needs a model loaded from a file".into()))?;
        let rel = Path::new(location);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(Error::Op(format!(
                "external data location '{location}' must be a relative path inside the model's folder"
            )));
        }
        let path = dir.join(rel);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        // Symlinks could still lead outside: compare canonical paths.
        let canon = path.canonicalize().map_err(io)?;
        let canon_dir = dir.canonicalize().map_err(io)?;
        if !canon.starts_with(&canon_dir) {
            return Err(Error::Op(format!(
                "external data location '{location}' resolves outside the model's folder"
            )));
        }
        if let Some(b) = self.maps.get(&canon) {
            return Ok(b.clone());
        }
        let meta = std::fs::metadata(&canon).map_err(io)?;
        if !meta.is_file() {
            return Err(Error::Op(format!(
                "external data location '{location}' is not a regular file"
            )));
        }
        let file = File::open(&canon).map_err(io)?;
        let bytes = if meta.len() == 0 {
            bytes::Bytes::new()
        } else {
            let (mapped, bytes) = MappedFile::map(&file, &canon)?;
            self.mapped.push(mapped);
            bytes
        };
        self.maps.insert(canon, bytes.clone());
        Ok(bytes)
    }
}

/// A tensor over `TensorProto` raw bytes: viewed in place, except for narrow types, which are
/// unpacked to one byte per element.
fn from_raw(dtype: DType, shape: Vec<usize>, raw: bytes::Bytes) -> Result<Tensor> {
    if dtype.is_narrow() {
        narrow::from_packed(dtype, shape, &raw)
    } else {
        Tensor::from_le_bytes(dtype, shape, raw)
    }
}

/// Converts one `TensorProto`.
pub fn tensor_from_proto(t: &TensorProto, ext: &mut ExternalData) -> Result<Tensor> {
    let name = t.name();
    let ctx = |e: Error| match e {
        Error::Op(reason) => Error::Op(format!("tensor '{name}': {reason}")),
        other => other,
    };
    convert(t, ext).map_err(ctx)
}

fn convert(t: &TensorProto, ext: &mut ExternalData) -> Result<Tensor> {
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| Error::Op(format!("negative dimension {d}"))))
        .collect::<Result<Vec<usize>>>()?;
    let code = t.data_type();
    let dtype = DType::from_onnx(code).ok_or_else(|| {
        Error::Op(format!(
            "data type {} is not supported",
            DType::onnx_name(code)
        ))
    })?;
    let n = checked_numel(&shape)?;
    if dtype == DType::String {
        return strings(t, shape, n);
    }
    let byte_len =
        narrow::stored_len(dtype, n).ok_or_else(|| Error::Op("byte size overflows".into()))?;

    if t.data_location() == tensor_proto::DataLocation::External {
        let mut location = None;
        let mut offset = 0usize;
        let mut length = None;
        for kv in &t.external_data {
            let parse = |v: &str| {
                v.parse::<usize>()
                    .map_err(|_| Error::Op(format!("bad external data {}: '{v}'", kv.key())))
            };
            match kv.key() {
                "location" => location = Some(kv.value().to_string()),
                "offset" => offset = parse(kv.value())?,
                "length" => length = Some(parse(kv.value())?),
                _ => {}
            }
        }
        let location =
            location.ok_or_else(|| Error::Op("external data without a location".into()))?;
        let file = ext.file(&location)?;
        let len = length.unwrap_or(byte_len);
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= file.len())
            .ok_or_else(|| {
                Error::Op(format!(
                    "external data [{offset}, +{len}) runs past the end of '{location}' ({} bytes)",
                    file.len()
                ))
            })?;
        return from_raw(dtype, shape, file.slice(offset..end));
    }

    if let Some(raw) = &t.raw_data {
        return from_raw(dtype, shape, raw.clone());
    }
    if dtype.is_narrow() {
        // One (packed) byte per int32_data entry.
        let bytes: Vec<u8> = t.int32_data.iter().map(|&x| x as u8).collect();
        return narrow::from_packed(dtype, shape, &bytes);
    }

    let count = |have: usize| -> Result<()> {
        if have != n {
            return Err(Error::Op(format!(
                "shape {shape:?} needs {n} values, the typed field holds {have}"
            )));
        }
        Ok(())
    };
    let shape2 = shape.clone();
    match dtype {
        DType::F32 => {
            count(t.float_data.len())?;
            Tensor::from_vec(shape2, t.float_data.clone())
        }
        DType::F64 => {
            count(t.double_data.len())?;
            Tensor::from_vec(shape2, t.double_data.clone())
        }
        DType::I64 => {
            count(t.int64_data.len())?;
            Tensor::from_vec(shape2, t.int64_data.clone())
        }
        DType::U64 => {
            count(t.uint64_data.len())?;
            Tensor::from_vec(shape2, t.uint64_data.clone())
        }
        DType::U32 => {
            count(t.uint64_data.len())?;
            Tensor::from_vec(shape2, t.uint64_data.iter().map(|&v| v as u32).collect())
        }
        // The remaining types are stored widened in int32_data (float16/bfloat16 as bits).
        _ => {
            count(t.int32_data.len())?;
            let v = &t.int32_data;
            match dtype {
                DType::I32 => Tensor::from_vec(shape2, v.clone()),
                DType::I16 => Tensor::from_vec(shape2, v.iter().map(|&x| x as i16).collect()),
                DType::I8 => Tensor::from_vec(shape2, v.iter().map(|&x| x as i8).collect()),
                DType::U16 => Tensor::from_vec(shape2, v.iter().map(|&x| x as u16).collect()),
                DType::U8 => Tensor::from_vec(shape2, v.iter().map(|&x| x as u8).collect()),
                DType::Bool => Tensor::from_vec(shape2, v.iter().map(|&x| x != 0).collect()),
                DType::F16 => Tensor::from_vec(
                    shape2,
                    v.iter().map(|&x| f16::from_bits(x as u16)).collect(),
                ),
                DType::BF16 => Tensor::from_vec(
                    shape2,
                    v.iter().map(|&x| bf16::from_bits(x as u16)).collect(),
                ),
                _ => Err(Error::Op(format!("no typed field for {dtype}"))),
            }
        }
    }
}

/// A string tensor from `string_data`, the only place ONNX stores strings.
fn strings(t: &TensorProto, shape: Vec<usize>, n: usize) -> Result<Tensor> {
    if t.raw_data.is_some() || t.data_location() == tensor_proto::DataLocation::External {
        return Err(Error::Op(
            "string tensors must keep their elements in string_data".into(),
        ));
    }
    if t.string_data.len() != n {
        return Err(Error::Op(format!(
            "shape {shape:?} needs {n} strings, string_data holds {}",
            t.string_data.len()
        )));
    }
    let data = t
        .string_data
        .iter()
        .enumerate()
        .map(|(i, b)| {
            String::from_utf8(b.clone())
                .map_err(|e| Error::Op(format!("string {i} is not valid UTF-8: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::from_strings(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_proto(dims: Vec<i64>, items: &[&[u8]]) -> TensorProto {
        TensorProto {
            name: Some("words".into()),
            dims,
            data_type: Some(8),
            string_data: items.iter().map(|b| b.to_vec()).collect(),
            ..Default::default()
        }
    }

    fn load(t: &TensorProto) -> Result<Tensor> {
        tensor_from_proto(t, &mut ExternalData::new(None))
    }

    #[test]
    fn string_data_becomes_a_string_tensor() {
        let t = load(&string_proto(vec![2, 1], &[b"caf\xc3\xa9", b""])).unwrap();
        assert_eq!((t.dtype(), t.shape()), (DType::String, &[2, 1][..]));
        assert_eq!(t.as_strings().unwrap(), ["café", ""]);
    }

    #[test]
    fn bad_string_data_is_an_error_naming_the_tensor() {
        let err = load(&string_proto(vec![1], &[b"\xff"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'words'") && err.contains("UTF-8"), "{err}");
        let err = load(&string_proto(vec![3], &[b"a"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs 3 strings"), "{err}");
        let mut raw = string_proto(vec![1], &[]);
        raw.raw_data = Some(bytes::Bytes::from_static(b"a"));
        assert!(load(&raw).is_err());
    }
}
