//! Direct depthwise 2-D convolution of 16 planes at once, one channel per vector lane: the
//! path for all but the largest planes (see [`preferred`]).
//!
//! The plane-at-a-time kernel (`depthwise::depthwise_plane`) puts output positions in the
//! lanes, which wastes most of a 64-lane block on a 7×7 plane and pays its per-plane costs
//! (padded copy, tap table, block copies) for only 49 outputs. Here a group's 16 planes are
//! first interleaved into a padded scratch (`[padded row][padded column][16 lanes]`), so every
//! tap of every output is one 16-lane load, and its weights one vector per tap. Stride-1 3×3
//! and 5×5 windows accumulate 8 neighbours along a row together, loading each input cell once
//! per kernel row for all of them; other windows accumulate 4 positions together. The
//! outputs are then de-interleaved back into the 16 planes. On AVX-512 both copies go
//! through 16×16 register transposes (one shuffle per four floats instead of a scalar move
//! each: for 3×3 windows the copies otherwise cost more than the arithmetic).

mod cells;
#[cfg(test)]
mod tests;
mod window;

use crate::depthwise::PlaneGeometry;
use crate::elementwise::Activation;
use crate::gemm::simd::Portable;
use crate::isa::{isa, Isa};
use crate::parallel;
use cells::{fill_interleaved, interior, padded_width, tap_offsets_into, DIRECT_MIN_POSITIONS};
use rayon::prelude::*;
use std::cell::Cell;
use window::{compute, Args, Cells};

/// Planes (channels) per group: one per lane of an AVX-512 vector, two AVX2 vectors.
pub const LANES: usize = 16;
/// Output positions accumulated together.
const POSITIONS: usize = 4;
/// Output positions along a row accumulated together by the row kernel (`rows`), and the
/// input cells it keeps in registers for them: `(ROW_POSITIONS − 1)·stride + KW`, at most 17
/// (3 wide, stride 2): with the 8 accumulators and a weight, 26 of AVX-512's 32 registers.
const ROW_POSITIONS: usize = 8;
const ROW_CELLS: usize = 17;
/// Cells past the padded plane that the row kernel may read (and whose results it drops).
const ROW_SLACK: usize = ROW_CELLS;

/// One input cell, one output cell or one tap's weights of a group: a value per channel.
pub type Lanes = [f32; LANES];

/// Whether this kernel beats the plane-at-a-time one (`depthwise::depthwise_plane`) on `g`.
///
/// Criterion `depthwise/{blocked,lanes16}`, per-plane Gelem/s on Zen 4 (AVX-512): 7×7 k5
/// 5.9 vs 20.2, 14×14 k3 10.1 vs 15.4, 14×14 k5 s2 2.5 vs 10.7, 28×28 k5 19.4 vs 27.1, 56×56
/// k3 15.4 vs 17.5; 112×112 k3 within noise of each other (13–17 both) on hot planes, but in a
/// network, where the input comes from L3, 16 planes at once win: mobilenet_v2's 32-channel
/// 112×112 layer 0.42–0.43 → 0.26–0.27 ms (`infer bench --profile`, 1 thread). Without
/// AVX-512 the interleaving is scalar and pays only on the smallest or strided planes.
pub fn preferred(g: &PlaneGeometry) -> bool {
    let outputs = g.output[0] * g.output[1];
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        return outputs <= 112 * 112;
    }
    outputs <= 8 * 8 || (g.stride != [1, 1] && outputs <= 16 * 16)
}

/// A thread's reusable interleaved, padded copy of one group of planes.
///
/// The padding cells are the same for every group of one geometry, so they are zeroed only
/// when the geometry changes; each group then overwrites only the input's rectangle.
#[derive(Debug, Default)]
pub struct LanesScratch {
    buf: Vec<Lanes>,
    filled_for: Option<PlaneGeometry>,
    /// The taps' cell offsets.
    taps: Vec<usize>,
    /// The group's outputs, one cell per position, before they are de-interleaved.
    out: Vec<Lanes>,
}

impl LanesScratch {
    pub const fn new() -> Self {
        LanesScratch {
            buf: Vec::new(),
            filled_for: None,
            taps: Vec::new(),
            out: Vec::new(),
        }
    }
}

/// A depthwise kernel's weights as this kernel reads them: per group of 16 channels, one
/// vector per tap (lane `c` the group's channel `c`; lanes past the last channel zero, and
/// never stored). Built once per constant kernel, when the plan is.
#[derive(Clone, Debug)]
pub struct LanesWeights {
    channels: usize,
    taps: usize,
    vectors: Vec<Lanes>,
}

impl LanesWeights {
    /// From `channels` planes of `taps` weights each, back to back (ONNX's `[C, 1, KH, KW]`).
    ///
    /// # Panics
    /// If `w` holds fewer than `channels · taps` values.
    pub fn new(w: &[f32], channels: usize, taps: usize) -> Self {
        assert!(w.len() >= channels * taps, "depthwise weights too short");
        let mut vectors = vec![[0.0; LANES]; channels.div_ceil(LANES) * taps];
        for (c, wc) in w.chunks_exact(taps.max(1)).take(channels).enumerate() {
            let group = &mut vectors[c / LANES * taps..][..taps];
            for (v, &x) in group.iter_mut().zip(wc) {
                v[c % LANES] = x;
            }
        }
        LanesWeights {
            channels,
            taps,
            vectors,
        }
    }

    /// The channels (planes) the weights are for.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Group `g`'s vectors (channels `16·g..`), one per tap.
    pub fn group(&self, g: usize) -> &[Lanes] {
        &self.vectors[g * self.taps..][..self.taps]
    }
}

/// One group of up to 16 depthwise planes: for each plane `c < planes`,
/// `y[c] = bias[c] + Σ_taps w[tap][c] · x_padded[c]`, clamped as `Activation::Clip` does when
/// `clamp` is given.
///
/// `x` holds `planes` input planes of `H·W` floats back to back, `w` the group's weights (one
/// vector per tap, see [`LanesWeights::group`]), `bias` one value per plane, and `y` receives
/// `planes` output planes of `OH·OW`.
///
/// # Panics
/// If `planes` is 0 or above 16, or a slice is shorter than the geometry says (a caller bug:
/// the convolution op checks shapes before it gets here).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_planes(
    g: &PlaneGeometry,
    planes: usize,
    x: &[f32],
    w: &[Lanes],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    y: &mut [f32],
    scratch: &mut LanesScratch,
) {
    assert!((1..=LANES).contains(&planes), "1 to 16 planes per group");
    let positions = g.output[0] * g.output[1];
    assert!(
        x.len() >= planes * g.input[0] * g.input[1],
        "input planes too short"
    );
    assert!(y.len() >= planes * positions, "output planes too short");
    let mut b = [0.0; LANES];
    b[..planes].copy_from_slice(&bias[..planes]);
    let epilogue = GroupEpilogue {
        bias: b,
        clamp,
        activation: None,
    };
    // SAFETY: no direct destination.
    let out = unsafe {
        depthwise_group(
            g,
            planes,
            GroupInput::Planes(x),
            w,
            &epilogue,
            scratch,
            None,
        )
    };
    store_planes(out, planes, &mut y[..planes * positions]);
}

/// How an image's channels lie in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One plane per channel, back to back (NCHW).
    Planes,
    /// Channels last (NHWC): all channels of a position together.
    ChannelsLast,
    /// Channel blocks of 16 (NCHW16c): block `b` holds channels `16b..16b + 16` of every
    /// position, one 16-float cell per position, blocks back to back; the last block's lanes
    /// past the channel count are padding (written with junk, never read as data). A group is
    /// one block, so it reads and writes one contiguous range.
    Blocked,
}

impl Layout {
    /// Floats an image of `channels × positions` takes in this layout.
    pub fn image_len(self, channels: usize, positions: usize) -> usize {
        match self {
            Layout::Planes | Layout::ChannelsLast => channels * positions,
            Layout::Blocked => channels.div_ceil(LANES) * LANES * positions,
        }
    }
}

/// A depthwise convolution of one whole image, every group of 16 channels a rayon task:
/// `y = activation(clamp(bias + Σ_taps w · x_padded))` per channel, `x` and `y` each in
/// either layout. Channels-last inputs are copied into the scratch 16 channels per cell (no
/// transpose), channels-last outputs stored the same way: a chain of channels-last layers
/// never interleaves or de-interleaves.
///
/// # Panics
/// If a slice is shorter than the geometry and `weights` say (a caller bug: the convolution
/// op checks shapes before it gets here).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_image(
    g: &PlaneGeometry,
    x: &[f32],
    x_layout: Layout,
    weights: &LanesWeights,
    bias: Option<&[f32]>,
    clamp: Option<(f32, f32)>,
    activation: Option<Activation>,
    y: &mut [f32],
    y_layout: Layout,
) {
    let channels = weights.channels;
    let positions = g.output[0] * g.output[1];
    let input_len = g.input[0] * g.input[1];
    assert!(
        x.len() >= x_layout.image_len(channels, input_len),
        "input image too short"
    );
    assert!(
        y.len() >= y_layout.image_len(channels, positions),
        "output image too short"
    );
    assert!(bias.is_none_or(|b| b.len() >= channels), "bias too short");
    assert!(
        weights.taps == g.kernel[0] * g.kernel[1],
        "one weight vector per tap"
    );
    if positions == 0 {
        return;
    }
    let y_ptr = SharedOut(y.as_mut_ptr());
    parallel::for_each((0..channels.div_ceil(LANES)).into_par_iter(), |group| {
        let first = group * LANES;
        let planes = LANES.min(channels - first);
        let input = match x_layout {
            Layout::Planes => GroupInput::Planes(&x[first * input_len..][..planes * input_len]),
            Layout::ChannelsLast => GroupInput::ChannelsLast {
                x,
                stride: channels,
                first,
            },
            Layout::Blocked => GroupInput::ChannelsLast {
                x: &x[first * input_len..][..LANES * input_len],
                stride: LANES,
                first: 0,
            },
        };
        let mut b = [0.0; LANES];
        if let Some(bias) = bias {
            b[..planes].copy_from_slice(&bias[first..first + planes]);
        }
        // A group's block of a blocked output is its own contiguous range: stored
        // straight into, the activation applied there after. A full group with no
        // activation beyond a clamp is stored straight into a channels-last output; any
        // other goes through the scratch.
        let direct = match y_layout {
            Layout::Blocked => Some(Cells {
                // SAFETY: block `group` starts inside `y` (asserted above).
                ptr: unsafe { y_ptr.at(first * positions) },
                stride: LANES,
            }),
            Layout::ChannelsLast if planes == LANES && activation.is_none() => Some(Cells {
                // SAFETY: channel `first` of position 0 lies inside `y` (asserted above).
                ptr: unsafe { y_ptr.at(first) },
                stride: channels,
            }),
            _ => None,
        };
        let epilogue = GroupEpilogue {
            bias: b,
            clamp,
            activation: activation.filter(|_| direct.is_none()),
        };
        IMAGE_SCRATCH.with(|cell| {
            let mut scratch = cell.take();
            // SAFETY: a direct destination's cells, channels `first..first + 16` of every
            // position, lie inside `y` (channels last: p·channels + first + 16 ≤
            // positions·channels; blocked: the group's block) and belong to this group
            // alone.
            let out = unsafe {
                depthwise_group(
                    g,
                    planes,
                    input,
                    weights.group(group),
                    &epilogue,
                    &mut scratch,
                    direct,
                )
            };
            match y_layout {
                Layout::Blocked => {
                    if let Some(act) = activation {
                        // SAFETY: the group's block, inside `y` (asserted above), written
                        // by this group alone; no other reference to it is live.
                        let block = unsafe {
                            std::slice::from_raw_parts_mut(
                                y_ptr.at(first * positions),
                                LANES * positions,
                            )
                        };
                        crate::elementwise::apply_activation(act, block);
                    }
                }
                _ if direct.is_some() => {}
                Layout::Planes => {
                    // SAFETY: group `group` alone writes planes `first..first + planes`, which
                    // lie inside `y` (asserted above); no other reference to them exists while
                    // the tasks run.
                    let y = unsafe {
                        std::slice::from_raw_parts_mut(
                            y_ptr.at(first * positions),
                            planes * positions,
                        )
                    };
                    store_planes(out, planes, y);
                }
                Layout::ChannelsLast => {
                    for (p, cell) in out.iter().enumerate() {
                        // SAFETY: position `p`'s channels `first..first + planes` belong to
                        // this group alone and lie inside `y`: p·channels + first + planes ≤
                        // positions·channels (asserted above).
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                cell.as_ptr(),
                                y_ptr.at(p * channels + first),
                                planes,
                            )
                        };
                    }
                }
            }
            cell.set(scratch);
        });
    });
}

/// The output pointer shared by `depthwise_image`'s tasks, each writing its own channels.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the tasks sharing it write disjoint elements (see `depthwise_image`).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer `offset` floats on.
    ///
    /// # Safety
    /// `offset` lies inside the output slice the pointer came from.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's.
        unsafe { self.0.add(offset) }
    }
}

thread_local! {
    /// Each rayon worker's scratch for `depthwise_image`, kept across layers and runs.
    static IMAGE_SCRATCH: Cell<LanesScratch> = const { Cell::new(LanesScratch::new()) };
}

/// Where a group's input cells come from.
#[derive(Clone, Copy)]
enum GroupInput<'a> {
    /// The group's planes, back to back.
    Planes(&'a [f32]),
    /// A channels-last image of `stride` channels; the group's start at channel `first`.
    ChannelsLast {
        x: &'a [f32],
        stride: usize,
        first: usize,
    },
}

/// What a group's outputs get before they are stored.
struct GroupEpilogue {
    bias: Lanes,
    clamp: Option<(f32, f32)>,
    activation: Option<Activation>,
}

/// One group's outputs, one cell per position: stored straight into `direct` when given
/// (and an empty slice returned), else into `scratch` and returned (lanes past `planes` are
/// junk either way).
///
/// # Safety
/// A `direct` destination upholds `Cells`' invariant for `g`'s output positions.
unsafe fn depthwise_group<'s>(
    g: &PlaneGeometry,
    planes: usize,
    input: GroupInput,
    w: &[Lanes],
    epilogue: &GroupEpilogue,
    scratch: &'s mut LanesScratch,
    direct: Option<Cells>,
) -> &'s [Lanes] {
    assert!((1..=LANES).contains(&planes), "1 to 16 planes per group");
    let taps_n = g.kernel[0] * g.kernel[1];
    assert!(w.len() == taps_n, "one weight vector per tap");
    let [oh_n, ow_n] = g.output;
    let positions = oh_n * ow_n;
    if positions == 0 {
        return &[];
    }
    assert!(
        direct.is_none() || epilogue.activation.is_none(),
        "only a clamp is applied on the way to a direct destination"
    );
    // A blocked input is read in place where most windows lie inside it (no padded copy:
    // for the large maps that copy was a full extra write and read of the input); the
    // windows reaching into the padding are then computed apart (`border`).
    let direct_input = match input {
        GroupInput::ChannelsLast { x, stride, first } if stride == LANES && first == 0 => {
            interior(g)
                .filter(|_| positions >= DIRECT_MIN_POSITIONS)
                .map(|rect| (x, rect))
        }
        _ => None,
    };
    let (pitch, shift, rect) = match &direct_input {
        Some((_, rect)) => (g.input[1], g.pad, rect.clone()),
        None => {
            fill_interleaved(g, planes, input, scratch);
            (padded_width(g), [0, 0], [0..oh_n, 0..ow_n])
        }
    };
    tap_offsets_into(g, pitch, &mut scratch.taps);
    let LanesScratch { buf, taps, out, .. } = scratch;
    let cells = match direct {
        Some(cells) => {
            out.clear();
            cells
        }
        None => {
            out.resize(positions, [0.0; LANES]);
            Cells {
                ptr: out.as_mut_ptr().cast(),
                stride: LANES,
            }
        }
    };
    let args = Args {
        g,
        cells: match direct_input {
            Some((x, _)) => &x[..g.input[0] * g.input[1] * LANES],
            None => buf.as_flattened(),
        },
        pitch,
        shift,
        rect,
        taps,
        wt: w,
        bias: epilogue.bias,
        clamp: epilogue.clamp,
    };
    match isa() {
        // SAFETY: `Portable` needs no CPU feature; `args` was built consistent above, and
        // `cells` is the caller's destination or `out`, just sized to the positions.
        Isa::Portable => unsafe { compute::<Portable>(&args, cells) },
        // SAFETY (all arms below): as above; `isa()` picked the arm only after detecting its
        // features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { window::compute_avx2(&args, cells) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { window::compute_avx512(&args, cells) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { window::compute_neon(&args, cells) },
    }
    if let Some(act) = epilogue.activation {
        crate::elementwise::apply_activation(act, out.as_flattened_mut());
    }
    out
}

/// `y[c · positions + p] = out[p][c]` for the first `planes` lanes.
fn store_planes(out: &[Lanes], planes: usize, y: &mut [f32]) {
    match isa() {
        // SAFETY: `isa()` returns Avx512 only after detecting AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { cells::avx512::deinterleave(out, planes, y) },
        _ => deinterleave(out, planes, y),
    }
}

/// `y[c · positions + p] = out[p][c]` for the first `planes` lanes.
fn deinterleave(out: &[Lanes], planes: usize, y: &mut [f32]) {
    let positions = out.len();
    for (c, plane) in y.chunks_exact_mut(positions).take(planes).enumerate() {
        for (v, cell) in plane.iter_mut().zip(out) {
            *v = cell[c];
        }
    }
}
