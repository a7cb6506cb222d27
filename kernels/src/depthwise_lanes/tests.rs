use super::*;
use crate::depthwise::{depthwise_plane, PlaneScratch};

/// An `h × w` input under a `k × k` window of stride `s`, dilation `d`, padding `p`.
fn square_window(h: usize, w: usize, k: usize, s: usize, d: usize, p: usize) -> PlaneGeometry {
    let out = |n: usize| (n + 2 * p - (k - 1) * d - 1) / s + 1;
    PlaneGeometry {
        input: [h, w],
        output: [out(h), out(w)],
        kernel: [k, k],
        stride: [s, s],
        dilation: [d, d],
        pad: [p, p],
    }
}

/// Inputs, weights and biases for `planes` planes of `g`.
fn test_values(g: &PlaneGeometry, planes: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = (0..planes * g.input[0] * g.input[1])
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0)
        .collect();
    let w = (0..planes * g.kernel[0] * g.kernel[1])
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
        .collect();
    let bias = (0..planes).map(|c| c as f32 / 4.0 - 1.0).collect();
    (x, w, bias)
}

#[test]
fn groups_match_the_plane_kernel() {
    let mut lanes = LanesScratch::new();
    let mut plane = PlaneScratch::new();
    // (H, W, K, stride, dilation, pad, planes): the zoo's small maps and odd ones; the
    // scratch is reused across cases, as a thread reuses it across layers.
    let cases = [
        (7, 7, 5, 1, 1, 2, 16),
        (7, 7, 3, 1, 1, 1, 16),
        (14, 14, 5, 2, 1, 2, 16),
        (14, 14, 3, 1, 1, 1, 5),
        (13, 17, 3, 2, 1, 1, 16),
        (9, 6, 3, 1, 2, 2, 7),
        (5, 3, 3, 1, 1, 0, 1),
        (7, 7, 5, 1, 1, 2, 3),
        // The last input row and column reach no output (copied by the scalar path).
        (8, 8, 3, 2, 1, 0, 16),
        // Larger planes, rectangular, with and without padding.
        (70, 70, 3, 1, 1, 1, 16),
        (75, 60, 3, 2, 1, 1, 9),
        (64, 40, 5, 1, 2, 4, 16),
        (50, 33, 5, 2, 1, 0, 3),
    ];
    for (h, wd, k, s, d, p, planes) in cases {
        let g = square_window(h, wd, k, s, d, p);
        let (x, w, bias) = test_values(&g, planes);
        let n = g.output[0] * g.output[1];
        for clamp in [None, Some((0.0, 1.5))] {
            let mut y = vec![f32::NAN; planes * n];
            let lw = LanesWeights::new(&w, planes, k * k);
            depthwise_planes(
                &g,
                planes,
                &x,
                lw.group(0),
                &bias,
                clamp,
                &mut y,
                &mut lanes,
            );
            for c in 0..planes {
                let mut want = vec![f32::NAN; n];
                depthwise_plane(
                    &g,
                    &x[c * h * wd..(c + 1) * h * wd],
                    &w[c * k * k..(c + 1) * k * k],
                    bias[c],
                    clamp,
                    &mut want,
                    &mut plane,
                );
                for (i, (a, b)) in y[c * n..(c + 1) * n].iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5,
                        "{g:?} plane {c} output {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// `[C, H·W]` planes as 16-channel blocks of `[H·W, 16]` cells, padding lanes NaN.
fn to_blocked(planes: &[f32], channels: usize) -> Vec<f32> {
    let n = planes.len() / channels;
    let mut out = vec![f32::NAN; channels.div_ceil(LANES) * LANES * n];
    for c in 0..channels {
        for p in 0..n {
            out[(c / LANES * n + p) * LANES + c % LANES] = planes[c * n + p];
        }
    }
    out
}

/// `[C, H·W]` planes as `[H·W, C]` cells.
fn to_channels_last(planes: &[f32], channels: usize) -> Vec<f32> {
    let n = planes.len() / channels;
    (0..n * channels)
        .map(|i| planes[(i % channels) * n + i / channels])
        .collect()
}

#[test]
fn whole_images_match_group_by_group_in_every_layout() {
    let mut lanes = LanesScratch::new();
    // (H, W, K, stride, pad, channels): full and partial last groups, odd geometries.
    let cases = [
        (7, 7, 3, 1, 1, 32),
        (14, 14, 5, 2, 2, 40),
        (9, 6, 3, 1, 1, 5),
        (13, 17, 3, 2, 1, 16),
        (8, 8, 3, 2, 0, 19),
        // Full groups: 5×5, no padding, rows whose ends are short blocks, a row narrower
        // than one block.
        (11, 23, 5, 1, 2, 32),
        (9, 9, 3, 1, 0, 16),
        (6, 30, 3, 1, 1, 48),
        (5, 3, 5, 1, 2, 16),
        (12, 12, 5, 2, 2, 32),
    ]
    .map(|(h, wd, k, s, p, c)| (h, wd, k, s, 1, p, c));
    // Maps large enough for blocked inputs to be read in place (`DIRECT_MIN_POSITIONS`),
    // their border windows apart: strides, dilation, 5×5, asymmetric reach.
    let large = [
        (30, 29, 3, 1, 1, 1, 32),
        (57, 60, 3, 2, 1, 1, 16),
        (31, 33, 5, 1, 1, 2, 16),
        (34, 36, 3, 1, 2, 2, 16),
        (29, 28, 3, 1, 1, 0, 16),
        (61, 59, 5, 2, 1, 2, 19),
    ];
    // Padding only at the bottom and right (TensorFlow's SAME for stride 2 on even sizes),
    // and only at the top and right: the border windows are on one side of the interior.
    let asymmetric = [([0, 0], [28, 30]), ([1, 0], [29, 30])].map(|(pad, output)| {
        let g = PlaneGeometry {
            input: [56, 60],
            output,
            kernel: [3, 3],
            stride: [2, 2],
            dilation: [1, 1],
            pad,
        };
        (g, 32)
    });
    let squares = cases.into_iter().chain(large);
    let squares = squares.map(|(h, wd, k, s, d, p, c)| (square_window(h, wd, k, s, d, p), c));
    for (g, channels) in squares.chain(asymmetric) {
        let n = g.output[0] * g.output[1];
        let (x, w, bias) = test_values(&g, channels);
        let lw = LanesWeights::new(&w, channels, g.kernel[0] * g.kernel[1]);
        let clamp = Some((0.0, 1.5));
        // Group by group, planes in and out: the reference.
        let mut want = vec![f32::NAN; channels * n];
        for (group, first) in (0..channels).step_by(LANES).enumerate() {
            let planes = LANES.min(channels - first);
            depthwise_planes(
                &g,
                planes,
                &x[first * g.input[0] * g.input[1]..],
                lw.group(group),
                &bias[first..],
                clamp,
                &mut want[first * n..],
                &mut lanes,
            );
        }
        let in_layout = |l: Layout, planes: &[f32]| match l {
            Layout::Planes => planes.to_vec(),
            Layout::ChannelsLast => to_channels_last(planes, channels),
            Layout::Blocked => to_blocked(planes, channels),
        };
        let mut want_silu = want.clone();
        crate::elementwise::apply_activation(Activation::Silu, &mut want_silu);
        let all = [Layout::Planes, Layout::ChannelsLast, Layout::Blocked];
        let pairs = all.into_iter().flat_map(|a| all.map(|b| (a, b)));
        for ((xl, yl), act) in pairs.flat_map(|p| [(p, None), (p, Some(Activation::Silu))]) {
            let xs = in_layout(xl, &x);
            let mut y = vec![f32::NAN; yl.image_len(channels, n)];
            depthwise_image(&g, &xs, xl, &lw, Some(&bias), clamp, act, &mut y, yl);
            let want = in_layout(yl, if act.is_some() { &want_silu } else { &want });
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                // Blocked padding lanes (NaN in `want`) hold junk.
                assert!(
                    b.is_nan() || (a - b).abs() <= 1e-5,
                    "{g:?} {xl:?}->{yl:?} at {i}: {a} vs {b}"
                );
            }
        }
    }
}
