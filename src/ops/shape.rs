//! Ops that compute or change shapes without moving data much (Reshape, Shape, Unsqueeze,
//! Expand, Range, ...). Reshape-like ops share the input's storage instead of copying it.

use super::movement::strided::{view_tensor, View};
use super::movement::{axis_of, dims_from_i64, filled_vec};
use super::util::{broadcast_shapes, input, normalize_axis, opt_input, strides_of};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::ir::Attr;
use crate::tensor::{checked_numel, DType, Elem, Storable, Tensor, Value};
use crate::{ensure, op_err, with_dtype};

/// Longest output Range may produce: far beyond any real use, short of exhausting memory.
const MAX_RANGE_LEN: usize = 1 << 28;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "Reshape" => Reshape::build(ctx),
        "Flatten" => Flatten::build(ctx),
        "Squeeze" => Squeeze::build(ctx),
        "Unsqueeze" => Unsqueeze::build(ctx),
        "Shape" => ShapeOf::build(ctx),
        "Size" => Ok(Box::new(Size)),
        "Expand" => Ok(Box::new(Expand)),
        "ConstantOfShape" => ConstantOfShape::build(ctx),
        "Range" => Ok(Box::new(Range)),
        "Identity" => Ok(Box::new(Identity)),
        "Dropout" => Ok(Box::new(Dropout {
            mask: ctx.node.outputs.len() > 1,
        })),
        "Constant" => Constant::build(ctx),
        "EyeLike" => EyeLike::build(ctx),
        "NonZero" => Ok(Box::new(NonZero)),
        _ => return None,
    })
}

/// Axes given as an attribute before `input_from_opset`, as optional input 1 from then on.
fn axes_arg(ctx: &BuildCtx, input_from_opset: i64) -> Result<Option<Vec<i64>>> {
    if ctx.opset < input_from_opset {
        Ok(ctx.attrs().ints("axes")?.map(<[i64]>::to_vec))
    } else {
        Ok(None)
    }
}

/// Reshape: `0` copies the input dimension (unless `allowzero`), `-1` is inferred.
#[derive(Debug)]
struct Reshape {
    allowzero: bool,
    /// Opsets 1-4 took the shape as an attribute.
    shape_attr: Option<Vec<i64>>,
}

impl Reshape {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let shape_attr = if ctx.opset < 5 {
            let s = ctx.attrs().ints("shape")?;
            Some(
                s.ok_or_else(|| op_err!("Reshape needs a 'shape' attribute"))?
                    .to_vec(),
            )
        } else {
            None
        };
        Ok(Box::new(Reshape {
            allowzero: ctx.attrs().int_or("allowzero", 0)? != 0,
            shape_attr,
        }))
    }

    fn target(&self, from: &[usize], len: usize, spec: &[i64]) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(spec.len());
        let mut inferred = None;
        for (i, &d) in spec.iter().enumerate() {
            out.push(match d {
                -1 => {
                    ensure!(inferred.is_none(), "shape {spec:?} has more than one -1");
                    inferred = Some(i);
                    1
                }
                0 if !self.allowzero => *from
                    .get(i)
                    .ok_or_else(|| op_err!("shape {spec:?} copies dimension {i} of {from:?}"))?,
                d => {
                    usize::try_from(d).map_err(|_| op_err!("invalid dimension {d} in {spec:?}"))?
                }
            });
        }
        if let Some(i) = inferred {
            let known = checked_numel(&out)?;
            ensure!(
                known != 0 && len.is_multiple_of(known),
                "cannot infer -1 reshaping {from:?} into {spec:?}"
            );
            out[i] = len / known;
        }
        Ok(out)
    }
}

impl Kernel for Reshape {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let spec = match &self.shape_attr {
            Some(s) => s.clone(),
            None => input(inputs, 1)?.to_i64_vec()?,
        };
        let shape = self.target(x.shape(), x.len(), &spec)?;
        Ok(vec![x.reshape(shape)?])
    }
}

/// Flatten into 2-D at `axis`.
#[derive(Debug)]
struct Flatten {
    axis: i64,
}

impl Flatten {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Flatten {
            axis: ctx.attrs().int_or("axis", 1)?,
        }))
    }
}

impl Kernel for Flatten {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        // Unlike most axes, Flatten's may equal the rank (negative ones still count from it).
        let r = x.rank() as i64;
        ensure!(
            (-r..=r).contains(&self.axis),
            "axis {} is out of range for rank {r}",
            self.axis
        );
        let axis = (if self.axis < 0 {
            self.axis + r
        } else {
            self.axis
        }) as usize;
        let outer = x.shape()[..axis].iter().product();
        let inner = x.shape()[axis..].iter().product();
        Ok(vec![x.reshape(vec![outer, inner])?])
    }
}

/// Squeeze: drops the given size-1 axes, or all of them.
#[derive(Debug)]
struct Squeeze {
    axes_attr: Option<Vec<i64>>,
}

impl Squeeze {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Squeeze {
            axes_attr: axes_arg(ctx, 13)?,
        }))
    }
}

impl Kernel for Squeeze {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axes = match (&self.axes_attr, opt_input(inputs, 1)) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(t)) => Some(t.to_i64_vec()?),
            (None, None) => None,
        };
        let mut drop = vec![false; x.rank()];
        // An empty axes list squeezes every size-1 axis, like an absent one (as onnxruntime).
        match axes.filter(|a| !a.is_empty()) {
            Some(axes) => {
                for a in axes {
                    let d = axis_of(a, x.rank())?;
                    ensure!(!drop[d], "axis {a} is listed twice");
                    ensure!(
                        x.shape()[d] == 1,
                        "cannot squeeze axis {a} of size {}",
                        x.shape()[d]
                    );
                    drop[d] = true;
                }
            }
            None => drop = x.shape().iter().map(|&n| n == 1).collect(),
        }
        let shape = x
            .shape()
            .iter()
            .zip(&drop)
            .filter(|(_, &d)| !d)
            .map(|(&n, _)| n)
            .collect();
        Ok(vec![x.reshape(shape)?])
    }
}

/// Unsqueeze: inserts size-1 axes at the given output positions.
#[derive(Debug)]
struct Unsqueeze {
    axes_attr: Option<Vec<i64>>,
}

impl Unsqueeze {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let axes_attr = axes_arg(ctx, 13)?;
        ensure!(
            ctx.opset >= 13 || axes_attr.is_some(),
            "Unsqueeze needs an 'axes' attribute"
        );
        Ok(Box::new(Unsqueeze { axes_attr }))
    }
}

impl Kernel for Unsqueeze {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axes = match &self.axes_attr {
            Some(a) => a.clone(),
            None => input(inputs, 1)?.to_i64_vec()?,
        };
        let rank = x.rank() + axes.len();
        let mut inserted = vec![false; rank];
        for &a in &axes {
            let d = normalize_axis(a, rank)?;
            ensure!(!inserted[d], "axis {a} is listed twice");
            inserted[d] = true;
        }
        let mut dims = x.shape().iter();
        let shape = inserted
            .iter()
            .map(|&new| {
                if new {
                    1
                } else {
                    dims.next().copied().unwrap_or(1)
                }
            })
            .collect();
        Ok(vec![x.reshape(shape)?])
    }
}

/// Shape, optionally of the dimension range `start..end` (opset 15).
#[derive(Debug)]
struct ShapeOf {
    start: i64,
    end: Option<i64>,
}

impl ShapeOf {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(ShapeOf {
            start: ctx.attrs().int_or("start", 0)?,
            end: ctx.attrs().int("end")?,
        }))
    }
}

impl Kernel for ShapeOf {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let r = x.rank() as i64;
        // Out-of-range bounds clamp, as in Slice.
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (start, end) = (clamp(self.start), clamp(self.end.unwrap_or(r)));
        let dims: Vec<i64> = x.shape()[start..end.max(start)]
            .iter()
            .map(|&d| d as i64)
            .collect();
        Ok(vec![Tensor::from_vec(vec![dims.len()], dims)?])
    }
}

/// Size: the element count as an int64 scalar.
#[derive(Debug)]
struct Size;

impl Kernel for Size {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![Tensor::scalar(input(inputs, 0)?.len() as i64)])
    }
}

/// Expand: broadcasts the input against a shape (in both directions, like numpy).
#[derive(Debug)]
struct Expand;

impl Kernel for Expand {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let want = dims_from_i64(&input(inputs, 1)?.to_i64_vec()?)?;
        let shape = broadcast_shapes(x.shape(), &want)?;
        let lead = shape.len() - x.rank();
        let x_strides = strides_of(x.shape());
        // Broadcast axes (new, or of size 1 in the input) repeat the same elements: stride 0.
        let strides: Vec<isize> = (0..shape.len())
            .map(|i| match i.checked_sub(lead) {
                Some(j) if x.shape()[j] == shape[i] => x_strides[j] as isize,
                _ => 0,
            })
            .collect();
        let view = View::new(&shape, &strides, 0, x.len())?;
        Ok(vec![view_tensor(x, &view, shape)?])
    }
}

/// ConstantOfShape: a tensor of the shape given as input, filled with `value`.
#[derive(Debug)]
struct ConstantOfShape {
    value: Tensor,
}

impl ConstantOfShape {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let value = match ctx.attrs().tensor("value")? {
            Some(v) => {
                ensure!(v.len() == 1, "value must hold one element, has {}", v.len());
                v.clone()
            }
            None => Tensor::scalar(0.0f32),
        };
        Ok(Box::new(ConstantOfShape { value }))
    }
}

impl Kernel for ConstantOfShape {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let shape = dims_from_i64(&input(inputs, 0)?.to_i64_vec()?)?;
        let n = checked_numel(&shape)?;
        let out = with_dtype!(self.value.dtype(), T, {
            let v = self.value.as_slice::<T>()?[0];
            Tensor::from_vec(shape, filled_vec(n, v)?)?
        });
        Ok(vec![out])
    }
}

/// Range: `start + i * delta` for every `i` while short of `limit`.
#[derive(Debug)]
struct Range;

/// A Range operand: a scalar (or one-element) tensor.
fn range_operand(inputs: &[Option<&Tensor>], i: usize, name: &str) -> Result<Tensor> {
    let t = input(inputs, i)?;
    ensure!(
        t.len() == 1,
        "{name} must be a scalar, got shape {:?}",
        t.shape()
    );
    Ok(t.clone())
}

impl Kernel for Range {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let start = range_operand(inputs, 0, "start")?;
        let limit = range_operand(inputs, 1, "limit")?;
        let delta = range_operand(inputs, 2, "delta")?;
        let dtype = start.dtype();
        ensure!(
            limit.dtype() == dtype && delta.dtype() == dtype,
            "start, limit and delta must share a type"
        );
        let out = if dtype.is_float() {
            let [s, l, d] = [&start, &limit, &delta].map(|t| t.to_f64_vec().map(|v| v[0]));
            let (s, l, d) = (s?, l?, d?);
            ensure!(d != 0.0, "Range delta cannot be 0");
            let count = ((l - s) / d).ceil().max(0.0);
            ensure!(
                count.is_finite() && count <= MAX_RANGE_LEN as f64,
                "Range from {s} to {l} by {d} is too long"
            );
            let v: Vec<f64> = (0..count as usize).map(|i| s + i as f64 * d).collect();
            Tensor::from_vec(vec![v.len()], v)?.cast(dtype)?
        } else {
            let [s, l, d] = [&start, &limit, &delta].map(|t| t.to_i64_vec().map(|v| v[0]));
            let (s, l, d) = (s?, l?, d?);
            ensure!(d != 0, "Range delta cannot be 0");
            // ceil((l - s) / d) in i128, where neither the difference nor the sum can overflow.
            let (num, den) = if d > 0 {
                (l as i128 - s as i128, d as i128)
            } else {
                (s as i128 - l as i128, -(d as i128))
            };
            let count = if num > 0 { (num + den - 1) / den } else { 0 };
            ensure!(
                count <= MAX_RANGE_LEN as i128,
                "Range from {s} to {l} by {d} is too long"
            );
            let v: Vec<i64> = (0..count as i64).map(|i| s + i * d).collect();
            Tensor::from_vec(vec![v.len()], v)?.cast(dtype)?
        };
        Ok(vec![out])
    }
}

/// Identity: the input itself (shared, not copied), of any kind: tensor, sequence or
/// optional.
#[derive(Debug)]
struct Identity;

impl Kernel for Identity {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![input(inputs, 0)?.clone()])
    }

    fn takes_values(&self) -> bool {
        true
    }

    fn run_values(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>> {
        let v = inputs
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| op_err!("missing input #0"))?;
        Ok(vec![v.clone()])
    }
}

/// Dropout at inference: the input unchanged, and an all-true mask when asked for. Training
/// mode (input 2, opset 12+) with a non-zero ratio drops at random, which is not supported.
#[derive(Debug)]
struct Dropout {
    mask: bool,
}

impl Kernel for Dropout {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let training = match opt_input(inputs, 2) {
            Some(t) => t.to_i64_vec()?.first().is_some_and(|&v| v != 0),
            None => false,
        };
        let ratio = match opt_input(inputs, 1) {
            Some(r) => r.to_f64_vec()?.first().copied().unwrap_or(0.5),
            None => 0.5,
        };
        ensure!(
            !training || ratio == 0.0,
            "Dropout in training mode (ratio {ratio}) is not supported"
        );
        let mut outs = vec![x.clone()];
        if self.mask {
            outs.push(Tensor::from_vec(x.shape().to_vec(), vec![true; x.len()])?);
        }
        Ok(outs)
    }
}

/// Constant: a value fixed when the node is built.
#[derive(Debug)]
struct Constant {
    value: Tensor,
}

impl Constant {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let mut attrs = ctx.attrs().0.iter();
        let (Some((name, attr)), None) = (attrs.next(), attrs.next()) else {
            return Err(op_err!("Constant needs exactly one value attribute"));
        };
        let value = match (name.as_str(), attr) {
            ("value", Attr::Tensor(t)) => t.clone(),
            ("value_float", Attr::Float(v)) => Tensor::scalar(*v),
            ("value_int", Attr::Int(v)) => Tensor::scalar(*v),
            ("value_floats", Attr::Floats(v)) => Tensor::from_vec(vec![v.len()], v.clone())?,
            ("value_ints", Attr::Ints(v)) => Tensor::from_vec(vec![v.len()], v.clone())?,
            (name, _) => return Err(op_err!("unsupported Constant attribute '{name}'")),
        };
        Ok(Box::new(Constant { value }))
    }
}

impl Kernel for Constant {
    fn run(&self, _inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.value.clone()])
    }
}

/// EyeLike: ones on diagonal `k` of a matrix shaped like the input.
#[derive(Debug)]
struct EyeLike {
    dtype: Option<DType>,
    k: i64,
}

impl EyeLike {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let dtype = match ctx.attrs().int("dtype")? {
            Some(code) => Some(
                i32::try_from(code)
                    .ok()
                    .and_then(DType::from_onnx)
                    .ok_or_else(|| op_err!("unsupported dtype code {code}"))?,
            ),
            None => None,
        };
        Ok(Box::new(EyeLike {
            dtype,
            k: ctx.attrs().int_or("k", 0)?,
        }))
    }
}

impl Kernel for EyeLike {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let &[rows, cols] = x.shape() else {
            return Err(op_err!("EyeLike needs a 2-D input, got {:?}", x.shape()));
        };
        let dtype = self.dtype.unwrap_or(x.dtype());
        let out = with_dtype!(dtype, T, {
            let mut v = vec![T::default(); rows * cols];
            // Row i holds its one at column i + k, when that column exists.
            for i in 0..rows {
                if let Ok(j) = usize::try_from(i as i128 + self.k as i128) {
                    if j < cols {
                        v[i * cols + j] = T::from_f64(1.0);
                    }
                }
            }
            Tensor::from_vec(vec![rows, cols], v)?
        });
        Ok(vec![out])
    }
}

/// NonZero: the coordinates of the non-zero elements, as a `[rank, count]` int64 tensor.
/// A scalar counts as a 1-D tensor of one element.
#[derive(Debug)]
struct NonZero;

impl Kernel for NonZero {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let positions = with_dtype!(x.dtype(), T, { nonzero_positions::<T>(x.as_slice::<T>()?) });
        let shape = if x.rank() == 0 {
            vec![1]
        } else {
            x.shape().to_vec()
        };
        let strides = strides_of(&shape);
        let nnz = positions.len();
        let mut out = vec![0i64; shape.len() * nnz];
        for (d, row) in out.chunks_mut(nnz.max(1)).enumerate().take(shape.len()) {
            for (o, &p) in row.iter_mut().zip(&positions) {
                *o = ((p / strides[d]) % shape[d]) as i64;
            }
        }
        Ok(vec![Tensor::from_vec(vec![shape.len(), nnz], out)?])
    }
}

fn nonzero_positions<T: Storable>(v: &[T]) -> Vec<usize> {
    let zero = T::default();
    v.iter()
        .enumerate()
        .filter(|(_, &x)| x != zero)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::movement::testing::*;
    use crate::ir::Attr;
    use crate::tensor::{DType, Tensor};

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        t(shape, (0..n).map(|v| v as f32).collect())
    }

    #[test]
    fn reshape_copies_zeros_infers_minus_one_and_shares_storage() {
        let x = iota(&[2, 3, 4]);
        let y = run1("Reshape", 14, &[], &[&x, &i64s(&[0, -1])]).unwrap();
        assert_eq!(y.shape(), &[2, 12]);
        assert_eq!(y.as_bytes().as_ptr(), x.as_bytes().as_ptr());
        let y = run1("Reshape", 5, &[], &[&x, &i64s(&[-1, 0, 2])]).unwrap();
        assert_eq!(y.shape(), &[4, 3, 2]);
        assert!(run1("Reshape", 14, &[], &[&x, &i64s(&[-1, -1])]).is_err());
        assert!(run1("Reshape", 14, &[], &[&x, &i64s(&[5, -1])]).is_err());
        assert!(run1("Reshape", 14, &[], &[&x, &i64s(&[-2, 12])]).is_err());
        // Opset 1 takes the shape as an attribute.
        let y = run1("Reshape", 1, &[("shape", ints(&[6, 4]))], &[&x]).unwrap();
        assert_eq!(y.shape(), &[6, 4]);
    }

    #[test]
    fn reshape_allowzero_keeps_literal_zeros() {
        let empty = t(&[0, 3], Vec::<f32>::new());
        let az = [("allowzero", Attr::Int(1))];
        let y = run1("Reshape", 14, &az, &[&empty, &i64s(&[3, 0])]).unwrap();
        assert_eq!(y.shape(), &[3, 0]);
        // Without allowzero, 0 copies the input's dimension 0 (which is 0 here).
        let y = run1("Reshape", 14, &[], &[&empty, &i64s(&[0, 3])]).unwrap();
        assert_eq!(y.shape(), &[0, 3]);
        let x = iota(&[2, 3]);
        assert!(run1("Reshape", 14, &az, &[&x, &i64s(&[0, 6])]).is_err());
    }

    #[test]
    fn flatten_at_each_axis() {
        let x = iota(&[2, 3, 4]);
        let shape = |axis: i64| {
            run1("Flatten", 13, &[("axis", Attr::Int(axis))], &[&x])
                .unwrap()
                .shape()
                .to_vec()
        };
        assert_eq!(shape(0), vec![1, 24]);
        assert_eq!(shape(1), vec![2, 12]);
        assert_eq!(shape(3), vec![24, 1]);
        assert_eq!(shape(-1), vec![6, 4]);
        assert!(run1("Flatten", 13, &[("axis", Attr::Int(4))], &[&x]).is_err());
    }

    #[test]
    fn squeeze_and_unsqueeze_across_opsets() {
        let x = iota(&[1, 3, 1, 2]);
        assert_eq!(run1("Squeeze", 13, &[], &[&x]).unwrap().shape(), &[3, 2]);
        assert_eq!(
            run1("Squeeze", 13, &[], &[&x, &i64s(&[-2])])
                .unwrap()
                .shape(),
            &[1, 3, 2]
        );
        assert_eq!(
            run1("Squeeze", 11, &[("axes", ints(&[0]))], &[&x])
                .unwrap()
                .shape(),
            &[3, 1, 2]
        );
        assert!(run1("Squeeze", 13, &[], &[&x, &i64s(&[1])]).is_err());
        let y = iota(&[3, 2]);
        assert_eq!(
            run1("Unsqueeze", 13, &[], &[&y, &i64s(&[0, -1])])
                .unwrap()
                .shape(),
            &[1, 3, 2, 1]
        );
        assert_eq!(
            run1("Unsqueeze", 11, &[("axes", ints(&[1]))], &[&y])
                .unwrap()
                .shape(),
            &[3, 1, 2]
        );
        assert!(run1("Unsqueeze", 13, &[], &[&y, &i64s(&[0, 0])]).is_err());
        assert!(run1("Unsqueeze", 13, &[], &[&y, &i64s(&[3])]).is_err());
        let s = t(&[], vec![5i64]);
        assert_eq!(
            run1("Unsqueeze", 13, &[], &[&s, &i64s(&[0])])
                .unwrap()
                .shape(),
            &[1]
        );
    }

    #[test]
    fn shape_with_start_and_end_and_size() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(
            vals::<i64>(&run1("Shape", 13, &[], &[&x]).unwrap()),
            vec![2, 3, 4]
        );
        let y = run1(
            "Shape",
            15,
            &[("start", Attr::Int(-2)), ("end", Attr::Int(10))],
            &[&x],
        )
        .unwrap();
        assert_eq!(vals::<i64>(&y), vec![3, 4]);
        let y = run1(
            "Shape",
            15,
            &[("start", Attr::Int(2)), ("end", Attr::Int(1))],
            &[&x],
        )
        .unwrap();
        assert_eq!(y.shape(), &[0]);
        let n = run1("Size", 13, &[], &[&x]).unwrap();
        assert_eq!(n.shape(), &[] as &[usize]);
        assert_eq!(vals::<i64>(&n), vec![24]);
    }

    #[test]
    fn expand_broadcasts_both_ways() {
        let x = t(&[3, 1], vec![1, 2, 3]);
        let y = run1("Expand", 13, &[], &[&x, &i64s(&[2, 1, 2])]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2]);
        assert_eq!(vals::<i32>(&y), vec![1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
        // A shape smaller than the input keeps the input's dimensions (and its storage).
        let y = run1("Expand", 13, &[], &[&x, &i64s(&[1])]).unwrap();
        assert_eq!(y.shape(), &[3, 1]);
        assert_eq!(y.as_bytes().as_ptr(), x.as_bytes().as_ptr());
        assert!(run1("Expand", 13, &[], &[&x, &i64s(&[2, 2])]).is_err());
        assert!(run1("Expand", 13, &[], &[&x, &i64s(&[-1, 1])]).is_err());
    }

    #[test]
    fn dropout_at_inference_passes_through() {
        let x = Tensor::from_vec(vec![2], vec![1f32, 2.]).unwrap();
        let y = run1("Dropout", 13, &[], &[&x]).unwrap();
        assert_eq!(vals::<f32>(&y), vec![1.0, 2.0]);
        let training = Tensor::from_vec(vec![], vec![true]).unwrap();
        let ratio = Tensor::from_vec(vec![], vec![0.5f32]).unwrap();
        assert!(run1("Dropout", 13, &[], &[&x, &ratio, &training]).is_err());
    }

    #[test]
    fn constant_of_shape_defaults_and_value_types() {
        let y = run1("ConstantOfShape", 9, &[], &[&i64s(&[2, 3])]).unwrap();
        assert_eq!(vals::<f32>(&y), vec![0.0; 6]);
        let v = Attr::Tensor(Tensor::from_vec(vec![1], vec![7i32]).unwrap());
        let y = run1("ConstantOfShape", 9, &[("value", v)], &[&i64s(&[2])]).unwrap();
        assert_eq!(vals::<i32>(&y), vec![7, 7]);
        let y = run1("ConstantOfShape", 9, &[], &[&i64s(&[])]).unwrap();
        assert_eq!(y.shape(), &[] as &[usize]);
        assert!(run1("ConstantOfShape", 9, &[], &[&i64s(&[2, -3])]).is_err());
        assert!(run1("ConstantOfShape", 9, &[], &[&i64s(&[1 << 40, 1 << 40])]).is_err());
    }

    #[test]
    fn range_for_ints_and_floats() {
        let s = |v: i64| t(&[], vec![v]);
        let y = run1("Range", 11, &[], &[&s(10), &s(4), &s(-3)]).unwrap();
        assert_eq!(vals::<i64>(&y), vec![10, 7]);
        let y = run1("Range", 11, &[], &[&s(0), &s(10), &s(3)]).unwrap();
        assert_eq!(vals::<i64>(&y), vec![0, 3, 6, 9]);
        let y = run1("Range", 11, &[], &[&s(5), &s(1), &s(1)]).unwrap();
        assert_eq!(y.shape(), &[0]);
        let f = |v: f32| t(&[], vec![v]);
        let y = run1("Range", 11, &[], &[&f(1.0), &f(2.0), &f(0.25)]).unwrap();
        assert_eq!(vals::<f32>(&y), vec![1.0, 1.25, 1.5, 1.75]);
        let i32s = |v: i32| t(&[], vec![v]);
        let y = run1("Range", 11, &[], &[&i32s(0), &i32s(3), &i32s(1)]).unwrap();
        assert_eq!(y.dtype(), DType::I32);
        assert!(run1("Range", 11, &[], &[&s(0), &s(10), &s(0)]).is_err());
        assert!(run1("Range", 11, &[], &[&s(i64::MIN), &s(i64::MAX), &s(1)]).is_err());
        assert!(run1("Range", 11, &[], &[&f(0.0), &f(1.0), &f(1e-30)]).is_err());
    }

    #[test]
    fn identity_and_constant_attributes() {
        let x = iota(&[2]);
        let y = run1("Identity", 13, &[], &[&x]).unwrap();
        assert_eq!(y.as_bytes().as_ptr(), x.as_bytes().as_ptr());
        let c = |name: &str, a: Attr| run1("Constant", 13, &[(name, a)], &[]).unwrap();
        assert_eq!(vals::<f32>(&c("value_float", Attr::Float(1.5))), vec![1.5]);
        assert_eq!(vals::<i64>(&c("value_ints", ints(&[1, 2]))), vec![1, 2]);
        assert_eq!(c("value_int", Attr::Int(3)).shape(), &[] as &[usize]);
        assert_eq!(
            vals::<f32>(&c("value_floats", Attr::Floats(vec![0.5]))),
            vec![0.5]
        );
        assert_eq!(
            vals::<f32>(&c("value", Attr::Tensor(x.clone()))),
            vec![0.0, 1.0]
        );
        assert!(run1(
            "Constant",
            13,
            &[("value_string", Attr::String("a".into()))],
            &[]
        )
        .is_err());
        assert!(run1("Constant", 13, &[], &[]).is_err());
    }

    #[test]
    fn eye_like_with_offset_and_dtype() {
        let x = t(&[2, 3], vec![0i32; 6]);
        let y = run1("EyeLike", 9, &[("k", Attr::Int(1))], &[&x]).unwrap();
        assert_eq!(vals::<i32>(&y), vec![0, 1, 0, 0, 0, 1]);
        let y = run1(
            "EyeLike",
            9,
            &[("dtype", Attr::Int(1)), ("k", Attr::Int(-1))],
            &[&x],
        )
        .unwrap();
        assert_eq!(vals::<f32>(&y), vec![0., 0., 0., 1., 0., 0.]);
        assert!(run1("EyeLike", 9, &[], &[&iota(&[3])]).is_err());
    }

    #[test]
    fn nonzero_coordinates() {
        // ONNX spec example: [[1, 0], [1, 1]] -> [[0, 1, 1], [0, 0, 1]].
        let x = t(&[2, 2], vec![true, false, true, true]);
        let y = run1("NonZero", 13, &[], &[&x]).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(vals::<i64>(&y), vec![0, 1, 1, 0, 0, 1]);
        let z = run1("NonZero", 13, &[], &[&t(&[3], vec![0.0f32, -0.0, 0.0])]).unwrap();
        assert_eq!(z.shape(), &[1, 0]);
        let s = run1("NonZero", 13, &[], &[&t(&[], vec![3i64])]).unwrap();
        assert_eq!(s.shape(), &[1, 1]);
    }
}
