//! Microbenchmarks of the compute kernels: `cargo bench -p infer-kernels`.
//!
//! - `sgemm`: square products and the zoo's skinny transformer shapes, reported in elements
//!   (multiply-adds) per second, so GFLOP/s = 2 × the reported rate.
//! - `depthwise`: the register-blocked plane kernel (`blocked`), the row-by-row `axpy_taps`
//!   formulation it replaced (`rows`) and 16 planes with a channel per lane (`lanes16`), on
//!   mobilenet/efficientnet plane shapes, per-plane throughput.
//! - `activation`: the epilogue activations over a 56×56 plane, in place (as GEMM applies them).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use infer_kernels::depthwise::{depthwise_plane, PlaneGeometry};
use infer_kernels::depthwise_lanes::{depthwise_planes, LanesScratch, LanesWeights};
use infer_kernels::gemm::{axpy_taps, gemm_serial, Epilogue, MatMut, MatRef, Tap};
use std::hint::black_box;

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
        .collect()
}

fn sgemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    group.sample_size(10);
    for (m, k, n) in [
        (512, 512, 512),
        (1024, 1024, 1024),
        (128, 768, 3072),
        (128, 3072, 768),
    ] {
        let a = values(m * k);
        let b = values(k * n);
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((m * k * n) as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{m}x{k}x{n}")),
            |bench| {
                bench.iter(|| {
                    let a = MatRef::row_major(&a, m, k).unwrap();
                    let b = MatRef::row_major(&b, k, n).unwrap();
                    let c = MatMut::row_major(&mut out, m, n).unwrap();
                    gemm_serial(a, b, c, &Epilogue::default()).unwrap();
                    black_box(&out);
                })
            },
        );
    }
    group.finish();
}

/// The pre-register-blocking formulation: one `axpy_taps` pass per kernel row.
fn depthwise_rows(g: &PlaneGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    let [h, wd] = g.input;
    let [oh_n, ow_n] = g.output;
    let [kh_n, kw_n] = g.kernel;
    let (s, d, p) = (g.stride[1], g.dilation[1], g.pad[1]);
    let taps: Vec<Tap> = (0..kw_n)
        .map(|kw| {
            let lo = p.saturating_sub(kw * d).div_ceil(s).min(ow_n);
            let hi = (p + wd)
                .saturating_sub(kw * d)
                .div_ceil(s)
                .min(ow_n)
                .max(lo);
            Tap {
                index: kw,
                outputs: lo..hi,
                first: (lo * s + kw * d).saturating_sub(p),
            }
        })
        .collect();
    y.fill(0.0);
    for oh in 0..oh_n {
        let out = &mut y[oh * ow_n..(oh + 1) * ow_n];
        for kh in 0..kh_n {
            let Some(ih) = (oh * g.stride[0] + kh * g.dilation[0])
                .checked_sub(g.pad[0])
                .filter(|&i| i < h)
            else {
                continue;
            };
            axpy_taps(
                out,
                &x[ih * wd..(ih + 1) * wd],
                &w[kh * kw_n..(kh + 1) * kw_n],
                &taps,
                s,
            );
        }
    }
}

fn depthwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("depthwise");
    // (plane, kernel, stride): mobilenet_v2 and efficientnet_b0 layers.
    for (hw, k, s) in [
        (112, 3, 1),
        (112, 3, 2),
        (56, 3, 1),
        (28, 5, 1),
        (14, 3, 1),
        (14, 5, 1),
        (14, 5, 2),
        (7, 3, 1),
        (7, 5, 1),
    ] {
        let o = (hw + 2 * (k / 2) - k) / s + 1;
        let g = PlaneGeometry {
            input: [hw, hw],
            output: [o, o],
            kernel: [k, k],
            stride: [s, s],
            dilation: [1, 1],
            pad: [k / 2, k / 2],
        };
        let x = values(hw * hw);
        let w = values(k * k);
        let mut y = vec![0.0f32; o * o];
        let mut scratch = infer_kernels::depthwise::PlaneScratch::new();
        let name = format!("{hw}x{hw}_k{k}_s{s}");
        group.throughput(Throughput::Elements((o * o * k * k) as u64));
        group.bench_function(BenchmarkId::new("blocked", &name), |b| {
            b.iter(|| depthwise_plane(&g, &x, &w, 0.0, None, &mut y, &mut scratch))
        });
        group.bench_function(BenchmarkId::new("rows", &name), |b| {
            b.iter(|| depthwise_rows(&g, &x, &w, &mut y))
        });
        // 16 planes with channels in the lanes (per-plane throughput, as above).
        let (x16, b16) = (values(16 * hw * hw), values(16));
        let w16 = LanesWeights::new(&values(16 * k * k), 16, k * k);
        let mut y16 = vec![0.0f32; 16 * o * o];
        let mut lanes = LanesScratch::new();
        group.throughput(Throughput::Elements((16 * o * o * k * k) as u64));
        group.bench_function(BenchmarkId::new("lanes16", &name), |b| {
            b.iter(|| {
                depthwise_planes(&g, 16, &x16, w16.group(0), &b16, None, &mut y16, &mut lanes)
            })
        });
    }
    group.finish();
}

fn activation(c: &mut Criterion) {
    use infer_kernels::elementwise::{apply_activation, Activation};
    let mut group = c.benchmark_group("activation");
    let n = 56 * 56;
    let x: Vec<f32> = values(n).iter().map(|v| v * 8.0).collect();
    let mut y = x.clone();
    group.throughput(Throughput::Elements(n as u64));
    for (name, act) in [
        ("silu", Activation::Silu),
        ("sigmoid", Activation::Sigmoid),
        ("gelu", Activation::Gelu),
        ("relu", Activation::Relu),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                y.copy_from_slice(&x);
                apply_activation(act, black_box(&mut y));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sgemm, depthwise, activation);
criterion_main!(benches);
