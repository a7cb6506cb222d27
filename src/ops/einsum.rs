//! Einsum: the equation is parsed once at build time; at run time each operand's repeated
//! labels become diagonals, labels used nowhere else are summed out early, and operands are
//! contracted pairwise, left to right, as batched matrix products (`[batch, m, k] · [batch,
//! k, n]`) after permuting each into that layout. f32 (and f16/bf16, computed in f32) use the
//! packed GEMM; f64 and integers use plain loops.

use super::util::input;
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{DType, Storable, Tensor};
use crate::{ensure, op_err};
use infer_kernels::gemm::{gemm_batched, Epilogue, Lhs, MatRef, Rhs};
use std::borrow::Cow;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    match op {
        "Einsum" => Some(Einsum::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>)),
        _ => None,
    }
}

/// One symbol of a term: a letter's label (0..52) or the ellipsis.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sym {
    Letter(usize),
    Ellipsis,
}

const LETTERS: usize = 52;

#[derive(Debug)]
struct Einsum {
    inputs: Vec<Vec<Sym>>,
    output: Vec<Sym>,
}

/// Parses one term (spaces already removed).
fn parse_term(term: &str) -> Result<Vec<Sym>> {
    let mut syms = Vec::new();
    let mut rest = term;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("...") {
            ensure!(
                !syms.contains(&Sym::Ellipsis),
                "term '{term}' has two ellipses"
            );
            syms.push(Sym::Ellipsis);
            rest = r;
            continue;
        }
        let label = match c {
            'a'..='z' => c as usize - 'a' as usize,
            'A'..='Z' => 26 + c as usize - 'A' as usize,
            _ => return Err(op_err!("invalid character '{c}' in einsum term '{term}'")),
        };
        syms.push(Sym::Letter(label));
        rest = &rest[1..];
    }
    Ok(syms)
}

impl Einsum {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let eq: String = ctx
            .attrs()
            .string("equation")?
            .ok_or_else(|| op_err!("equation is required"))?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (eq.as_str(), None),
        };
        let inputs = lhs.split(',').map(parse_term).collect::<Result<Vec<_>>>()?;
        let output = match rhs {
            Some(r) => parse_term(r)?,
            None => {
                // Implicit output: the ellipsis (if any), then the labels used exactly once,
                // in alphabetical order.
                let mut count = [0usize; LETTERS];
                let mut ellipsis = false;
                for s in inputs.iter().flatten() {
                    match s {
                        Sym::Letter(l) => count[*l] += 1,
                        Sym::Ellipsis => ellipsis = true,
                    }
                }
                // Alphabetical order puts the lower-case letters first, as numpy does.
                let order = (0..26).chain(26..LETTERS);
                let letters = order.filter(|&l| count[l] == 1).map(Sym::Letter);
                ellipsis
                    .then_some(Sym::Ellipsis)
                    .into_iter()
                    .chain(letters)
                    .collect()
            }
        };
        Ok(Einsum { inputs, output })
    }
}

/// An operand during evaluation: its labels (letters 0..52, ellipsis dimensions from 52 on),
/// its shape and its row-major elements.
struct Operand<'a, T: Clone> {
    labels: Vec<usize>,
    shape: Vec<usize>,
    data: Cow<'a, [T]>,
}

/// Element types Einsum computes in: products and sums wrap for integers.
trait EinsumElem: Storable + Copy + Default + Send + Sync {
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;

    /// `count` products of `[m, k] · [k, n]` row-major blocks.
    fn batched_matmul(
        count: usize,
        (m, k, n): (usize, usize, usize),
        a: &[Self],
        b: &[Self],
    ) -> Result<Vec<Self>> {
        let mut out = crate::tensor::filled_vec(
            crate::tensor::checked_numel(&[count, m, n])?,
            Self::default(),
        )?;
        for (i, c) in out.chunks_exact_mut((m * n).max(1)).enumerate().take(count) {
            let (a, b) = (
                &a[i * m * k..(i + 1) * m * k],
                &b[i * k * n..(i + 1) * k * n],
            );
            for (r, crow) in c.chunks_exact_mut(n.max(1)).enumerate().take(m) {
                for (p, &av) in a[r * k..(r + 1) * k].iter().enumerate() {
                    for (o, &bv) in crow.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                        *o = o.add(av.mul(bv));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl EinsumElem for f32 {
    fn add(self, o: f32) -> f32 {
        self + o
    }
    fn mul(self, o: f32) -> f32 {
        self * o
    }
    fn batched_matmul(
        count: usize,
        (m, k, n): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
    ) -> Result<Vec<f32>> {
        let mut out =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&[count, m, n])?, 0.0f32)?;
        gemm_batched(&mut out, (m, n), count, |i| {
            let a = MatRef::row_major(&a[i * m * k..], m, k)?;
            let b = MatRef::row_major(&b[i * k * n..], k, n)?;
            Ok((Lhs::Mat(a), Rhs::Mat(b), Epilogue::default()))
        })?;
        Ok(out)
    }
}

impl EinsumElem for f64 {
    fn add(self, o: f64) -> f64 {
        self + o
    }
    fn mul(self, o: f64) -> f64 {
        self * o
    }
}

macro_rules! wrapping_elem {
    ($($t:ty),*) => {$(
        impl EinsumElem for $t {
            fn add(self, o: $t) -> $t { self.wrapping_add(o) }
            fn mul(self, o: $t) -> $t { self.wrapping_mul(o) }
        }
    )*};
}
wrapping_elem!(i32, i64, u32, u64);

/// Copies the elements of a strided view (`shape`, element `strides`, 0 to broadcast) into a
/// new row-major vector. Every index reached must lie in `data` (the callers derive shapes
/// and strides from the source's own shape).
fn gather<T: Copy>(data: &[T], shape: &[usize], strides: &[usize]) -> Vec<T> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let Some((&inner, outer)) = shape.split_last() else {
        out.push(data[0]);
        return out;
    };
    let inner_stride = strides[outer.len()];
    let mut idx = vec![0usize; outer.len()];
    let mut base = 0usize;
    loop {
        if inner_stride == 1 {
            out.extend_from_slice(&data[base..base + inner]);
        } else {
            out.extend((0..inner).map(|j| data[base + j * inner_stride]));
        }
        // Advance the outer multi-index like an odometer.
        let mut d = outer.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            base += strides[d];
            if idx[d] < outer[d] {
                break;
            }
            base -= strides[d] * outer[d];
            idx[d] = 0;
        }
    }
}

impl<'a, T: EinsumElem> Operand<'a, T> {
    /// The operand permuted to `labels` (each one of its own), broadcast to `sizes`.
    fn arranged(&self, labels: &[usize], sizes: &[usize]) -> Cow<'_, [T]> {
        let strides = super::util::strides_of(&self.shape);
        let pos = |l: usize| self.labels.iter().position(|&x| x == l);
        let shape: Vec<usize> = labels.iter().map(|&l| sizes[l]).collect();
        let src_strides: Vec<usize> = labels
            .iter()
            .map(|&l| match pos(l) {
                Some(p) if self.shape[p] == sizes[l] => strides[p],
                _ => 0,
            })
            .collect();
        if labels == self.labels.as_slice() && shape == self.shape {
            Cow::Borrowed(&self.data)
        } else {
            Cow::Owned(gather(&self.data, &shape, &src_strides))
        }
    }

    /// Sums out the labels for which `keep` is false.
    fn sum_out(self, keep: impl Fn(usize) -> bool, sizes: &[usize]) -> Operand<'a, T> {
        let (kept, summed): (Vec<usize>, Vec<usize>) = self.labels.iter().partition(|&&l| keep(l));
        if summed.is_empty() {
            return self;
        }
        let order: Vec<usize> = kept.iter().chain(&summed).copied().collect();
        let data = self.arranged(&order, sizes);
        let chunk: usize = summed.iter().map(|&l| sizes[l]).product();
        let shape: Vec<usize> = kept.iter().map(|&l| sizes[l]).collect();
        let data: Vec<T> = if chunk == 0 {
            vec![T::default(); shape.iter().product()]
        } else {
            data.chunks_exact(chunk)
                .map(|c| c.iter().fold(T::default(), |s, &x| s.add(x)))
                .collect()
        };
        Operand {
            labels: kept,
            shape,
            data: Cow::Owned(data),
        }
    }
}

/// `a ⊗ b` summed over their shared labels that `needed` does not keep.
fn contract<T: EinsumElem>(
    a: Operand<T>,
    b: Operand<T>,
    needed: &[bool],
    sizes: &[usize],
) -> Result<Operand<'static, T>> {
    let in_b = |l: &usize| b.labels.contains(l);
    let batch: Vec<usize> = a
        .labels
        .iter()
        .copied()
        .filter(|l| in_b(l) && needed[*l])
        .collect();
    let inner: Vec<usize> = a
        .labels
        .iter()
        .copied()
        .filter(|l| in_b(l) && !needed[*l])
        .collect();
    let a_only: Vec<usize> = a.labels.iter().copied().filter(|l| !in_b(l)).collect();
    let b_only: Vec<usize> = b
        .labels
        .iter()
        .copied()
        .filter(|l| !a.labels.contains(l))
        .collect();
    let prod = |ls: &[usize]| ls.iter().map(|&l| sizes[l]).product::<usize>();
    let (count, m, k, n) = (prod(&batch), prod(&a_only), prod(&inner), prod(&b_only));
    let a_order: Vec<usize> = [&batch[..], &a_only, &inner].concat();
    let b_order: Vec<usize> = [&batch[..], &inner, &b_only].concat();
    let data = T::batched_matmul(
        count,
        (m, k, n),
        &a.arranged(&a_order, sizes),
        &b.arranged(&b_order, sizes),
    )?;
    let labels: Vec<usize> = [&batch[..], &a_only, &b_only].concat();
    Ok(Operand {
        shape: labels.iter().map(|&l| sizes[l]).collect(),
        labels,
        data: Cow::Owned(data),
    })
}

impl Einsum {
    /// Each operand's labels, with its ellipsis expanded into `ell_rank` right-aligned labels.
    fn labels(&self, inputs: &[&Tensor]) -> Result<(Vec<Vec<usize>>, usize)> {
        ensure!(
            inputs.len() == self.inputs.len(),
            "equation has {} terms, got {} inputs",
            self.inputs.len(),
            inputs.len()
        );
        let letters = |t: &[Sym]| t.iter().filter(|s| **s != Sym::Ellipsis).count();
        let mut ell_rank = 0;
        for (t, x) in self.inputs.iter().zip(inputs) {
            let fixed = letters(t);
            let has_ell = t.contains(&Sym::Ellipsis);
            ensure!(
                x.rank() == fixed || (has_ell && x.rank() > fixed),
                "term of {fixed} labels{} does not fit input of shape {:?}",
                if has_ell { " and an ellipsis" } else { "" },
                x.shape()
            );
            if has_ell {
                ell_rank = ell_rank.max(x.rank() - fixed);
            }
        }
        let expand = |t: &[Sym], rank: usize| -> Vec<usize> {
            let ell = rank - letters(t);
            t.iter()
                .flat_map(|s| match s {
                    Sym::Letter(l) => vec![*l],
                    Sym::Ellipsis => (ell_rank - ell..ell_rank).map(|j| LETTERS + j).collect(),
                })
                .collect()
        };
        let mut all: Vec<Vec<usize>> = self
            .inputs
            .iter()
            .zip(inputs)
            .map(|(t, x)| expand(t, x.rank()))
            .collect();
        all.push(expand(&self.output, letters(&self.output) + ell_rank));
        Ok((all, ell_rank))
    }

    fn eval<T: EinsumElem>(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (mut labels, ell_rank) = self.labels(inputs)?;
        let out_labels = labels.pop().unwrap_or_default();
        // Each label's size: equal wherever it appears, or 1 where it broadcasts.
        let mut sizes = vec![1usize; LETTERS + ell_rank];
        let mut seen = vec![false; LETTERS + ell_rank];
        for (ls, x) in labels.iter().zip(inputs) {
            for (&l, &d) in ls.iter().zip(x.shape()) {
                if !seen[l] || sizes[l] == 1 {
                    sizes[l] = d;
                } else {
                    ensure!(
                        d == sizes[l] || d == 1,
                        "einsum dimension of size {d} does not match {}",
                        sizes[l]
                    );
                }
                seen[l] = true;
            }
        }
        for &l in &out_labels {
            ensure!(seen[l], "output label does not appear in any input");
        }
        ensure!(
            out_labels
                .iter()
                .enumerate()
                .all(|(i, l)| !out_labels[..i].contains(l)),
            "output repeats a label"
        );
        let mut ops = Vec::with_capacity(inputs.len());
        for (ls, x) in labels.into_iter().zip(inputs) {
            ops.push(diagonal(ls, x.shape(), x.as_slice::<T>()?)?);
        }
        // Which labels each later stage still needs: the output's and the unread operands'.
        let needed_after = |rest: &[Operand<T>]| -> Vec<bool> {
            let mut needed = vec![false; LETTERS + ell_rank];
            for &l in out_labels
                .iter()
                .chain(rest.iter().flat_map(|o| o.labels.iter()))
            {
                needed[l] = true;
            }
            needed
        };
        let mut ops = ops.into_iter();
        let first = ops
            .next()
            .ok_or_else(|| op_err!("Einsum needs at least one input"))?;
        let rest: Vec<Operand<T>> = ops.collect();
        let needed = needed_after(&rest);
        let mut acc = first.sum_out(
            |l| needed[l] || rest.iter().any(|o| o.labels.contains(&l)),
            &sizes,
        );
        for (i, b) in rest.iter().enumerate() {
            let needed = needed_after(&rest[i + 1..]);
            let acc_labels = acc.labels.clone();
            let b = Operand {
                labels: b.labels.clone(),
                shape: b.shape.clone(),
                data: Cow::Borrowed(&b.data[..]),
            }
            .sum_out(|l| needed[l] || acc_labels.contains(&l), &sizes);
            let a = acc.sum_out(|l| needed[l] || b.labels.contains(&l), &sizes);
            acc = contract(a, b, &needed, &sizes)?;
        }
        let acc = acc.sum_out(|l| out_labels.contains(&l), &sizes);
        let data = acc.arranged(&out_labels, &sizes).into_owned();
        let shape = out_labels.iter().map(|&l| sizes[l]).collect();
        Tensor::from_vec(shape, data)
    }
}

/// The operand with each repeated label reduced to one (the diagonal over its positions).
fn diagonal<'a, T: EinsumElem>(
    labels: Vec<usize>,
    shape: &[usize],
    data: &'a [T],
) -> Result<Operand<'a, T>> {
    let mut unique: Vec<usize> = Vec::new();
    for &l in &labels {
        if !unique.contains(&l) {
            unique.push(l);
        }
    }
    if unique.len() == labels.len() {
        return Ok(Operand {
            labels,
            shape: shape.to_vec(),
            data: Cow::Borrowed(data),
        });
    }
    let strides = super::util::strides_of(shape);
    let mut out_shape = Vec::with_capacity(unique.len());
    let mut out_strides = Vec::with_capacity(unique.len());
    for &u in &unique {
        let dims: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == u).collect();
        let d = shape[dims[0]];
        ensure!(
            dims.iter().all(|&i| shape[i] == d),
            "a repeated einsum label has different sizes in {shape:?}"
        );
        out_shape.push(d);
        // Stepping along a diagonal moves one step along each of its axes.
        out_strides.push(dims.iter().map(|&i| strides[i]).sum());
    }
    let data = gather(data, &out_shape, &out_strides);
    Ok(Operand {
        labels: unique,
        shape: out_shape,
        data: Cow::Owned(data),
    })
}

impl Kernel for Einsum {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let xs: Vec<&Tensor> = (0..inputs.len())
            .map(|i| input(inputs, i))
            .collect::<Result<_>>()?;
        let dtype = xs.first().map_or(DType::F32, |x| x.dtype());
        ensure!(
            xs.iter().all(|x| x.dtype() == dtype),
            "Einsum inputs must share one type"
        );
        let out = match dtype {
            DType::F32 => self.eval::<f32>(&xs)?,
            DType::F16 | DType::BF16 => {
                let wide: Vec<Tensor> = xs
                    .iter()
                    .map(|x| x.cast(DType::F32))
                    .collect::<Result<_>>()?;
                let wide: Vec<&Tensor> = wide.iter().collect();
                self.eval::<f32>(&wide)?.cast(dtype)?
            }
            DType::F64 => self.eval::<f64>(&xs)?,
            DType::I32 => self.eval::<i32>(&xs)?,
            DType::I64 => self.eval::<i64>(&xs)?,
            DType::U32 => self.eval::<u32>(&xs)?,
            DType::U64 => self.eval::<u64>(&xs)?,
            d => return Err(op_err!("Einsum does not support {d}")),
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::Attr;
    use crate::ops::movement::testing::{assert_close, run_op, t, vals};
    use crate::tensor::Tensor;

    fn einsum(eq: &str, inputs: &[&Tensor]) -> crate::error::Result<Tensor> {
        let attrs = [("equation", Attr::String(eq.into()))];
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|&x| Some(x)).collect();
        Ok(run_op("Einsum", 12, &attrs, &inputs)?.remove(0))
    }

    fn range(shape: &[usize], scale: f32, shift: f32) -> Tensor {
        let n = shape.iter().product::<usize>();
        t(shape, (0..n).map(|i| i as f32 * scale + shift).collect())
    }

    #[test]
    fn three_operand_chain_contracts_left_to_right() {
        // numpy: einsum('ij,jk,kl->il', arange(6).reshape(2,3), arange(12).reshape(3,4)-5, c)
        let a = range(&[2, 3], 1.0, 0.0);
        let b = range(&[3, 4], 1.0, -5.0);
        let c = t(&[4, 2], vec![1.0f32, 2.0, 0.0, -1.0, 3.0, 1.0, 2.0, 2.0]);
        let y = einsum("ij,jk,kl->il", &[&a, &b, &c]).unwrap();
        assert_eq!(y.shape(), [2, 2]);
        assert_close(&vals::<f32>(&y), &[66.0, 41.0, 120.0, 68.0], 1e-4);
    }

    #[test]
    fn implicit_output_takes_single_labels_alphabetically() {
        // 'ba,bc' means 'ba,bc->ac': aᵀ·a for a = arange(6).reshape(2, 3).
        let a = range(&[2, 3], 1.0, 0.0);
        let y = einsum("ba,bc", &[&a, &a]).unwrap();
        assert_eq!(y.shape(), [3, 3]);
        let want = [9.0, 12.0, 15.0, 12.0, 17.0, 22.0, 15.0, 22.0, 29.0];
        assert_close(&vals::<f32>(&y), &want, 1e-5);
    }

    #[test]
    fn repeated_label_is_a_trace_for_integers() {
        let m = t(&[3, 3], (0..9i64).collect());
        let y = einsum("ii", &[&m]).unwrap();
        assert_eq!(y.shape(), [] as [usize; 0]);
        assert_eq!(vals::<i64>(&y), [12]);
    }

    #[test]
    fn ellipsis_dimensions_broadcast() {
        // [2, 1, 2, 3] · [3, 3, 2] over '...ij,...jk->...ik' gives [2, 3, 2, 2] (numpy).
        let x = range(&[2, 1, 2, 3], 1.0, 0.0);
        let y = range(&[3, 3, 2], 0.5, 0.0);
        let z = einsum("...ij,...jk->...ik", &[&x, &y]).unwrap();
        assert_eq!(z.shape(), [2, 3, 2, 2]);
        let want = [
            5.0, 6.5, 14.0, 20.0, 14.0, 15.5, 50.0, 56.0, 23.0, 24.5, 86.0, 92.0, 23.0, 33.5, 32.0,
            47.0, 86.0, 96.5, 122.0, 137.0, 149.0, 159.5, 212.0, 227.0,
        ];
        assert_close(&vals::<f32>(&z), &want, 1e-4);
    }

    #[test]
    fn malformed_equations_and_shapes_are_errors() {
        let a = range(&[2, 3], 1.0, 0.0);
        assert!(einsum("ij,jk->ik", &[&a]).is_err());
        assert!(einsum("ijk->i", &[&a]).is_err());
        assert!(einsum("ij->iz", &[&a]).is_err());
        assert!(einsum("i1->i", &[&a]).is_err());
        assert!(einsum("ij,ij->i", &[&a, &range(&[2, 4], 1.0, 0.0)]).is_err());
    }
}
