//! TensorFlow tensor bundles: checkpoints (`ckpt.index` + `ckpt.data-00000-of-00001`) and
//! SavedModel variables (`variables/variables.index` + shards).
//!
//! The index is a LevelDB table: data blocks of prefix-compressed key/value entries, an
//! index block pointing at them and a 48-byte footer, every block followed by a masked
//! CRC32C. Its first entry (key "") is the `BundleHeaderProto`; every other value is a
//! `BundleEntryProto` (dtype, shape, shard, offset, size, CRC32C of the tensor bytes) that
//! points into a data shard. Everything is checked: block and tensor checksums, offsets
//! against the shard sizes, shapes against byte counts.

use super::{Contents, MetaValue};
use crate::mapped::MappedFile;
use crate::tensor::{checked_numel, DType, Tensor};
use bytes::Bytes;
use std::fs::File;
use std::path::{Path, PathBuf};

type Res<T> = std::result::Result<T, String>;

/// The last 8 bytes of a LevelDB table (`kTableMagicNumber`, little-endian).
pub const TABLE_MAGIC: [u8; 8] = 0xdb47_7524_8b80_fb57u64.to_le_bytes();
const FOOTER_LEN: usize = 48;
/// A block is followed by its compression type (1 byte) and masked CRC32C (4 bytes).
const BLOCK_TRAILER_LEN: usize = 5;

/// Whether `bytes` end like a LevelDB table (a TensorFlow bundle index).
pub fn is_index(bytes: &[u8]) -> bool {
    bytes.len() >= FOOTER_LEN && bytes.ends_with(&TABLE_MAGIC)
}

/// Reads the bundle whose index is `index_bytes` (read from `index_path`): every tensor
/// under its stored key, in key order; string tensors (`_CHECKPOINTABLE_OBJECT_GRAPH`)
/// become metadata. Returns the mapped data shards too.
pub(super) fn load(index_path: &Path, index_bytes: &[u8]) -> Res<(Contents, Vec<MappedFile>)> {
    let entries = read_table(index_bytes)?;
    let mut entries = entries.into_iter();
    let header_bytes = match entries.next() {
        Some((key, value)) if key.is_empty() => value,
        _ => return Err("the index has no bundle header (its first key must be empty)".into()),
    };
    let header = parse_message(&header_bytes)?;
    let num_shards = header.int(1).unwrap_or(1);
    if header.int(2).unwrap_or(0) != 0 {
        return Err("the bundle is big-endian; only little-endian bundles are read".into());
    }
    if !(1..=100_000).contains(&num_shards) {
        return Err(format!("implausible shard count {num_shards}"));
    }
    let shards = open_shards(index_path, num_shards as usize)?;
    let mut tensors = Vec::new();
    let mut metadata = Vec::new();
    for (key, value) in entries {
        let key = String::from_utf8(key).map_err(|_| "a tensor key is not UTF-8".to_string())?;
        let entry = parse_message(&value).map_err(|e| format!("tensor '{key}': {e}"))?;
        match read_entry(&entry, &shards).map_err(|e| format!("tensor '{key}': {e}"))? {
            Stored::Tensor(t) => tensors.push((key, t)),
            Stored::Strings(s) => metadata.push((key, s)),
        }
    }
    let mapped = shards.into_iter().map(|(_, m, _)| m).collect();
    Ok((Contents { tensors, metadata }, mapped))
}

/// `<prefix>.data-NNNNN-of-MMMMM` for each shard, mapped: (path, map, bytes).
fn open_shards(index_path: &Path, n: usize) -> Res<Vec<(PathBuf, MappedFile, Bytes)>> {
    let prefix = index_path.with_extension("");
    (0..n)
        .map(|i| {
            let mut name = prefix.clone().into_os_string();
            name.push(format!(".data-{i:05}-of-{n:05}"));
            let path = PathBuf::from(name);
            let file =
                File::open(&path).map_err(|e| format!("data shard {}: {e}", path.display()))?;
            let (mapped, bytes) = MappedFile::map(&file, &path).map_err(|e| e.to_string())?;
            Ok((path, mapped, bytes))
        })
        .collect()
}

enum Stored {
    Tensor(Tensor),
    Strings(MetaValue),
}

fn read_entry(entry: &Message, shards: &[(PathBuf, MappedFile, Bytes)]) -> Res<Stored> {
    if !entry.all(7).is_empty() {
        return Err("partitioned (sliced) variables are not supported".into());
    }
    let dtype_code = entry.int(1).unwrap_or(0);
    let shape = match entry.bytes(2) {
        Some(shape) => parse_shape(shape)?,
        None => Vec::new(),
    };
    let shard = entry.int(3).unwrap_or(0);
    let offset = entry.int(4).unwrap_or(0);
    let size = entry.int(5).unwrap_or(0);
    let (path, _, data) = usize::try_from(shard)
        .ok()
        .and_then(|s| shards.get(s))
        .ok_or_else(|| format!("shard {shard} does not exist ({} shards)", shards.len()))?;
    let range = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(size).ok())
        .and_then(|(o, s)| Some(o..o.checked_add(s)?))
        .filter(|r| r.end <= data.len())
        .ok_or_else(|| {
            format!(
                "bytes {offset}..+{size} lie outside {} ({} bytes)",
                path.display(),
                data.len()
            )
        })?;
    let bytes = data.slice(range);
    let stored_crc = entry.fixed32(6).unwrap_or(0);
    let check = |crc: u32| {
        if mask(crc) == stored_crc {
            return Ok(());
        }
        Err(format!(
            "checksum mismatch in {} (stored {stored_crc:#010x}, computed {:#010x}): the \
             data is corrupt",
            path.display(),
            mask(crc)
        ))
    };
    if dtype_code == DT_STRING {
        let n = checked_numel(&shape).map_err(|e| e.to_string())?;
        let (value, crc) = parse_strings(&bytes, n)?;
        check(crc)?;
        return Ok(Stored::Strings(value));
    }
    check(crc32c(&bytes))?;
    let dtype = tf_dtype(dtype_code)?;
    Tensor::from_le_bytes(dtype, shape, bytes)
        .map(Stored::Tensor)
        .map_err(|e| e.to_string())
}

const DT_STRING: u64 = 7;

fn tf_dtype(code: u64) -> Res<DType> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::F64,
        3 => DType::I32,
        4 => DType::U8,
        5 => DType::I16,
        6 => DType::I8,
        9 => DType::I64,
        10 => DType::Bool,
        14 => DType::BF16,
        17 => DType::U16,
        19 => DType::F16,
        22 => DType::U32,
        23 => DType::U64,
        other => return Err(format!("unsupported TensorFlow dtype {other}")),
    })
}

/// `TensorShapeProto`: repeated `dim` (2) of `{size: 1}`; `unknown_rank` (3) is refused.
fn parse_shape(bytes: &[u8]) -> Res<Vec<usize>> {
    let shape = parse_message(bytes)?;
    if shape.int(3).unwrap_or(0) != 0 {
        return Err("the stored shape has unknown rank".into());
    }
    shape
        .all(2)
        .into_iter()
        .map(|dim| {
            let size = parse_message(dim)?.int(1).unwrap_or(0);
            usize::try_from(size as i64).map_err(|_| format!("negative dimension {}", size as i64))
        })
        .collect()
}

/// A string tensor: `n` varint lengths, a 4-byte checksum of them, then the bytes. A scalar
/// becomes its bytes; longer ones are described. Also returns the CRC32C TensorFlow stores
/// for it, which covers each length as a little-endian u32 (u64 past 4 GiB; not as the
/// varint written), the lengths' checksum, then the bytes.
fn parse_strings(bytes: &[u8], n: usize) -> Res<(MetaValue, u32)> {
    let mut r = Reader::new(bytes);
    let mut lens = Vec::with_capacity(n.min(bytes.len()));
    let mut crc = 0;
    for _ in 0..n {
        let len = r.varint()?;
        crc = match u32::try_from(len) {
            Ok(short) => crc32c_extend(crc, &short.to_le_bytes()),
            Err(_) => crc32c_extend(crc, &len.to_le_bytes()),
        };
        lens.push(usize::try_from(len).map_err(|_| "string length overflows")?);
    }
    let lengths_crc = r.take(4)?;
    if lengths_crc != mask(crc).to_le_bytes() {
        return Err("string lengths fail their checksum: the data is corrupt".into());
    }
    crc = crc32c_extend(crc, lengths_crc);
    let mut strings = Vec::with_capacity(lens.len());
    for len in lens {
        let s = r.take(len)?;
        crc = crc32c_extend(crc, s);
        strings.push(s.to_vec());
    }
    let value = match strings.as_slice() {
        [one] => MetaValue::Bytes(one.clone()),
        _ => MetaValue::Other(format!("<{} strings>", strings.len())),
    };
    Ok((value, crc))
}

/// Every key/value of a LevelDB table, in key order.
fn read_table(file: &[u8]) -> Res<Vec<(Vec<u8>, Vec<u8>)>> {
    if !is_index(file) {
        return Err("not a TensorFlow bundle index (no LevelDB table footer)".into());
    }
    let footer = &file[file.len() - FOOTER_LEN..];
    let mut r = Reader::new(footer);
    let _metaindex = (r.varint()?, r.varint()?);
    let index = (r.varint()?, r.varint()?);
    let mut out = Vec::new();
    for (_, handle) in block_entries(block(file, index)?)? {
        let mut h = Reader::new(&handle);
        let data = block(file, (h.varint()?, h.varint()?))?;
        out.extend(block_entries(data)?);
    }
    Ok(out)
}

/// The contents of the block at `(offset, size)`, its checksum verified.
fn block(file: &[u8], (offset, size): (u64, u64)) -> Res<&[u8]> {
    let start = usize::try_from(offset).map_err(|_| "block offset overflows")?;
    let len = usize::try_from(size).map_err(|_| "block size overflows")?;
    let whole = start
        .checked_add(len)
        .and_then(|end| end.checked_add(BLOCK_TRAILER_LEN))
        .and_then(|end| file.get(start..end))
        .ok_or_else(|| {
            format!(
                "block {offset}..+{size} lies outside the index ({} bytes)",
                file.len()
            )
        })?;
    let (contents, trailer) = whole.split_at(len);
    if trailer[0] != 0 {
        return Err(format!(
            "compressed index blocks (type {}) are not supported",
            trailer[0]
        ));
    }
    let stored = u32::from_le_bytes([trailer[1], trailer[2], trailer[3], trailer[4]]);
    let crc = crc32c_extend(crc32c(contents), &trailer[..1]);
    if mask(crc) != stored {
        return Err(format!(
            "index block at {offset} fails its checksum (stored {stored:#010x}, computed \
             {:#010x}): the index is corrupt",
            mask(crc)
        ));
    }
    Ok(contents)
}

/// The entries of a block: each shares a prefix of the previous key.
fn block_entries(block: &[u8]) -> Res<Vec<(Vec<u8>, Vec<u8>)>> {
    let corrupt = || "malformed index block".to_string();
    let n = block.len().checked_sub(4).ok_or_else(corrupt)?;
    let restarts = u32::from_le_bytes(block[n..].try_into().map_err(|_| corrupt())?) as usize;
    let end = restarts
        .checked_mul(4)
        .and_then(|r| n.checked_sub(r))
        .ok_or_else(corrupt)?;
    let mut r = Reader::new(&block[..end]);
    let mut key: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    while !r.is_empty() {
        let shared = r.varint()? as usize;
        let own = r.varint()? as usize;
        let value_len = r.varint()? as usize;
        if shared > key.len() {
            return Err(corrupt());
        }
        key.truncate(shared);
        key.extend_from_slice(r.take(own)?);
        out.push((key.clone(), r.take(value_len)?.to_vec()));
    }
    Ok(out)
}

/// A decoded protobuf message: (field number, value) in order; varints and fixed32 as
/// integers, length-delimited fields as bytes.
struct Message<'a>(Vec<(u64, Field<'a>)>);

enum Field<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

impl<'a> Message<'a> {
    fn int(&self, field: u64) -> Option<u64> {
        self.0.iter().rev().find_map(|(f, v)| match v {
            Field::Int(i) if *f == field => Some(*i),
            _ => None,
        })
    }
    fn fixed32(&self, field: u64) -> Option<u32> {
        self.int(field).map(|v| v as u32)
    }
    fn bytes(&self, field: u64) -> Option<&'a [u8]> {
        self.all(field).pop()
    }
    fn all(&self, field: u64) -> Vec<&'a [u8]> {
        self.0
            .iter()
            .filter_map(|(f, v)| match v {
                Field::Bytes(b) if *f == field => Some(*b),
                _ => None,
            })
            .collect()
    }
}

fn parse_message(bytes: &[u8]) -> Res<Message<'_>> {
    let mut r = Reader::new(bytes);
    let mut fields = Vec::new();
    while !r.is_empty() {
        let tag = r.varint()?;
        let value = match tag & 7 {
            0 => Field::Int(r.varint()?),
            1 => Field::Int(u64::from_le_bytes(
                r.take(8)?.try_into().map_err(|_| "eof")?,
            )),
            2 => {
                let len = r.varint()? as usize;
                Field::Bytes(r.take(len)?)
            }
            5 => Field::Int(u32::from_le_bytes(r.take(4)?.try_into().map_err(|_| "eof")?).into()),
            wire => return Err(format!("malformed protobuf (wire type {wire})")),
        };
        fields.push((tag >> 3, value));
    }
    Ok(Message(fields))
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if n > self.buf.len() {
            return Err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn varint(&mut self) -> Res<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.take(1)?.first().ok_or("truncated varint")?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
}

/// CRC-32C (Castagnoli), as LevelDB and TensorFlow use it.
fn crc32c(data: &[u8]) -> u32 {
    crc32c_extend(0, data)
}

fn crc32c_extend(crc: u32, data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !crc;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// LevelDB's masking of stored CRCs (so a CRC of data holding CRCs stays well-behaved).
fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720, appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_extend(crc32c(b"1234"), b"56789"), 0xe306_9283);
    }

    #[test]
    fn block_entries_share_key_prefixes() {
        // "abc"→"1", then "abd"→"22" sharing 2 bytes; one restart point at 0.
        let mut b = vec![0, 3, 1, b'a', b'b', b'c', b'1', 2, 1, 2, b'd', b'2', b'2'];
        b.extend(0u32.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        let e = block_entries(&b).unwrap();
        assert_eq!(e[0], (b"abc".to_vec(), b"1".to_vec()));
        assert_eq!(e[1], (b"abd".to_vec(), b"22".to_vec()));
        // A shared prefix longer than the previous key is an error, not a panic.
        b[7] = 9;
        assert!(block_entries(&b).is_err());
    }
}
