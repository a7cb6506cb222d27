//! Weights-only files: safetensors, PyTorch `torch.save` checkpoints, Keras files (`.keras`,
//! `.weights.h5`, legacy `.h5`) and TensorFlow bundles (checkpoints, SavedModel variables)
//! → named tensors.
//!
//! `load_weights` memory-maps the file, recognizes its format by content (not extension)
//! and returns every tensor under its full stored key, in file order. Tensor bytes stay in
//! the map whenever they are contiguous and aligned (safetensors, torch zip files), so
//! loading costs no copies.
//!
//! PyTorch files are pickles, which can run arbitrary code when Python loads them. Here
//! they are read by a strict pickle machine (`pickle`) that executes nothing and accepts
//! only the globals that rebuild tensors (`rebuild`); a file naming anything else (`os.system`,
//! a model class of a whole-model `torch.save(model)`) fails with an error naming it.

// Loaders read bytes from strangers: a malformed file must be an error, never a panic.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod hdf5;
mod hf;
pub(crate) mod keras;
mod pickle;
mod rebuild;
mod safetensors;
mod tf_bundle;
mod torch;

use crate::error::{Error, Result};
use crate::mapped::MappedFile;
use crate::tensor::Tensor;
use std::fmt;
use std::fs::File;
use std::path::Path;

pub use hf::find_weights_files;

/// The container a weights file was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    Safetensors,
    /// `torch.save` with the zip container (the default since torch 1.6).
    TorchZip,
    /// `torch.save(..., _use_new_zipfile_serialization=False)`.
    TorchLegacy,
    /// A Keras 3 `.keras` zip (config.json + model.weights.h5).
    Keras,
    /// An HDF5 file: Keras `.weights.h5` or a legacy Keras `.h5`.
    Hdf5,
    /// A TensorFlow tensor bundle: a checkpoint or SavedModel variables (`.index` + shards).
    TfBundle,
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightFormat::Safetensors => "safetensors",
            WeightFormat::TorchZip => "PyTorch (zip)",
            WeightFormat::TorchLegacy => "PyTorch (legacy)",
            WeightFormat::Keras => "Keras (.keras)",
            WeightFormat::Hdf5 => "HDF5 (Keras weights)",
            WeightFormat::TfBundle => "TensorFlow bundle",
        })
    }
}

/// A non-tensor value stored beside the tensors: safetensors `__metadata__` strings, or the
/// scalar leaves of a pickled checkpoint (`epoch`, `optimizer.param_groups.0.lr`, …).
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// A value kept as a description: a dtype, an integer wider than 64 bits, …
    Other(String),
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::None => f.write_str("None"),
            MetaValue::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            MetaValue::Int(i) => write!(f, "{i}"),
            MetaValue::Float(x) => write!(f, "{x:?}"),
            MetaValue::Str(s) => write!(f, "{s:?}"),
            MetaValue::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            MetaValue::Other(s) => f.write_str(s),
        }
    }
}

/// Everything a weights file holds.
#[derive(Clone, Debug)]
pub struct WeightStore {
    pub format: WeightFormat,
    /// Every tensor under its full stored key (nested checkpoint keys joined with `.`), in
    /// file order: data order for safetensors, pickle order for PyTorch files.
    pub tensors: Vec<(String, Tensor)>,
    /// Non-tensor values, in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// The mapped files the tensors view (a graph built over them lists these in
    /// `Graph::mapped_files`, so the planner can release pages of prepacked weights).
    pub mapped_files: Vec<MappedFile>,
}

impl WeightStore {
    /// The tensor stored under `key` (a linear scan: index `tensors` yourself for many
    /// lookups).
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> usize {
        self.tensors.iter().map(|(_, t)| t.as_bytes().len()).sum()
    }
}

/// What a format reader returns.
struct Contents {
    tensors: Vec<(String, Tensor)>,
    metadata: Vec<(String, MetaValue)>,
}

impl From<keras::KerasFile> for Contents {
    fn from(k: keras::KerasFile) -> Contents {
        Contents {
            tensors: k.tensors,
            metadata: Vec::new(),
        }
    }
}

/// Recognizes a weights file from its first bytes and its length: zip magic (PyTorch zip;
/// see `detect_bytes` for `.keras` zips), the HDF5 signature, a pickle `PROTO` opcode
/// (PyTorch legacy), or a plausible safetensors header length followed by `{`. `None` for
/// anything else (e.g. an ONNX protobuf).
pub fn detect_format(head: &[u8], file_len: u64) -> Option<WeightFormat> {
    if head.starts_with(hdf5::SIGNATURE) {
        return Some(WeightFormat::Hdf5);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Some(WeightFormat::TorchZip);
    }
    if let [0x80, proto, ..] = head {
        if (2..=5).contains(proto) {
            return Some(WeightFormat::TorchLegacy);
        }
    }
    if let (Some(len), Some(b'{')) = (head.get(..8), head.get(8)) {
        let header_len = u64::from_le_bytes(len.try_into().ok()?);
        if header_len >= 2 && header_len <= file_len.saturating_sub(8) {
            return Some(WeightFormat::Safetensors);
        }
    }
    None
}

/// The format of a whole file's bytes: `detect_format`, with zips told apart by their
/// entries (`.keras` or PyTorch) and TensorFlow bundle indexes by their table footer.
pub fn detect_bytes(bytes: &[u8]) -> Option<WeightFormat> {
    match detect_format(bytes, bytes.len() as u64) {
        Some(WeightFormat::TorchZip) if keras::is_keras_zip(bytes) => Some(WeightFormat::Keras),
        None if tf_bundle::is_index(bytes) => Some(WeightFormat::TfBundle),
        other => other,
    }
}

/// The weights format of a file, from its content; `Ok(None)` if it is not one.
pub fn detect_file_format(path: &Path) -> Result<Option<WeightFormat>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Ok(None);
    }
    let (_mapped, bytes) = MappedFile::map(&file, path)?;
    Ok(detect_bytes(&bytes))
}

/// The index of a TensorFlow bundle named by `path`: a SavedModel folder (its
/// `variables/variables.index`) or a checkpoint prefix (`ckpt` for `ckpt.index`).
pub fn tf_bundle_index(path: &Path) -> Option<std::path::PathBuf> {
    let saved_model = path.join("variables").join("variables.index");
    if path.is_dir() {
        return saved_model.is_file().then_some(saved_model);
    }
    let mut prefix = path.as_os_str().to_owned();
    prefix.push(".index");
    let index = std::path::PathBuf::from(prefix);
    (!path.exists() && index.is_file()).then_some(index)
}

/// Loads every tensor of a safetensors or PyTorch file, or of a Hugging Face model folder
/// (its weights file, or all its shards in order; see `find_weights_files`).
pub fn load_weights(path: &Path) -> Result<WeightStore> {
    if let Some(index) = tf_bundle_index(path) {
        load_file(&index)
    } else if path.is_dir() {
        hf::load_folder(path)
    } else {
        load_file(path)
    }
}

/// Loads one weights file, whatever its name: the format is recognized by content.
fn load_file(path: &Path) -> Result<WeightStore> {
    let fmt_err = |reason: String| Error::Format {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        // (Nor can an empty file be mapped on every platform.)
        return Err(fmt_err("the file is empty".into()));
    }
    let (mapped, bytes) = MappedFile::map(&file, path)?;
    let format = detect_bytes(&bytes).ok_or_else(|| {
        fmt_err(
            "not a safetensors, PyTorch, Keras or TensorFlow weights file (unrecognized \
             content)"
                .into(),
        )
    })?;
    let mut mapped_files = vec![mapped];
    let contents = match format {
        WeightFormat::Safetensors => safetensors::load(&bytes),
        WeightFormat::TorchZip => torch::load_zip(&bytes),
        WeightFormat::TorchLegacy => torch::load_legacy(&bytes),
        // Keras tensors are copied out of the HDF5 file: the map is not needed after.
        WeightFormat::Keras => keras::read_zip(&bytes).map(Contents::from),
        WeightFormat::Hdf5 => keras::read_h5(bytes.to_vec()).map(Contents::from),
        WeightFormat::TfBundle => tf_bundle::load(path, &bytes).map(|(contents, shards)| {
            mapped_files = shards;
            contents
        }),
    }
    .map_err(fmt_err)?;
    Ok(WeightStore {
        format,
        tensors: contents.tensors,
        metadata: contents.metadata,
        mapped_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognized_by_content() {
        assert_eq!(
            detect_format(b"PK\x03\x04rest", 100),
            Some(WeightFormat::TorchZip)
        );
        assert_eq!(
            detect_format(b"\x80\x02\x8a\x0a", 100),
            Some(WeightFormat::TorchLegacy)
        );
        let st = b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"";
        assert_eq!(detect_format(st, 24), Some(WeightFormat::Safetensors));
        // A header length beyond the file is not safetensors.
        assert_eq!(detect_format(st, 23), None);
        // An ONNX ModelProto starts with field 1 (ir_version): 0x08.
        assert_eq!(detect_format(b"\x08\x07\x12\x07pytorch", 1000), None);
        assert_eq!(detect_format(b"\x80\x01", 100), None);
        assert_eq!(detect_format(b"", 0), None);
    }
}
