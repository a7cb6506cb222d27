//! The allowlist of Python globals a tensor file may name, and what calling them builds.
//!
//! Nothing here runs Python: each allowlisted global is a variant of `Global`, and a call to
//! one of torch's tensor rebuild functions produces a `TensorRef` (a dtype, a storage and the
//! view's offset, sizes and strides) that the container reader later turns into a `Tensor`
//! once it knows where that storage's bytes are.

use super::pickle::{Heap, Value};
use crate::tensor::DType;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// A torch element type, as named by `torch.<dtype>` or a `torch.<Type>Storage` class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TorchDtype {
    /// torch's name (`float32`), for messages.
    pub name: &'static str,
    /// Bytes per element.
    pub size: usize,
    /// The runtime type, or `None` for types torch has and the runtime does not.
    pub dtype: Option<DType>,
}

/// (dtype name, typed storage class, element size, runtime type). The unsupported types are
/// listed so that a file using them fails with the tensor's key and the type's name rather
/// than as an unknown global.
const TORCH_DTYPES: &[(&str, Option<&str>, usize, Option<DType>)] = &[
    ("float32", Some("FloatStorage"), 4, Some(DType::F32)),
    ("float64", Some("DoubleStorage"), 8, Some(DType::F64)),
    ("float16", Some("HalfStorage"), 2, Some(DType::F16)),
    ("bfloat16", Some("BFloat16Storage"), 2, Some(DType::BF16)),
    ("int64", Some("LongStorage"), 8, Some(DType::I64)),
    ("int32", Some("IntStorage"), 4, Some(DType::I32)),
    ("int16", Some("ShortStorage"), 2, Some(DType::I16)),
    ("int8", Some("CharStorage"), 1, Some(DType::I8)),
    ("uint8", Some("ByteStorage"), 1, Some(DType::U8)),
    ("bool", Some("BoolStorage"), 1, Some(DType::Bool)),
    // Types newer than typed storages: saved with `_rebuild_tensor_v3` over an untyped one.
    ("uint16", None, 2, Some(DType::U16)),
    ("uint32", None, 4, Some(DType::U32)),
    ("uint64", None, 8, Some(DType::U64)),
    ("complex32", Some("ComplexHalfStorage"), 4, None),
    ("complex64", Some("ComplexFloatStorage"), 8, None),
    ("complex128", Some("ComplexDoubleStorage"), 16, None),
    ("qint8", Some("QInt8Storage"), 1, None),
    ("quint8", Some("QUInt8Storage"), 1, None),
    ("qint32", Some("QInt32Storage"), 4, None),
    ("quint4x2", Some("QUInt4x2Storage"), 1, None),
    ("quint2x4", Some("QUInt2x4Storage"), 1, None),
    ("float8_e4m3fn", None, 1, None),
    ("float8_e4m3fnuz", None, 1, None),
    ("float8_e5m2", None, 1, None),
    ("float8_e5m2fnuz", None, 1, None),
    ("float8_e8m0fnu", None, 1, None),
    ("float4_e2m1fn_x2", None, 1, None),
];

/// `torch.UntypedStorage`: bytes, whose views say their own dtype (`_rebuild_tensor_v3`).
const UNTYPED: TorchDtype = TorchDtype {
    name: "uint8",
    size: 1,
    dtype: Some(DType::U8),
};

fn torch_dtype(entry: &(&'static str, Option<&str>, usize, Option<DType>)) -> TorchDtype {
    TorchDtype {
        name: entry.0,
        size: entry.2,
        dtype: entry.3,
    }
}

/// The globals a tensor file may reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Global {
    /// `collections.OrderedDict` (state_dicts, and empty hook dicts).
    OrderedDict,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)`.
    RebuildTensor,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
    /// hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor_v3(..., hooks, dtype[, metadata])`: untyped storage.
    RebuildTensorV3,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(tensor, requires_grad, hooks, state)`.
    RebuildParameterWithState,
    /// A `torch.<Type>Storage` class (or `UntypedStorage`), named in persistent IDs.
    StorageType(TorchDtype),
    /// `torch.<dtype>`.
    Dtype(TorchDtype),
}

impl fmt::Display for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Global::OrderedDict => f.write_str("collections.OrderedDict"),
            Global::RebuildTensor => f.write_str("torch._utils._rebuild_tensor"),
            Global::RebuildTensorV2 => f.write_str("torch._utils._rebuild_tensor_v2"),
            Global::RebuildTensorV3 => f.write_str("torch._utils._rebuild_tensor_v3"),
            Global::RebuildParameter => f.write_str("torch._utils._rebuild_parameter"),
            Global::RebuildParameterWithState => {
                f.write_str("torch._utils._rebuild_parameter_with_state")
            }
            Global::StorageType(d) => write!(f, "a torch storage type ({})", d.name),
            Global::Dtype(d) => write!(f, "torch.{}", d.name),
        }
    }
}

/// Resolves `module.name` against the allowlist; anything else is refused, naming it.
pub(super) fn resolve_global(module: &str, name: &str) -> Result<Global, String> {
    let g = match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_tensor_v3") => Some(Global::RebuildTensorV3),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameterWithState)
        }
        ("torch" | "torch.storage", "UntypedStorage") => Some(Global::StorageType(UNTYPED)),
        ("torch", _) => TORCH_DTYPES.iter().find_map(|e| {
            if e.0 == name {
                Some(Global::Dtype(torch_dtype(e)))
            } else if e.1 == Some(name) {
                Some(Global::StorageType(torch_dtype(e)))
            } else {
                None
            }
        }),
        _ => None,
    };
    g.ok_or_else(|| {
        format!(
            "the pickle references the Python global `{module}.{name}`, which a weights \
             file does not need; infer reads tensor data only and never runs pickled code. \
             If this is a whole model saved with `torch.save(model)`, save its weights \
             instead: `torch.save(model.state_dict(), path)` (or use safetensors)"
        )
    })
}

/// A tensor storage named by a persistent ID: which stored blob, and which bytes of it.
#[derive(Debug)]
pub(super) struct StorageRef {
    /// The storage's key: `data/<key>` in a zip, a position in the legacy key list.
    pub key: Rc<str>,
    /// The element type the storage was saved as (byte-sized for untyped storages).
    pub dtype: TorchDtype,
    /// Where this storage starts in the blob (non-zero only for legacy storage views).
    pub byte_offset: u64,
    /// The storage's declared size in bytes.
    pub nbytes: u64,
}

/// A tensor as a view of a storage: element `i` (multi-index) is at element
/// `offset + Σ i_d·stride_d` of the storage, counted in `dtype` elements.
#[derive(Debug)]
pub(super) struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub dtype: TorchDtype,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
    /// A property the runtime cannot honour (e.g. a lazy negation bit), reported with the
    /// tensor's key when it is materialized.
    pub unsupported: Option<String>,
}

/// The storages seen so far, by key. The legacy format needs each key's first element size
/// to read the storage's length prefix.
#[derive(Debug, Default)]
pub(super) struct StorageTable(HashMap<Rc<str>, Rc<StorageRef>>);

impl StorageTable {
    pub(super) fn get(&self, key: &str) -> Option<&Rc<StorageRef>> {
        self.0.get(key)
    }

    /// `BINPERSID` with torch's ID `('storage', type, key, location, numel[, view])`.
    pub(super) fn persistent_load(
        &mut self,
        heap: &Heap,
        pid: &Value,
    ) -> Result<Rc<StorageRef>, String> {
        let items = heap
            .tuple(pid)
            .ok_or_else(|| format!("persistent ID is {}, not a tuple", pid.kind()))?;
        let (kind, ty, key, numel, view) = match items {
            [kind, ty, key, _location, numel] => (kind, ty, key, numel, None),
            [kind, ty, key, _location, numel, view] => (kind, ty, key, numel, Some(view)),
            _ => {
                return Err(format!(
                    "persistent ID has {} fields, expected 5 or 6",
                    items.len()
                ))
            }
        };
        if !matches!(kind, Value::Str(s) if &**s == "storage") {
            return Err("persistent ID is not a storage (a TorchScript archive?)".into());
        }
        let Value::Global(Global::StorageType(dtype)) = ty else {
            return Err(format!(
                "storage type is {}, not a torch storage class",
                ty.kind()
            ));
        };
        let Value::Str(key) = key else {
            return Err(format!("storage key is {}, not a string", key.kind()));
        };
        let nbytes = elements_to_bytes(non_negative(numel, "storage size")?, dtype.size)?;
        let storage = match view {
            None | Some(Value::None) => Rc::new(StorageRef {
                key: key.clone(),
                dtype: *dtype,
                byte_offset: 0,
                nbytes,
            }),
            // Old legacy files: `(view_key, offset, size)`, a window of the root storage.
            Some(v) => match heap.tuple(v) {
                Some([_view_key, offset, size]) => Rc::new(StorageRef {
                    key: key.clone(),
                    dtype: *dtype,
                    byte_offset: elements_to_bytes(
                        non_negative(offset, "view offset")?,
                        dtype.size,
                    )?,
                    nbytes: elements_to_bytes(non_negative(size, "view size")?, dtype.size)?,
                }),
                _ => return Err("malformed storage view in a persistent ID".into()),
            },
        };
        self.0.entry(key.clone()).or_insert_with(|| storage.clone());
        Ok(storage)
    }
}

/// Interprets a call to an allowlisted global (except `OrderedDict()`, which needs the heap
/// mutably and is handled by the pickle machine).
pub(super) fn call(g: &Global, args: &[Value], heap: &Heap) -> Result<Value, String> {
    match (g, args) {
        (Global::RebuildTensor, [storage, offset, size, stride]) => {
            rebuild_tensor(heap, storage, offset, size, stride, None, None)
        }
        (Global::RebuildTensorV2, [storage, offset, size, stride, _grad, _hooks, rest @ ..])
            if rest.len() <= 1 =>
        {
            rebuild_tensor(heap, storage, offset, size, stride, None, rest.first())
        }
        (
            Global::RebuildTensorV3,
            [storage, offset, size, stride, _grad, _hooks, dtype, rest @ ..],
        ) if rest.len() <= 1 => {
            let Value::Global(Global::Dtype(dtype)) = dtype else {
                return Err(format!("{g}: dtype argument is {}", dtype.kind()));
            };
            rebuild_tensor(
                heap,
                storage,
                offset,
                size,
                stride,
                Some(*dtype),
                rest.first(),
            )
        }
        (Global::RebuildParameter, [t @ Value::Tensor(_), _, _])
        | (Global::RebuildParameterWithState, [t @ Value::Tensor(_), _, _, _]) => Ok(t.clone()),
        (Global::StorageType(_) | Global::Dtype(_), _) => Err(format!("{g} is not callable")),
        _ => Err(format!(
            "unexpected arguments for {g}: ({})",
            args.iter().map(Value::kind).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn rebuild_tensor(
    heap: &Heap,
    storage: &Value,
    offset: &Value,
    size: &Value,
    stride: &Value,
    view_dtype: Option<TorchDtype>,
    metadata: Option<&Value>,
) -> Result<Value, String> {
    let Value::Storage(storage) = storage else {
        return Err(format!(
            "tensor storage is {}, not a storage",
            storage.kind()
        ));
    };
    let size = int_tuple(heap, size, "tensor size")?;
    let stride = int_tuple(heap, stride, "tensor stride")?;
    if size.len() != stride.len() {
        return Err(format!(
            "tensor has {} sizes but {} strides",
            size.len(),
            stride.len()
        ));
    }
    // torch writes metadata only when it is non-empty: the conjugate or negative bit of a
    // lazy view, which would change the values.
    let unsupported = metadata
        .filter(|m| !heap.is_empty_dict(m))
        .map(|_| "the tensor is a lazy conjugate/negative view (tensor metadata)".to_string());
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        dtype: view_dtype.unwrap_or(storage.dtype),
        offset: non_negative(offset, "storage offset")?,
        size,
        stride,
        unsupported,
    })))
}

fn non_negative(v: &Value, what: &str) -> Result<u64, String> {
    match v {
        Value::Int(i) => u64::try_from(*i).map_err(|_| format!("{what} is negative ({i})")),
        other => Err(format!("{what} is {}, not an int", other.kind())),
    }
}

fn int_tuple(heap: &Heap, v: &Value, what: &str) -> Result<Vec<u64>, String> {
    heap.tuple(v)
        .ok_or_else(|| format!("{what} is {}, not a tuple", v.kind()))?
        .iter()
        .map(|x| non_negative(x, what))
        .collect()
}

fn elements_to_bytes(n: u64, size: usize) -> Result<u64, String> {
    n.checked_mul(size as u64)
        .ok_or_else(|| format!("{n} elements of {size} bytes overflow"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes_and_dtypes_resolve_to_element_types() {
        let storage = |name| match resolve_global("torch", name) {
            Ok(Global::StorageType(d)) => (d.size, d.dtype),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(storage("FloatStorage"), (4, Some(DType::F32)));
        assert_eq!(storage("BFloat16Storage"), (2, Some(DType::BF16)));
        assert_eq!(storage("BoolStorage"), (1, Some(DType::Bool)));
        assert_eq!(storage("ComplexDoubleStorage"), (16, None));
        assert_eq!(
            resolve_global("torch.storage", "UntypedStorage"),
            Ok(Global::StorageType(UNTYPED))
        );
        let dtype = |name| match resolve_global("torch", name) {
            Ok(Global::Dtype(d)) => (d.size, d.dtype),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(dtype("uint64"), (8, Some(DType::U64)));
        assert_eq!(dtype("float8_e4m3fn"), (1, None));
        // Only torch's own names: no aliases, no other attributes of `torch`.
        assert!(resolve_global("torch", "float").is_err());
        assert!(resolve_global("torch", "load").is_err());
        assert!(resolve_global("torch._utils", "_rebuild_qtensor").is_err());
    }

    #[test]
    fn rebuild_calls_check_their_arguments() {
        let heap = Heap::default();
        let err = call(&Global::RebuildTensorV2, &[Value::Int(1)], &heap).unwrap_err();
        assert!(err.contains("unexpected arguments for torch._utils._rebuild_tensor_v2: (an int)"));
        let err = call(&Global::Dtype(UNTYPED), &[], &heap).unwrap_err();
        assert!(err.contains("torch.uint8 is not callable"), "{err}");
        let err = call(
            &Global::RebuildParameter,
            &[Value::None, Value::None, Value::None],
            &heap,
        )
        .unwrap_err();
        assert!(err.contains("unexpected arguments"), "{err}");
    }
}
