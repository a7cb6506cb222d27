//! One timestep of the RNN, GRU and LSTM cells over a whole batch: the recurrent GEMM
//! (`H · Rᵀ`, with the projected inputs added as its residual) and the gate math.

use super::{Act, DirWeights};
use crate::error::Result;
use infer_kernels::gemm::{gemm, Epilogue, MatMut, MatRef};

/// The cell of a recurrent layer, with its cell-specific attributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Cell {
    Rnn,
    /// Gates z, r, h.
    Gru {
        linear_before_reset: bool,
    },
    /// Gates i, o, f, c.
    Lstm {
        input_forget: bool,
    },
}

impl Cell {
    /// Number of gates, i.e. row blocks of W and R.
    pub(super) fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }

    pub(super) fn has_cell_state(self) -> bool {
        matches!(self, Cell::Lstm { .. })
    }

    /// The ONNX default activations of one direction.
    pub(super) fn default_acts(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru { .. } => &["Sigmoid", "Tanh"],
            Cell::Lstm { .. } => &["Sigmoid", "Tanh", "Tanh"],
        }
    }

    /// Row counts of the blocks of R multiplied separately. GRU without linear-before-reset
    /// multiplies its hidden gate's block by `r ⊙ H`, known only after the z/r gates.
    pub(super) fn r_blocks(self, hidden: usize) -> Vec<usize> {
        match self {
            Cell::Gru {
                linear_before_reset: false,
            } => vec![2 * hidden, hidden],
            _ => vec![self.gates() * hidden],
        }
    }

    /// How many leading gate columns may have their recurrence bias folded into the input
    /// projection: all, except GRU's hidden gate under linear-before-reset, where `r` scales it.
    pub(super) fn folded_recurrence_bias(self, hidden: usize) -> usize {
        match self {
            Cell::Gru {
                linear_before_reset: true,
            } => 2 * hidden,
            _ => self.gates() * hidden,
        }
    }
}

/// The state carried across timesteps and the scratch of one step, for one direction.
pub(super) struct StepBuffers {
    /// Hidden state, `[batch, H]`.
    pub(super) h: Vec<f32>,
    /// Cell state (LSTM), `[batch, H]`.
    pub(super) c: Vec<f32>,
    /// This step's projected inputs, `[batch, G·H]` (filled by the caller).
    pub(super) gates: Vec<f32>,
    /// `H · Rᵀ + gates`, `[batch, G·H]`.
    rec: Vec<f32>,
    /// GRU: `r ⊙ H` and then the hidden gate, `[batch, H]` each.
    reset_h: Vec<f32>,
    cand: Vec<f32>,
    batch: usize,
}

impl StepBuffers {
    pub(super) fn new(cell: Cell, batch: usize, hidden: usize) -> Self {
        let gh = cell.gates() * hidden;
        let gru = matches!(cell, Cell::Gru { .. });
        let lstm = cell.has_cell_state();
        StepBuffers {
            h: vec![0.0; batch * hidden],
            c: vec![0.0; if lstm { batch * hidden } else { 0 }],
            gates: vec![0.0; batch * gh],
            rec: vec![0.0; batch * gh],
            reset_h: vec![0.0; if gru { batch * hidden } else { 0 }],
            cand: vec![0.0; if gru { batch * hidden } else { 0 }],
            batch,
        }
    }
}

/// What a step reads besides the buffers.
pub(super) struct StepCtx<'a> {
    pub(super) cell: Cell,
    pub(super) hidden: usize,
    /// The direction's activations (f, g, h in ONNX's naming).
    pub(super) acts: &'a [Act],
    pub(super) clip: Option<f32>,
    pub(super) weights: &'a DirWeights,
    /// `Rb` (`[G·H]`), for the biases not folded into the projection.
    pub(super) recurrence_bias: Option<&'a [f32]>,
    /// LSTM peepholes `[3·H]` (i, o, f).
    pub(super) peepholes: Option<&'a [f32]>,
}

impl StepCtx<'_> {
    /// Clips a gate's pre-activation, then applies activation `k`.
    fn activate(&self, k: usize, xs: &mut [f32]) {
        if let Some(c) = self.clip {
            xs.iter_mut().for_each(|x| *x = x.clamp(-c, c));
        }
        self.acts[k].apply(xs);
    }
}

/// Advances the state of every sequence whose entry in `times` is `Some` by one timestep.
pub(super) fn step(ctx: &StepCtx, bufs: &mut StepBuffers, times: &[Option<usize>]) -> Result<()> {
    let (batch, h) = (bufs.batch, ctx.hidden);
    let gh = ctx.cell.gates() * h;
    // GRU's linear-before-reset scales H·Rhᵀ alone by r, so its inputs are added per gate
    // below; every other cell takes them as the residual of the product.
    let lbr = ctx.cell
        == Cell::Gru {
            linear_before_reset: true,
        };
    let first_cols = ctx.cell.r_blocks(h)[0];
    let epi = Epilogue {
        residual: match lbr {
            true => None,
            false => Some(MatRef::new(&bufs.gates, batch, first_cols, gh, 1)?),
        },
        ..Default::default()
    };
    gemm(
        MatRef::row_major(&bufs.h, batch, h)?,
        &ctx.weights.r[0],
        MatMut::new(&mut bufs.rec, batch, first_cols, gh)?,
        &epi,
    )?;
    let active = times
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_some())
        .map(|(b, _)| b);
    match ctx.cell {
        Cell::Rnn => {
            for b in active {
                let rec = &mut bufs.rec[b * h..(b + 1) * h];
                ctx.activate(0, rec);
                bufs.h[b * h..(b + 1) * h].copy_from_slice(rec);
            }
        }
        Cell::Gru {
            linear_before_reset: false,
        } => {
            // z and r first, then the hidden gate h̃ = g(Xh + (r ⊙ H)·Rhᵀ + Rbh).
            for b in 0..batch {
                let zr = &mut bufs.rec[b * gh..b * gh + 2 * h];
                ctx.activate(0, zr);
                let hp = &bufs.h[b * h..(b + 1) * h];
                let rh = &mut bufs.reset_h[b * h..(b + 1) * h];
                for ((o, &r), &x) in rh.iter_mut().zip(&zr[h..]).zip(hp) {
                    *o = r * x;
                }
            }
            let epi = Epilogue {
                residual: Some(MatRef::new(&bufs.gates[2 * h..], batch, h, gh, 1)?),
                ..Default::default()
            };
            gemm(
                MatRef::row_major(&bufs.reset_h, batch, h)?,
                &ctx.weights.r[1],
                MatMut::row_major(&mut bufs.cand, batch, h)?,
                &epi,
            )?;
            for b in active {
                let cand = &mut bufs.cand[b * h..(b + 1) * h];
                ctx.activate(1, cand);
                gru_update(&mut bufs.h[b * h..(b + 1) * h], &bufs.rec[b * gh..], cand);
            }
        }
        Cell::Gru {
            linear_before_reset: true,
        } => {
            // h̃ = g(Xh + r ⊙ (H·Rhᵀ + Rbh)).
            let rb = ctx.recurrence_bias.map(|rb| &rb[2 * h..3 * h]);
            for b in active {
                let (zr, hh) = bufs.rec[b * gh..(b + 1) * gh].split_at_mut(2 * h);
                let (x_zr, x_h) = bufs.gates[b * gh..(b + 1) * gh].split_at(2 * h);
                zr.iter_mut().zip(x_zr).for_each(|(a, &x)| *a += x);
                ctx.activate(0, zr);
                let cand = &mut bufs.cand[b * h..(b + 1) * h];
                for j in 0..h {
                    cand[j] = x_h[j] + zr[h + j] * (hh[j] + rb.map_or(0.0, |rb| rb[j]));
                }
                ctx.activate(1, cand);
                gru_update(&mut bufs.h[b * h..(b + 1) * h], zr, cand);
            }
        }
        Cell::Lstm { input_forget } => {
            for b in active {
                lstm_update(
                    ctx,
                    input_forget,
                    &mut bufs.rec[b * gh..(b + 1) * gh],
                    &mut bufs.h[b * h..(b + 1) * h],
                    &mut bufs.c[b * h..(b + 1) * h],
                );
            }
        }
    }
    Ok(())
}

/// `H = (1 − z) ⊙ h̃ + z ⊙ H`.
fn gru_update(hs: &mut [f32], z: &[f32], cand: &[f32]) {
    for ((x, &z), &c) in hs.iter_mut().zip(z).zip(cand) {
        *x = (1.0 - z) * c + z * *x;
    }
}

/// The LSTM gates of one sequence (`rec` = i, o, f, c pre-activations), updating C and H.
/// With `input_forget`, the forget gate is coupled to the input gate: `f = 1 − i`.
fn lstm_update(ctx: &StepCtx, input_forget: bool, rec: &mut [f32], hs: &mut [f32], cs: &mut [f32]) {
    let h = ctx.hidden;
    let (i, rest) = rec.split_at_mut(h);
    let (o, rest) = rest.split_at_mut(h);
    let (f, c) = rest.split_at_mut(h);
    if let Some(p) = ctx.peepholes {
        for j in 0..h {
            i[j] += p[j] * cs[j];
            f[j] += p[2 * h + j] * cs[j];
        }
    }
    ctx.activate(0, i);
    if input_forget {
        f.iter_mut().zip(i.iter()).for_each(|(f, &i)| *f = 1.0 - i);
    } else {
        ctx.activate(0, f);
    }
    ctx.activate(1, c);
    for j in 0..h {
        cs[j] = f[j] * cs[j] + i[j] * c[j];
    }
    if let Some(p) = ctx.peepholes {
        for j in 0..h {
            o[j] += p[h + j] * cs[j];
        }
    }
    ctx.activate(0, o);
    hs.copy_from_slice(cs);
    ctx.acts[2].apply(hs);
    for (x, &o) in hs.iter_mut().zip(o.iter()) {
        *x *= o;
    }
}
