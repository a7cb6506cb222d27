//! Times `depthwise_image` on MobileNet-v2 layers with each input/output layout pair.
//! `cargo run --release -p infer-kernels --example depthwise_layouts`
use infer_kernels::depthwise::PlaneGeometry;
use infer_kernels::depthwise_lanes::{depthwise_image, LanesWeights, Layout};
use std::time::Instant;

fn main() {
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
        let aligned = std::env::args().nth(1).is_some();
        let mut xbuf = vec![0.0f32; c * hw * hw + 16];
        let xoff = if aligned {
            xbuf.as_ptr().align_offset(64)
        } else {
            0
        };
        let x = &mut xbuf[xoff..xoff + c * hw * hw];
        x.iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i % 7) as f32);
        let x: &mut [f32] = x;
        let w = LanesWeights::new(&vec![0.1; c * 9], c, 9);
        let bias = vec![0.5; c];
        let mut ybuf = vec![0.0f32; c * out * out + 16];
        let yoff = if aligned {
            ybuf.as_ptr().align_offset(64)
        } else {
            0
        };
        println!(
            "x offset {} y offset {}",
            x.as_ptr() as usize % 64,
            ybuf[yoff..].as_ptr() as usize % 64
        );
        let y = &mut ybuf[yoff..yoff + c * out * out];
        for (xl, yl) in [
            (Layout::Planes, Layout::Planes),
            (Layout::ChannelsLast, Layout::ChannelsLast),
            (Layout::Planes, Layout::ChannelsLast),
            (Layout::ChannelsLast, Layout::Planes),
        ] {
            let mut times = Vec::new();
            let mut junk = vec![0.0f32; 4 << 20];
            for r in 0..200 {
                // Evict the input from L2 (as in a network, where the previous layer wrote it).
                junk.iter_mut().for_each(|v| *v += r as f32);
                // Then write the input, as the layer before would have.
                x.iter_mut().for_each(|v| *v = std::hint::black_box(*v));
                let t = Instant::now();
                depthwise_image(&g, &*x, xl, &w, Some(&bias), Some((0.0, 6.0)), None, y, yl);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            std::hint::black_box(&junk);
            times.sort_by(f64::total_cmp);
            println!(
                "{c}x{hw}x{hw} s{s} {xl:?}->{yl:?}: median {:.3} ms",
                times[100]
            );
        }
    }
}
