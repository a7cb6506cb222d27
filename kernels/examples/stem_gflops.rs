//! Times `stem::stem_image` on the zoo's stems (224×224 RGB in), median of runs, with and
//! without their activation: ms and GFLOP/s (compare with `sgemm_gflops` on the same host).
//! `cargo run --release -p infer-kernels --example stem_gflops [THREADS]`
use infer_kernels::depthwise::PlaneGeometry;
use infer_kernels::gemm::Activation;
use infer_kernels::stem::{stem_image, StemWeights};
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map_or(1, |s| s.parse().unwrap_or(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // (name, output channels, kernel side, padding, activation)
    let stems = [
        ("efficientnet_b0", 32, 3, 1, Activation::Silu),
        ("mobilenet_v2", 32, 3, 1, Activation::Clip(0.0, 6.0)),
        ("squeezenet1_1", 64, 3, 0, Activation::Relu),
        ("resnet50", 64, 7, 3, Activation::Relu),
    ];
    for (name, m, k, pad, act) in stems {
        let out = (224 + 2 * pad - k) / 2 + 1;
        let g = PlaneGeometry {
            input: [224, 224],
            output: [out, out],
            kernel: [k, k],
            stride: [2, 2],
            dilation: [1, 1],
            pad: [pad, pad],
        };
        let taps = 3 * k * k;
        let x: Vec<f32> = (0..3 * 224 * 224).map(|i| (i % 13) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..m * taps).map(|i| (i % 7) as f32 * 0.01).collect();
        let w = StemWeights::new(&w, m, taps).expect("a stem the kernel takes");
        let bias = vec![0.1; m];
        let mut y = vec![0.0; m * out * out];
        let flops = 2.0 * (m * out * out * taps) as f64;
        for activation in [None, Some(act)] {
            let mut times = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                let done =
                    pool.install(|| stem_image(&g, 3, &x, &w, Some(&bias), activation, &mut y));
                times.push(t.elapsed().as_secs_f64() * 1e3);
                assert!(done, "no stem kernel on this CPU");
            }
            times.sort_by(f64::total_cmp);
            let ms = times[times.len() / 2];
            let label = if activation.is_some() {
                "with activation"
            } else {
                "bias only"
            };
            println!(
                "{name:16} {label:16} {ms:7.3} ms  {:6.1} GFLOP/s",
                flops / ms * 1e-6
            );
        }
    }
}
