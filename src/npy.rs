//! NumPy `.npy` and `.npz` files: read (either byte order, C or Fortran order, every dtype
//! the runtime supports) and write (little endian, C order).
//!
//! Hand-written: the format is one short header plus raw bytes, and the crates that read it
//! either pull in a large dependency tree or skip big-endian and Fortran-order files.

// Loaders read bytes from strangers: a malformed file must be an error, never a panic.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use crate::error::{Error, Result};
use crate::tensor::{checked_numel, DType, Tensor};
use std::io::{Read, Seek, Write};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Headers are a few hundred bytes; anything bigger is not a real `.npy` file.
const MAX_HEADER_LEN: usize = 1 << 16;

fn fmt_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads one `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(&bytes).map_err(|reason| fmt_err(path, reason))
}

/// Reads every array of an `.npz` archive, in archive order, named without `.npy`.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_npz_from(file).map_err(|reason| fmt_err(path, reason))
}

/// Parses the bytes of an `.npz` archive (as `read_npz`).
pub fn parse_npz(bytes: &[u8]) -> std::result::Result<Vec<(String, Tensor)>, String> {
    read_npz_from(std::io::Cursor::new(bytes))
}

fn read_npz_from<R: Read + Seek>(reader: R) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let mut archive =
        zip::ZipArchive::new(reader).map_err(|e| format!("not a valid .npz archive: {e}"))?;
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("entry #{i}: {e}"))?;
        let name = entry.name().to_string();
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        // A deflated entry can expand without bound (a zip bomb): read at most one
        // tensor's worth plus a header, whatever size the archive declares.
        let limit = crate::tensor::max_tensor_bytes().saturating_add(MAX_HEADER_LEN + 16) as u64;
        let mut bytes = Vec::new();
        (&mut entry)
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| format!("entry '{name}': {e}"))?;
        if bytes.len() as u64 > limit {
            return Err(format!(
                "entry '{name}' expands past the {limit}-byte limit"
            ));
        }
        let t = parse_npy(&bytes).map_err(|reason| format!("entry '{name}': {reason}"))?;
        out.push((key, t));
    }
    Ok(out)
}

/// Parses the bytes of a `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(format!("header of {header_len} bytes is implausibly large"));
    }
    let header = bytes
        .get(header_start..header_start + header_len)
        .ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let h = parse_header(header)?;
    let data = &bytes[header_start + header_len..];

    let n = checked_numel(&h.shape).map_err(|e| e.to_string())?;
    let elem_size = match h.chars {
        Some(chars) => chars.checked_mul(4).ok_or("array size overflows")?,
        None => h.dtype.size(),
    };
    let need = n.checked_mul(elem_size).ok_or("array size overflows")?;
    if data.len() < need {
        return Err(format!(
            "data is truncated: shape {:?} of {} needs {need} bytes, file has {}",
            h.shape,
            h.dtype,
            data.len()
        ));
    }
    if let Some(chars) = h.chars {
        return unicode_tensor(&h, chars, &data[..need]);
    }
    let mut raw = data[..need].to_vec();
    if h.big_endian {
        for chunk in raw.chunks_mut(h.dtype.size()) {
            chunk.reverse();
        }
    }
    if h.fortran_order && h.shape.len() > 1 {
        // Column-major data is the C-order data of the reversed shape, transposed back.
        let rev: Vec<usize> = h.shape.iter().rev().copied().collect();
        let t = Tensor::from_le_slice(h.dtype, rev, &raw).map_err(|e| e.to_string())?;
        return reverse_axes(&t).map_err(|e| e.to_string());
    }
    Tensor::from_le_slice(h.dtype, h.shape, &raw).map_err(|e| e.to_string())
}

/// A string tensor from numpy's fixed-width UTF-32 elements (`<U{chars}`), each padded with
/// NULs, which numpy strips on reading too.
fn unicode_tensor(h: &Header, chars: usize, data: &[u8]) -> std::result::Result<Tensor, String> {
    let unit = |b: &[u8]| {
        let b = [b[0], b[1], b[2], b[3]];
        match h.big_endian {
            true => u32::from_be_bytes(b),
            false => u32::from_le_bytes(b),
        }
    };
    let decode = |elem: &[u8]| {
        let mut text = elem
            .chunks_exact(4)
            .map(|c| char::from_u32(unit(c)).ok_or(format!("invalid code point {:#x}", unit(c))))
            .collect::<std::result::Result<String, String>>()?;
        text.truncate(text.trim_end_matches('\0').len());
        Ok(text)
    };
    let n = checked_numel(&h.shape).map_err(|e| e.to_string())?;
    let strings = match chars {
        // A zero-width array has no bytes to split: its elements are all empty.
        0 => vec![String::new(); n],
        _ => data
            .chunks_exact(4 * chars)
            .map(decode)
            .collect::<std::result::Result<Vec<String>, String>>()?,
    };
    if h.fortran_order && h.shape.len() > 1 {
        let rev: Vec<usize> = h.shape.iter().rev().copied().collect();
        let positions: Vec<i64> = (0..n as i64).collect();
        let t = Tensor::from_vec(rev, positions).map_err(|e| e.to_string())?;
        let order = reverse_axes(&t).map_err(|e| e.to_string())?;
        let order = order.as_slice::<i64>().map_err(|e| e.to_string())?;
        let c_order = order.iter().map(|&i| strings[i as usize].clone()).collect();
        return Tensor::from_strings(h.shape.clone(), c_order).map_err(|e| e.to_string());
    }
    Tensor::from_strings(h.shape.clone(), strings).map_err(|e| e.to_string())
}

fn reverse_axes(t: &Tensor) -> Result<Tensor> {
    crate::with_dtype!(t.dtype(), T, {
        let v = t.view::<T>()?;
        let perm: Vec<usize> = (0..t.rank()).rev().collect();
        Ok(Tensor::from_array(v.permuted_axes(perm).to_owned()))
    })
}

struct Header {
    dtype: DType,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
    /// For unicode arrays (`U{n}`, dtype `String`): characters per element.
    chars: Option<usize>,
}

/// Parses the Python-literal header dict: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(h: &str) -> std::result::Result<Header, String> {
    let field = |key: &str| -> std::result::Result<&str, String> {
        let pat = format!("'{key}':");
        let start = h.find(&pat).ok_or(format!("header has no '{key}'"))? + pat.len();
        Ok(h[start..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or("malformed 'descr'")?;
    // The byte-order character, then the type code (the header is arbitrary text: split on a
    // character boundary, not at byte 1).
    let order_len = descr.chars().next().map_or(0, char::len_utf8);
    let (order, code) = descr.split_at(order_len);
    let big_endian = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return Err(format!("unsupported dtype '{descr}'")),
    };
    if code == "O" {
        return Err(
            "object arrays (pickled Python objects) are not supported; save strings \
                    with a unicode dtype (np.array(..., dtype=str))"
                .into(),
        );
    }
    let chars = match code.strip_prefix('U') {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| format!("bad dtype '{descr}'"))?,
        ),
        None => None,
    };
    let dtype = match code {
        _ if chars.is_some() => DType::String,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "i8" => DType::I64,
        "i4" => DType::I32,
        "i2" => DType::I16,
        "i1" => DType::I8,
        "u8" => DType::U64,
        "u4" => DType::U32,
        "u2" => DType::U16,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        _ => return Err(format!("unsupported dtype '{descr}'")),
    };
    let fortran_order = field("fortran_order")?.starts_with("True");
    let shape_txt = field("shape")?;
    let inner = shape_txt
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("malformed 'shape'")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("bad dimension '{s}'"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape,
        chars,
    })
}

fn descr(d: DType) -> Result<&'static str> {
    Ok(match d {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U64 => "<u8",
        DType::U32 => "<u4",
        DType::U16 => "<u2",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        other => {
            return Err(Error::Input(format!(
                "{other} has no .npy dtype; cast it first"
            )))
        }
    })
}

/// Serializes a tensor as `.npy` (version 1.0, little endian, C order).
pub fn to_npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let shape = match t.shape() {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let (dtype_descr, data) = match t.as_strings() {
        Ok(strings) => {
            let (descr, data) = unicode_data(strings);
            (
                std::borrow::Cow::Owned(descr),
                std::borrow::Cow::Owned(data),
            )
        }
        Err(_) => (descr(t.dtype())?.into(), t.as_bytes().into()),
    };
    let mut header =
        format!("{{'descr': '{dtype_descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, newline-terminated.
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    if t.dtype() == DType::String {
        out.extend_from_slice(&data);
    } else if cfg!(target_endian = "big") {
        for chunk in data.chunks(t.dtype().size()) {
            out.extend(chunk.iter().rev());
        }
    } else {
        out.extend_from_slice(&data);
    }
    Ok(out)
}

/// Strings as numpy stores them: `<U{n}` for the longest, `n` characters (at least one) of
/// UTF-32LE each, padded with NULs.
fn unicode_data(strings: &[String]) -> (String, Vec<u8>) {
    let chars = strings
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut data = Vec::with_capacity(strings.len() * chars * 4);
    for s in strings {
        let mut count = 0;
        for c in s.chars() {
            data.extend_from_slice(&(c as u32).to_le_bytes());
            count += 1;
        }
        data.resize(data.len() + (chars - count) * 4, 0);
    }
    (format!("<U{chars}"), data)
}

/// Writes a tensor to a `.npy` file.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let bytes = to_npy_bytes(t)?;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(&bytes).map_err(io)
}

/// Serializes named tensors as an (uncompressed) `.npz` archive, each as `<name>.npy`.
pub fn to_npz_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Result<Vec<u8>> {
    let zip_err = |e: zip::result::ZipError| Error::Input(format!("cannot write .npz: {e}"));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, t) in tensors {
        zip.start_file(format!("{name}.npy"), stored)
            .map_err(zip_err)?;
        zip.write_all(&to_npy_bytes(t)?)
            .map_err(|e| Error::Input(format!("cannot write .npz: {e}")))?;
    }
    Ok(zip.finish().map_err(zip_err)?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_npz_entry_that_inflates_past_the_tensor_limit_is_refused() {
        // 1 MiB of zeros deflates to about 1 KiB; under a 64 KiB limit reading stops there.
        let path = std::env::temp_dir().join(format!("infer-npz-bomb-{}.npz", std::process::id()));
        let zeros = Tensor::zeros(DType::F32, vec![1 << 18]).unwrap();
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("x.npy", deflated).unwrap();
        zip.write_all(&to_npy_bytes(&zeros).unwrap()).unwrap();
        zip.finish().unwrap();
        let read = std::thread::spawn({
            let path = path.clone();
            move || {
                crate::tensor::alloc::ThreadLimits::set_for_thread(
                    1 << 16,
                    crate::tensor::DEFAULT_MAX_TOTAL_BYTES,
                );
                read_npz(&path).map(|_| ()).map_err(|e| e.to_string())
            }
        });
        let err = read.join().unwrap().unwrap_err();
        assert!(err.contains("expands past"), "{err}");
        assert_eq!(read_npz(&path).unwrap()[0].1.len(), 1 << 18);
        std::fs::remove_file(path).ok();
    }

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}\n",
            if fortran { "True" } else { "False" }
        );
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn round_trips_every_dtype() {
        for t in [
            Tensor::from_vec(vec![2, 2], vec![1.5f32, -2.0, 3.0, 4.0]).unwrap(),
            Tensor::from_vec(vec![3], vec![1i64, -2, 3]).unwrap(),
            Tensor::from_vec(vec![2], vec![true, false]).unwrap(),
            Tensor::from_vec(vec![0, 4], Vec::<u8>::new()).unwrap(),
            Tensor::scalar(7.25f64),
        ] {
            let back = parse_npy(&to_npy_bytes(&t).unwrap()).unwrap();
            assert!(back.bit_eq(&t), "{t:?} vs {back:?}");
        }
    }

    #[test]
    fn unicode_arrays_round_trip_as_strings() {
        let words = ["", "é", "naïve", "日本"].map(String::from).to_vec();
        let t = Tensor::from_strings(vec![2, 2], words).unwrap();
        let bytes = to_npy_bytes(&t).unwrap();
        assert!(std::str::from_utf8(&bytes[10..60])
            .unwrap()
            .contains("'<U5'"));
        assert!(parse_npy(&bytes).unwrap().bit_eq(&t));
    }

    #[test]
    fn reads_numpy_unicode_in_either_order() {
        // np.array([["ab", "c"], ["d", "ef"]]) is '<U2', "c" padded with one NUL.
        let utf32 = |s: &str, be: bool| -> Vec<u8> {
            let mut v: Vec<u32> = s.chars().map(|c| c as u32).collect();
            v.resize(2, 0);
            v.iter()
                .flat_map(|c| if be { c.to_be_bytes() } else { c.to_le_bytes() })
                .collect()
        };
        let c_order: Vec<u8> = ["ab", "c", "d", "ef"]
            .iter()
            .flat_map(|s| utf32(s, false))
            .collect();
        let t = parse_npy(&npy("<U2", false, "(2, 2)", &c_order)).unwrap();
        assert_eq!(t.as_strings().unwrap(), ["ab", "c", "d", "ef"]);
        // The same array in Fortran order, big endian: column by column.
        let f_order: Vec<u8> = ["ab", "d", "c", "ef"]
            .iter()
            .flat_map(|s| utf32(s, true))
            .collect();
        let t = parse_npy(&npy(">U2", true, "(2, 2)", &f_order)).unwrap();
        assert_eq!(t.as_strings().unwrap(), ["ab", "c", "d", "ef"]);
        // Not a code point.
        let bad = 0x11_0000u32.to_le_bytes().repeat(2);
        assert!(parse_npy(&npy("<U2", false, "(1,)", &bad)).is_err());
    }

    #[test]
    fn a_dtype_starting_with_a_multibyte_character_is_an_error() {
        // Found by fuzzing: the byte order was split off at byte 1, inside the character.
        let err = parse_npy(&npy("\u{2d9}4", false, "(1,)", &[0; 8])).unwrap_err();
        assert!(err.contains("unsupported dtype"), "{err}");
    }

    #[test]
    fn object_arrays_are_refused_with_a_hint() {
        let err = parse_npy(&npy("|O", false, "(1,)", &[0; 8])).unwrap_err();
        assert!(
            err.contains("object arrays") && err.contains("dtype=str"),
            "{err}"
        );
    }

    #[test]
    fn npz_round_trips_names_and_order() {
        let a = Tensor::from_vec(vec![2], vec![1.5f32, -2.0]).unwrap();
        let b = Tensor::from_vec(vec![1, 3], vec![7i64, 8, 9]).unwrap();
        let bytes = to_npz_bytes([("b", &b), ("a", &a)]).unwrap();
        let back = parse_npz(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].0.as_str(), back[1].0.as_str()), ("b", "a"));
        assert!(back[0].1.bit_eq(&b) && back[1].1.bit_eq(&a));
        assert!(parse_npz(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn reads_big_endian() {
        let data: Vec<u8> = [1i32, -2].iter().flat_map(|v| v.to_be_bytes()).collect();
        let t = parse_npy(&npy(">i4", false, "(2,)", &data)).unwrap();
        assert_eq!(t.as_slice::<i32>().unwrap(), &[1, -2]);
    }

    #[test]
    fn reads_fortran_order() {
        // The 2x3 matrix [[1,2,3],[4,5,6]] stored column by column.
        let data: Vec<u8> = [1u8, 4, 2, 5, 3, 6].to_vec();
        let t = parse_npy(&npy("|u1", true, "(2, 3)", &data)).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.as_slice::<u8>().unwrap(), &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_bad_files() {
        assert!(parse_npy(b"hello").is_err());
        assert!(parse_npy(&npy("<c8", false, "(1,)", &[0; 8])).is_err());
        // Shape claims far more data than present: an error, not a huge allocation.
        assert!(parse_npy(&npy("<f4", false, "(100000000000,)", &[0; 8])).is_err());
        assert!(parse_npy(&npy("<f4", false, "(2,)", &[0; 4])).is_err());
    }
}
