//! Times `depthwise_image` on MobileNet-v2's depthwise layers with each input/output layout
//! pair, as in a network: before each run the input is pushed out of L2 and written again,
//! as the layer before would have left it.
//! `RAYON_NUM_THREADS=1 cargo run --release -p infer-kernels --example depthwise_layouts`
use infer_kernels::depthwise::PlaneGeometry;
use infer_kernels::depthwise_lanes::{depthwise_image, LanesWeights, Layout};
use std::time::Instant;

fn main() {
    let mut junk = vec![0.0f32; 4 << 20];
    // (channels, input side, stride)
    for (c, hw, s) in [(96, 112, 2), (144, 56, 1), (32, 112, 1), (576, 14, 1)] {
        let out = (hw + 2 - 3) / s + 1;
        let g = PlaneGeometry {
            input: [hw, hw],
            output: [out, out],
            kernel: [3, 3],
            stride: [s, s],
            dilation: [1, 1],
            pad: [1, 1],
        };
        let mut x: Vec<f32> = (0..c * hw * hw).map(|i| (i % 7) as f32).collect();
        let w = LanesWeights::new(&vec![0.1; c * 9], c, 9);
        let bias = vec![0.5; c];
        let mut y = vec![0.0; c * out * out];
        for (xl, yl) in [
            (Layout::Planes, Layout::Planes),
            (Layout::ChannelsLast, Layout::Planes),
            (Layout::Planes, Layout::ChannelsLast),
            (Layout::ChannelsLast, Layout::ChannelsLast),
            (Layout::Blocked, Layout::Blocked),
            (Layout::Blocked, Layout::Planes),
        ] {
            let mut times = Vec::new();
            for r in 0..200 {
                junk.iter_mut().for_each(|v| *v += r as f32);
                x.iter_mut().for_each(|v| *v = std::hint::black_box(*v));
                let t = Instant::now();
                depthwise_image(
                    &g,
                    &x,
                    xl,
                    &w,
                    Some(&bias),
                    Some((0.0, 6.0)),
                    None,
                    &mut y,
                    yl,
                );
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{c}x{hw}x{hw} s{s} {xl:?} -> {yl:?}: median {:.3} ms",
                times[100]
            );
        }
    }
    std::hint::black_box(&junk);
}
