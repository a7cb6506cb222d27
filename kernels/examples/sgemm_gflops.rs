//! Single-product sgemm throughput in GFLOP/s, for comparing against the machine's peak
//! (the criterion benches report elements per second; this prints the number the performance
//! targets are stated in). `cargo run --release -p infer-kernels --example sgemm_gflops [THREADS [MxKxN]...]`

use infer_kernels::gemm::{
    gemm, kernel_name, Epilogue, Lhs, MatMut, MatRef, PackedA, PackedB, Rhs,
};
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    println!("kernel: {}, threads: {threads}", kernel_name());
    // Shapes given as `MxKxN` after the thread count replace the default list.
    let given: Vec<(usize, usize, usize)> = std::env::args()
        .skip(2)
        .filter_map(|s| {
            let d: Vec<usize> = s.split('x').filter_map(|x| x.parse().ok()).collect();
            (d.len() == 3).then(|| (d[0], d[1], d[2]))
        })
        .collect();
    let default = [
        (512, 512, 512),
        (1024, 1024, 1024),
        (2048, 2048, 2048),
        (128, 768, 3072),
        (128, 3072, 768),
        (128, 768, 768),
        (3136, 64, 64),
        (784, 1152, 128),
    ];
    let shapes = if given.is_empty() {
        &default[..]
    } else {
        &given[..]
    };
    for &(m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let a_ref = MatRef::row_major(&a, m, k).expect("shape");
        let packed = PackedB::new(MatRef::row_major(&b, k, n).expect("shape"));
        let packed_a = PackedA::new(a_ref);
        // Which operands are prepacked: `SGEMM_PACKED=a|b|ab|none` (default `b`); a
        // convolution's product is `a` (weights packed at plan time, patches packed per call).
        let packed_which = std::env::var("SGEMM_PACKED").unwrap_or_else(|_| "b".into());
        let lhs = if packed_which.contains('a') {
            Lhs::Packed(&packed_a)
        } else {
            Lhs::Mat(a_ref)
        };
        let rhs = if packed_which.contains('b') {
            Rhs::Packed(&packed)
        } else {
            Rhs::Mat(MatRef::row_major(&b, k, n).expect("shape"))
        };
        let flops = 2.0 * (m * k * n) as f64;
        let reps = ((1e9 / flops) as usize).clamp(3, 400);
        let mut times = Vec::new();
        pool.install(|| {
            for _ in 0..21 {
                let t = Instant::now();
                for _ in 0..reps {
                    let out = MatMut::row_major(&mut c, m, n).expect("shape");
                    gemm(lhs, rhs, out, &Epilogue::default()).expect("gemm");
                }
                times.push(t.elapsed().as_secs_f64() / reps as f64);
            }
        });
        times.sort_by(f64::total_cmp);
        // The best round as well: on a shared machine noise only ever slows a round down.
        let (median, best) = (times[times.len() / 2], times[0]);
        println!(
            "{m:>5}x{k:>5}x{n:>5}  {:>8.3} ms  {:>6.1} GFLOP/s  (best {:>6.1})",
            median * 1e3,
            flops / median / 1e9,
            flops / best / 1e9
        );
    }
}
