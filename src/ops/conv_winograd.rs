//! Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions: 36 multiplies per 4×4 output tile
//! and input channel instead of 144 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2015). onnxruntime's CPU provider convolves these by im2col GEMM.
//!
//! Each 6×6 input tile `d` (a 4×4 output tile plus the kernel's halo; neighbours overlap by
//! 2) becomes `V = Bᵀ·d·B`, each 3×3 kernel `U = G·g·Gᵀ` (once, at build time), and each
//! output tile `Aᵀ·(Σ_c U ⊙ V)·A`. The sum over channels of the elementwise products is one
//! GEMM per tile point `p` (36 of them): `Mp[M, tiles] = Up[M, C] · Vp[C, tiles]`, whose depth
//! is `C` rather than im2col's `9·C`.
//!
//! The transforms work on whole rows of tiles so that their inner loops run over consecutive
//! tiles (and vectorize): an input row is first split into 4 phases, `phase[q][k] =
//! row[4k + q]`, after which tap `s` of every tile along the row is the contiguous run
//! `phase[s % 4][s / 4..]`.
//!
//! Buffers: `V` is `[C][36][tiles]` (the input transform writes one channel per task), the
//! products `[36][M][tiles]` (one GEMM per task); `tiles` counts the tiles of every image.

use super::conv::Geometry;
use crate::error::Result;
use crate::tensor::spare;
use infer_kernels::gemm::{gemm_serial, Activation, Epilogue, Lhs, MatMut, MatRef, PackedA, Rhs};
use rayon::prelude::*;

/// Tile points: the 6×6 transformed tile.
const POINTS: usize = 36;

/// `G`, which maps 3 kernel taps to 6 tile points.
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A 3×3 kernel of `m` output and `c` input channels in the Winograd domain: one packed
/// `[m, c]` matrix per tile point.
#[derive(Debug)]
pub(super) struct WinogradWeights {
    points: Vec<PackedA>,
    m: usize,
    c: usize,
}

/// Where one run's outputs go and what is added to them.
pub(super) struct WinogradOutput<'a> {
    pub y: &'a mut [f32],
    pub bias: Option<&'a [f32]>,
    /// Same shape as `y`.
    pub residual: Option<&'a [f32]>,
    pub activation: Option<Activation>,
}

impl WinogradWeights {
    /// Transforms weights `[m, c, 3, 3]` (row-major).
    pub fn new(w: &[f32], m: usize, c: usize) -> Result<Self> {
        crate::ensure!(
            w.len() == m * c * 9,
            "3x3 weights of {m}x{c} channels need {} values, got {}",
            m * c * 9,
            w.len()
        );
        let mut u = vec![0.0f32; POINTS * m * c];
        for (mc, g) in w.chunks_exact(9).enumerate() {
            // G·g (6×3), then (G·g)·Gᵀ (6×6), in f64 so rounding happens once.
            let mut gg = [[0.0f64; 3]; 6];
            for (i, row) in gg.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|k| G[i][k] * g[k * 3 + j] as f64).sum();
                }
            }
            for i in 0..6 {
                for j in 0..6 {
                    let v: f64 = (0..3).map(|k| gg[i][k] * G[j][k]).sum();
                    u[(i * 6 + j) * m * c + mc] = v as f32;
                }
            }
        }
        let points = u
            .chunks_exact(m * c)
            .map(|up| Ok(PackedA::new(MatRef::row_major(up, m, c)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(WinogradWeights { points, m, c })
    }

    /// Whether this kernel computes `geo` (a 2-D 3×3 convolution with unit stride and
    /// dilation; any padding).
    pub fn fits(geo: &Geometry) -> bool {
        geo.input[0] == 1
            && geo.output[0] == 1
            && geo.kernel == [1, 3, 3]
            && geo.stride == [1; 3]
            && geo.dilation == [1; 3]
    }

    /// `y = conv(x)` for `batch` images of `c` channels (NCHW), then bias, residual and
    /// activation. `geo` must `fit`.
    pub fn run(&self, geo: &Geometry, batch: usize, x: &[f32], out: WinogradOutput) -> Result<()> {
        let tiles = Tiles::new(geo);
        let per_image = tiles.rows * tiles.cols;
        let all = batch * per_image;
        let (m, c) = (self.m, self.c);
        let in_len = geo.input_len();
        crate::ensure!(
            x.len() == batch * c * in_len && out.y.len() == batch * m * geo.output_len(),
            "Winograd convolution: buffers do not match the geometry"
        );
        if all == 0 || m == 0 {
            return Ok(());
        }

        let mut v = spare::f32_output(c * POINTS * all)?;
        v.par_chunks_mut(POINTS * all).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(phases, rows), (ch, v_ch)| {
                for n in 0..batch {
                    let plane = &x[(n * c + ch) * in_len..(n * c + ch + 1) * in_len];
                    let dst = n * per_image;
                    tiles.input_transform(geo, plane, phases, rows, v_ch, all, dst);
                }
            },
        );

        let mut products = spare::f32_output(POINTS * m * all)?;
        products
            .par_chunks_mut(m * all)
            .zip(&self.points)
            .enumerate()
            .try_for_each(|(p, (mp, up))| -> Result<()> {
                let vp = MatRef::new(&v[p * all..], c, all, POINTS * all, 1)?;
                let mp = MatMut::row_major(mp, m, all)?;
                gemm_serial(Lhs::Packed(up), Rhs::Mat(vp), mp, &Epilogue::default())?;
                Ok(())
            })?;
        spare::give_back_vec(v);

        let out_len = geo.output_len();
        out.y
            .par_chunks_mut(out_len)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (plane, y)| {
                let (n, ch) = (plane / m, plane % m);
                let src = ch * all + n * per_image;
                tiles.output_transform(geo, &products, m * all, src, scratch, y);
                if let Some(b) = out.bias {
                    y.iter_mut().for_each(|v| *v += b[ch]);
                }
                if let Some(r) = out.residual {
                    let r = &r[plane * out_len..(plane + 1) * out_len];
                    y.iter_mut().zip(r).for_each(|(v, r)| *v += r);
                }
                if let Some(act) = out.activation {
                    infer_kernels::elementwise::apply_activation(act, y);
                }
            });
        spare::give_back_vec(products);
        Ok(())
    }
}

/// The 4×4 output tiles covering one output plane.
struct Tiles {
    rows: usize,
    cols: usize,
}

impl Tiles {
    fn new(geo: &Geometry) -> Self {
        Tiles {
            rows: geo.output[1].div_ceil(4),
            cols: geo.output[2].div_ceil(4),
        }
    }

    /// Length of one phase row: the tiles along a row plus one (taps 4 and 5 of the last tile
    /// are the next tile's taps 0 and 1).
    fn phase_len(&self) -> usize {
        self.cols + 1
    }

    /// Transforms every tile of one input plane into `v` (`[36][stride]`), tile `t` of the
    /// plane at column `dst + t`.
    #[allow(clippy::too_many_arguments)]
    fn input_transform(
        &self,
        geo: &Geometry,
        plane: &[f32],
        phases: &mut Vec<f32>,
        rows: &mut Vec<f32>,
        v: &mut [f32],
        stride: usize,
        dst: usize,
    ) {
        let len = self.phase_len();
        let row_len = 4 * len;
        // Every input row the tiles read (4 per tile row, plus the last tile row's halo of
        // 2), split into phases, zero outside the input.
        let padded_rows = 4 * self.rows + 2;
        phases.clear();
        phases.resize(padded_rows * row_len, 0.0);
        let [_, h, w] = geo.input;
        let (top, left) = (geo.pad[1], geo.pad[2]);
        for (r, dst_row) in phases.chunks_exact_mut(row_len).enumerate() {
            let Some(iy) = (r < h + top).then(|| r.checked_sub(top)).flatten() else {
                continue;
            };
            let src = &plane[iy * w..(iy + 1) * w];
            for (q, ph) in dst_row.chunks_exact_mut(len).enumerate() {
                // Phase q, entry k, is input column 4k + q − left: the k whose column is
                // inside the input form one run.
                let first_k = left.saturating_sub(q).div_ceil(4);
                let first_col = 4 * first_k + q - left;
                let Some(ph) = ph.get_mut(first_k..) else {
                    continue;
                };
                for (d, s) in ph.iter_mut().zip(src.iter().skip(first_col).step_by(4)) {
                    *d = *s;
                }
            }
        }
        // Bᵀ along the columns of each tile row (6 input rows → 6 rows, over all phases at
        // once), then Bᵀ along each row (the 6 taps of every tile → 6 points).
        rows.clear();
        rows.resize(6 * row_len, 0.0);
        for ty in 0..self.rows {
            let d = &phases[4 * ty * row_len..(4 * ty + 6) * row_len];
            let d: [&[f32]; 6] = std::array::from_fn(|r| &d[r * row_len..(r + 1) * row_len]);
            input_1d(d, split6(rows, row_len));
            for i in 0..6 {
                let t = &rows[i * row_len..(i + 1) * row_len];
                let taps: [&[f32]; 6] = std::array::from_fn(|s| {
                    let start = (s % 4) * len + s / 4;
                    &t[start..start + self.cols]
                });
                let out = &mut v[i * 6 * stride..(i + 1) * 6 * stride];
                let at = dst + ty * self.cols;
                let mut out = split6(out, stride);
                input_1d(taps, out.each_mut().map(|o| &mut o[at..at + self.cols]));
            }
        }
    }

    /// Transforms the products of one output plane back into it: point `p` of tile `t` is
    /// `products[p · stride + src + t]`. Each step runs over all the plane's tiles at once.
    fn output_transform(
        &self,
        geo: &Geometry,
        products: &[f32],
        stride: usize,
        src: usize,
        scratch: &mut Vec<f32>,
        y: &mut [f32],
    ) {
        let n = self.rows * self.cols;
        let [_, oh, ow] = geo.output;
        // Every element is written before it is read: no need to clear what a previous
        // plane left.
        scratch.resize(40 * n, 0.0);
        let (cols, outs) = scratch.split_at_mut(24 * n);
        // Aᵀ down each tile column j (points i·6 + j, i = 0..6) → 4 rows a, stored at
        // cols[(a·6 + j)·n..].
        for j in 0..6 {
            let m: [&[f32]; 6] = std::array::from_fn(|i| {
                let p = i * 6 + j;
                &products[p * stride + src..p * stride + src + n]
            });
            output_1d(m, split4_strided(cols, j * n, 6 * n, n));
        }
        // Aᵀ along each row a → outs[(a·4 + b)·n..]: output (4ty + a, 4k + b) of tile
        // (ty, k).
        for a in 0..4 {
            let m: [&[f32]; 6] =
                std::array::from_fn(|j| &cols[(a * 6 + j) * n..(a * 6 + j + 1) * n]);
            output_1d(m, split4_strided(outs, a * 4 * n, n, n));
        }
        for (oy, y_row) in y.chunks_exact_mut(ow).take(oh).enumerate() {
            let (ty, a) = (oy / 4, oy % 4);
            let first = a * 4 * n + ty * self.cols;
            let o: [&[f32]; 4] =
                std::array::from_fn(|b| &outs[first + b * n..first + b * n + self.cols]);
            interleave4(o, y_row);
        }
    }
}

/// `o = Bᵀ·d` elementwise over equal-length rows (`Bᵀ` has rows 4,0,-5,0,1,0 / 0,-4,-4,1,1,0
/// / 0,4,-4,-1,1,0 / 0,-2,-1,2,1,0 / 0,2,-1,-2,1,0 / 0,4,0,-5,0,1), with its common terms
/// shared.
fn input_1d(d: [&[f32]; 6], o: [&mut [f32]; 6]) {
    let n = o[0].len();
    let [d0, d1, d2, d3, d4, d5] = d.map(|r| &r[..n]);
    let [o0, o1, o2, o3, o4, o5] = o.map(|r| &mut r[..n]);
    for k in 0..n {
        let t0 = d4[k] - 4.0 * d2[k];
        let t1 = d3[k] - 4.0 * d1[k];
        let t2 = d4[k] - d2[k];
        let t3 = 2.0 * (d3[k] - d1[k]);
        o0[k] = 4.0 * d0[k] - 5.0 * d2[k] + d4[k];
        o1[k] = t0 + t1;
        o2[k] = t0 - t1;
        o3[k] = t2 + t3;
        o4[k] = t2 - t3;
        o5[k] = 4.0 * d1[k] - 5.0 * d3[k] + d5[k];
    }
}

/// `o = Aᵀ·m` elementwise over equal-length rows (`Aᵀ` has rows 1,1,1,1,1,0 / 0,1,-1,2,-2,0 /
/// 0,1,1,4,4,0 / 0,1,-1,8,-8,1).
fn output_1d(m: [&[f32]; 6], o: [&mut [f32]; 4]) {
    let n = o[0].len();
    let [m0, m1, m2, m3, m4, m5] = m.map(|r| &r[..n]);
    let [o0, o1, o2, o3] = o.map(|r| &mut r[..n]);
    for k in 0..n {
        let sum12 = m1[k] + m2[k];
        let diff12 = m1[k] - m2[k];
        let sum34 = m3[k] + m4[k];
        let diff34 = m3[k] - m4[k];
        o0[k] = m0[k] + sum12 + sum34;
        o1[k] = diff12 + 2.0 * diff34;
        o2[k] = sum12 + 4.0 * sum34;
        o3[k] = diff12 + 8.0 * diff34 + m5[k];
    }
}

/// `y[4k + b] = o[b][k]`, as far as `y` reaches (its last group may be partial).
fn interleave4(o: [&[f32]; 4], y: &mut [f32]) {
    let whole = y.len() / 4;
    let [o0, o1, o2, o3] = o.map(|r| &r[..whole]);
    for (k, y4) in y.chunks_exact_mut(4).enumerate() {
        y4.copy_from_slice(&[o0[k], o1[k], o2[k], o3[k]]);
    }
    let tail = y.chunks_exact_mut(4).into_remainder();
    for (b, v) in tail.iter_mut().enumerate() {
        *v = o[b][whole];
    }
}

/// The first six `len`-long rows of `buf`.
fn split6(buf: &mut [f32], len: usize) -> [&mut [f32]; 6] {
    let mut rows = buf.chunks_exact_mut(len);
    std::array::from_fn(|_| rows.next().map_or(&mut [][..], |r| r))
}

/// Four disjoint `len`-long slices of `buf` starting at `first`, `first + step`, …
/// (`step >= len`).
fn split4_strided(buf: &mut [f32], first: usize, step: usize, len: usize) -> [&mut [f32]; 4] {
    let mut rest = &mut buf[first..];
    std::array::from_fn(|_| {
        let taken = std::mem::take(&mut rest);
        let (row, tail) = taken.split_at_mut(len.min(taken.len()));
        rest = tail.get_mut(step - len..).unwrap_or_default();
        row
    })
}
