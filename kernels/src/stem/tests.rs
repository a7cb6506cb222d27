use super::*;
use crate::isa::{x86_has, X86Level};

/// The convolution by its definition, in f64: `[M, OH, OW]` planes.
fn reference(g: &PlaneGeometry, channels: usize, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f64> {
    let [h, wd] = g.input;
    let [oh, ow] = g.output;
    let [kh, kw] = g.kernel;
    let m = bias.len();
    let mut y = vec![0.0f64; m * oh * ow];
    for o in 0..m {
        for r in 0..oh {
            for c in 0..ow {
                let mut sum = f64::from(bias[o]);
                for ch in 0..channels {
                    for i in 0..kh {
                        for j in 0..kw {
                            let ir =
                                (r * g.stride[0] + i * g.dilation[0]) as isize - g.pad[0] as isize;
                            let ic =
                                (c * g.stride[1] + j * g.dilation[1]) as isize - g.pad[1] as isize;
                            if ir < 0 || ic < 0 || ir >= h as isize || ic >= wd as isize {
                                continue;
                            }
                            let xv = x[ch * h * wd + ir as usize * wd + ic as usize];
                            let wv = w[((o * channels + ch) * kh + i) * kw + j];
                            sum += f64::from(xv) * f64::from(wv);
                        }
                    }
                }
                y[(o * oh + r) * ow + c] = sum;
            }
        }
    }
    y
}

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0)
        .collect()
}

/// Geometry of a `kernel` convolution over `input` with the given strides, dilations and
/// padding before (`pad`) and after (`pad_end`).
fn geometry(
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
    pad_end: [usize; 2],
) -> PlaneGeometry {
    let out = |a: usize| {
        (input[a] + pad[a] + pad_end[a] - (kernel[a] - 1) * dilation[a] - 1) / stride[a] + 1
    };
    PlaneGeometry {
        input,
        output: [out(0), out(1)],
        kernel,
        stride,
        dilation,
        pad,
    }
}

/// The ISAs with a stem kernel on this CPU.
fn isas() -> Vec<Isa> {
    let mut isas = Vec::new();
    if x86_has(X86Level::Avx512) {
        isas.push(Isa::Avx512);
    }
    if x86_has(X86Level::Avx2) {
        isas.push(Isa::Avx2);
    }
    isas
}

fn check(g: &PlaneGeometry, channels: usize, m: usize, activation: Option<Activation>) {
    let [h, wd] = g.input;
    let [oh, ow] = g.output;
    let taps = channels * g.kernel[0] * g.kernel[1];
    let x = values(channels * h * wd, 1);
    let w = values(m * taps, 2);
    let bias = values(m, 3);
    let packed = StemWeights::new(&w, m, taps).expect("weights the kernel takes");
    let want = reference(g, channels, &x, &w, &bias);
    for isa in isas() {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut y = vec![f32::NAN; m * oh * ow];
            pool.install(|| {
                stem_image_on(
                    isa,
                    g,
                    channels,
                    &x,
                    &packed,
                    Some(&bias),
                    activation,
                    &mut y,
                )
            });
            for o in 0..m {
                for p in 0..oh * ow {
                    let got = y[((o / BLOCK) * oh * ow + p) * BLOCK + o % BLOCK];
                    let mut v = want[o * oh * ow + p] as f32;
                    if let Some(act) = activation {
                        let mut one = [v];
                        crate::elementwise::apply_activation(act, &mut one);
                        v = one[0];
                    }
                    assert!(
                        (got - v).abs() <= 1e-4 * (1.0 + v.abs()),
                        "{isa:?} {threads} threads {g:?} channel {o} position {p}: {got} vs {v}"
                    );
                }
            }
        }
    }
}

#[test]
fn stems_match_the_definition() {
    // MobileNet's / EfficientNet's stem (3×3 stride 2, pad 1), a little smaller.
    check(
        &geometry([37, 41], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1]),
        3,
        32,
        None,
    );
    // SqueezeNet's (no padding), with four block groups' worth of channels (4 + 2 + 1).
    check(
        &geometry([29, 60], [3, 3], [2, 2], [1, 1], [0, 0], [0, 0]),
        3,
        112,
        Some(Activation::Relu),
    );
    // ResNet's 7×7, padding 3, uneven far padding.
    check(
        &geometry([30, 44], [7, 7], [2, 2], [1, 1], [3, 3], [2, 1]),
        3,
        64,
        Some(Activation::Silu),
    );
    // Stride 1, dilated, one and four channels, 48 outputs (2 + 1 blocks).
    check(
        &geometry([20, 35], [3, 3], [1, 1], [2, 2], [2, 0], [1, 3]),
        1,
        48,
        None,
    );
    check(
        &geometry([16, 33], [2, 5], [1, 3], [1, 1], [0, 2], [1, 2]),
        4,
        16,
        Some(Activation::Clip(-0.5, 0.5)),
    );
}

#[test]
fn images_narrower_than_a_tile_are_gathered() {
    // Every window reaches the padding, or the inner run is shorter than a tile.
    check(
        &geometry([5, 5], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1]),
        3,
        64,
        None,
    );
    check(
        &geometry([3, 9], [7, 7], [2, 2], [1, 1], [3, 3], [3, 3]),
        3,
        32,
        None,
    );
    check(
        &geometry([1, 1], [1, 1], [1, 1], [1, 1], [0, 0], [0, 0]),
        2,
        16,
        None,
    );
}

#[test]
fn weights_the_kernel_does_not_take() {
    assert!(
        StemWeights::new(&[0.0; 27 * 24], 24, 27).is_none(),
        "partial block"
    );
    assert!(
        StemWeights::new(&[0.0; 16 * 200], 16, 200).is_none(),
        "too many taps"
    );
    assert!(
        StemWeights::new(&[0.0; 10], 16, 27).is_none(),
        "wrong length"
    );
}

#[test]
fn row_ranges_are_the_image_rows() {
    let g = geometry([29, 40], [3, 3], [2, 2], [1, 1], [1, 1], [0, 1]);
    let (channels, m) = (3, 48);
    let [oh, ow] = g.output;
    let taps = channels * 9;
    let x = values(channels * 29 * 40, 4);
    let packed = StemWeights::new(&values(m * taps, 5), m, taps).expect("weights");
    let bias = values(m, 6);
    let act = Some(Activation::Silu);
    let mut image = vec![f32::NAN; m * oh * ow];
    assert!(stem_image(
        &g,
        channels,
        &x,
        &packed,
        Some(&bias),
        act,
        &mut image
    ));
    for rows in [0..oh, 0..1, 3..8, oh - 2..oh, 5..5] {
        let mut part = vec![f32::NAN; m * rows.len() * ow];
        let stem = StemRows::new(&g, channels, &x, &packed, Some(&bias), act).expect("kernel");
        let each = rows.len() * ow * BLOCK;
        let mut rest: &mut [f32] = &mut part;
        let blocks: Vec<&mut [f32]> = (0..m / BLOCK)
            .map(|_| {
                let (block, tail) = std::mem::take(&mut rest).split_at_mut(each);
                rest = tail;
                block
            })
            .collect();
        stem.compute(rows.clone(), blocks);
        for b in 0..m / BLOCK {
            let want = &image[(b * oh + rows.start) * ow * BLOCK..][..rows.len() * ow * BLOCK];
            let got = &part[b * rows.len() * ow * BLOCK..][..rows.len() * ow * BLOCK];
            assert_eq!(got, want, "block {b} of rows {rows:?}");
        }
    }
}
