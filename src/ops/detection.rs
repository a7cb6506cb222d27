//! Object-detection ops: NonMaxSuppression and RoiAlign.

use super::util::{input, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::{ensure, op_err};
use infer_kernels::parallel;
use rayon::prelude::*;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "NonMaxSuppression" => NonMaxSuppression::build(ctx),
        "RoiAlign" => RoiAlign::build(ctx),
        _ => return None,
    })
}

#[derive(Debug)]
struct NonMaxSuppression {
    /// Boxes are `[x_center, y_center, width, height]` rather than two corners.
    center_point_box: bool,
}

impl NonMaxSuppression {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(NonMaxSuppression {
            center_point_box: ctx.attrs().int_or("center_point_box", 0)? != 0,
        }))
    }

    /// A box as `[y_min, x_min, y_max, x_max]`, whatever its encoding and corner order.
    fn corners(&self, b: &[f64]) -> [f64; 4] {
        if self.center_point_box {
            let (x, y, w, h) = (b[0], b[1], b[2] / 2.0, b[3] / 2.0);
            [y - h, x - w, y + h, x + w]
        } else {
            [
                b[0].min(b[2]),
                b[1].min(b[3]),
                b[0].max(b[2]),
                b[1].max(b[3]),
            ]
        }
    }
}

/// Intersection over union of two `[y_min, x_min, y_max, x_max]` boxes; `None` when they do
/// not overlap or one is degenerate (such boxes never suppress each other).
fn iou(a: &[f64; 4], b: &[f64; 4]) -> Option<f64> {
    let h = a[2].min(b[2]) - a[0].max(b[0]);
    let w = a[3].min(b[3]) - a[1].max(b[1]);
    if h <= 0.0 || w <= 0.0 {
        return None;
    }
    let inter = h * w;
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return None;
    }
    Some(inter / union)
}

/// The first value of an optional scalar input.
fn first(inputs: &[Option<&Tensor>], i: usize) -> Result<Option<f64>> {
    opt_input(inputs, i)
        .map(|t| t.to_f64_vec())
        .transpose()
        .map(|v| v.and_then(|v| v.first().copied()))
}

impl Kernel for NonMaxSuppression {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (boxes, scores) = (input(inputs, 0)?, input(inputs, 1)?);
        let (bs, ss) = (boxes.shape(), scores.shape());
        ensure!(
            bs.len() == 3 && bs[2] == 4,
            "boxes must be [batches, boxes, 4], got {bs:?}"
        );
        ensure!(
            ss.len() == 3 && ss[0] == bs[0] && ss[2] == bs[1],
            "scores must be [batches, classes, boxes] matching boxes {bs:?}, got {ss:?}"
        );
        let max_out = first(inputs, 2)?.unwrap_or(0.0).max(0.0) as usize;
        let iou_threshold = first(inputs, 3)?.unwrap_or(0.0);
        let score_threshold = first(inputs, 4)?;
        let (batches, classes, n) = (ss[0], ss[1], ss[2]);
        let box_data = boxes.to_f64_vec()?;
        let score_data = scores.to_f64_vec()?;
        let mut selected: Vec<i64> = Vec::new();
        for b in 0..batches {
            let corners: Vec<[f64; 4]> = box_data[b * n * 4..(b + 1) * n * 4]
                .chunks_exact(4)
                .map(|c| self.corners(c))
                .collect();
            for c in 0..classes {
                let class_scores = &score_data[(b * classes + c) * n..(b * classes + c + 1) * n];
                let mut candidates: Vec<usize> = (0..n)
                    .filter(|&i| score_threshold.is_none_or(|t| class_scores[i] > t))
                    .collect();
                // Highest score first; ties keep the lower box index first.
                candidates.sort_by(|&i, &j| class_scores[j].total_cmp(&class_scores[i]));
                let mut kept: Vec<usize> = Vec::new();
                for i in candidates {
                    if kept.len() >= max_out {
                        break;
                    }
                    if kept
                        .iter()
                        .all(|&k| iou(&corners[i], &corners[k]).is_none_or(|v| v <= iou_threshold))
                    {
                        kept.push(i);
                        selected.extend([b as i64, c as i64, i as i64]);
                    }
                }
            }
        }
        let rows = selected.len() / 3;
        Ok(vec![Tensor::from_vec(vec![rows, 3], selected)?])
    }
}

#[derive(Debug)]
struct RoiAlign {
    /// Max pooling of the samples rather than their average.
    max: bool,
    out_h: usize,
    out_w: usize,
    /// Samples per bin along each axis; 0 means adaptive (ceil of the bin size).
    sampling_ratio: usize,
    spatial_scale: f64,
    /// "half_pixel" shifts the ROI by half a pixel (opset 16 default); "output_half_pixel"
    /// (the opset 10 behaviour) does not, but clamps ROI sizes to at least one pixel.
    half_pixel: bool,
}

impl RoiAlign {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let a = ctx.attrs();
        let default_mode = if ctx.opset >= 16 {
            "half_pixel"
        } else {
            "output_half_pixel"
        };
        let half_pixel = match a.string_or("coordinate_transformation_mode", default_mode)? {
            "half_pixel" => true,
            "output_half_pixel" => false,
            m => return Err(op_err!("unknown coordinate_transformation_mode {m:?}")),
        };
        let max = match a.string_or("mode", "avg")? {
            "avg" => false,
            "max" => true,
            m => return Err(op_err!("unknown mode {m:?}")),
        };
        let positive = |name: &str, default: i64| -> Result<usize> {
            let v = a.int_or(name, default)?;
            usize::try_from(v).map_err(|_| op_err!("{name} must not be negative, got {v}"))
        };
        Ok(Box::new(RoiAlign {
            max,
            out_h: positive("output_height", 1)?,
            out_w: positive("output_width", 1)?,
            sampling_ratio: positive("sampling_ratio", 0)?,
            spatial_scale: a.float_or("spatial_scale", 1.0)? as f64,
            half_pixel,
        }))
    }
}

/// One bilinear sample: four flat positions in the feature map and their weights.
type Sample = ([usize; 4], [f64; 4]);

/// The bilinear sample at `(y, x)` of an `h × w` map; points more than one pixel outside
/// contribute zero, points just outside are clamped to the border.
fn bilinear(y: f64, x: f64, h: usize, w: usize) -> Sample {
    if y < -1.0 || y > h as f64 || x < -1.0 || x > w as f64 {
        return ([0; 4], [0.0; 4]);
    }
    let clamp = |v: f64, size: usize| -> (usize, usize, f64) {
        let v = v.max(0.0);
        let low = v as usize;
        if low >= size - 1 {
            (size - 1, size - 1, 0.0)
        } else {
            (low, low + 1, v - low as f64)
        }
    };
    let (y0, y1, ly) = clamp(y, h);
    let (x0, x1, lx) = clamp(x, w);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    (
        [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1],
        [hy * hx, hy * lx, ly * hx, ly * lx],
    )
}

impl RoiAlign {
    /// The samples of every output bin of one ROI, bin by bin.
    fn samples(&self, roi: &[f64], h: usize, w: usize) -> (Vec<Sample>, usize) {
        let offset = if self.half_pixel { 0.5 } else { 0.0 };
        let [x0, y0, x1, y1] = [0, 1, 2, 3].map(|i| roi[i] * self.spatial_scale - offset);
        let (mut roi_w, mut roi_h) = (x1 - x0, y1 - y0);
        if !self.half_pixel {
            roi_w = roi_w.max(1.0);
            roi_h = roi_h.max(1.0);
        }
        let (bin_h, bin_w) = (roi_h / self.out_h as f64, roi_w / self.out_w as f64);
        let grid = |bin: f64| match self.sampling_ratio {
            0 => bin.ceil().max(0.0) as usize,
            r => r,
        };
        let (gh, gw) = (grid(bin_h), grid(bin_w));
        let mut samples = Vec::with_capacity(self.out_h * self.out_w * gh * gw);
        for ph in 0..self.out_h {
            for pw in 0..self.out_w {
                for iy in 0..gh {
                    let y = y0 + ph as f64 * bin_h + (iy as f64 + 0.5) * bin_h / gh as f64;
                    for ix in 0..gw {
                        let x = x0 + pw as f64 * bin_w + (ix as f64 + 0.5) * bin_w / gw as f64;
                        samples.push(bilinear(y, x, h, w));
                    }
                }
            }
        }
        (samples, gh * gw)
    }
}

impl Kernel for RoiAlign {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, rois, batch) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        ensure!(x.dtype().is_float(), "X must be a float tensor");
        let xs = x.shape();
        ensure!(xs.len() == 4, "X must be [N, C, H, W], got {xs:?}");
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let num_rois = batch.len();
        ensure!(
            rois.shape() == [num_rois, 4],
            "rois must be [{num_rois}, 4], got {:?}",
            rois.shape()
        );
        let batch = batch.to_i64_vec()?;
        for &b in &batch {
            ensure!(
                (0..n as i64).contains(&b),
                "batch index {b} is out of range for {n} images"
            );
        }
        let data = x.to_f64_vec()?;
        let rois = rois.to_f64_vec()?;
        let plane = self.out_h * self.out_w;
        let mut out = vec![0.0; num_rois * c * plane];
        if h > 0 && w > 0 && plane > 0 {
            parallel::for_each(out.par_chunks_mut(c * plane).enumerate(), |(r, out_roi)| {
                let (samples, count) = self.samples(&rois[r * 4..r * 4 + 4], h, w);
                let image = &data[batch[r] as usize * c * h * w..][..c * h * w];
                for (channel, out_plane) in out_roi.chunks_mut(plane).enumerate() {
                    let map = &image[channel * h * w..(channel + 1) * h * w];
                    for (bin, o) in out_plane.iter_mut().enumerate() {
                        let values = samples[bin * count..(bin + 1) * count]
                            .iter()
                            .map(|(pos, wt)| (pos.map(|p| map[p]), wt));
                        *o = if self.max {
                            // Each sample is the largest of its weighted corners.
                            values
                                .map(|(v, wt)| {
                                    (0..4).map(|k| v[k] * wt[k]).fold(f64::MIN, f64::max)
                                })
                                .fold(f64::MIN, f64::max)
                        } else {
                            let sum: f64 = values
                                .map(|(v, wt)| (0..4).map(|k| v[k] * wt[k]).sum::<f64>())
                                .sum();
                            sum / count.max(1) as f64
                        };
                    }
                }
            });
        }
        let out = Tensor::from_vec(vec![num_rois, c, self.out_h, self.out_w], out)?;
        Ok(vec![out.cast(x.dtype())?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_suppresses_overlaps_above_the_threshold() {
        // Boxes 0 and 1 overlap with IoU 0.81; box 2 is disjoint.
        let boxes = Tensor::from_vec(
            vec![1, 3, 4],
            vec![
                0f32, 0.0, 1.0, 1.0, 0.0, 0.1, 1.0, 1.1, 0.0, 10.0, 1.0, 11.0,
            ],
        )
        .unwrap();
        let scores = Tensor::from_vec(vec![1, 1, 3], vec![0.9f32, 0.75, 0.6]).unwrap();
        let max = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
        let iou = Tensor::from_vec(vec![1], vec![0.5f32]).unwrap();
        let nms = NonMaxSuppression {
            center_point_box: false,
        };
        let y = nms
            .run(&[Some(&boxes), Some(&scores), Some(&max), Some(&iou)])
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn roi_align_averages_bilinear_samples() {
        // A 2x2 ramp; one bin over the whole map with one centred sample at (0.5, 0.5):
        // the mean of the four pixels.
        let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![0f32, 1.0, 2.0, 3.0]).unwrap();
        let rois = Tensor::from_vec(vec![1, 4], vec![0f32, 0.0, 1.0, 1.0]).unwrap();
        let batch = Tensor::from_vec(vec![1], vec![0i64]).unwrap();
        let op = RoiAlign {
            max: false,
            out_h: 1,
            out_w: 1,
            sampling_ratio: 1,
            spatial_scale: 1.0,
            half_pixel: false,
        };
        let y = op
            .run(&[Some(&x), Some(&rois), Some(&batch)])
            .unwrap()
            .remove(0);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.5]);
    }

    #[test]
    fn roi_align_rejects_bad_batch_indices() {
        let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![0f32; 4]).unwrap();
        let rois = Tensor::from_vec(vec![1, 4], vec![0f32; 4]).unwrap();
        let batch = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        let op = RoiAlign {
            max: false,
            out_h: 1,
            out_w: 1,
            sampling_ratio: 0,
            spatial_scale: 1.0,
            half_pixel: true,
        };
        assert!(op.run(&[Some(&x), Some(&rois), Some(&batch)]).is_err());
    }
}
