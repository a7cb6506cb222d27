//! Small helpers shared by operator families: input access, axes, broadcasting.

use crate::error::Result;
use crate::tensor::Tensor;
use crate::{ensure, op_err};

/// Required input `i`.
pub fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| op_err!("missing required input #{i}"))
}

/// Optional input `i` (absent or omitted gives `None`).
pub fn opt_input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Maps a possibly negative axis into `0..rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(
        axis >= -r && axis < r.max(1),
        "axis {axis} is out of range for rank {rank}"
    );
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Like `normalize_axis` but for positions in `0..=rank` (e.g. Unsqueeze outputs).
pub fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    axes.iter().map(|&a| normalize_axis(a, rank)).collect()
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(op_err!("shapes {a:?} and {b:?} cannot be broadcast")),
        };
    }
    // Two small operands can broadcast to a huge result ([n, 1] with [1, n]): refuse it
    // here, counting at least one byte per element, before any kernel allocates it.
    crate::tensor::check_tensor_bytes(crate::tensor::checked_numel(&out)?, 1)?;
    Ok(out)
}

/// Broadcast of any number of shapes.
pub fn broadcast_all<'a>(shapes: impl IntoIterator<Item = &'a [usize]>) -> Result<Vec<usize>> {
    shapes
        .into_iter()
        .try_fold(Vec::new(), |acc, s| broadcast_shapes(&acc, s))
}

/// Row-major strides of a shape, in elements.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// For each position of `out` (row-major), the flat index of the element of an operand of
/// shape `shape` that broadcasts to it.
pub fn broadcast_index(out: &[usize], shape: &[usize]) -> Vec<usize> {
    // The operand's stride along each output dim: 0 where it is broadcast.
    let pad = out.len() - shape.len();
    let own = strides_of(shape);
    let strides: Vec<usize> = (0..out.len())
        .map(|d| match d.checked_sub(pad) {
            Some(k) if shape[k] != 1 => own[k],
            _ => 0,
        })
        .collect();
    let n = out.iter().product();
    let mut index = Vec::with_capacity(n);
    let (mut pos, mut at) = (vec![0usize; out.len()], 0usize);
    for _ in 0..n {
        index.push(at);
        // Odometer step: bump the innermost dim, carrying into outer ones.
        for d in (0..out.len()).rev() {
            pos[d] += 1;
            at += strides[d];
            if pos[d] < out[d] {
                break;
            }
            at -= strides[d] * pos[d];
            pos[d] = 0;
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shapes(&[2, 1, 4], &[3, 1]).unwrap(),
            vec![2, 3, 4]
        );
        assert_eq!(broadcast_shapes(&[], &[5]).unwrap(), vec![5]);
        assert!(broadcast_shapes(&[2], &[3]).is_err());
    }

    #[test]
    fn axes_wrap_negative() {
        assert_eq!(normalize_axis(-1, 4).unwrap(), 3);
        assert!(normalize_axis(4, 4).is_err());
        assert!(normalize_axis(-5, 4).is_err());
    }
}
