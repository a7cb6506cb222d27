//! Matrix products (MatMul, Gemm, MatMulInteger) over the packed sgemm of `infer-kernels`.
//!
//! f32 runs on the packed GEMM (constant right-hand sides are packed once, at build time);
//! f16/bf16 are computed in f32; f64 and integers (MatMulInteger included) use plain loops.
//! With `BuildOptions::int8_matmul`, constant f32 weight matrices are quantized to int8 at
//! build time instead and f32 products with them run on the dynamically quantized GEMM.
//!
//! Besides the ONNX attributes, MatMul, Gemm and Conv accept fused epilogue attributes set by
//! the graph optimizer (not part of ONNX): `_activation` (e.g. "Relu", "Gelu") with its
//! parameters `_alpha`, `_beta`, `_min`, `_max`, and for MatMul a factor `_scale` on the
//! product and an optional third input: a bias of shape `[N]` added after the scale, before
//! the activation.

use super::util::{broadcast_shapes, input, opt_input, strides_of};
use super::{BuildCtx, BuildOptions, Kernel};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err};
use infer_kernels::gemm::{
    gemm, gemm_batched, Activation, Bias, Epilogue, GemmError, Lhs, MatMut, MatRef, PackedB, Rhs,
};
use infer_kernels::qgemm::{qgemm, PackedQB};
use std::borrow::Cow;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "MatMul" => MatMul::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "Gemm" => Gemm::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "MatMulInteger" => Ok(Box::new(MatMulInteger) as Box<dyn Kernel>),
        _ => return None,
    })
}

impl From<GemmError> for Error {
    fn from(e: GemmError) -> Self {
        Error::Op(e.to_string())
    }
}

/// The fused activation of a MatMul/Gemm/Conv node, from the optimizer's `_activation`
/// attributes.
pub(super) fn fused_activation(ctx: &BuildCtx) -> Result<Option<Activation>> {
    let attrs = ctx.attrs();
    let Some(name) = attrs.string("_activation")? else {
        return Ok(None);
    };
    Ok(Some(match name {
        "Relu" => Activation::Relu,
        "LeakyRelu" => Activation::LeakyRelu(attrs.float_or("_alpha", 0.01)?),
        "Clip" => Activation::Clip(
            attrs.float_or("_min", f32::NEG_INFINITY)?,
            attrs.float_or("_max", f32::INFINITY)?,
        ),
        "Sigmoid" => Activation::Sigmoid,
        "HardSigmoid" => Activation::HardSigmoid(
            attrs.float_or("_alpha", 0.2)?,
            attrs.float_or("_beta", 0.5)?,
        ),
        "HardSwish" => Activation::HardSwish,
        "Gelu" => Activation::Gelu,
        "GeluTanh" => Activation::GeluTanh,
        "Silu" => Activation::Silu,
        "Tanh" => Activation::Tanh,
        other => return Err(op_err!("unknown fused activation '{other}'")),
    }))
}

/// The elements of a float tensor as f32: borrowed for f32, converted for f16/bf16.
pub(super) fn f32_data(t: &Tensor) -> Result<Cow<'_, [f32]>> {
    match t.dtype() {
        DType::F32 => Ok(Cow::Borrowed(t.as_slice::<f32>()?)),
        DType::F16 | DType::BF16 => Ok(Cow::Owned(t.cast(DType::F32)?.into_vec::<f32>()?)),
        d => Err(op_err!(
            "expected a float32/float16/bfloat16 tensor, got {d}"
        )),
    }
}

/// An f32 result as a tensor of `dtype` (the inputs' float type).
pub(super) fn from_f32(dtype: DType, shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
    let t = Tensor::from_vec(shape, data)?;
    if dtype == DType::F32 {
        Ok(t)
    } else {
        t.cast(dtype)
    }
}

/// [`from_f32`] for a spare-pool output buffer (whose storage the f32 tensor keeps).
pub(super) fn from_f32_output(
    dtype: DType,
    shape: Vec<usize>,
    data: crate::tensor::spare::Output<f32>,
) -> Result<Tensor> {
    if dtype == DType::F32 {
        data.into_tensor(shape)
    } else {
        from_f32(dtype, shape, data.into_vec())
    }
}

/// A constant weight matrix, prepared once at build time for the product the session chose.
#[derive(Debug)]
enum PackedWeight {
    /// Packed for the fp32 GEMM.
    F32(PackedB),
    /// Quantized per column to int8 and packed (`BuildOptions::int8_matmul`).
    Int8(PackedQB),
}

impl PackedWeight {
    /// `b` (the `k × n` right-hand side) packed as `options` ask.
    fn new(b: MatRef, options: BuildOptions) -> Self {
        if options.int8_matmul {
            // The only refusal is a depth too large for exact i32 sums: such a weight stays
            // fp32.
            if let Ok(q) = PackedQB::new(b) {
                return PackedWeight::Int8(q);
            }
        }
        PackedWeight::F32(PackedB::new(b))
    }

    /// `C = epilogue(A · weight)`.
    fn product(&self, a: MatRef, c: MatMut, epi: &Epilogue) -> Result<()> {
        match self {
            PackedWeight::F32(p) => gemm(a, p, c, epi)?,
            PackedWeight::Int8(q) => qgemm(a, q, c, epi)?,
        }
        Ok(())
    }
}

/// How numpy-style `matmul` maps a batch of products onto two operand shapes.
#[derive(Debug, PartialEq)]
struct BatchPlan {
    out_shape: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    /// Element offset of each product's A and B; one entry when A's batch is folded into `m`.
    a_offsets: Vec<usize>,
    b_offsets: Vec<usize>,
}

impl BatchPlan {
    fn new(a: &[usize], b: &[usize]) -> Result<Self> {
        ensure!(
            !a.is_empty() && !b.is_empty(),
            "MatMul operands must have rank >= 1"
        );
        // 1-D operands become a row (A) or a column (B), removed again from the output.
        let a2: Vec<usize> = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        };
        let b2: Vec<usize> = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        };
        let (ab, am) = a2.split_at(a2.len() - 2);
        let (bb, bm) = b2.split_at(b2.len() - 2);
        let (m, k, n) = (am[0], am[1], bm[1]);
        ensure!(
            k == bm[0],
            "MatMul shapes {a:?} and {b:?} do not match (inner dimensions {k} and {})",
            bm[0]
        );
        let batch = broadcast_shapes(ab, bb)?;
        let mut out_shape = batch.clone();
        if a.len() > 1 {
            out_shape.push(m);
        }
        if b.len() > 1 {
            out_shape.push(n);
        }
        let count: usize = batch.iter().product();
        let b_count: usize = bb.iter().product();
        if b_count == 1 {
            // B is one matrix: A's batch rows stack into one tall product.
            return Ok(BatchPlan {
                out_shape,
                m: m * count,
                k,
                n,
                a_offsets: vec![0],
                b_offsets: vec![0],
            });
        }
        let offsets = |dims: &[usize], mat: usize| -> Vec<usize> {
            // Strides of the operand's batch dims aligned right on `batch`, 0 where broadcast.
            let own = strides_of(dims);
            let pad = batch.len() - dims.len();
            let strides: Vec<usize> = (0..batch.len())
                .map(|i| match i.checked_sub(pad) {
                    Some(j) if dims[j] != 1 => own[j] * mat,
                    _ => 0,
                })
                .collect();
            let out_strides = strides_of(&batch);
            (0..count)
                .map(|idx| {
                    out_strides
                        .iter()
                        .zip(&batch)
                        .zip(&strides)
                        .map(|((&os, &d), &s)| (idx / os) % d * s)
                        .sum()
                })
                .collect()
        };
        Ok(BatchPlan {
            a_offsets: offsets(ab, m * k),
            b_offsets: offsets(bb, k * n),
            out_shape,
            m,
            k,
            n,
        })
    }

    fn count(&self) -> usize {
        self.a_offsets.len()
    }
}

/// ONNX MatMul (numpy `matmul` semantics) with an optional fused bias and activation.
#[derive(Debug)]
struct MatMul {
    /// B packed at build time when it is one constant f32 matrix (rank 2, or leading dims of
    /// size 1), with its full shape.
    packed_b: Option<(PackedWeight, Vec<usize>)>,
    /// A factor on the product (the optimizer's `_scale`), applied before the bias.
    scale: f32,
    activation: Option<Activation>,
}

impl MatMul {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let packed_b = match ctx.constant(1) {
            Some(b) if b.dtype() == DType::F32 && b.rank() >= 2 => {
                let (batch, mat) = b.shape().split_at(b.rank() - 2);
                if batch.iter().all(|&d| d == 1) {
                    let packed = b.with_slice::<f32, _>(|data| -> Result<_> {
                        let mat = MatRef::row_major(data, mat[0], mat[1])?;
                        Ok(PackedWeight::new(mat, ctx.options))
                    })??;
                    Some((packed, b.shape().to_vec()))
                } else {
                    None
                }
            }
            _ => None,
        };
        Ok(MatMul {
            packed_b,
            scale: ctx.attrs().float_or("_scale", 1.0)?,
            activation: fused_activation(ctx)?,
        })
    }
}

impl Kernel for MatMul {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        ensure!(
            a.dtype() == b.dtype(),
            "MatMul operands have different types {} and {}",
            a.dtype(),
            b.dtype()
        );
        let plan = BatchPlan::new(a.shape(), b.shape())?;
        let bias = opt_input(inputs, 2);
        let fused = bias.is_some() || self.activation.is_some() || self.scale != 1.0;
        match a.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => {
                let bias = bias.map(f32_data).transpose()?;
                if let Some(bias) = &bias {
                    ensure!(
                        bias.len() == plan.n,
                        "fused MatMul bias has {} elements, expected {}",
                        bias.len(),
                        plan.n
                    );
                }
                let epi = Epilogue {
                    alpha: self.scale,
                    bias: bias.as_deref().map_or(Bias::None, Bias::PerCol),
                    activation: self.activation,
                    ..Default::default()
                };
                let packed = match &self.packed_b {
                    Some((p, shape)) if a.dtype() == DType::F32 && b.shape() == &shape[..] => {
                        Some(p)
                    }
                    _ => None,
                };
                // A prepacked B is never read again: its bytes (and their pages) stay released.
                let b_data = match packed {
                    Some(_) => Cow::Borrowed(&[][..]),
                    None => f32_data(b)?,
                };
                let out = matmul_f32(&plan, &f32_data(a)?, &b_data, packed, &epi)?;
                Ok(vec![from_f32_output(a.dtype(), plan.out_shape, out)?])
            }
            _ if fused => Err(op_err!(
                "fused MatMul epilogues need float inputs, got {}",
                a.dtype()
            )),
            DType::F64 => plain_matmul::<f64>(&plan, a, b),
            DType::I32 => plain_matmul::<i32>(&plan, a, b),
            DType::I64 => plain_matmul::<i64>(&plan, a, b),
            DType::U32 => plain_matmul::<u32>(&plan, a, b),
            DType::U64 => plain_matmul::<u64>(&plan, a, b),
            d => Err(op_err!("MatMul does not support {d}")),
        }
    }
}

fn matmul_f32(
    plan: &BatchPlan,
    a: &[f32],
    b: &[f32],
    packed_b: Option<&PackedWeight>,
    epi: &Epilogue,
) -> Result<crate::tensor::spare::Output<f32>> {
    let (m, k, n) = (plan.m, plan.k, plan.n);
    // Every element is written (the GEMM stores C, it does not accumulate into it).
    let mut out =
        crate::tensor::spare::f32_output(crate::tensor::checked_numel(&[plan.count(), m, n])?)?;
    match packed_b {
        // A prepacked B is one matrix, so A's batch was folded into `m`: one product.
        Some(w) => w.product(
            MatRef::row_major(a, m, k)?,
            MatMut::row_major(&mut out, m, n)?,
            epi,
        )?,
        None => gemm_batched(&mut out, (m, n), plan.count(), |i| {
            let a = MatRef::row_major(&a[plan.a_offsets[i]..], m, k)?;
            let b = MatRef::row_major(&b[plan.b_offsets[i]..], k, n)?;
            Ok((Lhs::Mat(a), Rhs::Mat(b), *epi))
        })?,
    }
    Ok(out)
}

/// Element types of the plain (non-GEMM) products: integers wrap like ONNX Runtime's.
trait PlainElem: crate::tensor::Storable {
    fn mul_add(self, a: Self, b: Self) -> Self;
}

impl PlainElem for f64 {
    fn mul_add(self, a: f64, b: f64) -> f64 {
        self + a * b
    }
}

macro_rules! wrapping_plain_elem {
    ($($t:ty),*) => {$(
        impl PlainElem for $t {
            fn mul_add(self, a: $t, b: $t) -> $t {
                self.wrapping_add(a.wrapping_mul(b))
            }
        }
    )*};
}
wrapping_plain_elem!(i32, i64, u32, u64);

fn plain_matmul<T: PlainElem>(plan: &BatchPlan, a: &Tensor, b: &Tensor) -> Result<Vec<Tensor>> {
    let out = plain_product(plan, a.as_slice::<T>()?, b.as_slice::<T>()?);
    Ok(vec![Tensor::from_vec(plan.out_shape.clone(), out)?])
}

/// The batched product in plain loops (the inner one over a row of B vectorizes).
fn plain_product<T: PlainElem>(plan: &BatchPlan, a: &[T], b: &[T]) -> Vec<T> {
    let (m, k, n) = (plan.m, plan.k, plan.n);
    let mut out = vec![T::default(); plan.count() * m * n];
    if m * n > 0 {
        for (c, (&ao, &bo)) in out
            .chunks_exact_mut(m * n)
            .zip(plan.a_offsets.iter().zip(&plan.b_offsets))
        {
            for (i, c_row) in c.chunks_exact_mut(n).enumerate() {
                let a_row = &a[ao + i * k..ao + (i + 1) * k];
                for (p, &x) in a_row.iter().enumerate() {
                    let b_row = &b[bo + p * n..bo + (p + 1) * n];
                    c_row
                        .iter_mut()
                        .zip(b_row)
                        .for_each(|(c, &y)| *c = c.mul_add(x, y));
                }
            }
        }
    }
    out
}

/// ONNX MatMulInteger: `(A - a_zero_point) · (B - b_zero_point)` over 8-bit integers into
/// int32, with per-tensor or per-row (A) / per-column (B) zero points.
#[derive(Debug)]
struct MatMulInteger;

/// An 8-bit operand widened to i32 with its zero point subtracted. Zero point `zp[j]` applies
/// to the elements whose index `i` has `(i / stride) % zp.len() == j`.
fn widen(t: &Tensor, zp: Option<&Tensor>, stride: usize, name: &str) -> Result<Vec<i32>> {
    let vals = t.to_i64_vec()?;
    let zp = match zp {
        Some(z) => {
            ensure!(
                z.dtype() == t.dtype(),
                "{name} zero point type {} differs from {}",
                z.dtype(),
                t.dtype()
            );
            z.to_i64_vec()?
        }
        None => vec![0],
    };
    ensure!(!zp.is_empty(), "{name} zero point is empty");
    Ok(vals
        .iter()
        .enumerate()
        .map(|(i, &v)| (v - zp[(i / stride.max(1)) % zp.len()]) as i32)
        .collect())
}

impl Kernel for MatMulInteger {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let (a_zp, b_zp) = (opt_input(inputs, 2), opt_input(inputs, 3));
        Ok(vec![matmul_integer(a, a_zp, b, b_zp)?])
    }
}

/// `(A - a_zero_point) · (B - b_zero_point)` in int32, for MatMulInteger and QLinearMatMul.
pub(super) fn matmul_integer(
    a: &Tensor,
    a_zp: Option<&Tensor>,
    b: &Tensor,
    b_zp: Option<&Tensor>,
) -> Result<Tensor> {
    for t in [a, b] {
        ensure!(
            matches!(t.dtype(), DType::U8 | DType::I8),
            "needs uint8/int8 inputs, got {}",
            t.dtype()
        );
    }
    let plan = BatchPlan::new(a.shape(), b.shape())?;
    // Per-row zero points of A have one value per row (of M); per-column ones of B one
    // per column (of N).
    let a_rows = a.shape().len().checked_sub(2).map_or(1, |r| a.shape()[r]);
    ensure!(
        a_zp.is_none_or(|z| z.len() == 1 || z.len() == a_rows),
        "a_zero_point must have 1 or {a_rows} elements"
    );
    ensure!(
        b_zp.is_none_or(|z| z.len() == 1 || z.len() == plan.n),
        "b_zero_point must have 1 or {} elements",
        plan.n
    );
    let a = widen(a, a_zp, plan.k, "A")?;
    let b = widen(b, b_zp, 1, "B")?;
    let out = plain_product(&plan, &a, &b);
    Tensor::from_vec(plan.out_shape.clone(), out)
}

/// ONNX Gemm: `alpha · op(A) · op(B) + beta · C` with C broadcast to `[M, N]`, plus an
/// optional fused activation.
#[derive(Debug)]
struct Gemm {
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
    /// B packed at build time when it is a constant 2-D f32 matrix, with its stored shape.
    packed_b: Option<(PackedWeight, [usize; 2])>,
    activation: Option<Activation>,
}

impl Gemm {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let trans_b = attrs.int_or("transB", 0)? != 0;
        let packed_b = match ctx.constant(1) {
            Some(b) if b.dtype() == DType::F32 && b.rank() == 2 => {
                let shape = [b.shape()[0], b.shape()[1]];
                let packed = b.with_slice::<f32, _>(|data| -> Result<_> {
                    Ok(PackedWeight::new(
                        operand(data, shape, trans_b)?,
                        ctx.options,
                    ))
                })??;
                Some((packed, shape))
            }
            _ => None,
        };
        Ok(Gemm {
            trans_a: attrs.int_or("transA", 0)? != 0,
            trans_b,
            alpha: attrs.float_or("alpha", 1.0)?,
            beta: attrs.float_or("beta", 1.0)?,
            packed_b,
            activation: fused_activation(ctx)?,
        })
    }
}

/// A stored row-major 2-D matrix, transposed or not.
fn operand(data: &[f32], [r, c]: [usize; 2], trans: bool) -> Result<MatRef<'_>> {
    let m = MatRef::row_major(data, r, c)?;
    Ok(if trans { m.t() } else { m })
}

fn matrix_shape(t: &Tensor, name: &str) -> Result<[usize; 2]> {
    match *t.shape() {
        [r, c] => Ok([r, c]),
        ref s => Err(op_err!("Gemm input {name} must be 2-D, got shape {s:?}")),
    }
}

/// What Gemm's `beta · C` becomes in the epilogue.
enum CTerm {
    None,
    Bias(Bias<'static>),
    PerRow(Vec<f32>),
    PerCol(Vec<f32>),
    Full(Vec<f32>),
}

/// Classifies `beta · C` by how C broadcasts to `[m, n]` (unidirectionally).
fn c_term(c: Option<&Tensor>, beta: f32, m: usize, n: usize) -> Result<CTerm> {
    let Some(c) = c else { return Ok(CTerm::None) };
    if beta == 0.0 {
        return Ok(CTerm::None);
    }
    let s = c.shape();
    ensure!(
        s.len() <= 2,
        "Gemm input C must have rank <= 2, got shape {s:?}"
    );
    let cm = if s.len() == 2 { s[0] } else { 1 };
    let cn = s.last().copied().unwrap_or(1);
    ensure!(
        (cm == 1 || cm == m) && (cn == 1 || cn == n),
        "Gemm input C of shape {s:?} does not broadcast to [{m}, {n}]"
    );
    let scaled: Vec<f32> = f32_data(c)?.iter().map(|v| v * beta).collect();
    Ok(match (cm == m && m != 1, cn == n && n != 1) {
        (false, false) => CTerm::Bias(Bias::Scalar(scaled.first().copied().unwrap_or(0.0))),
        (false, true) => CTerm::PerCol(scaled),
        (true, false) => CTerm::PerRow(scaled),
        (true, true) => CTerm::Full(scaled),
    })
}

impl Kernel for Gemm {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        ensure!(
            a.dtype() == b.dtype(),
            "Gemm operands have different types {} and {}",
            a.dtype(),
            b.dtype()
        );
        let (sa, sb) = (matrix_shape(a, "A")?, matrix_shape(b, "B")?);
        let (m, k) = if self.trans_a {
            (sa[1], sa[0])
        } else {
            (sa[0], sa[1])
        };
        let (kb, n) = if self.trans_b {
            (sb[1], sb[0])
        } else {
            (sb[0], sb[1])
        };
        ensure!(
            k == kb,
            "Gemm shapes {sa:?} and {sb:?} do not match (transA={}, transB={})",
            self.trans_a,
            self.trans_b
        );
        match a.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => {}
            DType::F64 if self.activation.is_none() => return self.run_f64(inputs, sa, sb, m, n),
            d => return Err(op_err!("Gemm does not support {d}")),
        }
        let c = c_term(opt_input(inputs, 2), self.beta, m, n)?;
        let (bias, residual) = match &c {
            CTerm::None => (Bias::None, None),
            CTerm::Bias(b) => (*b, None),
            CTerm::PerRow(v) => (Bias::PerRow(v), None),
            CTerm::PerCol(v) => (Bias::PerCol(v), None),
            CTerm::Full(v) => (Bias::None, Some(MatRef::row_major(v, m, n)?)),
        };
        let epi = Epilogue {
            alpha: self.alpha,
            bias,
            residual,
            activation: self.activation,
        };
        let a_data = f32_data(a)?;
        let lhs = operand(&a_data, sa, self.trans_a)?;
        // Every element is written (the GEMM stores C, it does not accumulate into it).
        let mut out = crate::tensor::spare::f32_output(crate::tensor::checked_numel(&[m, n])?)?;
        let c = MatMut::row_major(&mut out, m, n)?;
        // A prepacked B is never read again: its bytes (and their pages) stay released.
        match &self.packed_b {
            Some((w, shape)) if a.dtype() == DType::F32 && *shape == sb => {
                w.product(lhs, c, &epi)?
            }
            _ => {
                let b_data = f32_data(b)?;
                gemm(lhs, operand(&b_data, sb, self.trans_b)?, c, &epi)?;
            }
        }
        Ok(vec![from_f32_output(a.dtype(), vec![m, n], out)?])
    }
}

impl Gemm {
    /// The f64 product, in plain loops.
    fn run_f64(
        &self,
        inputs: &[Option<&Tensor>],
        sa: [usize; 2],
        sb: [usize; 2],
        m: usize,
        n: usize,
    ) -> Result<Vec<Tensor>> {
        let a = input(inputs, 0)?.as_slice::<f64>()?;
        let b = input(inputs, 1)?.as_slice::<f64>()?;
        let k = if self.trans_a { sa[0] } else { sa[1] };
        let at = |i: usize, p: usize| {
            if self.trans_a {
                a[p * sa[1] + i]
            } else {
                a[i * sa[1] + p]
            }
        };
        let bt = |p: usize, j: usize| {
            if self.trans_b {
                b[j * sb[1] + p]
            } else {
                b[p * sb[1] + j]
            }
        };
        let c = opt_input(inputs, 2);
        let (cs, cv) = match c {
            Some(c) => (c.shape().to_vec(), c.as_slice::<f64>()?),
            None => (vec![], &[][..]),
        };
        let cm = if cs.len() == 2 { cs[0] } else { 1 };
        let cn = cs.last().copied().unwrap_or(1);
        ensure!(
            cs.len() <= 2 && (cm == 1 || cm == m) && (cn == 1 || cn == n),
            "Gemm input C of shape {cs:?} does not broadcast to [{m}, {n}]"
        );
        let mut out = crate::tensor::filled_vec(crate::tensor::checked_numel(&[m, n])?, 0.0f64)?;
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                let cij = if c.is_some() {
                    cv[(i % cm) * cn + j % cn]
                } else {
                    0.0
                };
                out[i * n + j] = self.alpha as f64 * dot + self.beta as f64 * cij;
            }
        }
        Ok(vec![Tensor::from_vec(vec![m, n], out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Attrs, Node};

    fn node(op: &str, attrs: &[(&str, Attr)]) -> Node {
        Node {
            name: "n".into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: vec![],
            outputs: vec![],
            attrs: Attrs(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        }
    }

    fn run_op(
        op: &str,
        attrs: &[(&str, Attr)],
        inputs: &[Option<&Tensor>],
        constant: &[bool],
    ) -> Result<Tensor> {
        run_op_with(BuildOptions::default(), op, attrs, inputs, constant)
    }

    fn run_op_with(
        options: BuildOptions,
        op: &str,
        attrs: &[(&str, Attr)],
        inputs: &[Option<&Tensor>],
        constant: &[bool],
    ) -> Result<Tensor> {
        let n = node(op, attrs);
        let ctx = BuildCtx {
            node: &n,
            opset: 17,
            constants: inputs
                .iter()
                .zip(constant.iter().chain(std::iter::repeat(&false)))
                .map(|(t, &c)| if c { *t } else { None })
                .collect(),
            options,
        };
        let k = build(op, &ctx).expect("op is claimed")?;
        Ok(k.run(inputs)?.remove(0))
    }

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn seq(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        t(
            shape,
            &(0..n).map(|i| i as f32 * 0.5 - 1.0).collect::<Vec<_>>(),
        )
    }

    fn assert_close(got: &Tensor, shape: &[usize], want: &[f32]) {
        assert_eq!(got.shape(), shape);
        let g = got.as_slice::<f32>().unwrap();
        assert_eq!(g.len(), want.len());
        for (x, y) in g.iter().zip(want) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "got {g:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn matmul_2d_prepacked_and_not() {
        // [[1,2,3],[4,5,6]] · [[1,0],[0,1],[1,1]] = [[4,5],[10,11]]
        let a = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = t(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        for constant in [[false, false], [false, true]] {
            let y = run_op("MatMul", &[], &[Some(&a), Some(&b)], &constant).unwrap();
            assert_close(&y, &[2, 2], &[4.0, 5.0, 10.0, 11.0]);
        }
    }

    #[test]
    fn matmul_vectors_drop_their_dimension() {
        let v = t(&[3], &[1.0, 2.0, 3.0]);
        let m = t(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        // [3]·[3,2] → [2]; [2,3]·[3] → [2]; [3]·[3] → scalar.
        let y = run_op("MatMul", &[], &[Some(&v), Some(&m)], &[]).unwrap();
        assert_close(&y, &[2], &[4.0, 5.0]);
        let mt = t(&[2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
        let y = run_op("MatMul", &[], &[Some(&mt), Some(&v)], &[]).unwrap();
        assert_close(&y, &[2], &[4.0, 5.0]);
        let y = run_op("MatMul", &[], &[Some(&v), Some(&v)], &[]).unwrap();
        assert_close(&y, &[], &[14.0]);
    }

    #[test]
    fn matmul_broadcasts_batch_dims() {
        // A [2,1,2,3] and B [3,3,2] → [2,3,2,2]; checked against an f64 loop of the numpy rule.
        let a = seq(&[2, 1, 2, 3]);
        let b = seq(&[3, 3, 2]);
        let y = run_op("MatMul", &[], &[Some(&a), Some(&b)], &[]).unwrap();
        let (av, bv) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        let mut want = vec![];
        for i in 0..2 {
            for j in 0..3 {
                for r in 0..2 {
                    for c in 0..2 {
                        want.push(
                            (0..3)
                                .map(|p| av[i * 6 + r * 3 + p] * bv[j * 6 + p * 2 + c])
                                .sum::<f32>(),
                        );
                    }
                }
            }
        }
        assert_close(&y, &[2, 3, 2, 2], &want);
        // Batched A with a 2-D B folds into one product: same values as batch by batch.
        let a3 = seq(&[4, 5, 3]);
        let b2 = seq(&[3, 2]);
        let y = run_op("MatMul", &[], &[Some(&a3), Some(&b2)], &[false, true]).unwrap();
        let b3 = b2.reshape(vec![1, 3, 2]).unwrap();
        let y3 = run_op("MatMul", &[], &[Some(&a3), Some(&b3)], &[false, true]).unwrap();
        assert_eq!(y3.as_slice::<f32>().unwrap(), y.as_slice::<f32>().unwrap());
        let y2 = run_op(
            "MatMul",
            &[],
            &[Some(&a3.reshape(vec![20, 3]).unwrap()), Some(&b2)],
            &[],
        )
        .unwrap();
        assert_close(&y, &[4, 5, 2], y2.as_slice::<f32>().unwrap());
    }

    #[test]
    fn matmul_fused_bias_and_activation() {
        // [[1,2],[3,4]]·I + [-5, 1] → [[-4,3],[-2,5]], Relu → [[0,3],[0,5]].
        let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let id = t(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let bias = t(&[2], &[-5.0, 1.0]);
        let attrs = [("_activation", Attr::String("Relu".into()))];
        let y = run_op(
            "MatMul",
            &attrs,
            &[Some(&a), Some(&id), Some(&bias)],
            &[false, true],
        )
        .unwrap();
        assert_close(&y, &[2, 2], &[0.0, 3.0, 0.0, 5.0]);
    }

    #[test]
    fn matmul_fused_scale_comes_before_the_bias() {
        // 2·([[1,2],[3,4]]·I) + [-5, 1] → [[-3,5],[1,9]], Relu → [[0,5],[1,9]]; B as a
        // constant (prepacked) and as a batched runtime operand.
        let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let id = t(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let bias = t(&[2], &[-5.0, 1.0]);
        let attrs = [
            ("_scale", Attr::Float(2.0)),
            ("_activation", Attr::String("Relu".into())),
        ];
        for constant in [true, false] {
            let y = run_op(
                "MatMul",
                &attrs,
                &[Some(&a), Some(&id), Some(&bias)],
                &[false, constant],
            )
            .unwrap();
            assert_close(&y, &[2, 2], &[0.0, 5.0, 1.0, 9.0]);
        }
    }

    #[test]
    fn matmul_other_dtypes() {
        let a = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, 4]).unwrap();
        let y = run_op("MatMul", &[], &[Some(&a), Some(&a)], &[]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[7, 10, 15, 22]);
        let h = a.cast(DType::F16).unwrap();
        let y = run_op("MatMul", &[], &[Some(&h), Some(&h)], &[]).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        assert_eq!(
            y.cast(DType::I64).unwrap().as_slice::<i64>().unwrap(),
            &[7, 10, 15, 22]
        );
    }

    #[test]
    fn matmul_bad_shapes_are_errors() {
        let a = seq(&[2, 3]);
        assert!(run_op("MatMul", &[], &[Some(&a), Some(&a)], &[]).is_err());
        assert!(run_op("MatMul", &[], &[Some(&a), Some(&a)], &[false, true]).is_err());
        let s = Tensor::scalar(1.0f32);
        assert!(run_op("MatMul", &[], &[Some(&s), Some(&a)], &[]).is_err());
    }

    #[test]
    fn gemm_transposes_scales_and_broadcasts_c() {
        // A = [[1,2],[3,4]] given transposed, B = [[1,2],[3,4]]ᵀ given transposed:
        // alpha·A·B = 2·[[5,11],[11,25]]; beta·C with C = [1, 2] (per column), beta = 0.5.
        let at = t(&[2, 2], &[1.0, 3.0, 2.0, 4.0]);
        let bt = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let c = t(&[2], &[1.0, 2.0]);
        let attrs = [
            ("transA", Attr::Int(1)),
            ("transB", Attr::Int(1)),
            ("alpha", Attr::Float(2.0)),
            ("beta", Attr::Float(0.5)),
        ];
        let want = [10.5, 23.0, 22.5, 51.0];
        for constant in [[false, false, false], [false, true, true]] {
            let y = run_op("Gemm", &attrs, &[Some(&at), Some(&bt), Some(&c)], &constant).unwrap();
            assert_close(&y, &[2, 2], &want);
        }
        // C per row ([2,1]), scalar, and full, with the default alpha = beta = 1.
        let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let cases: [(Tensor, [f32; 4]); 3] = [
            (t(&[2, 1], &[1.0, -1.0]), [8.0, 11.0, 14.0, 21.0]),
            (t(&[], &[1.0]), [8.0, 11.0, 16.0, 23.0]),
            (t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]), [8.0, 12.0, 18.0, 26.0]),
        ];
        for (c, want) in cases {
            let y = run_op("Gemm", &[], &[Some(&a), Some(&a), Some(&c)], &[]).unwrap();
            assert_close(&y, &[2, 2], &want);
        }
        let bad = t(&[3], &[0.0; 3]);
        assert!(run_op("Gemm", &[], &[Some(&a), Some(&a), Some(&bad)], &[]).is_err());
    }

    #[test]
    fn matmul_integer_subtracts_zero_points() {
        // The ONNX operator example: A - 12 times B.
        let a = Tensor::from_vec(vec![4, 3], vec![11u8, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0]).unwrap();
        let b = Tensor::from_vec(vec![3, 2], vec![1u8, 4, 2, 5, 3, 6]).unwrap();
        let za = Tensor::scalar(12u8);
        let y = run_op("MatMulInteger", &[], &[Some(&a), Some(&b), Some(&za)], &[]).unwrap();
        assert_eq!(
            y.as_slice::<i32>().unwrap(),
            &[-38, -83, -44, -98, -50, -113, -56, -128]
        );
        // Per-row zero points of A ([12, 12, 0, 0]) and per-column of B ([0, 1]).
        let za = Tensor::from_vec(vec![4], vec![12u8, 12, 0, 0]).unwrap();
        let zb = Tensor::from_vec(vec![2], vec![0u8, 1]).unwrap();
        let y = run_op(
            "MatMulInteger",
            &[],
            &[Some(&a), Some(&b), Some(&za), Some(&zb)],
            &[],
        )
        .unwrap();
        assert_eq!(
            y.as_slice::<i32>().unwrap(),
            &[-38, -68, -44, -80, 22, 52, 16, 40]
        );
    }

    #[test]
    fn gemm_f64_matches_f32() {
        let a = Tensor::from_vec(vec![2, 3], vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let c = Tensor::from_vec(vec![1, 2], vec![0.5f64, -0.5]).unwrap();
        let attrs = [("transB", Attr::Int(1))];
        let y = run_op("Gemm", &attrs, &[Some(&a), Some(&a), Some(&c)], &[]).unwrap();
        assert_eq!(y.as_slice::<f64>().unwrap(), &[14.5, 31.5, 32.5, 76.5]);
    }

    #[test]
    fn fused_activation_attributes_parse() {
        let n = node(
            "Gemm",
            &[
                ("_activation", Attr::String("Clip".into())),
                ("_min", Attr::Float(0.0)),
                ("_max", Attr::Float(6.0)),
            ],
        );
        let ctx = BuildCtx {
            node: &n,
            opset: 17,
            constants: vec![],
            options: Default::default(),
        };
        assert_eq!(
            fused_activation(&ctx).unwrap(),
            Some(Activation::Clip(0.0, 6.0))
        );
        let n = node("Gemm", &[("_activation", Attr::String("Swish2".into()))]);
        let ctx = BuildCtx {
            node: &n,
            opset: 17,
            constants: vec![],
            options: Default::default(),
        };
        assert!(fused_activation(&ctx).is_err());
    }
    #[test]
    fn int8_option_quantizes_constant_weights_only() {
        // MatMul [2, 3, 4] × const [4, 5] and Gemm [3, 4] × const [5, 4]ᵀ: with int8 on, the
        // results differ from fp32 (the quantized path ran) by under 2% of the largest value;
        // a non-constant weight stays exact fp32.
        let int8 = BuildOptions {
            int8_matmul: true,
            ..Default::default()
        };
        let w: Vec<f32> = (0..20).map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5).collect();
        let b = t(&[4, 5], &w);
        let bt = t(
            &[5, 4],
            &(0..20).map(|i| w[(i % 4) * 5 + i / 4]).collect::<Vec<_>>(),
        );
        let (a3, a2) = (seq(&[2, 3, 4]), seq(&[3, 4]));
        let trans_b = [("transB", Attr::Int(1))];
        let no_attrs: &[(&str, Attr)] = &[];
        let cases = [
            ("MatMul", no_attrs, &a3, &b),
            ("Gemm", &trans_b[..], &a2, &bt),
        ];
        for (op, attrs, a, b) in cases {
            let inputs = [Some(a), Some(b)];
            let fp32 = run_op(op, attrs, &inputs, &[false, true]).unwrap();
            let q = run_op_with(int8, op, attrs, &inputs, &[false, true]).unwrap();
            let (fp32, q) = (
                fp32.as_slice::<f32>().unwrap(),
                q.as_slice::<f32>().unwrap(),
            );
            let max = fp32.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert_ne!(fp32, q, "{op}: int8 path not taken");
            for (x, y) in fp32.iter().zip(q) {
                assert!((x - y).abs() <= 0.02 * max, "{op}: {y} vs fp32 {x}");
            }
            let dynamic = run_op_with(int8, op, attrs, &inputs, &[false, false]).unwrap();
            assert_eq!(
                dynamic.as_slice::<f32>().unwrap(),
                fp32,
                "{op}: dynamic weight"
            );
        }
    }
}
