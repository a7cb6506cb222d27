//! HDF5 files (Keras weights) through the pure-Rust `hdf5-pure` reader: every dataset as a
//! tensor under its full path, plus the string attributes Keras keeps its metadata in.
//!
//! The file is untrusted: every dataset's size is checked against the file before it is
//! read, so a header claiming more data than the file holds is an error, not an allocation.

use crate::tensor::{DType, Tensor};
use hdf5_pure::{AttrValue, Datatype, DatatypeByteOrder, FixedPointLayout};

/// The HDF5 signature (at offset 0 in every file Keras or h5py writes).
pub const SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";

/// An open HDF5 file held in memory.
pub struct H5File {
    file: hdf5_pure::File,
    len: u64,
}

/// Most groups visited in one file, and deepest nesting of groups: a cycle of hard links
/// (a group linking to itself or to a parent) cannot loop forever or build ever longer
/// paths. Keras nests groups 3 or 4 deep, with a few groups per layer.
const MAX_GROUPS: usize = 100_000;
const MAX_DEPTH: usize = 32;

impl H5File {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<H5File, String> {
        let len = bytes.len() as u64;
        let file = hdf5_pure::File::from_bytes(bytes)
            .map_err(|e| format!("not a readable HDF5 file: {e}"))?;
        Ok(H5File { file, len })
    }

    /// Every dataset under `root` ("" for the whole file) as `(path, tensor)`, groups and
    /// datasets visited in name order.
    pub fn datasets(&self, root: &str) -> Result<Vec<(String, Tensor)>, String> {
        let root = root.trim_matches('/').to_string();
        let mut out = Vec::new();
        // Children are opened from their parent's handle, not by path from the root, so a
        // visit costs the same at any depth.
        let mut stack = vec![(self.group(&root)?, root, 0)];
        let mut visited = 0;
        while let Some((group, path, depth)) = stack.pop() {
            visited += 1;
            if visited > MAX_GROUPS {
                return Err(format!("more than {MAX_GROUPS} groups (a link cycle?)"));
            }
            if depth > MAX_DEPTH {
                return Err(format!(
                    "group '{path}' nests deeper than {MAX_DEPTH} levels (a link cycle?)"
                ));
            }
            let mut names = group
                .datasets()
                .map_err(|e| format!("group '{path}': {e}"))?;
            names.sort();
            for name in names {
                let full = join(&path, &name);
                let ds = group
                    .dataset(&name)
                    .map_err(|e| format!("dataset '{full}': {e}"))?;
                out.push((full.clone(), self.read(&full, &ds)?));
            }
            let mut groups = group.groups().map_err(|e| format!("group '{path}': {e}"))?;
            groups.sort();
            // Reversed onto the stack, so they are visited in order.
            for name in groups.iter().rev() {
                let full = join(&path, name);
                let child = group
                    .group(name)
                    .map_err(|e| format!("group '{full}': {e}"))?;
                stack.push((child, full, depth + 1));
            }
        }
        Ok(out)
    }

    fn group(&self, path: &str) -> Result<hdf5_pure::Group, String> {
        if path.is_empty() {
            return Ok(self.file.root());
        }
        self.file
            .group(path)
            .map_err(|e| format!("group '{path}': {e}"))
    }

    /// The dataset at `path` as a tensor (its bytes copied out of the file).
    pub fn dataset(&self, path: &str) -> Result<Tensor, String> {
        let ds = self
            .file
            .dataset(path)
            .map_err(|e| format!("dataset '{path}': {e}"))?;
        self.read(path, &ds)
    }

    /// The tensor of dataset `ds`, found at `path` (for errors).
    fn read(&self, path: &str, ds: &hdf5_pure::Dataset) -> Result<Tensor, String> {
        let err = |e: &dyn std::fmt::Display| format!("dataset '{path}': {e}");
        let datatype = ds.datatype().map_err(|e| err(&e))?;
        let dtype = match element_type(&datatype) {
            // Keras stores bfloat16 as opaque 2-byte values, tagged by a `dtype` attribute.
            Some(t) => t,
            None if matches!(datatype, Datatype::Opaque { size: 2, .. })
                && string_attr(&ds.attrs().map_err(|e| err(&e))?, "dtype").as_deref()
                    == Some("bfloat16") =>
            {
                DType::BF16
            }
            None => return Err(err(&format!("unsupported element type {datatype:?}"))),
        };
        let shape = ds
            .shape()
            .map_err(|e| err(&e))?
            .into_iter()
            .map(|d| usize::try_from(d).map_err(|_| err(&format!("dimension {d} too large"))))
            .collect::<Result<Vec<usize>, String>>()?;
        let bytes = shape
            .iter()
            .try_fold(dtype.size() as u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| err(&format!("shape {shape:?} overflows")))?;
        // Compressed chunks could legitimately expand past the file size; Keras never
        // compresses, and neither do we accept it unchecked.
        if !ds.filters().is_empty() {
            return Err(err(&"compressed (filtered) datasets are not supported"));
        }
        if bytes > self.len {
            return Err(err(&format!(
                "shape {shape:?} of {dtype} needs {bytes} bytes, more than the whole file \
                 ({} bytes): the file is truncated or corrupt",
                self.len
            )));
        }
        let raw = ds.read_raw().map_err(|e| err(&e))?;
        if raw.len() as u64 != bytes {
            return Err(err(&format!(
                "read {} bytes, expected {bytes} for shape {shape:?} of {dtype}",
                raw.len()
            )));
        }
        Tensor::from_le_slice(dtype, shape, &raw).map_err(|e| err(&e))
    }

    /// A string attribute of the group or dataset at `path` ("" for the root).
    pub fn attr_string(&self, path: &str, name: &str) -> Result<Option<String>, String> {
        Ok(string_attr(&self.attrs(path)?, name))
    }

    /// A string-array attribute (e.g. legacy Keras `weight_names`); absent or empty: `[]`.
    pub fn attr_strings(&self, path: &str, name: &str) -> Result<Vec<String>, String> {
        Ok(match self.attrs(path)?.remove(name) {
            Some(
                AttrValue::StringArray(v)
                | AttrValue::AsciiStringArray(v)
                | AttrValue::VarLenStringArray(v)
                | AttrValue::VarLenAsciiStringArray(v)
                | AttrValue::VarLenAsciiCharArray(v),
            ) => v,
            Some(AttrValue::StringArraySized { values, .. })
            | Some(AttrValue::AsciiStringArraySized { values, .. }) => values,
            _ => Vec::new(),
        })
    }

    fn attrs(&self, path: &str) -> Result<std::collections::HashMap<String, AttrValue>, String> {
        let path = path.trim_matches('/');
        let attrs = match self.file.dataset(path) {
            Ok(ds) if !path.is_empty() => ds.attrs(),
            _ => self.group(path)?.attrs(),
        };
        attrs.map_err(|e| format!("attributes of '{path}': {e}"))
    }
}

fn join(group: &str, name: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{group}/{name}")
    }
}

fn string_attr(attrs: &std::collections::HashMap<String, AttrValue>, name: &str) -> Option<String> {
    match attrs.get(name)? {
        AttrValue::String(s)
        | AttrValue::AsciiString(s)
        | AttrValue::VarLenString(s)
        | AttrValue::VarLenAsciiString(s) => Some(s.clone()),
        AttrValue::StringSized { value, .. } | AttrValue::AsciiStringSized { value, .. } => {
            Some(value.clone())
        }
        _ => None,
    }
}

/// Our element type for a little-endian HDF5 number type (`None`: not one we read).
fn element_type(t: &Datatype) -> Option<DType> {
    Some(match *t {
        Datatype::FloatingPoint {
            size,
            byte_order: DatatypeByteOrder::LittleEndian,
            ..
        } => match size {
            2 => DType::F16,
            4 => DType::F32,
            8 => DType::F64,
            _ => return None,
        },
        Datatype::FixedPoint {
            size,
            byte_order: DatatypeByteOrder::LittleEndian,
            layout: FixedPointLayout { signed, .. },
        } => match (size, signed) {
            (1, true) => DType::I8,
            (2, true) => DType::I16,
            (4, true) => DType::I32,
            (8, true) => DType::I64,
            (1, false) => DType::U8,
            (2, false) => DType::U16,
            (4, false) => DType::U32,
            (8, false) => DType::U64,
            _ => return None,
        },
        // h5py stores numpy bools as an enum over int8.
        Datatype::Enumeration { ref base_type, .. }
            if matches!(**base_type, Datatype::FixedPoint { size: 1, .. }) =>
        {
            DType::Bool
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdf5_pure::FileBuilder;

    fn sample() -> Vec<u8> {
        let mut b = FileBuilder::new();
        b.create_dataset("kernel")
            .with_f32_data(&[1.0, -2.0, 3.5, 0.25, 5.0, 6.0])
            .with_shape(&[2, 3]);
        b.create_dataset("counts").with_i64_data(&[7, -9]);
        b.finish().unwrap()
    }

    #[test]
    fn datasets_read_back_in_path_order() {
        let f = H5File::from_bytes(sample()).unwrap();
        let all = f.datasets("").unwrap();
        let paths: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["counts", "kernel"]);
        assert_eq!(all[0].1.as_slice::<i64>().unwrap(), &[7, -9]);
        assert_eq!(all[1].1.shape(), &[2, 3]);
        assert_eq!(
            all[1].1.as_slice::<f32>().unwrap(),
            &[1.0, -2.0, 3.5, 0.25, 5.0, 6.0]
        );
    }

    #[test]
    fn damaged_files_are_errors() {
        let bytes = sample();
        for cut in [8, bytes.len() / 2, bytes.len() - 1] {
            let result = H5File::from_bytes(bytes[..cut].to_vec()).and_then(|f| f.datasets(""));
            assert!(result.is_err(), "truncated to {cut} bytes");
        }
        assert!(H5File::from_bytes(b"\x89HDF\r\n\x1a\nnot really".to_vec()).is_err());
    }
}
