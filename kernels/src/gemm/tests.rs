//! Every kernel this CPU can run, against a naive f64 reference.

use super::*;

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `epilogue(A · B)` in f64, from views.
fn reference(a: MatRef, b: MatRef, epi: &Epilogue) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let at = |i: usize, j: usize| a.data[i * a.row_stride + j * a.col_stride] as f64;
    let bt = |i: usize, j: usize| b.data[i * b.row_stride + j * b.col_stride] as f64;
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            s *= epi.alpha as f64;
            s += match epi.bias {
                Bias::None => 0.0,
                Bias::Scalar(v) => v as f64,
                Bias::PerRow(v) => v[i] as f64,
                Bias::PerCol(v) => v[j] as f64,
            };
            if let Some(r) = epi.residual {
                s += r.data[i * r.row_stride + j * r.col_stride] as f64;
            }
            out[i * n + j] = s as f32;
        }
    }
    if let Some(act) = epi.activation {
        crate::elementwise::apply_activation(act, &mut out);
    }
    out
}

fn assert_close(got: &[f32], want: &[f32], k: usize, what: &str) {
    // Inputs are in [-1, 1]: the f32 rounding error of a k-term dot product is ~k·2⁻²⁴.
    let tol = 1e-5 * (k as f32 + 1.0);
    for (idx, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {idx}: got {g}, want {w}"
        );
    }
}

/// Runs one case with every kernel and every way of passing the operands.
fn check(m: usize, n: usize, k: usize, layout: Layout, epi_kind: usize) {
    // One element of offset makes every slice start unaligned.
    let a_store = values(m * k + 1, (m * 31 + k) as u64);
    let b_store = values(k * n + 1, (n * 17 + k) as u64);
    let a_data = &a_store[1..];
    let b_data = &b_store[1..];
    let a = match layout {
        Layout::RowMajor | Layout::BT => MatRef::row_major(a_data, m, k).unwrap(),
        Layout::AT => MatRef::row_major(a_data, k, m).unwrap().t(),
    };
    let b = match layout {
        Layout::RowMajor | Layout::AT => MatRef::row_major(b_data, k, n).unwrap(),
        Layout::BT => MatRef::row_major(b_data, n, k).unwrap().t(),
    };
    let row_bias = values(m, 7);
    let col_bias = values(n, 8);
    let res_data = values(m * n, 9);
    let residual = MatRef::row_major(&res_data, m, n).unwrap();
    let epi = match epi_kind {
        0 => Epilogue::default(),
        1 => Epilogue {
            bias: Bias::PerCol(&col_bias),
            activation: Some(Activation::Relu),
            ..Default::default()
        },
        2 => Epilogue {
            alpha: 0.5,
            bias: Bias::PerRow(&row_bias),
            residual: Some(residual),
            ..Default::default()
        },
        _ => Epilogue {
            bias: Bias::Scalar(0.25),
            residual: Some(residual),
            activation: Some(Activation::Gelu),
            ..Default::default()
        },
    };
    let want = reference(a, b, &epi);
    for spec in kernel::available() {
        let what = format!("{} {m}x{n}x{k} {layout:?} epilogue {epi_kind}", spec.name);
        let pa = PackedA::for_kernel(spec, a);
        let pb = PackedB::for_kernel(spec, b);
        let operands: [(Lhs, Rhs, &str); 3] = [
            (Lhs::Mat(a), Rhs::Mat(b), "views"),
            (Lhs::Packed(&pa), Rhs::Mat(b), "packed A"),
            (Lhs::Mat(a), Rhs::Packed(&pb), "packed B"),
        ];
        for (la, rb, how) in operands {
            // Garbage in C: without a residual or accumulation it must never be read.
            let mut c = vec![f32::NAN; m * n];
            for parallel in [true, false] {
                let out = MatMut::row_major(&mut c, m, n).unwrap();
                gemm_with(spec, la, rb, out, &epi, parallel).unwrap();
                assert_close(&c, &want, k, &format!("{what} {how} parallel={parallel}"));
                c.fill(f32::NAN);
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    /// A given as the transpose of a row-major k×m matrix.
    AT,
    /// B given as the transpose of a row-major n×k matrix.
    BT,
}

#[test]
fn odd_sizes_match_reference_for_every_kernel() {
    let sizes = [1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31, 33, 47, 65, 70];
    for (t, &m) in sizes.iter().enumerate() {
        for (u, &n) in sizes.iter().enumerate() {
            let k = sizes[(t * 7 + u * 3) % sizes.len()];
            let layout = [Layout::RowMajor, Layout::AT, Layout::BT][(t + u) % 3];
            check(m, n, k, layout, (t * 5 + u) % 4);
        }
    }
}

#[test]
fn every_layout_and_epilogue_on_edge_tiles() {
    for layout in [Layout::RowMajor, Layout::AT, Layout::BT] {
        for epi in 0..4 {
            check(19, 37, 23, layout, epi);
        }
    }
}

#[test]
fn deep_k_accumulates_across_blocks() {
    // k > kc of every kernel, so C is written once then accumulated into.
    check(9, 35, 600, Layout::RowMajor, 2);
    check(9, 35, 600, Layout::BT, 3);
}

#[test]
fn large_products_split_across_threads() {
    // Above the parallel threshold, with ragged edges in both dimensions.
    check(131, 150, 70, Layout::RowMajor, 1);
    check(131, 150, 70, Layout::AT, 0);
    check(50, 700, 40, Layout::BT, 2);
    // A vector times a matrix: the one-row kernel, split along n.
    check(1, 2100, 600, Layout::RowMajor, 3);
    check(1, 2100, 600, Layout::BT, 2);
    check(3, 1500, 300, Layout::BT, 1);
}

#[test]
fn operands_without_any_unit_stride() {
    // Every other element of every other row: neither rows nor columns are contiguous.
    let (m, n, k) = (5, 9, 7);
    let a_store = values(4 * m * k, 5);
    let b_store = values(4 * k * n, 6);
    let b = MatRef::new(&b_store, k, n, 4 * n, 2).unwrap();
    for rows in [1, m] {
        let a = MatRef::new(&a_store, rows, k, 4 * k, 2).unwrap();
        let want = reference(a, b, &Epilogue::default());
        let mut c = vec![f32::NAN; rows * n];
        gemm(
            a,
            b,
            MatMut::row_major(&mut c, rows, n).unwrap(),
            &Epilogue::default(),
        )
        .unwrap();
        assert_close(&c, &want, k, &format!("{rows} rows"));
    }
}

#[test]
fn empty_depth_gives_the_epilogue_of_zero() {
    let bias = [1.0, -2.0];
    let epi = Epilogue {
        bias: Bias::PerCol(&bias),
        activation: Some(Activation::Relu),
        ..Default::default()
    };
    let mut c = [f32::NAN; 6];
    let a = MatRef::row_major(&[], 3, 0).unwrap();
    let b = MatRef::row_major(&[], 0, 2).unwrap();
    gemm(a, b, MatMut::row_major(&mut c, 3, 2).unwrap(), &epi).unwrap();
    assert_eq!(c, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
}

#[test]
fn output_with_row_stride_keeps_the_gaps() {
    // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]], written with row stride 3.
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [5.0, 6.0, 7.0, 8.0];
    let mut c = [-1.0f32; 5];
    gemm(
        MatRef::row_major(&a, 2, 2).unwrap(),
        MatRef::row_major(&b, 2, 2).unwrap(),
        MatMut::new(&mut c, 2, 2, 3).unwrap(),
        &Epilogue::default(),
    )
    .unwrap();
    assert_eq!(c, [19.0, 22.0, -1.0, 43.0, 50.0]);
}

#[test]
fn column_blocks_of_one_output_fill_in_parallel() {
    // C = A·B split into column blocks of 7, filled concurrently, equals the whole product.
    let (m, n, k) = (9, 40, 13);
    let a = values(m * k, 3);
    let b = values(k * n, 4);
    let (am, bm) = (
        MatRef::row_major(&a, m, k).unwrap(),
        MatRef::row_major(&b, k, n).unwrap(),
    );
    let mut c = vec![f32::NAN; m * n];
    let mut blocks = Vec::new();
    let mut rest = MatMut::row_major(&mut c, m, n).unwrap();
    let mut j0 = 0;
    while rest.cols() > 0 {
        let (block, tail) = rest.split_at_col(7);
        blocks.push((j0, block));
        j0 += 7;
        rest = tail;
    }
    blocks.into_par_iter().for_each(|(j0, block)| {
        let cols = block.cols();
        let b_cols = MatRef::new(&b[j0..], k, cols, n, 1).unwrap();
        gemm(am, b_cols, block, &Epilogue::default()).unwrap();
    });
    assert_close(
        &c,
        &reference(am, bm, &Epilogue::default()),
        k,
        "column blocks",
    );
}

#[test]
fn bad_shapes_are_errors() {
    let x = [0.0f32; 6];
    assert!(MatRef::new(&x, 2, 3, 3, 1).is_ok());
    assert!(MatRef::new(&x, 2, 4, 3, 1).is_err());
    assert!(MatRef::new(&x, 2, 2, usize::MAX, 1).is_err());
    let mut c = [0.0f32; 4];
    assert!(MatMut::new(&mut c, 2, 3, 2).is_err());
    let a = MatRef::row_major(&x, 2, 3).unwrap();
    let c2 = MatMut::row_major(&mut c, 2, 2).unwrap();
    assert!(gemm(a, a, c2, &Epilogue::default()).is_err());
    let b = MatRef::row_major(&x, 3, 2).unwrap();
    let bias = [1.0; 3];
    let epi = Epilogue {
        bias: Bias::PerCol(&bias),
        ..Default::default()
    };
    assert!(gemm(a, b, MatMut::row_major(&mut c, 2, 2).unwrap(), &epi).is_err());
}

#[test]
fn batched_products_match_one_by_one() {
    let (m, n, k, count) = (5, 19, 11, 6);
    let a = values(count * m * k, 1);
    let b = values(count * k * n, 2);
    let bias = values(n, 3);
    let epi = Epilogue {
        bias: Bias::PerCol(&bias),
        ..Default::default()
    };
    let mut c = vec![0.0; count * m * n];
    gemm_batched(&mut c, (m, n), count, |i| {
        let ai = MatRef::row_major(&a[i * m * k..(i + 1) * m * k], m, k)?;
        // B stored transposed per batch, as Kᵀ in attention.
        let bi = MatRef::row_major(&b[i * k * n..(i + 1) * k * n], n, k)?.t();
        Ok((ai.into(), bi.into(), epi))
    })
    .unwrap();
    for i in 0..count {
        let ai = MatRef::row_major(&a[i * m * k..(i + 1) * m * k], m, k).unwrap();
        let bi = MatRef::row_major(&b[i * k * n..(i + 1) * k * n], n, k)
            .unwrap()
            .t();
        let want = reference(ai, bi, &epi);
        assert_close(
            &c[i * m * n..(i + 1) * m * n],
            &want,
            k,
            &format!("batch {i}"),
        );
    }
    assert!(gemm_batched(&mut c, (m, n + 1), count, |_| unreachable!()).is_err());
}

/// Throughput of the best kernel, best of several timed batches (robust to a busy machine);
/// run with `cargo test --release -p infer-kernels -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    println!(
        "kernel: {}, threads: {}",
        kernel_name(),
        rayon::current_num_threads()
    );
    for (m, n, k) in [
        (512, 512, 512),
        (1024, 1024, 1024),
        (128, 3072, 768),
        (128, 768, 3072),
        (1, 3072, 768),
        (1, 4096, 4096),
    ] {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let mut c = vec![0.0; m * n];
        let am = MatRef::row_major(&a, m, k).unwrap();
        let bm = MatRef::row_major(&b, k, n).unwrap();
        let pb = PackedB::new(bm);
        let flops = 2.0 * (m * n * k) as f64;
        let reps = (2e8 / flops).ceil() as usize;
        let mut best = |rhs: Rhs| {
            let mut run = || {
                let out = MatMut::row_major(&mut c, m, n).unwrap();
                gemm(am, rhs, out, &Epilogue::default()).unwrap()
            };
            run();
            (0..10)
                .map(|_| {
                    let start = std::time::Instant::now();
                    (0..reps).for_each(|_| run());
                    flops * reps as f64 / start.elapsed().as_secs_f64() / 1e9
                })
                .fold(0.0, f64::max)
        };
        let plain = best(Rhs::Mat(bm));
        let packed = best(Rhs::Packed(&pb));
        println!("{m}x{n}x{k}: {plain:.1} GFLOP/s, prepacked B: {packed:.1} GFLOP/s");
    }
}
