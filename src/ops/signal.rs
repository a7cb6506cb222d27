//! Signal processing: DFT (opsets 17 and 20), STFT, the Hann/Hamming/Blackman windows and
//! MelWeightMatrix.
//!
//! Complex tensors are real tensors with a trailing dimension of 2 (real, imaginary); real
//! signals have a trailing dimension of 1. Transforms run in f64 (one line at a time, gathered
//! from the tensor's strides) and the results are cast back to the input's float type.

use super::util::{input, normalize_axis, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err};
use infer_kernels::parallel;
use rayon::prelude::*;
use std::f64::consts::PI;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "DFT" => Dft::build(ctx),
        "STFT" => Stft::build(ctx),
        "HannWindow" => Window::build(ctx, WindowKind::Hann),
        "HammingWindow" => Window::build(ctx, WindowKind::Hamming),
        "BlackmanWindow" => Window::build(ctx, WindowKind::Blackman),
        "MelWeightMatrix" => MelWeightMatrix::build(ctx),
        _ => return None,
    })
}

/// A complex number as (real, imaginary).
type Complex = (f64, f64);

fn mul(a: Complex, b: Complex) -> Complex {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

/// The unnormalized DFT of `x` (forward: `exp(-2πi·kn/N)`, inverse: `exp(+2πi·kn/N)`).
/// Radix-2 FFT for power-of-two lengths, the direct O(n²) sum otherwise.
fn transform(x: &[Complex], inverse: bool) -> Vec<Complex> {
    let n = x.len();
    let sign = if inverse { 1.0 } else { -1.0 };
    // twiddle[k] = exp(sign·2πi·k/n); the exponent k·j is taken modulo n.
    let twiddle: Vec<Complex> = (0..n)
        .map(|k| {
            let a = sign * 2.0 * PI * k as f64 / n as f64;
            (a.cos(), a.sin())
        })
        .collect();
    if n.is_power_of_two() {
        let mut out = x.to_vec();
        fft_in_place(&mut out, &twiddle);
        return out;
    }
    (0..n)
        .map(|k| {
            x.iter().enumerate().fold((0.0, 0.0), |acc, (j, &v)| {
                let p = mul(v, twiddle[(k * j) % n]);
                (acc.0 + p.0, acc.1 + p.1)
            })
        })
        .collect()
}

/// Iterative Cooley–Tukey FFT of a power-of-two length, with the full-length twiddle table.
fn fft_in_place(x: &mut [Complex], twiddle: &[Complex]) {
    let n = x.len();
    if n <= 1 {
        return;
    }
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if i < j {
            x.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let step = n / len;
        for block in x.chunks_mut(len) {
            let (lo, hi) = block.split_at_mut(len / 2);
            for (k, (a, b)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                let t = mul(*b, twiddle[k * step]);
                *b = (a.0 - t.0, a.1 - t.1);
                *a = (a.0 + t.0, a.1 + t.1);
            }
        }
        len *= 2;
    }
}

/// A scalar integer input (e.g. `dft_length`, `frame_step`) as a non-negative length.
fn scalar_len(t: &Tensor, what: &str) -> Result<usize> {
    let v = t.to_i64_vec()?;
    ensure!(
        v.len() == 1,
        "{what} must be a scalar, got shape {:?}",
        t.shape()
    );
    usize::try_from(v[0]).map_err(|_| op_err!("{what} must not be negative, got {}", v[0]))
}

/// The float input of a signal op; complex-ness comes from its trailing dimension.
fn signal_input(x: &Tensor) -> Result<usize> {
    ensure!(
        x.dtype().is_float(),
        "signal must be a float tensor, got {}",
        x.dtype()
    );
    let s = x.shape();
    ensure!(
        s.len() >= 2 && (s[s.len() - 1] == 1 || s[s.len() - 1] == 2),
        "signal must end with a dimension of 1 (real) or 2 (complex), got shape {s:?}"
    );
    Ok(s[s.len() - 1])
}

#[derive(Debug)]
struct Dft {
    /// Opset 17–19: the axis attribute; opset 20+: `None`, read from input 2 (default -2).
    axis_attr: Option<i64>,
    inverse: bool,
    onesided: bool,
}

impl Dft {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let a = ctx.attrs();
        Ok(Box::new(Dft {
            axis_attr: if ctx.opset < 20 {
                Some(a.int_or("axis", 1)?)
            } else {
                None
            },
            inverse: a.int_or("inverse", 0)? != 0,
            onesided: a.int_or("onesided", 0)? != 0,
        }))
    }
}

impl Kernel for Dft {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let c = signal_input(x)?;
        let shape = x.shape();
        let rank = shape.len();
        let axis = match (self.axis_attr, opt_input(inputs, 2)) {
            (Some(a), _) => a,
            (None, Some(t)) => {
                let v = t.to_i64_vec()?;
                ensure!(v.len() == 1, "axis must be a scalar");
                v[0]
            }
            (None, None) => -2,
        };
        let axis = normalize_axis(axis, rank)?;
        ensure!(
            axis < rank - 1,
            "axis {axis} is the real/imaginary dimension"
        );
        let n_in = shape[axis];
        // An inverse one-sided transform (irfft) takes the n/2+1 bins of a Hermitian spectrum.
        let irfft = self.inverse && self.onesided;
        let n = match opt_input(inputs, 1) {
            Some(t) => scalar_len(t, "dft_length")?,
            None if irfft => 2 * n_in.saturating_sub(1),
            None => n_in,
        };
        ensure!(n > 0, "dft_length must be positive");
        let (n_out, c_out) = match (self.inverse, self.onesided) {
            (false, true) => (n / 2 + 1, 2),
            (true, true) => (n, 1),
            _ => (n, 2),
        };
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..rank - 1].iter().product();
        let data = x.to_f64_vec()?;
        let scale = if self.inverse { 1.0 / n as f64 } else { 1.0 };
        let mut out = vec![0.0; outer * n_out * inner * c_out];
        let block = n_out * inner * c_out;
        if block > 0 {
            parallel::for_each(out.par_chunks_mut(block).enumerate(), |(o, out_block)| {
                let src = &data[o * n_in * inner * c..(o + 1) * n_in * inner * c];
                for i in 0..inner {
                    let at = |k: usize| {
                        let p = (k * inner + i) * c;
                        (src[p], if c == 2 { src[p + 1] } else { 0.0 })
                    };
                    let mut line = vec![(0.0, 0.0); n];
                    if irfft {
                        // Hermitian extension; the real part of its inverse is the c2r
                        // result (imaginary parts of the DC and Nyquist bins drop out).
                        for k in 0..n_in.min(n / 2 + 1) {
                            let v = at(k);
                            line[k] = v;
                            if k > 0 {
                                line[n - k] = (v.0, -v.1);
                            }
                        }
                    } else {
                        for (k, slot) in line.iter_mut().enumerate().take(n_in) {
                            *slot = at(k);
                        }
                    }
                    let spectrum = transform(&line, self.inverse);
                    for (k, v) in spectrum.iter().take(n_out).enumerate() {
                        let p = (k * inner + i) * c_out;
                        out_block[p] = v.0 * scale;
                        if c_out == 2 {
                            out_block[p + 1] = v.1 * scale;
                        }
                    }
                }
            });
        }
        let mut out_shape = shape.to_vec();
        out_shape[axis] = n_out;
        out_shape[rank - 1] = c_out;
        Ok(vec![Tensor::from_vec(out_shape, out)?.cast(x.dtype())?])
    }
}

#[derive(Debug)]
struct Stft {
    onesided: bool,
}

impl Stft {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Stft {
            onesided: ctx.attrs().int_or("onesided", 1)? != 0,
        }))
    }
}

impl Kernel for Stft {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let c = signal_input(x)?;
        ensure!(
            x.rank() == 3,
            "signal must be [batch, length, 1 or 2], got {:?}",
            x.shape()
        );
        let (batch, len) = (x.shape()[0], x.shape()[1]);
        let step = scalar_len(input(inputs, 1)?, "frame_step")?;
        ensure!(step > 0, "frame_step must be positive");
        let window = opt_input(inputs, 2).map(|w| w.to_f64_vec()).transpose()?;
        let frame = match (opt_input(inputs, 3), &window) {
            (Some(t), _) => scalar_len(t, "frame_length")?,
            (None, Some(w)) => w.len(),
            (None, None) => len,
        };
        if let Some(w) = &window {
            ensure!(
                w.len() == frame,
                "window has {} values for frames of {frame}",
                w.len()
            );
        }
        ensure!(
            frame > 0 && frame <= len,
            "frame_length {frame} does not fit a signal of {len}"
        );
        let frames = 1 + (len - frame) / step;
        let bins = if self.onesided { frame / 2 + 1 } else { frame };
        let data = x.to_f64_vec()?;
        let mut out = vec![0.0; batch * frames * bins * 2];
        parallel::for_each(
            out.par_chunks_mut(bins * 2).enumerate(),
            |(bf, out_frame)| {
                let (b, f) = (bf / frames, bf % frames);
                let line: Vec<Complex> = (0..frame)
                    .map(|t| {
                        let p = (b * len + f * step + t) * c;
                        let w = window.as_ref().map_or(1.0, |w| w[t]);
                        let im = if c == 2 { data[p + 1] } else { 0.0 };
                        (data[p] * w, im * w)
                    })
                    .collect();
                for (k, v) in transform(&line, false).iter().take(bins).enumerate() {
                    out_frame[2 * k] = v.0;
                    out_frame[2 * k + 1] = v.1;
                }
            },
        );
        let out = Tensor::from_vec(vec![batch, frames, bins, 2], out)?;
        Ok(vec![out.cast(x.dtype())?])
    }
}

/// The `output_datatype` attribute of the window and mel ops (default float32).
fn output_dtype(ctx: &BuildCtx) -> Result<DType> {
    let code = ctx.attrs().int_or("output_datatype", 1)?;
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| op_err!("unsupported output_datatype {code}"))
}

#[derive(Clone, Copy, Debug)]
enum WindowKind {
    Hann,
    Hamming,
    Blackman,
}

impl WindowKind {
    /// The window's value at phase `x = 2π·n/N`.
    fn at(self, x: f64) -> f64 {
        match self {
            WindowKind::Hann => 0.5 - 0.5 * x.cos(),
            WindowKind::Hamming => {
                let alpha = 25.0 / 46.0;
                alpha - (1.0 - alpha) * x.cos()
            }
            WindowKind::Blackman => 0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos(),
        }
    }
}

#[derive(Debug)]
struct Window {
    kind: WindowKind,
    /// Periodic windows (for spectral analysis) divide by N, symmetric ones by N-1.
    periodic: bool,
    dtype: DType,
}

impl Window {
    fn build(ctx: &BuildCtx, kind: WindowKind) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Window {
            kind,
            periodic: ctx.attrs().int_or("periodic", 1)? != 0,
            dtype: output_dtype(ctx)?,
        }))
    }

    /// `size` comes from the model's data: allocated through the checked (bounded) path.
    fn values(&self, size: usize) -> Result<Vec<f64>> {
        let denom = if self.periodic {
            size
        } else {
            size.saturating_sub(1)
        };
        let mut w = crate::tensor::filled_vec(size, 1.0f64)?;
        // A one-point symmetric window is its peak (and an empty one has no points).
        if denom > 0 {
            for (n, v) in w.iter_mut().enumerate() {
                *v = self.kind.at(2.0 * PI * n as f64 / denom as f64);
            }
        }
        Ok(w)
    }
}

impl Kernel for Window {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let size = scalar_len(input(inputs, 0)?, "size")?;
        let w = Tensor::from_vec(vec![size], self.values(size)?)?;
        Ok(vec![w.cast(self.dtype)?])
    }
}

/// The `[dft_length/2 + 1, num_mel_bins]` matrix of triangular mel filters.
#[derive(Debug)]
struct MelWeightMatrix {
    dtype: DType,
}

impl MelWeightMatrix {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(MelWeightMatrix {
            dtype: output_dtype(ctx)?,
        }))
    }
}

fn hz_to_mel(hz: f64) -> f64 {
    2595.0 * (hz / 700.0).ln_1p() / 10f64.ln()
}

fn mel_to_hz(mel: f64) -> f64 {
    700.0 * (mel / 2595.0 * 10f64.ln()).exp_m1()
}

impl Kernel for MelWeightMatrix {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let mels = scalar_len(input(inputs, 0)?, "num_mel_bins")?;
        let dft_length = scalar_len(input(inputs, 1)?, "dft_length")?;
        let rate = scalar_len(input(inputs, 2)?, "sample_rate")?;
        ensure!(rate > 0, "sample_rate must be positive");
        let scalar_f = |i: usize, what: &str| -> Result<f64> {
            let v = input(inputs, i)?.to_f64_vec()?;
            ensure!(v.len() == 1, "{what} must be a scalar");
            Ok(v[0])
        };
        let (lower, upper) = (
            scalar_f(3, "lower_edge_hertz")?,
            scalar_f(4, "upper_edge_hertz")?,
        );
        let bins = dft_length / 2 + 1;
        // mels + 2 edges spaced evenly on the mel scale, mapped to spectrogram bins.
        let (lo_mel, hi_mel) = (hz_to_mel(lower), hz_to_mel(upper));
        let step = (hi_mel - lo_mel) / (mels + 2) as f64;
        let edges = (0..mels + 2)
            .map(|i| {
                let hz = mel_to_hz(i as f64 * step + lo_mel);
                let bin = ((dft_length + 1) as f64 * hz / rate as f64).floor();
                ensure!(
                    bin >= 0.0 && (bin as usize) < bins,
                    "mel edge at {hz} Hz falls outside the {bins} spectrogram bins"
                );
                Ok(bin as usize)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = vec![0.0; bins * mels];
        for (m, e) in edges.windows(3).enumerate() {
            let (left, center, right) = (e[0], e[1], e[2]);
            if center == left {
                out[center * mels + m] = 1.0;
            } else {
                for j in left..=center {
                    out[j * mels + m] = (j - left) as f64 / (center - left) as f64;
                }
            }
            for j in center..right {
                out[j * mels + m] = (right - j) as f64 / (right - center) as f64;
            }
        }
        Ok(vec![
            Tensor::from_vec(vec![bins, mels], out)?.cast(self.dtype)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "got {got:?}, want {want:?}");
        }
    }

    fn flat(v: &[Complex]) -> Vec<f64> {
        v.iter().flat_map(|&(a, b)| [a, b]).collect()
    }

    #[test]
    fn fft_and_direct_dft_match_numpy() {
        // np.fft.fft([1, 2, 3, 4]) = [10, -2+2j, -2, -2-2j]
        let x: Vec<Complex> = [1.0, 2.0, 3.0, 4.0].iter().map(|&v| (v, 0.0)).collect();
        close(
            &flat(&transform(&x, false)),
            &[10.0, 0.0, -2.0, 2.0, -2.0, 0.0, -2.0, -2.0],
            1e-12,
        );
        // np.fft.fft([1, 2, 3]) = [6, -1.5+0.8660254j, -1.5-0.8660254j]
        let x: Vec<Complex> = [1.0, 2.0, 3.0].iter().map(|&v| (v, 0.0)).collect();
        close(
            &flat(&transform(&x, false)),
            &[
                6.0,
                0.0,
                -1.5,
                0.866_025_403_784_438_6,
                -1.5,
                -0.866_025_403_784_438_6,
            ],
            1e-12,
        );
    }

    fn run_dft(dft: Dft, x: Tensor, len: Option<i64>) -> Tensor {
        let len = len.map(Tensor::scalar);
        dft.run(&[Some(&x), len.as_ref(), None]).unwrap().remove(0)
    }

    #[test]
    fn rfft_then_irfft_round_trips() {
        // [1, 5] real signal along axis 1: np.fft.rfft([0, 1, 2, 3, 4]).
        let x = Tensor::from_vec(vec![1, 5, 1], vec![0f32, 1.0, 2.0, 3.0, 4.0]).unwrap();
        let rfft = Dft {
            axis_attr: Some(1),
            inverse: false,
            onesided: true,
        };
        let spec = run_dft(rfft, x, None);
        assert_eq!(spec.shape(), &[1, 3, 2]);
        let want = [10.0, 0.0, -2.5, 3.440_954_8, -2.5, 0.812_299_24];
        close(&spec.to_f64_vec().unwrap(), &want, 1e-5);
        let irfft = Dft {
            axis_attr: Some(1),
            inverse: true,
            onesided: true,
        };
        let back = run_dft(irfft, spec, Some(5));
        assert_eq!(back.shape(), &[1, 5, 1]);
        close(
            &back.to_f64_vec().unwrap(),
            &[0.0, 1.0, 2.0, 3.0, 4.0],
            1e-5,
        );
    }

    #[test]
    fn dft_rejects_the_complex_axis() {
        let x = Tensor::from_vec(vec![1, 4, 2], vec![0f32; 8]).unwrap();
        let dft = Dft {
            axis_attr: Some(-1),
            inverse: false,
            onesided: false,
        };
        assert!(dft.run(&[Some(&x)]).is_err());
    }

    #[test]
    fn windows_match_numpy() {
        let hann = Window {
            kind: WindowKind::Hann,
            periodic: false,
            dtype: DType::F32,
        };
        // np.hanning(5)
        close(&hann.values(5).unwrap(), &[0.0, 0.5, 1.0, 0.5, 0.0], 1e-12);
        // Degenerate sizes (found by fuzzing: a symmetric window of size 0 underflowed).
        assert!(hann.values(0).unwrap().is_empty());
        assert_eq!(hann.values(1).unwrap(), [1.0]);
        assert!(hann.values(usize::MAX / 2).is_err());
        let blackman = Window {
            kind: WindowKind::Blackman,
            periodic: true,
            dtype: DType::F32,
        };
        // scipy.signal.get_window('blackman', 4)
        close(
            &blackman.values(4).unwrap(),
            &[-1.387_778_8e-17, 0.34, 1.0, 0.34],
            1e-12,
        );
    }

    #[test]
    fn stft_of_a_constant_is_a_dc_peak() {
        let x = Tensor::from_vec(vec![1, 8, 1], vec![1f32; 8]).unwrap();
        let step = Tensor::scalar(4i64);
        let len = Tensor::scalar(4i64);
        let stft = Stft { onesided: true };
        let y = stft
            .run(&[Some(&x), Some(&step), None, Some(&len)])
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), &[1, 2, 3, 2]);
        close(
            &y.to_f64_vec().unwrap(),
            &[4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            1e-6,
        );
    }
}
