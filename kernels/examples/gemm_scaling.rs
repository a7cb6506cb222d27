//! Thread scaling of single products, measured in pairs: each call on one thread is followed
//! (or preceded, alternately) by the same call on THREADS, so the drift of a shared machine
//! cancels out of the ratio. Prints per shape the medians and the median of the per-pair
//! speed-ups. `cargo run --release -p infer-kernels --example gemm_scaling THREADS
//! [MxKxN]...`; the left operand is packed ahead of time with `SGEMM_PACKED=a` (a
//! convolution's weights), else the right one (a layer's weights times activations).

use infer_kernels::gemm::{gemm, Epilogue, Lhs, MatMut, MatRef, PackedA, PackedB, Rhs};
use infer_kernels::parallel;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let shapes: Vec<(usize, usize, usize)> = args
        .filter_map(|s| {
            let d: Vec<usize> = s.split('x').filter_map(|x| x.parse().ok()).collect();
            (d.len() == 3).then(|| (d[0], d[1], d[2]))
        })
        .collect();
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("thread pool")
    };
    let many = pool(threads);
    let packed_a = std::env::var("SGEMM_PACKED").is_ok_and(|s| s.contains('a'));
    println!(
        "threads: {threads}, prepacked: {}",
        if packed_a { "a" } else { "b" }
    );
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let (a_ref, b_ref) = (
            MatRef::row_major(&a, m, k).expect("shape"),
            MatRef::row_major(&b, k, n).expect("shape"),
        );
        let (pa, pb) = (PackedA::new(a_ref), PackedB::new(b_ref));
        let (lhs, rhs) = if packed_a {
            (Lhs::Packed(&pa), Rhs::Mat(b_ref))
        } else {
            (Lhs::Mat(a_ref), Rhs::Packed(&pb))
        };
        // About a millisecond of work per timed sample, so that a sample is not one call's
        // scheduling noise.
        let reps = (5e7 / (m * k * n) as f64).ceil().clamp(1.0, 1000.0) as usize;
        let time = |c: &mut [f32]| {
            // Idle workers spin for a while before they sleep: let them settle, so that they
            // take no core from the sample that follows.
            std::thread::sleep(std::time::Duration::from_millis(2));
            let t = Instant::now();
            for _ in 0..reps {
                let out = MatMut::row_major(c, m, n).expect("shape");
                gemm(lhs, rhs, out, &Epilogue::default()).expect("gemm");
            }
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        };
        // One thread as a one-thread session runs: inline on the calling thread.
        let alone = |c: &mut [f32]| {
            let _inline = parallel::Inline::enter();
            time(c)
        };
        let pooled = |c: &mut [f32]| many.install(|| time(c));
        let (mut t1, mut tn, mut speedup) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..400 {
            let (x, y) = if i % 2 == 0 {
                let x = alone(&mut c);
                (x, pooled(&mut c))
            } else {
                let y = pooled(&mut c);
                (alone(&mut c), y)
            };
            if i >= 20 {
                t1.push(x);
                tn.push(y);
                speedup.push(x / y);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{m:>5}x{k:>5}x{n:>5}  1 thread {:.4} ms, {threads} threads {:.4} ms, speed-up {:.2}",
            median(&mut t1),
            median(&mut tn),
            median(&mut speedup)
        );
    }
}
