//! Unique (opset 11): the distinct elements (or slices along an axis) of a tensor, with
//! their first positions, the inverse mapping and counts.

use super::util::{input, normalize_axis};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{Storable, Tensor};
use crate::with_dtype;
use std::cmp::Ordering;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    (op == "Unique").then(|| {
        let a = ctx.attrs();
        Ok(Box::new(Unique {
            axis: a.int("axis")?,
            sorted: a.int_or("sorted", 1)? != 0,
        }) as Box<dyn Kernel>)
    })
}

#[derive(Debug)]
struct Unique {
    /// Without an axis the input is flattened and each element is an item.
    axis: Option<i64>,
    /// Outputs in ascending order; otherwise in order of first occurrence.
    sorted: bool,
}

/// A total order for element comparison: NaNs sort last and equal each other.
fn cmp_elem<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    a.partial_cmp(b).unwrap_or_else(|| {
        #[allow(clippy::eq_op)] // x != x detects NaN without a float bound
        let (a_nan, b_nan) = (a != a, b != b);
        a_nan.cmp(&b_nan)
    })
}

impl Unique {
    fn unique<T: Storable + PartialOrd>(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let data = x.as_slice::<T>()?;
        // The input viewed as [outer, items, inner]; item i is x[:, i, :].
        let (outer, items, inner, axis) = match self.axis {
            None => (1, data.len(), 1, None),
            Some(a) => {
                let axis = normalize_axis(a, x.rank())?;
                let s = x.shape();
                let outer = s[..axis].iter().product();
                (outer, s[axis], s[axis + 1..].iter().product(), Some(axis))
            }
        };
        let cmp_items = |a: usize, b: usize| -> Ordering {
            (0..outer)
                .flat_map(|o| (0..inner).map(move |k| (o * items + a) * inner + k))
                .zip((0..outer).flat_map(|o| (0..inner).map(move |k| (o * items + b) * inner + k)))
                .map(|(i, j)| cmp_elem(&data[i], &data[j]))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        };
        // Stable sort: each run of equal items starts with its first occurrence.
        let mut order: Vec<usize> = (0..items).collect();
        order.sort_by(|&a, &b| cmp_items(a, b));
        let mut groups: Vec<(usize, i64)> = Vec::new(); // (first index, count)
        let mut group_of = vec![0usize; items];
        for (pos, &i) in order.iter().enumerate() {
            if pos == 0 || cmp_items(order[pos - 1], i).is_ne() {
                groups.push((i, 0));
            }
            let g = groups.len() - 1;
            groups[g].1 += 1;
            group_of[i] = g;
        }
        // `rank[g]`: where sorted group g goes in the output.
        let mut rank: Vec<usize> = (0..groups.len()).collect();
        if !self.sorted {
            let mut by_first: Vec<usize> = (0..groups.len()).collect();
            by_first.sort_by_key(|&g| groups[g].0);
            for (out_pos, &g) in by_first.iter().enumerate() {
                rank[g] = out_pos;
            }
        }
        let mut out_groups = vec![(0usize, 0i64); groups.len()];
        for (g, &r) in rank.iter().enumerate() {
            out_groups[r] = groups[g];
        }
        let k = out_groups.len();
        let mut y = Vec::with_capacity(outer * k * inner);
        for o in 0..outer {
            for &(first, _) in &out_groups {
                let start = (o * items + first) * inner;
                y.extend_from_slice(&data[start..start + inner]);
            }
        }
        let y_shape = match axis {
            None => vec![k],
            Some(a) => {
                let mut s = x.shape().to_vec();
                s[a] = k;
                s
            }
        };
        let first: Vec<i64> = out_groups.iter().map(|g| g.0 as i64).collect();
        let counts: Vec<i64> = out_groups.iter().map(|g| g.1).collect();
        let inverse: Vec<i64> = group_of.iter().map(|&g| rank[g] as i64).collect();
        Ok(vec![
            Tensor::from_vec(y_shape, y)?,
            Tensor::from_vec(vec![k], first)?,
            Tensor::from_vec(vec![items], inverse)?,
            Tensor::from_vec(vec![k], counts)?,
        ])
    }
}

impl Kernel for Unique {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        with_dtype!(x.dtype(), T, { self.unique::<T>(x) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: Unique, x: Tensor) -> Vec<Vec<i64>> {
        op.run(&[Some(&x)])
            .unwrap()
            .iter()
            .map(|t| {
                t.cast(crate::tensor::DType::I64)
                    .unwrap()
                    .into_vec()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn flattened_sorted_and_unsorted() {
        // np.unique([2, 1, 1, 3, 4, 3], return_index, return_inverse, return_counts)
        let x = || Tensor::from_vec(vec![6], vec![2i32, 1, 1, 3, 4, 3]).unwrap();
        let got = run(
            Unique {
                axis: None,
                sorted: true,
            },
            x(),
        );
        assert_eq!(got[0], [1, 2, 3, 4]);
        assert_eq!(got[1], [1, 0, 3, 4]);
        assert_eq!(got[2], [1, 0, 0, 2, 3, 2]);
        assert_eq!(got[3], [2, 1, 2, 1]);
        let got = run(
            Unique {
                axis: None,
                sorted: false,
            },
            x(),
        );
        assert_eq!(got[0], [2, 1, 3, 4]);
        assert_eq!(got[2], [0, 1, 1, 2, 3, 2]);
    }

    #[test]
    fn rows_along_an_axis() {
        // Rows [1,0], [2,1], [1,0] -> unique rows [1,0], [2,1].
        let x = Tensor::from_vec(vec![3, 2], vec![1i64, 0, 2, 1, 1, 0]).unwrap();
        let got = run(
            Unique {
                axis: Some(0),
                sorted: true,
            },
            x,
        );
        assert_eq!(got[0], [1, 0, 2, 1]);
        assert_eq!(got[1], [0, 1]);
        assert_eq!(got[2], [0, 1, 0]);
        assert_eq!(got[3], [2, 1]);
    }
}
