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

use crate::depthwise::PlaneGeometry;
use crate::elementwise::Activation;
#[cfg(target_arch = "aarch64")]
use crate::gemm::simd::Neon;
#[cfg(target_arch = "x86_64")]
use crate::gemm::simd::{Avx2, Avx512};
use crate::gemm::simd::{Portable, Simd};
use crate::isa::{isa, Isa};
use rayon::prelude::*;
use std::cell::Cell;
use std::ops::Range;

/// Planes (channels) per group: one per lane of an AVX-512 vector, two AVX2 vectors.
pub const LANES: usize = 16;
/// Output positions accumulated together.
const POSITIONS: usize = 4;
/// Output positions along a row accumulated together by the row kernel (`rows`), and the
/// input cells it keeps in registers for them: `ROW_POSITIONS + KW - 1`, at most 16.
const ROW_POSITIONS: usize = 8;
const ROW_CELLS: usize = 16;
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
    (0..channels.div_ceil(LANES))
        .into_par_iter()
        .for_each(|group| {
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
        Isa::Avx2 => unsafe { compute_avx2(&args, cells) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { compute_avx512(&args, cells) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { compute_neon(&args, cells) },
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
        Isa::Avx512 => unsafe { avx512::deinterleave(out, planes, y) },
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

/// Padded width of the interleaved scratch: the columns the outputs reach.
fn padded_width(g: &PlaneGeometry) -> usize {
    (g.output[1] - 1) * g.stride[1] + (g.kernel[1].max(1) - 1) * g.dilation[1] + 1
}

/// Padded height: the rows the outputs reach.
fn padded_height(g: &PlaneGeometry) -> usize {
    (g.output[0] - 1) * g.stride[0] + (g.kernel[0].max(1) - 1) * g.dilation[0] + 1
}

/// Copies the group's input into `scratch`'s cells (padding zero), rewriting the padding
/// only when the geometry differs from the last fill's.
fn fill_interleaved(
    g: &PlaneGeometry,
    planes: usize,
    input: GroupInput,
    scratch: &mut LanesScratch,
) {
    let [h, wd] = g.input;
    let (ph, pw) = (padded_height(g), padded_width(g));
    let [pad_top, pad_left] = g.pad;
    // Rows and columns of the input that fall inside the padded area.
    let rows = 0..h.min(ph.saturating_sub(pad_top));
    let cols = 0..wd.min(pw.saturating_sub(pad_left));
    if scratch.filled_for != Some(*g) {
        // `ROW_SLACK` cells past the plane: the row kernel's last group reads past its row.
        scratch.buf.resize(ph * pw + ROW_SLACK, [0.0; LANES]);
        // Zero what no fill writes: the padding and the slack (not the whole plane: on a
        // 112×112 map that was most of a megabyte written twice per layer).
        let zero = [0.0; LANES];
        let (top, bottom) = (pad_top.min(ph), (pad_top + rows.len()).min(ph));
        scratch.buf[..top * pw].fill(zero);
        scratch.buf[bottom * pw..].fill(zero);
        for row in scratch.buf[top * pw..bottom * pw].chunks_exact_mut(pw) {
            row[..pad_left.min(pw)].fill(zero);
            row[(pad_left + cols.len()).min(pw)..].fill(zero);
        }
        scratch.filled_for = Some(*g);
    }
    let x = match input {
        GroupInput::Planes(x) => x,
        GroupInput::ChannelsLast { x, stride, first } => {
            assert!(
                first + planes <= stride,
                "channels {first}+{planes} of {stride}"
            );
            assert!(x.len() >= h * wd * stride, "channels-last input too short");
            if stride == LANES {
                // Blocked: a row's cells are contiguous in the input too.
                for r in rows {
                    let dst = &mut scratch.buf[(r + pad_top) * pw + pad_left..][..cols.len()];
                    dst.as_flattened_mut()
                        .copy_from_slice(&x[r * wd * LANES..][..cols.len() * LANES]);
                }
                return;
            }
            for r in rows {
                let dst = &mut scratch.buf[(r + pad_top) * pw + pad_left..][..cols.len()];
                let src = &x[(r * wd) * stride + first..];
                for (c, d) in dst.iter_mut().enumerate() {
                    let cell = &src[c * stride..];
                    if planes == LANES {
                        d.copy_from_slice(&cell[..LANES]);
                    } else {
                        // Lanes past `planes` keep whatever an earlier, fuller group left:
                        // their weights are zero and their outputs are never stored.
                        d[..planes].copy_from_slice(&cell[..planes]);
                    }
                }
            }
            return;
        }
    };
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 && h + pad_top <= ph && wd + pad_left <= pw {
        // SAFETY: `isa()` returns Avx512 only after detecting AVX-512F; the input's rectangle
        // lies inside the padded area (checked just above).
        unsafe { avx512::interleave(g, planes, x, pw, &mut scratch.buf) };
        return;
    }
    for r in rows {
        let dst = &mut scratch.buf[(r + pad_top) * pw + pad_left..][..cols.len()];
        // Lanes past `planes` keep whatever an earlier, fuller group left: their weights
        // are zero and their outputs are never stored.
        for (c, plane) in x.chunks_exact(h * wd).take(planes).enumerate() {
            let src = &plane[r * wd..][..cols.len()];
            for (d, &v) in dst.iter_mut().zip(src) {
                d[c] = v;
            }
        }
    }
}

/// Fewest output positions for which a blocked input is read in place: on smaller maps the
/// border windows (`border`, a bounds check per tap) are too large a share, and the input
/// is in L2 for the padded copy anyway.
const DIRECT_MIN_POSITIONS: usize = 28 * 28;

/// The output rows and columns whose windows lie wholly inside the input (no padding
/// read), when they span at least one row group (`ROW_POSITIONS`) across: the row kernel
/// then never reads past a row's end.
fn interior(g: &PlaneGeometry) -> Option<[Range<usize>; 2]> {
    let axis = |a: usize| {
        let reach = (g.kernel[a].max(1) - 1) * g.dilation[a];
        // Outputs o with o·s ≥ pad and o·s − pad + reach ≤ input − 1.
        let lo = g.pad[a].div_ceil(g.stride[a]);
        let hi = (g.input[a] + g.pad[a]).checked_sub(reach + 1)? / g.stride[a] + 1;
        let hi = hi.min(g.output[a]);
        (lo < hi).then_some(lo..hi)
    };
    let rect = [axis(0)?, axis(1)?];
    (rect[1].len() >= ROW_POSITIONS).then_some(rect)
}

/// For each tap (kh, kw), its cell offset relative to the window's corner in cells `pitch`
/// per row.
fn tap_offsets_into(g: &PlaneGeometry, pitch: usize, taps: &mut Vec<usize>) {
    let pw = pitch;
    taps.clear();
    for kh in 0..g.kernel[0] {
        for kw in 0..g.kernel[1] {
            taps.push(kh * g.dilation[0] * pw + kw * g.dilation[1]);
        }
    }
}

/// Everything `compute` reads.
struct Args<'a> {
    g: &'a PlaneGeometry,
    /// The cells the windows read, `pitch` per row: the padded scratch, or the group's
    /// blocked input read in place.
    cells: &'a [f32],
    pitch: usize,
    /// Padding rows and columns that `cells` lacks before its first (none for the scratch,
    /// the geometry's pads for an input read in place).
    shift: [usize; 2],
    /// The output rows and columns computed from `cells` as they are; the others' windows
    /// reach into padding that `cells` lacks (`border`).
    rect: [Range<usize>; 2],
    taps: &'a [usize],
    wt: &'a [Lanes],
    bias: Lanes,
    clamp: Option<(f32, f32)>,
}

/// The group's outputs on `S`'s vectors: the row kernel for stride-1 3×3 and 5×5 windows
/// where a cell is one vector (AVX-512: with two or four per cell its accumulators and cells
/// would not fit the registers), else `POSITIONS` at a time.
///
/// # Safety
/// As `any_window`.
#[inline(always)]
unsafe fn compute<S: Simd>(a: &Args, out: Cells) {
    // The accumulators are arrays of exactly a cell's vectors: with a larger, partly unused
    // array the compiler zeroed it in memory for every group of positions (a memset of
    // 2 KB per 8 outputs on AVX-512).
    // SAFETY: the caller's guarantees.
    unsafe {
        match LANES / S::LANES {
            1 => compute_cells::<S, 1>(a, out),
            2 => compute_cells::<S, 2>(a, out),
            _ => compute_cells::<S, 4>(a, out),
        }
    }
}

/// `compute` with `NV` vectors per cell (`NV · S::LANES = LANES`).
///
/// # Safety
/// As `any_window`.
#[inline(always)]
unsafe fn compute_cells<S: Simd, const NV: usize>(a: &Args, out: Cells) {
    const { assert!(NV <= 4) };
    debug_assert_eq!(NV * S::LANES, LANES);
    let g = a.g;
    let unit = g.stride == [1, 1] && g.dilation == [1, 1] && S::LANES == LANES;
    // SAFETY: the caller's guarantees, which every kernel needs.
    unsafe {
        match (unit, g.kernel[1]) {
            (true, 3) => rows::<S, NV, 3>(a, out),
            (true, 5) => rows::<S, NV, 5>(a, out),
            _ => any_window::<S, NV>(a, out),
        }
        if a.rect != [0..g.output[0], 0..g.output[1]] {
            border::<S, NV>(a, out);
        }
    }
}

/// The output positions outside `a.rect`, whose windows reach into padding: `cells` is then
/// the input read in place (`shift` its pads), and taps outside it are skipped.
///
/// # Safety
/// As `any_window`.
#[inline(always)]
unsafe fn border<S: Simd, const NV: usize>(a: &Args, out: Cells) {
    let g = a.g;
    let [oh_n, ow_n] = g.output;
    let nv = NV;
    // SAFETY (whole body): the ISA is the caller's; every cell read is checked to lie inside
    // the input (`r < h`, `c < w`, and `cells` holds its `h·w` cells `pitch = w` per row).
    unsafe {
        for oh in 0..oh_n {
            let inside = a.rect[0].contains(&oh);
            let mut ow = 0;
            while ow < ow_n {
                if inside && ow == a.rect[1].start {
                    ow = a.rect[1].end;
                    continue;
                }
                let mut acc = [S::zero(); NV];
                for (v, x) in acc.iter_mut().enumerate().take(nv) {
                    *x = S::load(a.bias.as_ptr().add(v * S::LANES));
                }
                for kh in 0..g.kernel[0] {
                    let r = (oh * g.stride[0] + kh * g.dilation[0]).wrapping_sub(a.shift[0]);
                    if r >= g.input[0] {
                        continue;
                    }
                    for kw in 0..g.kernel[1] {
                        let c = (ow * g.stride[1] + kw * g.dilation[1]).wrapping_sub(a.shift[1]);
                        if c >= g.input[1] {
                            continue;
                        }
                        let cell = a.cells.as_ptr().add((r * a.pitch + c) * LANES);
                        let w = a.wt[kh * g.kernel[1] + kw].as_ptr();
                        for (v, x) in acc.iter_mut().enumerate().take(nv) {
                            let xv = S::load(cell.add(v * S::LANES));
                            *x = S::mul_add(*x, xv, S::load(w.add(v * S::LANES)));
                        }
                    }
                }
                store::<S, NV>(a, &[acc], out, oh * ow_n + ow);
                ow += 1;
            }
        }
    }
}

/// Stride-1 windows `KW` wide, `ROW_POSITIONS` neighbours along a row at a time: they share
/// all but `KW - 1` of their input cells, so each cell is loaded once per kernel row for all
/// of them (rather than once per tap and position).
///
/// # Safety
/// As `any_window`; the scratch has `ROW_SLACK` cells past the plane.
#[inline(always)]
unsafe fn rows<S: Simd, const NV: usize, const KW: usize>(a: &Args, out: Cells) {
    const { assert!(ROW_POSITIONS + KW - 1 <= ROW_CELLS) };
    let ow_n = a.g.output[1];
    let (pw, [sh, sw]) = (a.pitch, a.shift);
    let [rows, cols] = &a.rect;
    let nv = NV;
    let kh_n = a.g.kernel[0];
    debug_assert!(a.wt.len() == kh_n * KW);
    // SAFETY (whole body): the ISA is the caller's; the group at (oh, ow) reads cells
    // (oh + kh − sh)·pw + ow − sw + i for i < ROW_POSITIONS + KW − 1: inside the rectangle
    // (`interior`) for a full group, and a short group (only in a rectangle narrower than
    // one, hence only on the padded scratch) reaches at most ROW_SLACK cells past the plane;
    // weights `kh·KW + kw` < taps.
    unsafe {
        let buf = a.cells.as_ptr();
        for oh in rows.clone() {
            let mut ow = cols.start;
            while ow < cols.end {
                // The last full group of a row ends at its end, overlapping the one before
                // (those positions are computed twice, to the same values).
                if cols.len() >= ROW_POSITIONS {
                    ow = ow.min(cols.end - ROW_POSITIONS);
                }
                let n = ROW_POSITIONS.min(cols.end - ow);
                let mut acc = [[S::zero(); NV]; ROW_POSITIONS];
                for row in acc.iter_mut() {
                    for (v, x) in row.iter_mut().enumerate().take(nv) {
                        *x = S::load(a.bias.as_ptr().add(v * S::LANES));
                    }
                }
                for kh in 0..kh_n {
                    let cells = buf.add(((oh + kh - sh) * pw + ow - sw) * LANES);
                    let weights = a.wt.as_ptr().add(kh * KW).cast::<f32>();
                    for v in 0..nv {
                        let mut xs = [S::zero(); ROW_CELLS];
                        for (i, x) in xs.iter_mut().enumerate().take(ROW_POSITIONS + KW - 1) {
                            *x = S::load(cells.add(i * LANES + v * S::LANES));
                        }
                        for kw in 0..KW {
                            let wv = S::load(weights.add(kw * LANES + v * S::LANES));
                            for (j, acc) in acc.iter_mut().enumerate() {
                                acc[v] = S::mul_add(acc[v], xs[j + kw], wv);
                            }
                        }
                    }
                }
                store::<S, NV>(a, &acc[..n], out, oh * ow_n + ow);
                ow += n;
            }
        }
    }
}

/// Where a group's output cells go: cell `p` (16 floats) at `ptr + p·stride`.
///
/// Invariant (upheld by whoever builds one): `ptr` is valid for writes of the 16 floats of
/// every cell below the geometry's output positions, and nothing else reads or writes them
/// while the cells are stored.
#[derive(Clone, Copy)]
struct Cells {
    ptr: *mut f32,
    stride: usize,
}

/// Stores accumulated positions into output cells `first..first + acc.len()`, clamped.
///
/// # Safety
/// The CPU supports `S`'s ISA; those cells are output positions of `out`.
#[inline(always)]
unsafe fn store<S: Simd, const NV: usize>(a: &Args, acc: &[[S::V; NV]], out: Cells, first: usize) {
    let nv = NV;
    // SAFETY: each cell holds 16 floats, written as `nv` vectors, inside `out` (caller and
    // `Cells`' invariant); the ISA is the caller's.
    unsafe {
        for (j, row) in acc.iter().enumerate() {
            let cell = out.ptr.add((first + j) * out.stride);
            for (v, &x) in row.iter().enumerate().take(nv) {
                let x = match a.clamp {
                    Some((lo, hi)) => S::min(S::splat(hi), S::max(S::splat(lo), x)),
                    None => x,
                };
                S::store(cell.add(v * S::LANES), x);
            }
        }
    }
}

/// Any window: `POSITIONS` output positions at a time, on `S`'s vectors (`LANES / S::LANES`
/// per position).
///
/// # Safety
/// The CPU supports `S`'s ISA; `a` is consistent (`buf` holds the padded geometry's cells,
/// `wt` one vector per tap) and `y` holds `a.planes` output planes.
#[inline(always)]
unsafe fn any_window<S: Simd, const NV: usize>(a: &Args, out: Cells) {
    let ow_n = a.g.output[1];
    let [rows, cols] = &a.rect;
    let positions = rows.len() * cols.len();
    let pw = a.pitch;
    let nv = NV;
    let taps = a.taps.len().min(a.wt.len());
    // SAFETY (whole body): the ISA is the caller's; every cell read is `corner + tap offset`,
    // inside the padded geometry the scratch was filled for (checked in debug builds), and
    // vector `v` of a cell reads its floats `v·S::LANES..(v+1)·S::LANES`, all below 16.
    unsafe {
        let buf = a.cells.as_ptr();
        // Plain loops, no closures: everything here must inline into the ISA's function.
        // The window corner (in floats) and output cell of each position of the rectangle,
        // in order: counters, not divisions (one per position cost as much as a small
        // plane's taps).
        let (row_step, col_step) = (a.g.stride[0] * pw * LANES, a.g.stride[1] * LANES);
        let (mut oh, mut ow) = (rows.start, cols.start);
        let mut next = || {
            let corner = (oh * row_step + ow * col_step) - (a.shift[0] * pw + a.shift[1]) * LANES;
            let cell = oh * ow_n + ow;
            ow += 1;
            if ow == cols.end {
                (oh, ow) = (oh + 1, cols.start);
            }
            (corner, cell)
        };
        let mut p = 0;
        while p < positions {
            let n = POSITIONS.min(positions - p);
            // A short last group repeats its last position (computed, not stored).
            let mut bases = [0usize; POSITIONS];
            let mut cells = [0usize; POSITIONS];
            for (base, cell) in bases[..n].iter_mut().zip(&mut cells[..n]) {
                (*base, *cell) = next();
            }
            let last = bases[n - 1];
            bases[n..].fill(last);
            let mut acc = [[S::zero(); NV]; POSITIONS];
            for row in acc.iter_mut() {
                for (v, x) in row.iter_mut().enumerate().take(nv) {
                    *x = S::load(a.bias.as_ptr().add(v * S::LANES));
                }
            }
            // Column `v` of every position's accumulators per step: an index loop reads best.
            #[allow(clippy::needless_range_loop)]
            for t in 0..taps {
                let off = a.taps[t] * LANES;
                let w = a.wt[t].as_ptr();
                for v in 0..nv {
                    let wv = S::load(w.add(v * S::LANES));
                    for j in 0..POSITIONS {
                        debug_assert!(bases[j] + off + LANES <= a.cells.len());
                        let xv = S::load(buf.add(bases[j] + off + v * S::LANES));
                        acc[j][v] = S::mul_add(acc[j][v], xv, wv);
                    }
                }
            }
            for j in 0..n {
                store::<S, NV>(a, &acc[j..j + 1], out, cells[j]);
            }
            p += n;
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn compute_avx2(a: &Args, out: Cells) {
    // SAFETY: the features are enabled on this function; `a` is consistent (caller).
    unsafe { compute::<Avx2>(a, out) }
}

/// # Safety
/// The CPU has AVX-512F (which implies AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn compute_avx512(a: &Args, out: Cells) {
    // SAFETY: as above.
    unsafe { compute::<Avx512>(a, out) }
}

/// # Safety
/// None beyond aarch64 itself (NEON is baseline).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn compute_neon(a: &Args, out: Cells) {
    // SAFETY: as above.
    unsafe { compute::<Neon>(a, out) }
}

/// 16×16 transposes between planes and interleaved cells, for AVX-512.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Lanes, PlaneGeometry, LANES};
    use crate::transpose::avx512::transpose;
    use std::arch::x86_64::*;

    /// The mask of lanes `0..k` (`k <= 16`).
    #[inline(always)]
    fn first_lanes(k: usize) -> __mmask16 {
        (((1u32 << k) - 1) & 0xFFFF) as u16
    }

    /// The input rectangle of `planes` planes into their cells of the padded scratch (`pw`
    /// cells a row), 16 input positions per transpose; lanes past `planes` become zero.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    ///
    /// # Panics
    /// If the input's rectangle does not lie inside the padded area.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn interleave(
        g: &PlaneGeometry,
        planes: usize,
        x: &[f32],
        pw: usize,
        buf: &mut [Lanes],
    ) {
        let [h, w] = g.input;
        let len = h * w;
        let [pad_top, pad_left] = g.pad;
        assert!(planes <= LANES && x.len() >= planes * len);
        assert!(len == 0 || (h + pad_top - 1) * pw + w + pad_left <= buf.len());
        // Input position (r, col) at flat index f, advanced by counters (no divisions).
        let (mut r, mut col) = (0, 0);
        let mut f = 0;
        while f < len {
            let k = LANES.min(len - f);
            let mask = first_lanes(k);
            // SAFETY: plane c's positions f..f + k exist (masked loads); each cell written is
            // an input position's, inside `buf` (asserted above).
            unsafe {
                let mut rows = [_mm512_setzero_ps(); 16];
                for (c, row) in rows.iter_mut().enumerate().take(planes) {
                    *row = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(c * len + f));
                }
                transpose(&mut rows);
                for row in rows.iter().take(k) {
                    let cell = (r + pad_top) * pw + col + pad_left;
                    _mm512_storeu_ps(buf[cell].as_mut_ptr(), *row);
                    col += 1;
                    if col == w {
                        (r, col) = (r + 1, 0);
                    }
                }
            }
            f += k;
        }
    }

    /// `y[c · positions + p] = out[p][c]` for the first `planes` lanes, 16 positions per
    /// transpose.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn deinterleave(out: &[Lanes], planes: usize, y: &mut [f32]) {
        let positions = out.len();
        assert!(planes <= LANES && y.len() >= planes * positions);
        let mut p = 0;
        while p < positions {
            let k = LANES.min(positions - p);
            let mask = first_lanes(k);
            // SAFETY: cells p..p + k exist; the stores write positions p..p + k (masked) of
            // planes below `planes`, inside `y` (asserted above).
            unsafe {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, row) in r.iter_mut().enumerate().take(k) {
                    *row = _mm512_loadu_ps(out[p + i].as_ptr());
                }
                transpose(&mut r);
                for (c, row) in r.iter().enumerate().take(planes) {
                    _mm512_mask_storeu_ps(y.as_mut_ptr().add(c * positions + p), mask, *row);
                }
            }
            p += k;
        }
    }
}

#[cfg(test)]
mod tests {
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
        for (h, wd, k, s, d, p, channels) in cases.into_iter().chain(large) {
            let g = square_window(h, wd, k, s, d, p);
            let n = g.output[0] * g.output[1];
            let (x, w, bias) = test_values(&g, channels);
            let lw = LanesWeights::new(&w, channels, k * k);
            let clamp = Some((0.0, 1.5));
            // Group by group, planes in and out: the reference.
            let mut want = vec![f32::NAN; channels * n];
            for (group, first) in (0..channels).step_by(LANES).enumerate() {
                let planes = LANES.min(channels - first);
                depthwise_planes(
                    &g,
                    planes,
                    &x[first * h * wd..],
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
}
