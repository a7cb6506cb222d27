//! Every kernel this CPU can run, against a naive f64 reference.

use super::*;

/// Deterministic values in [-1, 1) (also the int8 GEMM's test data).
pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
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

/// One product to check: sizes, operand layout and placement, and the epilogue.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    layout: Layout,
    /// Elements before A's and B's first: 1 starts every slice off its alignment.
    offset: usize,
    /// Elements between the rows of C and of the residual: never written.
    gap: usize,
    epi: EpiCase,
}

#[derive(Clone, Copy, Debug)]
struct EpiCase {
    alpha: f32,
    bias: BiasKind,
    residual: bool,
    activation: Option<Activation>,
}

#[derive(Clone, Copy, Debug)]
enum BiasKind {
    None,
    Scalar,
    PerRow,
    PerCol,
}

impl EpiCase {
    /// The six fixed epilogues of the table-driven tests (the last two are convolutions':
    /// channel bias, skip connection and Relu6, all applied inside the microkernel, with the
    /// channels along the rows (NCHW) or the columns (channels last)).
    fn fixed(kind: usize) -> EpiCase {
        let (alpha, bias, residual, activation) = match kind {
            0 => (1.0, BiasKind::None, false, None),
            1 => (1.0, BiasKind::PerCol, false, Some(Activation::Relu)),
            2 => (0.5, BiasKind::PerRow, true, None),
            3 => (1.0, BiasKind::Scalar, true, Some(Activation::Gelu)),
            4 => (
                1.0,
                BiasKind::PerCol,
                true,
                Some(Activation::Clip(0.0, 6.0)),
            ),
            _ => (
                1.0,
                BiasKind::PerRow,
                true,
                Some(Activation::Clip(0.0, 6.0)),
            ),
        };
        EpiCase {
            alpha,
            bias,
            residual,
            activation,
        }
    }
}

/// Runs one case with every kernel and every way of passing the operands.
fn check(m: usize, n: usize, k: usize, layout: Layout, epi_kind: usize) {
    check_case(Case {
        m,
        n,
        k,
        layout,
        offset: 1,
        gap: 0,
        epi: EpiCase::fixed(epi_kind),
    });
}

fn check_case(case: Case) {
    let Case {
        m,
        n,
        k,
        layout,
        offset,
        gap,
        ..
    } = case;
    // Strided operands: every other column, rows one element apart more than that needs.
    let strided = |data, rows: usize, cols: usize| MatRef::new(data, rows, cols, 2 * cols + 1, 2);
    let a_store = values(m * (2 * k + 1) + offset, (m * 31 + k) as u64);
    let b_store = values(k * (2 * n + 1) + offset, (n * 17 + k) as u64);
    let a_data = &a_store[offset..];
    let b_data = &b_store[offset..];
    let a = match layout {
        Layout::RowMajor | Layout::BT => MatRef::row_major(&a_data[..m * k], m, k).unwrap(),
        Layout::AT => MatRef::row_major(&a_data[..m * k], k, m).unwrap().t(),
        Layout::Strided => strided(a_data, m, k).unwrap(),
    };
    let b = match layout {
        Layout::RowMajor | Layout::AT => MatRef::row_major(&b_data[..k * n], k, n).unwrap(),
        Layout::BT => MatRef::row_major(&b_data[..k * n], n, k).unwrap().t(),
        Layout::Strided => strided(b_data, k, n).unwrap(),
    };
    let c_stride = n + gap;
    let row_bias = values(m, 7);
    let col_bias = values(n, 8);
    let res_data = values(m * c_stride, 9);
    let epi = Epilogue {
        alpha: case.epi.alpha,
        bias: match case.epi.bias {
            BiasKind::None => Bias::None,
            BiasKind::Scalar => Bias::Scalar(0.25),
            BiasKind::PerRow => Bias::PerRow(&row_bias),
            BiasKind::PerCol => Bias::PerCol(&col_bias),
        },
        residual: case
            .epi
            .residual
            .then(|| MatRef::new(&res_data, m, n, c_stride, 1).unwrap()),
        activation: case.epi.activation,
    };
    let want = reference(a, b, &epi);
    for spec in kernel::available() {
        let what = format!("{} {case:?}", spec.name);
        let pa = PackedA::for_kernel(spec, a);
        let pb = PackedB::for_kernel(spec, b);
        let source = SourceOf(b);
        let a_source = SourceOf(a.t());
        let operands: [(Lhs, Rhs, &str); 8] = [
            (Lhs::Mat(a), Rhs::Mat(b), "views"),
            (Lhs::Packed(&pa), Rhs::Mat(b), "packed A"),
            (Lhs::Mat(a), Rhs::Packed(&pb), "packed B"),
            (Lhs::Packed(&pa), Rhs::Packed(&pb), "packed A and B"),
            (Lhs::Mat(a), Rhs::Source(&source), "B from a source"),
            (
                Lhs::Packed(&pa),
                Rhs::Source(&source),
                "packed A, B from a source",
            ),
            (Lhs::Source(&a_source), Rhs::Mat(b), "A from a source"),
            (
                Lhs::Source(&a_source),
                Rhs::Packed(&pb),
                "A from a source, packed B",
            ),
        ];
        for (la, rb, how) in operands {
            for parallel in [true, false] {
                // Garbage in C: without a residual it must never be read; the gaps between
                // rows must keep it.
                let mut c = vec![f32::NAN; m * c_stride];
                let out = MatMut::new(&mut c, m, n, c_stride).unwrap();
                gemm_with(spec, la, rb, out, &epi, parallel).unwrap();
                let what = format!("{what} {how} parallel={parallel}");
                let got: Vec<f32> = c.chunks(c_stride).flat_map(|r| &r[..n]).copied().collect();
                assert_close(&got, &want, k, &what);
                let gaps_kept = c
                    .chunks(c_stride)
                    .all(|r| r[n..].iter().all(|v| v.is_nan()));
                assert!(gaps_kept, "{what}: wrote between rows");
            }
        }
    }
}

/// `B` (or `Aᵀ`) handed over block by block, as a convolution hands over its patches.
#[derive(Debug)]
struct SourceOf<'a>(MatRef<'a>);

impl PanelSource for SourceOf<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.0.rows, self.0.cols)
    }

    fn pack(&self, dst: &mut [f32], depth: Range<usize>, cols: Range<usize>, width: usize) {
        let b = self.0;
        for (q, panel) in dst.chunks_mut(width * depth.len()).enumerate() {
            for (step, p) in panel.chunks_mut(width).zip(depth.clone()) {
                for (j, v) in step.iter_mut().enumerate() {
                    let col = cols.start + q * width + j;
                    *v = if col < cols.end {
                        b.data[p * b.row_stride + col * b.col_stride]
                    } else {
                        0.0
                    };
                }
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
    /// Neither A nor B has a unit stride.
    Strided,
}

/// Deterministic pseudo-random case parameters (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A dimension: often 0, 1 or just around a register tile's edge, sometimes large.
    fn dim(&mut self) -> usize {
        match self.below(8) {
            0 => self.below(2),
            1 => 70 + self.below(90),
            _ => self.below(40),
        }
    }
}

#[test]
fn random_cases_match_reference_for_every_kernel() {
    let activations = [
        None,
        Some(Activation::Relu),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::Clip(-0.5, 0.25)),
        Some(Activation::Sigmoid),
        Some(Activation::HardSigmoid(0.2, 0.5)),
        Some(Activation::HardSwish),
        Some(Activation::GeluTanh),
        Some(Activation::Silu),
        Some(Activation::Tanh),
    ];
    let biases = [
        BiasKind::None,
        BiasKind::Scalar,
        BiasKind::PerRow,
        BiasKind::PerCol,
    ];
    let layouts = [Layout::RowMajor, Layout::AT, Layout::BT, Layout::Strided];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..120 {
        let case = Case {
            m: rng.dim(),
            n: rng.dim(),
            // Sometimes deeper than every kernel's kc, so that C is accumulated into.
            k: if rng.below(10) == 0 {
                300 + rng.below(300)
            } else {
                rng.dim()
            },
            layout: rng.pick(&layouts),
            offset: rng.below(4),
            gap: rng.pick(&[0, 0, 1, 5]),
            epi: EpiCase {
                alpha: rng.pick(&[1.0, 1.0, 0.5, -2.0, 0.0]),
                bias: rng.pick(&biases),
                residual: rng.below(2) == 0,
                activation: rng.pick(&activations),
            },
        };
        check_case(case);
    }
}

#[test]
fn odd_sizes_match_reference_for_every_kernel() {
    let sizes = [1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31, 33, 47, 65, 70];
    for (t, &m) in sizes.iter().enumerate() {
        for (u, &n) in sizes.iter().enumerate() {
            let k = sizes[(t * 7 + u * 3) % sizes.len()];
            let layout = [Layout::RowMajor, Layout::AT, Layout::BT][(t + u) % 3];
            check(m, n, k, layout, (t * 5 + u) % 6);
        }
    }
}

#[test]
fn in_kernel_residual_is_added_once_over_several_depth_blocks() {
    // Deeper than every kernel's kc: the residual must join only the last block's store.
    for (m, n) in [(13, 37), (8, 32), (70, 5)] {
        for layout in [Layout::RowMajor, Layout::AT, Layout::BT] {
            check(m, n, 450, layout, 4);
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
fn bias_and_clamp_applied_in_the_kernel_match_reference() {
    // The epilogues the microkernels apply as they store (row bias, Relu/Clip; other
    // activations in a pass after), on edge tiles,
    // with a depth that spans blocks (the bias must be added once, the clamp last), every
    // layout, and a Clip whose bounds cross (every output is `hi`).
    let activations = [
        None,
        Some(Activation::Relu),
        Some(Activation::Clip(-0.5, 0.25)),
        Some(Activation::Clip(1.0, -1.0)),
        // Applied after the kernels store (the bias still in the kernel).
        Some(Activation::Silu),
        Some(Activation::Gelu),
    ];
    for (t, activation) in activations.into_iter().enumerate() {
        for bias in [BiasKind::None, BiasKind::PerRow] {
            for (u, k) in [1, 23, 600].into_iter().enumerate() {
                check_case(Case {
                    m: [7, 13, 19][(t + u) % 3],
                    n: [37, 16, 9][(t + u) % 3],
                    k,
                    layout: [Layout::RowMajor, Layout::AT, Layout::BT, Layout::Strided][t % 4],
                    offset: 1,
                    gap: u,
                    epi: EpiCase {
                        alpha: 1.0,
                        bias,
                        residual: false,
                        activation,
                    },
                });
            }
        }
    }
}

#[test]
fn a_nan_product_stays_nan_through_an_in_kernel_relu() {
    // As the scalar Relu: NaN in, NaN out (a `max` with the wrong operand order gives 0).
    let mut a = values(6 * 8, 3);
    a[9] = f32::NAN; // row 1
    let b = values(8 * 20, 4);
    let bias = [0.5f32; 6];
    let epi = Epilogue {
        bias: Bias::PerRow(&bias),
        activation: Some(Activation::Relu),
        ..Default::default()
    };
    for spec in kernel::available() {
        let mut c = vec![0.0f32; 6 * 20];
        gemm_with(
            spec,
            Lhs::Mat(MatRef::row_major(&a, 6, 8).unwrap()),
            Rhs::Mat(MatRef::row_major(&b, 8, 20).unwrap()),
            MatMut::row_major(&mut c, 6, 20).unwrap(),
            &epi,
            false,
        )
        .unwrap();
        assert!(c[20..40].iter().all(|v| v.is_nan()), "{}", spec.name);
        assert!(c[..20].iter().all(|v| *v >= 0.0), "{}", spec.name);
    }
}

#[test]
fn deep_k_accumulates_across_blocks() {
    // k > kc of every kernel, so C is written once then accumulated into.
    check(9, 35, 600, Layout::RowMajor, 2);
    check(9, 35, 600, Layout::BT, 3);
}

#[test]
fn b_with_contiguous_rows_read_in_place_or_packed() {
    // Up to `IN_PLACE_B_MAX_ROWS` rows of A, a row-major B is read in place (whole panels)
    // with its last partial panel packed; past it, packed. Deep enough for several depth
    // blocks, wide enough for whole and partial panels, large enough to split across threads.
    for m in [8, 16, 255, 256, 257] {
        check(m, 70, 400, Layout::RowMajor, m % 6);
    }
    // Rows 2000+ floats apart: on Intel packed from 16 rows of A and 64 depth steps on (the
    // driver's `FAR_ROWS_*`), read in place below either.
    for (m, k) in [(15, 64), (16, 63), (16, 64), (40, 200)] {
        check(m, 2010, k, Layout::RowMajor, m % 6);
    }
}

#[test]
fn outputs_too_large_for_cache_walk_rows_first() {
    // Wide enough that a thread's half of C, along either direction, is still walked rows
    // first (`driver::walks_rows_first`), with a partial last panel; one and two depth
    // blocks; every epilogue (3 leaves its GELU to a pass after each row tile). 24 rows and
    // 63 depth steps read B in place (with its last panel packed) on every machine.
    for (m, k, epi) in [
        (40, 70, 0),
        (40, 200, 3),
        (24, 63, 5),
        (40, 70, 4),
        (24, 200, 2),
    ] {
        let n = super::driver::rows_first_min_bytes() / 4 / (m / 2) + 45;
        check(m, n, k, Layout::RowMajor, epi);
    }
    check(
        40,
        super::driver::rows_first_min_bytes() / 4 / 20 + 45,
        70,
        Layout::BT,
        1,
    );
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
    // A matrix times a vector (the packed-A product reads each panel once), split along m.
    check(1500, 1, 300, Layout::RowMajor, 4);
    check(1500, 1, 300, Layout::AT, 2);
}

#[test]
fn uneven_panel_counts_split_in_both_directions() {
    // Five column panels on two threads, three on two or four: each panel is also cut
    // across its rows. Several pool sizes, whatever the machine has.
    for threads in [2, 3, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            check(49, 160, 960, Layout::RowMajor, 1);
            check(196, 96, 576, Layout::BT, 2);
            check(50, 150, 300, Layout::AT, 0);
        });
    }
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
    parallel::for_each(blocks.into_par_iter(), |(j0, block)| {
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
        parallel::threads()
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

/// Each of `packs` times `b` equals its matrix of `mats` (row-major, `packs`' shape) times `b`.
fn assert_packs_multiply_as_their_matrices(
    mats: &[Vec<f32>],
    packs: &[PackedA],
    b: MatRef,
    what: &str,
) {
    assert_eq!(packs.len(), mats.len(), "{what}: every matrix packed");
    for (a, packed) in mats.iter().zip(packs) {
        let (m, k, n) = (packed.rows, packed.cols, b.cols());
        let want = reference(MatRef::row_major(a, m, k).unwrap(), b, &Epilogue::default());
        let mut got = vec![f32::NAN; m * n];
        let c = MatMut::row_major(&mut got, m, n).unwrap();
        gemm(Lhs::Packed(packed), Rhs::Mat(b), c, &Epilogue::default()).unwrap();
        assert_close(&got, &want, k, what);
    }
}

#[test]
fn stacks_packed_from_row_blocks_multiply_as_separate_ones() {
    // Ragged rows (no multiple of any MR), depth over kc, one thread and three: every row
    // block's offsets into the shared buffer have to be right for the products to match.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for (count, m, k) in [(3, 7, 300), (2, 29, 300), (36, 40, 520), (1, 1, 1)] {
        let n = 11;
        let b = values(k * n, 50);
        let b = MatRef::row_major(&b, k, n).unwrap();
        let mats: Vec<Vec<f32>> = (0..count).map(|i| values(m * k, 51 + i as u64)).collect();
        let fill = |rows: Range<usize>, dst: &mut [f32]| -> Result<(), String> {
            for (a, out) in mats.iter().zip(dst.chunks_exact_mut(rows.len() * k)) {
                out.copy_from_slice(&a[rows.start * k..rows.end * k]);
            }
            Ok(())
        };
        let serial = PackedA::stack_from_rows(count, m, k, fill).unwrap();
        let what = format!("{count} stacked {m}x{k}");
        assert_packs_multiply_as_their_matrices(&mats, &serial, b, &what);
        let parallel = pool.install(|| PackedA::stack_from_rows(count, m, k, fill).unwrap());
        assert_packs_multiply_as_their_matrices(&mats, &parallel, b, &what);
    }
    // An error of the fill is the result.
    let failed = pool.install(|| {
        PackedA::stack_from_rows(2, 300, 300, |rows, _| {
            if rows.start > 0 {
                Err(format!("rows {rows:?}"))
            } else {
                Ok(())
            }
        })
    });
    assert!(failed.is_err());
}

#[test]
fn b_packed_from_column_blocks_is_b_packed_whole() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for (k, n) in [(300, 37), (520, 200), (3, 1)] {
        let bt = values(n * k, 60);
        let a = values(13 * k, 61);
        let a = MatRef::row_major(&a, 13, k).unwrap();
        let whole = PackedB::new(MatRef::row_major(&bt, n, k).unwrap().t());
        let blocks = pool.install(|| {
            PackedB::from_columns(k, n, |cols, dst| -> Result<(), ()> {
                dst.copy_from_slice(&bt[cols.start * k..cols.end * k]);
                Ok(())
            })
            .unwrap()
        });
        let product = |b: &PackedB| {
            let mut c = vec![f32::NAN; 13 * n];
            let out = MatMut::row_major(&mut c, 13, n).unwrap();
            gemm(Lhs::Mat(a), Rhs::Packed(b), out, &Epilogue::default()).unwrap();
            c
        };
        assert_eq!(product(&blocks), product(&whole), "{k}x{n}");
    }
}

#[test]
fn column_blocked_output_matches_reference() {
    let epilogues = |col_bias: &'static [f32], row_bias: &'static [f32]| {
        [
            Epilogue::default(),
            Epilogue {
                bias: Bias::PerCol(col_bias),
                activation: Some(Activation::Clip(0.0, 6.0)),
                ..Epilogue::default()
            },
            Epilogue {
                bias: Bias::PerRow(row_bias),
                activation: Some(Activation::Relu),
                ..Epilogue::default()
            },
            // Applied by a pass over each finished block, not in the kernel.
            Epilogue {
                bias: Bias::PerCol(col_bias),
                activation: Some(Activation::Silu),
                ..Epilogue::default()
            },
        ]
    };
    for (m, n, k) in [
        (1, 16, 5),
        (3, 32, 16),
        (9, 48, 1),
        (17, 96, 24),
        (196, 144, 96),
        (300, 64, 700),
        (37, 48, 208),
        (203, 32, 400),
        // Last rows of a blocked A computed one by one, over several depth blocks.
        (49, 64, 400),
        (50, 32, 32),
    ] {
        let a_data = values(m * k, (m + 3 * k) as u64);
        let b_data = values(k * n, (n + 5 * k) as u64);
        let a = MatRef::row_major(&a_data, k, m).unwrap().t();
        let b = MatRef::row_major(&b_data, k, n).unwrap();
        let col_bias: &'static [f32] = values(n, 1).leak();
        let row_bias: &'static [f32] = values(m, 2).leak();
        // Blocks a little further apart than they need be: the gaps must stay untouched.
        let block_stride = m * COL_BLOCK + 3;
        // A as the blocked image Aᵀ[k channels, m positions] (a 1×1 convolution's input);
        // the padding of a last partial block is NaN, never to be read.
        let mut a_blocks = vec![f32::NAN; k.div_ceil(COL_BLOCK) * m * COL_BLOCK];
        for i in 0..m {
            for p in 0..k {
                a_blocks[p / COL_BLOCK * m * COL_BLOCK + i * COL_BLOCK + p % COL_BLOCK] =
                    a_data[p * m + i];
            }
        }
        let a_blocked = BlockedRhs::new(&a_blocks, k, m).unwrap();
        for (e, epi) in epilogues(col_bias, row_bias).iter().enumerate() {
            let want = reference(a, b, epi);
            for spec in kernel::available() {
                let pa = PackedA::for_kernel(spec, a);
                let pb = PackedB::for_kernel(spec, b);
                let operands: [(Lhs, Rhs); 4] = [
                    (Lhs::Mat(a), Rhs::Mat(b)),
                    (Lhs::Packed(&pa), Rhs::Packed(&pb)),
                    (Lhs::Mat(a), Rhs::Packed(&pb)),
                    (Lhs::Blocked(&a_blocked), Rhs::Packed(&pb)),
                ];
                for (o, (la, rb)) in operands.into_iter().enumerate() {
                    for parallel in [true, false] {
                        let blocks = n / COL_BLOCK;
                        let mut c = vec![f32::NAN; blocks * block_stride];
                        let out = MatMut::column_blocked(&mut c, m, n, block_stride).unwrap();
                        gemm_with(spec, la, rb, out, epi, parallel).unwrap();
                        let what = format!(
                            "{} {m}x{n}x{k} epilogue {e} operands {o} parallel={parallel}",
                            spec.name
                        );
                        let got: Vec<f32> = (0..m * n)
                            .map(|x| {
                                let (i, j) = (x / n, x % n);
                                c[j / COL_BLOCK * block_stride + i * COL_BLOCK + j % COL_BLOCK]
                            })
                            .collect();
                        assert_close(&got, &want, k, &what);
                        let gaps_kept = c
                            .chunks(block_stride)
                            .all(|blk| blk[m * COL_BLOCK..].iter().all(|v| v.is_nan()));
                        assert!(gaps_kept, "{what}: wrote between blocks");
                    }
                }
            }
        }
    }
}

#[test]
fn column_blocked_output_rejects_what_it_cannot_hold() {
    let a = values(4 * 8, 1);
    let b = values(8 * 32, 2);
    let res = values(4 * 32, 3);
    let a = MatRef::row_major(&a, 4, 8).unwrap();
    let b = MatRef::row_major(&b, 8, 32).unwrap();
    let mut c = vec![0.0; 4 * 32];
    assert!(MatMut::column_blocked(&mut c, 4, 24, 64).is_err());
    assert!(MatMut::column_blocked(&mut c, 4, 32, 32).is_err());
    assert!(MatMut::column_blocked(&mut c, 4, 32, 100).is_err());
    let epi = Epilogue {
        residual: Some(MatRef::row_major(&res, 4, 32).unwrap()),
        ..Epilogue::default()
    };
    let out = MatMut::column_blocked(&mut c, 4, 32, 64).unwrap();
    assert!(gemm(a, b, out, &epi).is_err());
}

/// The depth block grows with the L1 data cache, in whole channel blocks, from the spec's
/// own (kept, the same spec, for a 32 KiB L1) to at most 256.
#[test]
fn depth_blocks_are_fitted_to_the_l1_cache() {
    let spec: &'static kernel::KernelSpec = Box::leak(Box::new(kernel::KernelSpec {
        nr: 32,
        kc: 192,
        ..*kernel::available()[0]
    }));
    assert!(std::ptr::eq(kernel::fit_to_l1(spec, 32 << 10), spec));
    assert_eq!(kernel::fit_to_l1(spec, 48 << 10).kc, 256);
    assert_eq!(kernel::fit_to_l1(spec, 40 << 10).kc, 208);
    assert_eq!(kernel::fit_to_l1(spec, 1 << 20).kc, 256);
    for spec in kernel::available() {
        assert!(
            spec.kc.is_multiple_of(16) && spec.kc <= 256,
            "{}",
            spec.name
        );
    }
}
