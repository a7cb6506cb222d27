//! The dense tensor type every loader produces and every kernel consumes.
//!
//! A `Tensor` is a dtype, a shape and shared, immutable-once-built storage. Storage is either
//! an owned typed vector (operator outputs) or a slice of a memory-mapped file (weights), so
//! clones are cheap and weights are never copied when their bytes are aligned.

pub mod alloc;
mod dtype;
pub mod narrow;
pub(crate) mod spare;
mod string_cast;
mod value;

pub(crate) use alloc::filled_vec;
pub use alloc::{
    check_tensor_bytes, max_tensor_bytes, DEFAULT_MAX_TENSOR_BYTES, DEFAULT_MAX_TOTAL_BYTES,
};
pub use dtype::{DType, Elem};
pub use narrow::{CastOptions, E8m0Rounding, Narrow};
pub use value::{Sequence, Value};

use crate::error::{Error, Result};
use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::sync::Arc;

/// Runs `$body` with the type alias `$T` bound to the Rust type of `$dtype`, for the types
/// that compute; for the storage-only narrow types (float8, int4, ...) and strings the
/// enclosing function returns an error instead.
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $T:ident, $body:block) => {{
        use $crate::tensor::DType as __D;
        match $dtype {
            __D::F32 => {
                type $T = f32;
                $body
            }
            __D::F64 => {
                type $T = f64;
                $body
            }
            __D::F16 => {
                type $T = half::f16;
                $body
            }
            __D::BF16 => {
                type $T = half::bf16;
                $body
            }
            __D::I64 => {
                type $T = i64;
                $body
            }
            __D::I32 => {
                type $T = i32;
                $body
            }
            __D::I16 => {
                type $T = i16;
                $body
            }
            __D::I8 => {
                type $T = i8;
                $body
            }
            __D::U64 => {
                type $T = u64;
                $body
            }
            __D::U32 => {
                type $T = u32;
                $body
            }
            __D::U16 => {
                type $T = u16;
                $body
            }
            __D::U8 => {
                type $T = u8;
                $body
            }
            __D::Bool => {
                type $T = bool;
                $body
            }
            other => {
                return Err($crate::error::Error::Op(format!(
                    "{other} tensors are not supported by this operator"
                ))
                .into())
            }
        }
    }};
}

/// Like `with_dtype!`, but for every fixed-size dtype including the narrow ones: for code that
/// only stores or moves elements. Strings (not `Copy`) make the enclosing function return an
/// error.
#[macro_export]
macro_rules! with_any_dtype {
    ($dtype:expr, $T:ident, $body:block) => {{
        use $crate::tensor::DType as __D;
        match $dtype {
            __D::F32 => {
                type $T = f32;
                $body
            }
            __D::F64 => {
                type $T = f64;
                $body
            }
            __D::F16 => {
                type $T = half::f16;
                $body
            }
            __D::BF16 => {
                type $T = half::bf16;
                $body
            }
            __D::I64 => {
                type $T = i64;
                $body
            }
            __D::I32 => {
                type $T = i32;
                $body
            }
            __D::I16 => {
                type $T = i16;
                $body
            }
            __D::I8 => {
                type $T = i8;
                $body
            }
            __D::U64 => {
                type $T = u64;
                $body
            }
            __D::U32 => {
                type $T = u32;
                $body
            }
            __D::U16 => {
                type $T = u16;
                $body
            }
            __D::U8 => {
                type $T = u8;
                $body
            }
            __D::Bool => {
                type $T = bool;
                $body
            }
            __D::F8E4M3FN => {
                type $T = $crate::tensor::narrow::F8E4M3FN;
                $body
            }
            __D::F8E4M3FNUZ => {
                type $T = $crate::tensor::narrow::F8E4M3FNUZ;
                $body
            }
            __D::F8E5M2 => {
                type $T = $crate::tensor::narrow::F8E5M2;
                $body
            }
            __D::F8E5M2FNUZ => {
                type $T = $crate::tensor::narrow::F8E5M2FNUZ;
                $body
            }
            __D::F8E8M0 => {
                type $T = $crate::tensor::narrow::F8E8M0;
                $body
            }
            __D::F4E2M1 => {
                type $T = $crate::tensor::narrow::F4E2M1;
                $body
            }
            __D::I4 => {
                type $T = $crate::tensor::narrow::I4;
                $body
            }
            __D::U4 => {
                type $T = $crate::tensor::narrow::U4;
                $body
            }
            __D::I2 => {
                type $T = $crate::tensor::narrow::I2;
                $body
            }
            __D::U2 => {
                type $T = $crate::tensor::narrow::U2;
                $body
            }
            __D::String => {
                return Err($crate::error::Error::Op(
                    "string tensors are not supported by this operator".into(),
                )
                .into())
            }
        }
    }};
}

/// Owned storage, one variant per element type so vectors move in and out without copies.
#[derive(Debug)]
enum Owned {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I16(Vec<i16>),
    I8(Vec<i8>),
    U64(Vec<u64>),
    U32(Vec<u32>),
    U16(Vec<u16>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
    F8E4M3FN(Vec<narrow::F8E4M3FN>),
    F8E4M3FNUZ(Vec<narrow::F8E4M3FNUZ>),
    F8E5M2(Vec<narrow::F8E5M2>),
    F8E5M2FNUZ(Vec<narrow::F8E5M2FNUZ>),
    F8E8M0(Vec<narrow::F8E8M0>),
    F4E2M1(Vec<narrow::F4E2M1>),
    I4(Vec<narrow::I4>),
    U4(Vec<narrow::U4>),
    I2(Vec<narrow::I2>),
    U2(Vec<narrow::U2>),
    String(Vec<String>),
}

/// Moves typed vectors in and out of `Owned` without copying.
pub trait Storable: Elem {
    #[doc(hidden)]
    fn wrap(v: Vec<Self>) -> OwnedBox;
    #[doc(hidden)]
    fn slice(o: &OwnedBox) -> Option<&[Self]>;
    #[doc(hidden)]
    fn unwrap(o: OwnedBox) -> std::result::Result<Vec<Self>, OwnedBox>;
}

/// Opaque owned storage (public only so `Storable` can name it).
#[derive(Debug)]
pub struct OwnedBox(Owned);

macro_rules! storable {
    ($($t:ty => $v:ident),*) => {$(
        impl Storable for $t {
            fn wrap(v: Vec<Self>) -> OwnedBox { OwnedBox(Owned::$v(v)) }
            fn slice(o: &OwnedBox) -> Option<&[Self]> {
                match &o.0 { Owned::$v(v) => Some(v), _ => None }
            }
            fn unwrap(o: OwnedBox) -> std::result::Result<Vec<Self>, OwnedBox> {
                match o.0 { Owned::$v(v) => Ok(v), other => Err(OwnedBox(other)) }
            }
        }
    )*};
}
storable!(f32 => F32, f64 => F64, f16 => F16, bf16 => BF16, i64 => I64, i32 => I32,
          i16 => I16, i8 => I8, u64 => U64, u32 => U32, u16 => U16, u8 => U8, bool => Bool,
          narrow::F8E4M3FN => F8E4M3FN, narrow::F8E4M3FNUZ => F8E4M3FNUZ,
          narrow::F8E5M2 => F8E5M2, narrow::F8E5M2FNUZ => F8E5M2FNUZ, narrow::F8E8M0 => F8E8M0,
          narrow::F4E2M1 => F4E2M1, narrow::I4 => I4, narrow::U4 => U4, narrow::I2 => I2,
          narrow::U2 => U2);

impl OwnedBox {
    /// The elements' memory as bytes; empty for strings, which have no byte form.
    fn as_bytes(&self) -> &[u8] {
        macro_rules! bytes_of {
            ($v:expr) => {{
                let v = $v;
                // SAFETY: every element type here is plain data without padding (bool is one
                // byte, 0 or 1; the narrow types are `repr(transparent)` bytes), so viewing its initialized memory as bytes is sound.
                unsafe {
                    std::slice::from_raw_parts(
                        v.as_ptr() as *const u8,
                        std::mem::size_of_val(&v[..]),
                    )
                }
            }};
        }
        match &self.0 {
            Owned::F32(v) => bytes_of!(v),
            Owned::F64(v) => bytes_of!(v),
            Owned::F16(v) => bytes_of!(v),
            Owned::BF16(v) => bytes_of!(v),
            Owned::I64(v) => bytes_of!(v),
            Owned::I32(v) => bytes_of!(v),
            Owned::I16(v) => bytes_of!(v),
            Owned::I8(v) => bytes_of!(v),
            Owned::U64(v) => bytes_of!(v),
            Owned::U32(v) => bytes_of!(v),
            Owned::U16(v) => bytes_of!(v),
            Owned::U8(v) => bytes_of!(v),
            Owned::Bool(v) => bytes_of!(v),
            Owned::F8E4M3FN(v) => bytes_of!(v),
            Owned::F8E4M3FNUZ(v) => bytes_of!(v),
            Owned::F8E5M2(v) => bytes_of!(v),
            Owned::F8E5M2FNUZ(v) => bytes_of!(v),
            Owned::F8E8M0(v) => bytes_of!(v),
            Owned::F4E2M1(v) => bytes_of!(v),
            Owned::I4(v) => bytes_of!(v),
            Owned::U4(v) => bytes_of!(v),
            Owned::I2(v) => bytes_of!(v),
            Owned::U2(v) => bytes_of!(v),
            Owned::String(_) => &[],
        }
    }
}

#[derive(Clone, Debug)]
enum Data {
    /// At least the tensor's elements: the first `numel` are its own. Storage from the spare
    /// pool may be longer — an initialized tail kept for a later, larger output (see
    /// `spare::Output`).
    Owned(Arc<OwnedBox>),
    /// Little-endian bytes of a non-bool dtype, aligned for that dtype (checked on creation).
    Mapped(bytes::Bytes),
    /// Bytes that cannot be viewed in place (misaligned, bool, or a big-endian host): decoded
    /// on first typed access. Loading a model never copies, and weights that are only read
    /// once to be prepacked are decoded into memory the plan can drop afterwards.
    Lazy(Arc<LazyBytes>),
}

#[derive(Debug)]
struct LazyBytes {
    dtype: DType,
    /// Exactly `numel · dtype.size()` little-endian bytes (checked on creation).
    bytes: bytes::Bytes,
    decoded: std::sync::OnceLock<OwnedBox>,
}

impl LazyBytes {
    fn get(&self) -> &OwnedBox {
        self.decoded
            .get_or_init(|| decode_le(self.dtype, &self.bytes))
    }
}

/// Decodes little-endian element bytes (whose length is a whole number of elements).
fn decode_le(dtype: DType, bytes: &[u8]) -> OwnedBox {
    if dtype == DType::Bool {
        return bool::wrap(bytes.iter().map(|&b| b != 0).collect());
    }
    // Strings never get here (the byte constructors refuse them, see `no_byte_form`); were
    // one to, it would decode to no elements rather than panic.
    decode_fixed_le(dtype, bytes).unwrap_or_else(|_| OwnedBox(Owned::String(Vec::new())))
}

/// `decode_le` for the fixed-size, non-bool dtypes.
fn decode_fixed_le(dtype: DType, bytes: &[u8]) -> Result<OwnedBox> {
    let n = bytes.len() / dtype.size();
    with_any_dtype!(dtype, T, {
        let mut v: Vec<T> = vec![T::default(); n];
        // SAFETY: T is a plain numeric or narrow type (not bool, handled above); every bit
        // pattern is valid; `v` holds `n · size_of::<T>()` bytes, and only that many are
        // written (the caller guarantees `bytes` is a whole number of elements).
        let dst = unsafe {
            std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), n * dtype.size())
        };
        dst.copy_from_slice(&bytes[..n * dtype.size()]);
        if cfg!(target_endian = "big") {
            for chunk in dst.chunks_mut(dtype.size()) {
                chunk.reverse();
            }
        }
        Ok(T::wrap(v))
    })
}

/// A dense, row-major tensor.
#[derive(Clone, Debug)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Data,
}

/// Number of elements of a shape, or an error on overflow.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::Op(format!(
                "shape {shape:?} has more elements than fit in memory"
            ))
        })
}

impl Tensor {
    /// Builds a tensor from a row-major vector.
    pub fn from_vec<T: Storable>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n != data.len() {
            return Err(Error::Op(format!(
                "shape {shape:?} needs {n} elements, got {}",
                data.len()
            )));
        }
        Tensor::from_storage(shape, data)
    }

    /// A tensor of the first `numel(shape)` elements of `data`, which may hold more (a spare
    /// buffer's initialized tail, handed back with the storage when the tensor dies).
    pub(crate) fn from_storage<T: Storable>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n > data.len() {
            return Err(Error::Op(format!(
                "shape {shape:?} needs {n} elements, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            dtype: T::DTYPE,
            shape,
            data: Data::Owned(Arc::new(T::wrap(data))),
        })
    }

    /// A 0-d tensor.
    pub fn scalar<T: Storable>(v: T) -> Tensor {
        Tensor {
            dtype: T::DTYPE,
            shape: vec![],
            data: Data::Owned(Arc::new(T::wrap(vec![v]))),
        }
    }

    /// A tensor of zeros (false for bool, empty strings for strings).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if dtype == DType::String {
            return Tensor::from_strings(shape, filled_vec(n, String::new())?);
        }
        with_any_dtype!(dtype, T, {
            Tensor::from_vec(shape, filled_vec(n, T::default())?)
        })
    }

    /// Builds a tensor from an ndarray, in row-major order.
    pub fn from_array<T: Storable>(a: ArrayD<T>) -> Tensor {
        let shape = a.shape().to_vec();
        let n = a.len();
        let data = if a.is_standard_layout() {
            // Contiguous from `offset`: take the vector as is when it holds exactly the
            // elements, else copy the window out.
            let (v, offset) = a.into_raw_vec_and_offset();
            let start = offset.unwrap_or(0);
            if start == 0 && v.len() == n {
                v
            } else {
                v[start..start + n].to_vec()
            }
        } else {
            a.iter().copied().collect()
        };
        Tensor {
            dtype: T::DTYPE,
            shape,
            data: Data::Owned(Arc::new(T::wrap(data))),
        }
    }

    /// A tensor of strings, row-major.
    pub fn from_strings(shape: Vec<usize>, data: Vec<String>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n != data.len() {
            return Err(Error::Op(format!(
                "shape {shape:?} needs {n} strings, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            dtype: DType::String,
            shape,
            data: Data::Owned(Arc::new(OwnedBox(Owned::String(data)))),
        })
    }

    /// The elements of a string tensor; an error for any other dtype.
    pub fn as_strings(&self) -> Result<&[String]> {
        if let Data::Owned(o) = &self.data {
            if let Owned::String(v) = &o.0 {
                return Ok(v);
            }
        }
        Err(Error::Op(format!(
            "expected a string tensor, got {}",
            self.dtype
        )))
    }

    /// Builds a tensor over little-endian bytes without copying them: viewed in place when
    /// aligned, else decoded on first typed access.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, bytes: bytes::Bytes) -> Result<Tensor> {
        no_byte_form(dtype)?;
        let n = checked_numel(&shape)?;
        let expected = n
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::Op("tensor byte size overflows".into()))?;
        if bytes.len() != expected {
            return Err(Error::Op(format!(
                "{dtype} tensor of shape {shape:?} needs {expected} bytes, found {}",
                bytes.len()
            )));
        }
        let aligned = (bytes.as_ptr() as usize).is_multiple_of(dtype.size());
        if dtype != DType::Bool && aligned && cfg!(target_endian = "little") {
            return Ok(Tensor {
                dtype,
                shape,
                data: Data::Mapped(bytes),
            });
        }
        Ok(Tensor {
            dtype,
            shape,
            data: Data::Lazy(Arc::new(LazyBytes {
                dtype,
                bytes,
                decoded: std::sync::OnceLock::new(),
            })),
        })
    }

    /// Copies little-endian bytes into a new owned tensor.
    pub fn from_le_slice(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor> {
        no_byte_form(dtype)?;
        let n = checked_numel(&shape)?;
        if Some(bytes.len()) != n.checked_mul(dtype.size()) {
            return Err(Error::Op(format!(
                "{dtype} tensor of shape {shape:?} needs {n} elements, found {} bytes",
                bytes.len()
            )));
        }
        Ok(Tensor {
            dtype,
            shape,
            data: Data::Owned(Arc::new(decode_le(dtype, bytes))),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the elements take in memory: for strings, their handles and characters.
    pub fn nbytes(&self) -> usize {
        match self.as_strings() {
            Ok(v) => v.iter().map(|s| s.len() + DType::String.size()).sum(),
            Err(_) => self.len() * self.dtype.size(),
        }
    }

    /// The raw bytes of the elements, native endian; empty for strings, which have no byte
    /// form (use `as_strings`).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.data {
            Data::Owned(o) => {
                let bytes = o.as_bytes();
                // Strings have no byte form (and `bytes` is then empty).
                bytes.get(..self.len() * self.dtype.size()).unwrap_or(bytes)
            }
            Data::Mapped(b) => b,
            Data::Lazy(l) => l.get().as_bytes(),
        }
    }

    /// The elements as a typed slice; an error if `T` is not this tensor's dtype.
    pub fn as_slice<T: Storable>(&self) -> Result<&[T]> {
        if T::DTYPE != self.dtype {
            return Err(Error::Op(format!(
                "expected a {} tensor, got {}",
                T::DTYPE,
                self.dtype
            )));
        }
        match &self.data {
            Data::Owned(o) => T::slice(o)
                .and_then(|v| v.get(..self.len()))
                .ok_or_else(|| Error::Op("tensor storage does not match dtype".into())),
            Data::Lazy(l) => T::slice(l.get())
                .ok_or_else(|| Error::Op("tensor storage does not match dtype".into())),
            Data::Mapped(b) => {
                // SAFETY: `Mapped` is only built (in `from_le_bytes`) for non-bool dtypes whose
                // bytes are aligned for the element type and whose length is a whole number of
                // elements; T's dtype equals the tensor's (checked above), and every bit
                // pattern is a valid value of such T. The bytes live as long as `self`.
                Ok(unsafe {
                    std::slice::from_raw_parts(b.as_ptr() as *const T, b.len() / self.dtype.size())
                })
            }
        }
    }

    /// Runs `f` on the elements without keeping a decoded copy: for undecoded bytes (a
    /// misaligned initializer) the copy is a temporary, freed when `f` returns. For weights
    /// read once to be prepacked: the cached copies of every weight would otherwise all be
    /// alive together until the plan is built (fresh pages for each, faulted in one by one).
    pub fn with_slice<T: Storable, R>(&self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        match &self.data {
            Data::Lazy(l) if l.decoded.get().is_none() && T::DTYPE == self.dtype => {
                // f32, the common case, borrows a spare buffer and gives it back.
                let decoded = match l.dtype {
                    DType::F32 => f32::wrap(spare::decoded_f32(&l.bytes)?),
                    _ => decode_le(l.dtype, &l.bytes),
                };
                let result = T::slice(&decoded)
                    .map(f)
                    .ok_or_else(|| Error::Op("tensor storage does not match dtype".into()));
                if let Ok(v) = f32::unwrap(decoded) {
                    spare::give_back_vec(v);
                }
                result
            }
            _ => Ok(f(self.as_slice::<T>()?)),
        }
    }

    /// A read-only ndarray view.
    pub fn view<T: Storable>(&self) -> Result<ArrayViewD<'_, T>> {
        let s = self.as_slice::<T>()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), s).map_err(|e| Error::Op(e.to_string()))
    }

    /// The `f32` storage of a tensor that owns it alone, without copying (all of it, which may
    /// be longer than the tensor); `None` for other dtypes, mapped or shared storage.
    pub(crate) fn into_unique_f32(self) -> Option<Vec<f32>> {
        if self.dtype != DType::F32 {
            return None;
        }
        match self.data {
            Data::Owned(arc) => Arc::try_unwrap(arc).ok().and_then(|o| f32::unwrap(o).ok()),
            Data::Mapped(_) | Data::Lazy(_) => None,
        }
    }

    /// Takes the elements out as a vector, without copying when this is the only reference.
    pub fn into_vec<T: Storable>(self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype {
            return Err(Error::Op(format!(
                "expected a {} tensor, got {}",
                T::DTYPE,
                self.dtype
            )));
        }
        match self.data {
            Data::Owned(arc) => {
                let n = checked_numel(&self.shape)?;
                let storage_err = || Error::Op("tensor storage does not match dtype".into());
                match Arc::try_unwrap(arc) {
                    Ok(owned) => {
                        let mut v = T::unwrap(owned).map_err(|_| storage_err())?;
                        v.truncate(n);
                        Ok(v)
                    }
                    Err(arc) => T::slice(&arc)
                        .and_then(|s| s.get(..n))
                        .map(|s| s.to_vec())
                        .ok_or_else(storage_err),
                }
            }
            Data::Mapped(_) | Data::Lazy(_) => {
                let t = Tensor {
                    data: self.data.clone(),
                    ..self
                };
                Ok(t.as_slice::<T>()?.to_vec())
            }
        }
    }

    /// An owned ndarray copy (or move, when uniquely held).
    pub fn into_array<T: Storable>(self) -> Result<ArrayD<T>> {
        let shape = self.shape.clone();
        let v = self.into_vec::<T>()?;
        ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| Error::Op(e.to_string()))
    }

    /// The same data under a new shape with the same element count.
    pub fn reshape(&self, shape: Vec<usize>) -> Result<Tensor> {
        if checked_numel(&shape)? != self.len() {
            return Err(Error::Op(format!(
                "cannot reshape {:?} into {:?}",
                self.shape, shape
            )));
        }
        Ok(Tensor {
            dtype: self.dtype,
            shape,
            data: self.data.clone(),
        })
    }

    /// Reads integer-like tensors (shape inputs, indices) as i64.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        Ok(match self.dtype {
            DType::I64 => self.as_slice::<i64>()?.to_vec(),
            DType::I32 => self.as_slice::<i32>()?.iter().map(|&v| v as i64).collect(),
            DType::I16 => self.as_slice::<i16>()?.iter().map(|&v| v as i64).collect(),
            DType::I8 => self.as_slice::<i8>()?.iter().map(|&v| v as i64).collect(),
            DType::U8 => self.as_slice::<u8>()?.iter().map(|&v| v as i64).collect(),
            DType::U16 => self.as_slice::<u16>()?.iter().map(|&v| v as i64).collect(),
            DType::U32 => self.as_slice::<u32>()?.iter().map(|&v| v as i64).collect(),
            DType::U64 => self.as_slice::<u64>()?.iter().map(|&v| v as i64).collect(),
            DType::Bool => self.as_slice::<bool>()?.iter().map(|&v| v as i64).collect(),
            d => return Err(Error::Op(format!("expected an integer tensor, got {d}"))),
        })
    }

    /// Reads any numeric or narrow tensor as f64 values (for scalars and small parameters).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        with_any_dtype!(self.dtype, T, {
            Ok(self.as_slice::<T>()?.iter().map(|v| v.to_f64()).collect())
        })
    }

    /// Converts to another dtype, following ONNX `Cast` semantics (saturating for float8).
    pub fn cast(&self, to: DType) -> Result<Tensor> {
        self.cast_with(to, CastOptions::default())
    }

    /// Converts to another dtype; `opts` govern conversions to the narrow float types.
    pub fn cast_with(&self, to: DType, opts: CastOptions) -> Result<Tensor> {
        if to == self.dtype {
            return Ok(self.clone());
        }
        if let Some(t) = string_cast::cast(self, to, opts) {
            return t;
        }
        if let Some(t) = narrow::cast(self, to, opts) {
            return t;
        }
        let shape = self.shape.clone();
        with_dtype!(self.dtype, S, {
            let src = self.as_slice::<S>()?;
            with_dtype!(to, D, {
                let out: Vec<D> = src.iter().map(|&v| cast_elem::<S, D>(v)).collect();
                Tensor::from_vec(shape, out)
            })
        })
    }

    /// The undecoded bytes this tensor views, when it views memory it does not own (a mapped
    /// file): the planner uses this to release the pages of prepacked weights.
    pub fn backing_bytes(&self) -> Option<&[u8]> {
        match &self.data {
            Data::Mapped(b) => Some(b),
            Data::Lazy(l) => Some(&l.bytes),
            Data::Owned(_) => None,
        }
    }

    /// The same tensor without the decoded copy a lazy tensor may have made: the memory is
    /// freed once no other clone holds it, and the next typed access decodes again.
    pub fn without_decoded_copy(&self) -> Tensor {
        match &self.data {
            Data::Lazy(l) if l.decoded.get().is_some() => Tensor {
                data: Data::Lazy(Arc::new(LazyBytes {
                    dtype: l.dtype,
                    bytes: l.bytes.clone(),
                    decoded: std::sync::OnceLock::new(),
                })),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    /// The element count of an `f32` tensor whose bytes must be decoded before they can be
    /// read (a misaligned initializer, not decoded yet); `None` for any other.
    pub(crate) fn undecoded_f32_len(&self) -> Option<usize> {
        match &self.data {
            Data::Lazy(l) if l.dtype == DType::F32 && l.decoded.get().is_none() => {
                Some(l.bytes.len() / 4)
            }
            _ => None,
        }
    }

    /// Copies elements `start..start + dst.len()` of an `f32` tensor (flat, row-major) into
    /// `dst`, decoding them from stored bytes where they cannot be read in place, without
    /// decoding (or caching) the rest: weights packed a block at a time read only that block.
    pub(crate) fn read_f32_into(&self, start: usize, dst: &mut [f32]) -> Result<()> {
        let end = start
            .checked_add(dst.len())
            .filter(|&end| end <= self.len());
        let (Some(end), DType::F32) = (end, self.dtype) else {
            return Err(Error::Op(format!(
                "cannot read {} f32 values at {start} of a {:?} tensor of {}",
                dst.len(),
                self.dtype,
                self.len()
            )));
        };
        match &self.data {
            Data::Lazy(l) if l.decoded.get().is_none() => {
                for (d, v) in dst
                    .iter_mut()
                    .zip(spare::le_f32s(&l.bytes[start * 4..end * 4]))
                {
                    *d = v;
                }
            }
            _ => dst.copy_from_slice(&self.as_slice::<f32>()?[start..end]),
        }
        Ok(())
    }

    /// Whether a typed access has decoded (and cached) a copy of undecoded bytes.
    #[cfg(test)]
    pub(crate) fn holds_decoded_copy(&self) -> bool {
        matches!(&self.data, Data::Lazy(l) if l.decoded.get().is_some())
    }

    /// Whether both tensors have the same dtype, shape and bit-identical elements.
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        self.dtype == other.dtype
            && self.shape == other.shape
            && match (self.as_strings(), other.as_strings()) {
                (Ok(a), Ok(b)) => a == b,
                _ => self.as_bytes() == other.as_bytes(),
            }
    }
}

/// Refuses byte-level construction of string tensors: their elements have no fixed width.
fn no_byte_form(dtype: DType) -> Result<()> {
    if dtype == DType::String {
        return Err(Error::Op(
            "string tensors cannot be built from raw bytes".into(),
        ));
    }
    Ok(())
}

/// Element conversion used by `Cast`: float→int truncates toward zero (saturating), int→int
/// wraps like C, float↔float rounds to nearest.
fn cast_elem<S: Elem, D: Elem>(v: S) -> D {
    use std::any::TypeId;
    // Integer-to-integer casts must not go through f64 (loses precision above 2^53).
    let s_int = !S::DTYPE.is_float() && S::DTYPE != DType::Bool;
    let d_int = !D::DTYPE.is_float() && D::DTYPE != DType::Bool;
    if s_int && d_int {
        let wide: i128 = int_to_i128(v);
        return int_from_i128::<D>(wide);
    }
    if TypeId::of::<D>() == TypeId::of::<bool>() {
        return D::from_f64(if v.to_f64() != 0.0 { 1.0 } else { 0.0 });
    }
    D::from_f64(v.to_f64())
}

fn int_to_i128<S: Elem>(v: S) -> i128 {
    let any = &v as &dyn std::any::Any;
    if let Some(x) = any.downcast_ref::<u64>() {
        return *x as i128;
    }
    if let Some(x) = any.downcast_ref::<i64>() {
        return *x as i128;
    }
    v.to_f64() as i128
}

fn int_from_i128<D: Elem>(v: i128) -> D {
    let mut out = D::default();
    let any = &mut out as &mut dyn std::any::Any;
    if let Some(x) = any.downcast_mut::<i64>() {
        *x = v as i64;
    } else if let Some(x) = any.downcast_mut::<u64>() {
        *x = v as u64;
    } else if let Some(x) = any.downcast_mut::<i32>() {
        *x = v as i32;
    } else if let Some(x) = any.downcast_mut::<u32>() {
        *x = v as u32;
    } else if let Some(x) = any.downcast_mut::<i16>() {
        *x = v as i16;
    } else if let Some(x) = any.downcast_mut::<u16>() {
        *x = v as u16;
    } else if let Some(x) = any.downcast_mut::<i8>() {
        *x = v as i8;
    } else if let Some(x) = any.downcast_mut::<u8>() {
        *x = v as u8;
    }
    out
}

impl<T: Storable> From<ArrayD<T>> for Tensor {
    fn from(a: ArrayD<T>) -> Tensor {
        Tensor::from_array(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_ranges_read_from_stored_bytes_aligned_or_not() {
        let v: Vec<f32> = (0..10).map(|i| i as f32 - 4.5).collect();
        // The values after `lead` bytes: 4 keeps them aligned (allocations are), 1 does not.
        let stored = |lead: usize| {
            let mut bytes = vec![0u8; lead];
            bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            bytes::Bytes::from(bytes).slice(lead..)
        };
        for lead in [4, 1] {
            let t = Tensor::from_le_bytes(DType::F32, vec![2, 5], stored(lead)).unwrap();
            let mut got = [f32::NAN; 4];
            t.read_f32_into(3, &mut got).unwrap();
            assert_eq!(got, v[3..7]);
            t.read_f32_into(6, &mut got).unwrap();
            assert_eq!(got, v[6..10]);
            assert!(t.read_f32_into(7, &mut got).is_err(), "past the end");
            assert!(t.read_f32_into(usize::MAX, &mut got).is_err(), "overflow");
            assert!(!t.holds_decoded_copy(), "nothing decoded beyond the range");
        }
        let ints = Tensor::from_le_bytes(DType::I32, vec![2], bytes::Bytes::from(vec![0u8; 8]));
        assert!(
            ints.unwrap().read_f32_into(0, &mut [0.0]).is_err(),
            "not f32"
        );
    }

    #[test]
    fn mapped_bytes_are_zero_copy_when_aligned() {
        let v: Vec<f32> = vec![1.0, 2.0, 3.0];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let b = bytes::Bytes::from(bytes);
        let t = Tensor::from_le_bytes(DType::F32, vec![3], b.clone()).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0]);
        if (b.as_ptr() as usize).is_multiple_of(4) {
            assert_eq!(t.as_bytes().as_ptr(), b.as_ptr());
        }
        // Misaligned by one byte: copied, same values.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&b);
        let sb = bytes::Bytes::from(shifted).slice(1..);
        let t2 = Tensor::from_le_bytes(DType::F32, vec![3], sb).unwrap();
        // `with_slice` decodes into a temporary and leaves nothing cached …
        let sum = t2.with_slice::<f32, _>(|s| s.iter().sum::<f32>()).unwrap();
        assert_eq!(sum, 6.0);
        if let Data::Lazy(l) = &t2.data {
            assert!(l.decoded.get().is_none());
        }
        assert!(t2.with_slice::<i32, _>(|s| s.len()).is_err());
        // … and reads the cached copy once there is one.
        assert_eq!(t2.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0]);
        assert_eq!(
            t2.with_slice::<f32, _>(|s| s.to_vec()).unwrap(),
            [1.0, 2.0, 3.0]
        );
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        assert!(
            Tensor::from_le_bytes(DType::F32, vec![2], bytes::Bytes::from(vec![0u8; 7])).is_err()
        );
    }

    #[test]
    fn string_tensors_hold_strings_and_refuse_typed_access() {
        let words = vec!["a".to_string(), "bé".to_string()];
        let t = Tensor::from_strings(vec![2, 1], words.clone()).unwrap();
        assert_eq!((t.dtype(), t.len()), (DType::String, 2));
        assert_eq!(t.as_strings().unwrap(), words);
        assert!(t.as_slice::<u8>().is_err());
        assert!(t.clone().into_vec::<f32>().is_err());
        assert!(t.to_f64_vec().is_err());
        // Characters count toward the size: two handles plus 1 + 3 bytes of UTF-8.
        assert_eq!(t.nbytes(), 2 * DType::String.size() + 4);
        assert_eq!(t.reshape(vec![2]).unwrap().as_strings().unwrap(), words);
        assert!(t.bit_eq(&Tensor::from_strings(vec![2, 1], words).unwrap()));
        assert!(!t.bit_eq(&Tensor::zeros(DType::String, vec![2, 1]).unwrap()));
        // Numeric tensors are not strings; strings have no byte form.
        assert!(Tensor::scalar(1f32).as_strings().is_err());
        assert!(Tensor::from_strings(vec![3], vec![String::new()]).is_err());
        assert!(Tensor::from_le_slice(DType::String, vec![0], &[]).is_err());
        assert!(Tensor::from_le_bytes(DType::String, vec![0], bytes::Bytes::new()).is_err());
    }

    #[test]
    fn dtype_dispatch_refuses_strings_with_an_error() {
        fn any(d: DType) -> Result<usize> {
            with_any_dtype!(d, T, { Ok(std::mem::size_of::<T>()) })
        }
        fn compute(d: DType) -> Result<usize> {
            with_dtype!(d, T, { Ok(std::mem::size_of::<T>()) })
        }
        assert!(any(DType::String)
            .unwrap_err()
            .to_string()
            .contains("string"));
        assert!(compute(DType::String)
            .unwrap_err()
            .to_string()
            .contains("string"));
        assert_eq!(DType::from_onnx(8), Some(DType::String));
        assert_eq!(DType::String.onnx_code(), 8);
    }

    #[test]
    fn cast_follows_onnx_rules() {
        let t = Tensor::from_vec(vec![3], vec![-1.7f32, 2.5, 300.0]).unwrap();
        assert_eq!(
            t.cast(DType::I32).unwrap().as_slice::<i32>().unwrap(),
            &[-1, 2, 300]
        );
        let big = Tensor::from_vec(vec![1], vec![i64::MAX]).unwrap();
        assert_eq!(
            big.cast(DType::U64).unwrap().as_slice::<u64>().unwrap(),
            &[i64::MAX as u64]
        );
        assert_eq!(
            t.cast(DType::Bool).unwrap().as_slice::<bool>().unwrap(),
            &[true, true, true]
        );
    }
}
