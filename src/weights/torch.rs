//! PyTorch `torch.save` files: the zip container (torch ≥ 1.6) and the legacy one.
//!
//! Both hold one pickle (read by the strict `pickle` machine) whose tensors point at
//! storages by key; the containers differ in where a storage's bytes are. The pickled
//! object is flattened into `key → tensor` pairs by joining dict keys and list indices with
//! `.`, so a state_dict keeps its keys and a training checkpoint gets `model.fc1.weight`,
//! `optimizer.state.0.exp_avg`, … Scalars and strings become metadata.

use super::pickle::{Heap, Object, Unpickler, Value, MAX_DEPTH};
use super::rebuild::{StorageRef, TensorRef};
use super::{Contents, MetaValue};
use crate::tensor::{checked_numel, Tensor};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::rc::Rc;

type Res<T> = Result<T, String>;

/// Bytes that non-contiguous views may copy out beyond the file's own size. A view with
/// zero strides (an `expand`ed tensor) can be far larger than its storage, so copies are
/// budgeted rather than trusted.
const COPY_ALLOWANCE: u64 = 1 << 30;

/// Reads a zip-container file: `<top>/data.pkl` plus one `<top>/data/<key>` entry per
/// storage. Entries are stored uncompressed (and 64-byte aligned by torch ≥ 2.1), so each
/// storage is a slice of the memory map found through the central directory; local headers
/// are not trusted for sizes (torch writes them as 0).
pub(super) fn load_zip(file: &Bytes) -> Res<Contents> {
    let mut archive = zip::ZipArchive::new(Cursor::new(&file[..]))
        .map_err(|e| format!("not a valid zip archive (truncated or corrupt?): {e}"))?;
    let mut entries: HashMap<String, Entry> = HashMap::with_capacity(archive.len());
    for i in 0..archive.len() {
        let f = archive
            .by_index_raw(i)
            .map_err(|e| format!("zip entry #{i}: {e}"))?;
        let name = f.name().to_string();
        if name.starts_with('/') || name.contains('\\') || name.split('/').any(|c| c == "..") {
            return Err(format!(
                "zip entry name '{name}' escapes the archive folder"
            ));
        }
        let start = f.data_start();
        let end = start
            .checked_add(f.compressed_size())
            .filter(|&e| e <= file.len() as u64)
            .ok_or_else(|| format!("zip entry '{name}' runs past the end of the file"))?;
        let stored =
            f.compression() == zip::CompressionMethod::Stored && f.compressed_size() == f.size();
        entries.insert(
            name,
            Entry {
                range: start as usize..end as usize,
                stored,
            },
        );
    }
    let mut pickles = entries
        .iter()
        .filter(|(n, _)| n.ends_with("/data.pkl") && n.matches('/').count() == 1);
    let (pkl_name, pkl_entry) = match (pickles.next(), pickles.next()) {
        (Some(one), None) => one,
        (None, _) => {
            return Err("the zip archive has no <folder>/data.pkl: not a torch.save file".into())
        }
        (Some(_), Some(_)) => {
            return Err("the zip archive has several <folder>/data.pkl entries".into())
        }
    };
    let top = pkl_name.trim_end_matches("data.pkl");
    if entries.contains_key(&format!("{top}constants.pkl")) {
        return Err(
            "this is a TorchScript archive (torch.jit.save), not a weights file; \
                    save the model's state_dict or export it to ONNX"
                .into(),
        );
    }
    if let Some(order) = entries.get(&format!("{top}byteorder")) {
        let order = entry_bytes(file, order, "byteorder")?;
        if &order[..] != b"little" {
            return Err("the file was saved on a big-endian machine; not supported".into());
        }
    }
    let pkl = entry_bytes(file, pkl_entry, pkl_name)?;
    let mut vm = Unpickler::new(&pkl);
    let root = vm.load()?;
    flatten_and_bind(vm.heap(), &root, file.len(), |storage| {
        let name = format!("{top}data/{}", storage.key);
        let entry = entries
            .get(&name)
            .ok_or_else(|| format!("storage '{}' has no zip entry '{name}'", storage.key))?;
        entry_bytes(file, entry, &name)
    })
}

/// Where a zip entry's bytes are in the file.
struct Entry {
    range: std::ops::Range<usize>,
    /// Uncompressed, so the range holds the entry's contents as they are.
    stored: bool,
}

fn entry_bytes(file: &Bytes, e: &Entry, name: &str) -> Res<Bytes> {
    if !e.stored {
        return Err(format!(
            "zip entry '{name}' is compressed; torch.save stores entries uncompressed"
        ));
    }
    Ok(file.slice(e.range.clone()))
}

/// torch's legacy magic number 0x1950a86a20f9469cfc6c, as pickled (little-endian).
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

/// Reads a legacy file (`_use_new_zipfile_serialization=False`): five pickles (magic
/// number, protocol version, system info, the object, the sorted storage keys), then each
/// storage in key order as an 8-byte little-endian element count and the raw bytes. Those
/// bytes sit at arbitrary offsets, so tensors are copied unless they happen to be aligned.
pub(super) fn load_legacy(file: &Bytes) -> Res<Contents> {
    let mut vm = Unpickler::new(file);
    match vm.load()? {
        Value::BigInt(b) if *b == LEGACY_MAGIC => {}
        _ => return Err("a pickle, but not a PyTorch file (no torch magic number)".into()),
    }
    match vm.load()? {
        Value::Int(LEGACY_PROTOCOL_VERSION) => {}
        _ => return Err("unknown legacy torch.save protocol version".into()),
    }
    let sys_info = vm.load()?;
    if dict_get(vm.heap(), &sys_info, "little_endian")
        .is_some_and(|v| matches!(v, Value::Bool(false)))
    {
        return Err("the file was saved on a big-endian machine; not supported".into());
    }
    let root = vm.load()?;
    let keys = vm.load()?;
    let keys = match &keys {
        Value::List(id) => match vm.heap().get(*id) {
            Object::List(items) => items.clone(),
            _ => Vec::new(),
        },
        other => return Err(format!("storage key list is {}", other.kind())),
    };
    let mut pos = vm.position();
    let mut blobs: HashMap<Rc<str>, Bytes> = HashMap::with_capacity(keys.len());
    for key in &keys {
        let Value::Str(key) = key else {
            return Err(format!("storage key is {}, not a string", key.kind()));
        };
        let storage = vm
            .storages()
            .get(key)
            .ok_or_else(|| format!("storage '{key}' is listed but no tensor uses it"))?;
        let count: [u8; 8] = file
            .get(pos..pos + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("storage '{key}': the file ends before its length"))?;
        let count = u64::from_le_bytes(count);
        let start = pos + 8;
        let len = count
            .checked_mul(storage.dtype.size as u64)
            .filter(|&n| n <= (file.len() - start) as u64)
            .ok_or_else(|| {
                format!("storage '{key}': {count} elements run past the end of the file")
            })? as usize;
        blobs.insert(key.clone(), file.slice(start..start + len));
        pos = start + len;
    }
    flatten_and_bind(vm.heap(), &root, file.len(), |storage| {
        blobs
            .get(&storage.key)
            .cloned()
            .ok_or_else(|| format!("storage '{}' is missing from the file", storage.key))
    })
}

fn dict_get<'h>(heap: &'h Heap, dict: &Value, key: &str) -> Option<&'h Value> {
    let Value::Dict(id) = dict else { return None };
    let Object::Dict(entries) = heap.get(*id) else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| matches!(k, Value::Str(s) if &**s == key))
        .map(|(_, v)| v)
}

/// Flattens the pickled object and turns each tensor reference into a `Tensor` over the
/// bytes `blob` returns for its storage.
fn flatten_and_bind(
    heap: &Heap,
    root: &Value,
    file_len: usize,
    blob: impl Fn(&StorageRef) -> Res<Bytes>,
) -> Res<Contents> {
    let mut flat = Flattener {
        heap,
        tensors: Vec::new(),
        metadata: Vec::new(),
        seen: HashSet::new(),
    };
    flat.walk(root, String::new(), 0)?;
    let mut budget = (file_len as u64).saturating_add(COPY_ALLOWANCE);
    let mut tensors = Vec::with_capacity(flat.tensors.len());
    for (key, t) in flat.tensors {
        let bytes = blob(&t.storage)?;
        let tensor =
            materialize(&t, &bytes, &mut budget).map_err(|e| format!("tensor '{key}': {e}"))?;
        tensors.push((key, tensor));
    }
    Ok(Contents {
        tensors,
        metadata: flat.metadata,
    })
}

/// Walks containers depth-first in pickle order, collecting leaves under dotted keys.
struct Flattener<'h> {
    heap: &'h Heap,
    tensors: Vec<(String, Rc<TensorRef>)>,
    metadata: Vec<(String, MetaValue)>,
    seen: HashSet<String>,
}

impl Flattener<'_> {
    fn walk(&mut self, v: &Value, key: String, depth: usize) -> Res<()> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "containers nest deeper than {MAX_DEPTH} levels at '{key}'"
            ));
        }
        let child = |k: &str| {
            if key.is_empty() {
                k.to_string()
            } else {
                format!("{key}.{k}")
            }
        };
        let meta = match v {
            Value::Tensor(t) => {
                self.claim(&key)?;
                self.tensors.push((key, t.clone()));
                return Ok(());
            }
            Value::Tuple(id) | Value::List(id) | Value::Dict(id) => {
                match self.heap.get(*id) {
                    Object::Tuple(items) | Object::List(items) => {
                        for (i, item) in items.iter().enumerate() {
                            self.walk(item, child(&i.to_string()), depth + 1)?;
                        }
                    }
                    Object::Dict(entries) => {
                        for (k, item) in entries {
                            let k = dict_key(k).map_err(|e| format!("under '{key}': {e}"))?;
                            self.walk(item, child(&k), depth + 1)?;
                        }
                    }
                }
                return Ok(());
            }
            Value::None => MetaValue::None,
            Value::Bool(b) => MetaValue::Bool(*b),
            Value::Int(i) => MetaValue::Int(*i),
            Value::Float(f) => MetaValue::Float(*f),
            Value::Str(s) => MetaValue::Str(s.to_string()),
            Value::Bytes(b) => MetaValue::Bytes(b.to_vec()),
            Value::BigInt(b) => {
                let hex: String = b.iter().rev().map(|x| format!("{x:02x}")).collect();
                MetaValue::Other(format!("int 0x{hex} (two's complement)"))
            }
            Value::Global(g) => MetaValue::Other(g.to_string()),
            Value::Storage(s) => MetaValue::Other(format!("bare storage '{}'", s.key)),
        };
        self.claim(&key)?;
        self.metadata.push((key, meta));
        Ok(())
    }

    /// Refuses a key seen before (e.g. `{"a.b": x, "a": {"b": y}}`).
    fn claim(&mut self, key: &str) -> Res<()> {
        if self.seen.insert(key.to_string()) {
            Ok(())
        } else {
            Err(format!("key '{key}' appears twice"))
        }
    }
}

/// A dict key as text, the way Python prints it.
fn dict_key(k: &Value) -> Res<String> {
    Ok(match k {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::None => "None".into(),
        other => {
            return Err(format!(
                "dict key is {}; only strings and ints are supported",
                other.kind()
            ))
        }
    })
}

/// Builds the tensor a view describes: zero-copy over `blob` when the view is contiguous
/// (most tensors), else copied into row-major order within the copy `budget`.
fn materialize(t: &TensorRef, blob: &Bytes, budget: &mut u64) -> Res<Tensor> {
    let dtype = t
        .dtype
        .dtype
        .ok_or_else(|| format!("dtype {} is not supported", t.dtype.name))?;
    if let Some(why) = &t.unsupported {
        return Err(why.clone());
    }
    let shape = to_usizes(&t.size)?;
    let stride = to_usizes(&t.stride)?;
    let numel = checked_numel(&shape).map_err(|e| e.to_string())?;
    if numel == 0 {
        return Tensor::from_le_bytes(dtype, shape, Bytes::new()).map_err(|e| e.to_string());
    }
    let s = &t.storage;
    let window = s
        .byte_offset
        .checked_add(s.nbytes)
        .filter(|&end| end <= blob.len() as u64)
        .map(|end| blob.slice(s.byte_offset as usize..end as usize))
        .ok_or_else(|| {
            format!(
                "storage '{}' should hold {} bytes from byte {} but the file has {}",
                s.key,
                s.nbytes,
                s.byte_offset,
                blob.len()
            )
        })?;
    let esz = dtype.size();
    let offset = usize::try_from(t.offset).map_err(|_| "storage offset is too large")?;
    // The furthest element the view reads, and the bytes up to it, must be in the storage.
    let end = shape
        .iter()
        .zip(&stride)
        .try_fold(offset, |acc, (&n, &st)| {
            acc.checked_add((n - 1).checked_mul(st)?)
        })
        .and_then(|last| last.checked_add(1)?.checked_mul(esz))
        .filter(|&end| end <= window.len())
        .ok_or_else(|| {
            format!(
                "view (offset {offset}, shape {shape:?}, strides {stride:?}) reads past the \
                 end of storage '{}' ({} bytes)",
                s.key,
                window.len()
            )
        })?;
    let nbytes = numel * esz; // ≤ `end` when contiguous; checked against the budget below.
    if is_row_major(&shape, &stride) {
        return Tensor::from_le_bytes(dtype, shape, window.slice(offset * esz..end))
            .map_err(|e| e.to_string());
    }
    *budget = budget.checked_sub(nbytes as u64).ok_or_else(|| {
        format!("copying this {nbytes}-byte strided view exceeds what the file size allows")
    })?;
    let bytes = gather(&window, esz, offset, &shape, &stride);
    Tensor::from_le_slice(dtype, shape, &bytes).map_err(|e| e.to_string())
}

fn to_usizes(v: &[u64]) -> Res<Vec<usize>> {
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| format!("dimension {x} is too large")))
        .collect()
}

/// Whether `stride` is the row-major stride of `shape` (dims of size 1 may have any stride).
fn is_row_major(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&n, &s) in shape.iter().zip(stride).rev() {
        if n != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(n);
    }
    true
}

/// Copies a strided view into row-major bytes, a row (last dimension) at a time. The caller
/// has checked that every element index is within `src` and that `shape` is non-empty.
fn gather(src: &[u8], esz: usize, offset: usize, shape: &[usize], stride: &[usize]) -> Vec<u8> {
    let rank = shape.len();
    let (row_len, row_stride) = (shape[rank - 1], stride[rank - 1]);
    let (outer, outer_stride) = (&shape[..rank - 1], &stride[..rank - 1]);
    let mut out = Vec::with_capacity(shape.iter().product::<usize>() * esz);
    let mut idx = vec![0usize; outer.len()];
    loop {
        let base = offset
            + idx
                .iter()
                .zip(outer_stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        if row_stride == 1 {
            out.extend_from_slice(&src[base * esz..(base + row_len) * esz]);
        } else {
            for i in 0..row_len {
                let at = (base + i * row_stride) * esz;
                out.extend_from_slice(&src[at..at + esz]);
            }
        }
        // Advance the multi-index over the outer dimensions, last fastest.
        let mut d = outer.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < outer[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // --- A tiny pickle writer, spelling out what torch.save emits (protocol 2) ---------

    fn s(x: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend_from_slice(&(x.len() as u32).to_le_bytes());
        v.extend_from_slice(x.as_bytes());
        v
    }

    fn int(i: u32) -> Vec<u8> {
        let mut v = vec![b'J'];
        v.extend_from_slice(&(i as i32).to_le_bytes());
        v
    }

    fn tuple(items: &[u32]) -> Vec<u8> {
        let mut v = vec![b'('];
        items.iter().for_each(|&i| v.extend(int(i)));
        v.push(b't');
        v
    }

    /// A tensor view as torch pickles it: `_rebuild_tensor_v2(persistent storage, offset,
    /// size, stride, False, OrderedDict())`.
    struct View<'a> {
        storage_type: &'a str,
        storage: &'a str,
        numel: u32,
        offset: u32,
        size: &'a [u32],
        stride: &'a [u32],
    }

    fn tensor(v: &View) -> Vec<u8> {
        let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
        p.extend(s("storage"));
        p.extend(format!("ctorch\n{}\n", v.storage_type).bytes());
        p.extend(s(v.storage));
        p.extend(s("cpu"));
        p.extend(int(v.numel));
        p.extend(b"tQ");
        p.extend(int(v.offset));
        p.extend(tuple(v.size));
        p.extend(tuple(v.stride));
        p.extend(b"\x89ccollections\nOrderedDict\n)RtR");
        p
    }

    /// `{key: tensor, ...}` as a whole pickle.
    fn state_dict(items: &[(&str, View)]) -> Vec<u8> {
        let mut p = b"\x80\x02}(".to_vec();
        for (k, v) in items {
            p.extend(s(k));
            p.extend(tensor(v));
        }
        p.extend(b"u.");
        p
    }

    fn f32_view<'a>(size: &'a [u32], stride: &'a [u32], offset: u32) -> View<'a> {
        View {
            storage_type: "FloatStorage",
            storage: "0",
            numel: 6,
            offset,
            size,
            stride,
        }
    }

    /// Storage "0": six float32 values 0..6.
    fn storage0() -> Vec<u8> {
        (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect()
    }

    fn values(c: &Contents) -> Vec<(&str, Vec<usize>, Vec<f32>)> {
        c.tensors
            .iter()
            .map(|(k, t)| {
                let v = t.as_slice::<f32>().unwrap().to_vec();
                (k.as_str(), t.shape().to_vec(), v)
            })
            .collect()
    }

    fn zip(entries: &[(&str, &[u8], zip::CompressionMethod)]) -> Bytes {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for &(name, data, method) in entries {
            let opts = zip::write::SimpleFileOptions::default().compression_method(method);
            w.start_file(name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        Bytes::from(w.finish().unwrap().into_inner())
    }

    fn stored_zip(pickle: &[u8], storage: &[u8]) -> Bytes {
        let stored = zip::CompressionMethod::Stored;
        zip(&[
            ("weights/data.pkl", pickle, stored),
            ("weights/data/0", storage, stored),
        ])
    }

    /// The legacy container around one object pickle and its storages, in key order.
    fn legacy(pickle: &[u8], storages: &[(&str, &[u8], u64)]) -> Bytes {
        let mut f = b"\x80\x02\x8a\x0a".to_vec();
        f.extend(LEGACY_MAGIC);
        f.extend(b".\x80\x02M\xe9\x03."); // protocol version 1001
        f.extend(b"\x80\x02}(");
        f.extend(s("little_endian"));
        f.extend(b"\x88u.");
        f.extend(pickle);
        f.extend(b"\x80\x02](");
        storages.iter().for_each(|(k, _, _)| f.extend(s(k)));
        f.extend(b"e.");
        for (_, bytes, count) in storages {
            f.extend(count.to_le_bytes());
            f.extend(*bytes);
        }
        Bytes::from(f)
    }

    #[test]
    fn views_of_one_storage_in_both_containers() {
        // Storage [0, 1, 2, 3, 4, 5] seen as w (2x3), its transpose, and w[:, 1:].
        let pickle = state_dict(&[
            ("w", f32_view(&[2, 3], &[3, 1], 0)),
            ("w_t", f32_view(&[3, 2], &[1, 3], 0)),
            ("w_sliced", f32_view(&[2, 2], &[3, 1], 1)),
            ("row", f32_view(&[3], &[1], 3)),
        ]);
        let want = vec![
            ("w", vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
            ("w_t", vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]),
            ("w_sliced", vec![2, 2], vec![1.0, 2.0, 4.0, 5.0]),
            ("row", vec![3], vec![3.0, 4.0, 5.0]),
        ];
        let from_zip = load_zip(&stored_zip(&pickle, &storage0())).unwrap();
        assert_eq!(values(&from_zip), want);
        let from_legacy = load_legacy(&legacy(&pickle, &[("0", &storage0(), 6)])).unwrap();
        assert_eq!(values(&from_legacy), want);
    }

    #[test]
    fn nested_containers_flatten_with_dots() {
        // {'model': {'w': t}, 'opt': {'state': {0: {'m': t}}}, 'epoch': 3}
        let t = tensor(&f32_view(&[6], &[1], 0));
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(s("model"));
        p.extend(b"}(");
        p.extend(s("w"));
        p.extend(&t);
        p.extend(b"u");
        p.extend(s("opt"));
        p.extend(b"}(");
        p.extend(s("state"));
        p.extend(b"}(K\x00}(");
        p.extend(s("m"));
        p.extend(&t);
        p.extend(b"uuu");
        p.extend(s("epoch"));
        p.extend(b"K\x03u.");
        let c = load_zip(&stored_zip(&p, &storage0())).unwrap();
        let keys: Vec<&str> = c.tensors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["model.w", "opt.state.0.m"]);
        assert_eq!(c.metadata, vec![("epoch".to_string(), MetaValue::Int(3))]);
    }

    #[test]
    fn views_reading_past_their_storage_are_refused() {
        let p = state_dict(&[("w", f32_view(&[2, 3], &[3, 1], 1))]);
        let err = load_zip(&stored_zip(&p, &storage0())).err().unwrap();
        assert!(
            err.contains("tensor 'w'") && err.contains("past the end"),
            "{err}"
        );
        // The pickle declares 6 elements; the entry holds 5.
        let p = state_dict(&[("w", f32_view(&[6], &[1], 0))]);
        let err = load_zip(&stored_zip(&p, &storage0()[..20])).err().unwrap();
        assert!(err.contains("should hold 24 bytes"), "{err}");
    }

    #[test]
    fn expanded_views_cannot_demand_unbounded_memory() {
        // 2^30 x 2^10 elements of stride 0 over one float: 4 TiB if copied.
        let p = state_dict(&[("w", f32_view(&[1 << 30, 1 << 10], &[0, 0], 0))]);
        let err = load_zip(&stored_zip(&p, &storage0())).err().unwrap();
        assert!(
            err.contains("tensor 'w'") && err.contains("exceeds"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_dtypes_name_the_tensor() {
        let view = View {
            storage_type: "ComplexFloatStorage",
            numel: 3,
            ..f32_view(&[3], &[1], 0)
        };
        let err = load_zip(&stored_zip(&state_dict(&[("c", view)]), &storage0()))
            .err()
            .unwrap();
        assert!(
            err.contains("tensor 'c': dtype complex64 is not supported"),
            "{err}"
        );
    }

    #[test]
    fn hostile_zip_archives_are_refused() {
        let pickle = state_dict(&[("w", f32_view(&[6], &[1], 0))]);
        let (stored, deflated) = (
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        );
        let climbing = zip(&[
            ("weights/data.pkl", &pickle, stored),
            ("weights/../../data/0", &storage0(), stored),
        ]);
        let err = load_zip(&climbing).err().unwrap();
        assert!(err.contains("'weights/../../data/0' escapes"), "{err}");

        let compressed = zip(&[
            ("weights/data.pkl", &pickle, stored),
            ("weights/data/0", &storage0(), deflated),
        ]);
        let err = load_zip(&compressed).err().unwrap();
        assert!(err.contains("'weights/data/0' is compressed"), "{err}");

        let whole = stored_zip(&pickle, &storage0());
        let err = load_zip(&whole.slice(..whole.len() - 10)).err().unwrap();
        assert!(err.contains("not a valid zip archive"), "{err}");

        let no_pickle = zip(&[("weights/data/0", &storage0(), stored)]);
        let err = load_zip(&no_pickle).err().unwrap();
        assert!(err.contains("no <folder>/data.pkl"), "{err}");
    }

    #[test]
    fn legacy_storages_past_the_end_are_refused() {
        let pickle = state_dict(&[("w", f32_view(&[6], &[1], 0))]);
        let err = load_legacy(&legacy(&pickle, &[("0", &storage0(), 7)]))
            .err()
            .unwrap();
        assert!(
            err.contains("storage '0': 7 elements run past the end"),
            "{err}"
        );
        let err = load_legacy(&Bytes::from_static(b"\x80\x02K\x01."))
            .err()
            .unwrap();
        assert!(err.contains("not a PyTorch file"), "{err}");
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let n = MAX_DEPTH + 2;
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        let err = load_zip(&stored_zip(&p, &[])).err().unwrap();
        assert!(err.contains("nest deeper than 64"), "{err}");
    }

    #[test]
    fn colliding_flattened_keys_are_refused() {
        // {'a.b': 1, 'a': {'b': 2}}
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(s("a.b"));
        p.extend(b"K\x01");
        p.extend(s("a"));
        p.extend(b"}(");
        p.extend(s("b"));
        p.extend(b"K\x02uu.");
        let err = load_zip(&stored_zip(&p, &[])).err().unwrap();
        assert!(err.contains("key 'a.b' appears twice"), "{err}");
    }
}
