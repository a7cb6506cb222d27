//! `ai.onnx.ml.LabelEncoder` (opsets 2 to 4): maps each element of X through a key → value
//! table, to a default where X is not a key. (Opset 1's form, a list of classes, is
//! `ClassList`.)
//!
//! Keys and values come from one of `keys_{strings,int64s,floats,tensor}` and
//! `values_{strings,int64s,floats,tensor}`; the table is built once, and X's elements are
//! looked up by type: strings as text, integers as i64, floats by value (with -0 equal to 0
//! and every NaN equal, as opset 4 asks).

use super::util::input;
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::ir::{Attr, Attrs};
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err, with_dtype};
use std::collections::HashMap;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    if ctx.node.domain != "ai.onnx.ml" || op != "LabelEncoder" {
        return None;
    }
    Some(match ctx.opset {
        1 => ClassList::build(ctx.attrs()).map(|k| Box::new(k) as Box<dyn Kernel>),
        _ => LabelEncoder::build(ctx.attrs()).map(|k| Box::new(k) as Box<dyn Kernel>),
    })
}

/// Opset 1's LabelEncoder: strings to their positions in `classes_strings`, or positions
/// back to strings, by the type of X.
#[derive(Debug)]
struct ClassList {
    classes: Vec<String>,
    position: HashMap<String, i64>,
    default_int64: i64,
    default_string: String,
}

impl ClassList {
    fn build(attrs: &Attrs) -> Result<ClassList> {
        let classes = attrs
            .strings("classes_strings")?
            .unwrap_or_default()
            .to_vec();
        let position = index_of(classes.iter().cloned())
            .into_iter()
            .map(|(k, i)| (k, i as i64))
            .collect();
        Ok(ClassList {
            classes,
            position,
            default_int64: attrs.int_or("default_int64", -1)?,
            default_string: attrs.string_or("default_string", "_Unused")?.to_string(),
        })
    }
}

impl Kernel for ClassList {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let shape = x.shape().to_vec();
        if let Ok(s) = x.as_strings() {
            let out = s
                .iter()
                .map(|s| self.position.get(s).copied().unwrap_or(self.default_int64))
                .collect();
            return Ok(vec![Tensor::from_vec(shape, out)?]);
        }
        ensure!(
            x.dtype() == DType::I64,
            "X must be string or int64, got {}",
            x.dtype()
        );
        let out = x
            .as_slice::<i64>()?
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.classes.get(i))
                    .unwrap_or(&self.default_string)
                    .clone()
            })
            .collect();
        Ok(vec![Tensor::from_strings(shape, out)?])
    }
}

/// The key table, by the kind of key.
#[derive(Debug)]
enum Lookup {
    Strings(HashMap<String, usize>),
    Ints(HashMap<i64, usize>),
    /// Keyed by `float_key`.
    Floats(HashMap<u64, usize>),
}

/// The bits a float key is compared by: all zeros equal, all NaNs equal.
fn float_key(v: f64) -> u64 {
    match v {
        v if v.is_nan() => f64::NAN.to_bits(),
        0.0 => 0,
        v => v.to_bits(),
    }
}

#[derive(Debug)]
struct LabelEncoder {
    keys: Lookup,
    /// The values (1-D), one per key, then the default as its last element: a miss reads
    /// index `values.len() - 1`.
    values: Tensor,
}

/// The tensor an attribute family gives: `{prefix}_strings`, `_int64s`, `_floats` or
/// `_tensor`, whichever is present (exactly one may be).
fn list_attr(attrs: &Attrs, prefix: &str) -> Result<Tensor> {
    let found: Vec<Tensor> = ["strings", "int64s", "floats", "tensor"]
        .iter()
        .filter_map(|kind| attrs.get(&format!("{prefix}_{kind}")))
        .map(|a| match a {
            Attr::Strings(v) => Tensor::from_strings(vec![v.len()], v.clone()),
            Attr::Ints(v) => Tensor::from_vec(vec![v.len()], v.clone()),
            Attr::Floats(v) => Tensor::from_vec(vec![v.len()], v.clone()),
            Attr::Tensor(t) => t.reshape(vec![t.len()]),
            _ => Err(op_err!("attribute {prefix}_* has the wrong type")),
        })
        .collect::<Result<_>>()?;
    match <[Tensor; 1]>::try_from(found) {
        Ok([t]) => Ok(t),
        Err(v) => Err(op_err!(
            "exactly one {prefix}_* attribute must be given, found {}",
            v.len()
        )),
    }
}

/// The default for values of `dtype`: `default_tensor` when given, else the typed default
/// attribute, else the spec's ("_Unused", -1, -0.0).
fn default_value(attrs: &Attrs, dtype: DType) -> Result<Tensor> {
    if let Some(t) = attrs.tensor("default_tensor")? {
        ensure!(
            t.len() == 1 && t.dtype() == dtype,
            "default_tensor must hold one {dtype}, got {} of {}",
            t.len(),
            t.dtype()
        );
        return t.reshape(vec![1]);
    }
    match dtype {
        DType::String => {
            let s = attrs.string_or("default_string", "_Unused")?;
            Tensor::from_strings(vec![1], vec![s.to_string()])
        }
        d if d.is_float() => Tensor::scalar(attrs.float_or("default_float", -0.0)? as f64)
            .reshape(vec![1])?
            .cast(d),
        d => Tensor::scalar(attrs.int_or("default_int64", -1)?)
            .reshape(vec![1])?
            .cast(d),
    }
}

impl LabelEncoder {
    fn build(attrs: &Attrs) -> Result<LabelEncoder> {
        let keys = list_attr(attrs, "keys")?;
        let values = list_attr(attrs, "values")?;
        ensure!(
            keys.len() == values.len(),
            "{} keys but {} values",
            keys.len(),
            values.len()
        );
        let default = default_value(attrs, values.dtype())?;
        let keys = match keys.dtype() {
            DType::String => Lookup::Strings(index_of(keys.as_strings()?.iter().cloned())),
            d if d.is_float() => {
                Lookup::Floats(index_of(keys.to_f64_vec()?.into_iter().map(float_key)))
            }
            _ => Lookup::Ints(index_of(keys.to_i64_vec()?)),
        };
        let values = concat_1d(&values, &default)?;
        Ok(LabelEncoder { keys, values })
    }

    /// For each element of `x`, the index of its value (the default's when not a key).
    fn indices(&self, x: &Tensor) -> Result<Vec<usize>> {
        let miss = self.values.len() - 1;
        Ok(match &self.keys {
            Lookup::Strings(m) => x
                .as_strings()?
                .iter()
                .map(|s| m.get(s.as_str()).copied().unwrap_or(miss))
                .collect(),
            Lookup::Ints(m) => {
                ensure!(
                    !x.dtype().is_float() && x.dtype() != DType::String,
                    "the keys are integers, X is {}",
                    x.dtype()
                );
                x.to_i64_vec()?
                    .iter()
                    .map(|k| m.get(k).copied().unwrap_or(miss))
                    .collect()
            }
            Lookup::Floats(m) => {
                ensure!(
                    x.dtype().is_float(),
                    "the keys are floats, X is {}",
                    x.dtype()
                );
                x.to_f64_vec()?
                    .into_iter()
                    .map(|k| m.get(&float_key(k)).copied().unwrap_or(miss))
                    .collect()
            }
        })
    }
}

/// Each key's position (the first, for a repeated key).
fn index_of<K: std::hash::Hash + Eq>(keys: impl IntoIterator<Item = K>) -> HashMap<K, usize> {
    let mut m = HashMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        m.entry(k).or_insert(i);
    }
    m
}

/// `a` followed by `b`, both 1-D of one dtype.
fn concat_1d(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let n = a.len() + b.len();
    if a.dtype() == DType::String {
        let v = [a.as_strings()?, b.as_strings()?].concat();
        return Tensor::from_strings(vec![n], v);
    }
    with_dtype!(a.dtype(), T, {
        let v = [a.as_slice::<T>()?, b.as_slice::<T>()?].concat();
        Tensor::from_vec(vec![n], v)
    })
}

/// The elements of a 1-D `values` at `indices`, shaped `shape`.
fn gather(values: &Tensor, indices: &[usize], shape: Vec<usize>) -> Result<Tensor> {
    if values.dtype() == DType::String {
        let v = values.as_strings()?;
        return Tensor::from_strings(shape, indices.iter().map(|&i| v[i].clone()).collect());
    }
    with_dtype!(values.dtype(), T, {
        let v = values.as_slice::<T>()?;
        Tensor::from_vec(shape, indices.iter().map(|&i| v[i]).collect())
    })
}

impl Kernel for LabelEncoder {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let indices = self.indices(x)?;
        Ok(vec![gather(&self.values, &indices, x.shape().to_vec())?])
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{Attr, Attrs, Node};
    use crate::ops::movement::testing::{run_node, t, vals};
    use crate::tensor::{DType, Tensor};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn encode(attrs: Vec<(&str, Attr)>, x: &Tensor) -> crate::error::Result<Tensor> {
        encode_at(4, attrs, x)
    }

    fn encode_at(opset: i64, attrs: Vec<(&str, Attr)>, x: &Tensor) -> crate::error::Result<Tensor> {
        let node = Node {
            name: "le".into(),
            op_type: "LabelEncoder".into(),
            domain: "ai.onnx.ml".into(),
            inputs: vec![Some(0)],
            outputs: vec![Some(1)],
            attrs: Attrs(attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        };
        Ok(run_node(&node, opset, &[Some(x)])?.remove(0))
    }

    #[test]
    fn strings_to_ints_with_and_without_a_default() {
        let x = Tensor::from_strings(vec![5], strings(&["a", "b", "c", "d", "a"])).unwrap();
        let table = || {
            vec![
                ("keys_strings", Attr::Strings(strings(&["a", "b", "c"]))),
                ("values_int64s", Attr::Ints(vec![0, 1, 2])),
            ]
        };
        assert_eq!(vals::<i64>(&encode(table(), &x).unwrap()), [0, 1, 2, -1, 0]);
        let mut with_default = table();
        with_default.push(("default_int64", Attr::Int(42)));
        assert_eq!(
            vals::<i64>(&encode(with_default, &x).unwrap()),
            [0, 1, 2, 42, 0]
        );
    }

    #[test]
    fn ints_to_strings_keep_the_shape() {
        let x = t(&[2, 2], vec![7i64, 3, 9, 7]);
        let y = encode(
            vec![
                ("keys_int64s", Attr::Ints(vec![3, 7])),
                (
                    "values_strings",
                    Attr::Strings(strings(&["three", "seven"])),
                ),
            ],
            &x,
        )
        .unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(
            y.as_strings().unwrap(),
            strings(&["seven", "three", "_Unused", "seven"])
        );
    }

    #[test]
    fn float_keys_match_zero_of_either_sign_and_nan() {
        let x = t(&[4], vec![-0.0f32, f32::NAN, 1.5, 2.0]);
        let y = encode(
            vec![
                ("keys_floats", Attr::Floats(vec![0.0, f32::NAN, 1.5])),
                ("values_floats", Attr::Floats(vec![10.0, 20.0, 30.0])),
                ("default_float", Attr::Float(-1.0)),
            ],
            &x,
        )
        .unwrap();
        assert_eq!(vals::<f32>(&y), [10.0, 20.0, 30.0, -1.0]);
    }

    #[test]
    fn tensor_attributes_give_keys_values_and_default() {
        let keys = Tensor::from_strings(vec![2], strings(&["x", "y"])).unwrap();
        let x = Tensor::from_strings(vec![3], strings(&["y", "z", "x"])).unwrap();
        let y = encode(
            vec![
                ("keys_tensor", Attr::Tensor(keys)),
                ("values_tensor", Attr::Tensor(t(&[2], vec![1i16, 2]))),
                ("default_tensor", Attr::Tensor(t(&[1], vec![42i16]))),
            ],
            &x,
        )
        .unwrap();
        assert_eq!((y.dtype(), vals::<i16>(&y)), (DType::I16, vec![2, 42, 1]));
    }

    #[test]
    fn opset_1_maps_between_classes_and_positions() {
        let classes = || {
            vec![
                ("classes_strings", Attr::Strings(strings(&["cat", "dog"]))),
                ("default_string", Attr::String("?".into())),
            ]
        };
        let x = Tensor::from_strings(vec![3], strings(&["dog", "cow", "cat"])).unwrap();
        assert_eq!(
            vals::<i64>(&encode_at(1, classes(), &x).unwrap()),
            [1, -1, 0]
        );
        let y = encode_at(1, classes(), &t(&[3], vec![0i64, 2, -1])).unwrap();
        assert_eq!(y.as_strings().unwrap(), strings(&["cat", "?", "?"]));
        assert!(encode_at(1, classes(), &t(&[1], vec![0f32])).is_err());
    }

    #[test]
    fn malformed_tables_and_mismatched_inputs_are_errors() {
        let x = t(&[1], vec![1i64]);
        let ints = |v: &[i64]| Attr::Ints(v.to_vec());
        // Counts differ.
        assert!(encode(
            vec![
                ("keys_int64s", ints(&[1, 2])),
                ("values_int64s", ints(&[1]))
            ],
            &x
        )
        .is_err());
        // Two key attributes.
        let two = vec![
            ("keys_int64s", ints(&[1])),
            ("keys_floats", Attr::Floats(vec![1.0])),
            ("values_int64s", ints(&[1])),
        ];
        assert!(encode(two, &x).is_err());
        // Integer keys, string input.
        let s = Tensor::from_strings(vec![1], strings(&["1"])).unwrap();
        assert!(encode(
            vec![("keys_int64s", ints(&[1])), ("values_int64s", ints(&[2]))],
            &s
        )
        .is_err());
        // Default of another type than the values.
        let bad_default = vec![
            ("keys_int64s", ints(&[1])),
            ("values_int64s", ints(&[2])),
            ("default_tensor", Attr::Tensor(t(&[1], vec![1f32]))),
        ];
        assert!(encode(bad_default, &x).is_err());
    }
}
