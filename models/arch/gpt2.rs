//! GPT-2 → IR graph.
//!
//! Inputs `input_ids` and (unless left out, see `Inputs`) `attention_mask` (int64
//! `[batch, sequence]`; positions count from 0,
//! as transformers does without a cache); outputs `last_hidden_state` `[batch, sequence,
//! hidden]` and `logits` `[batch, sequence, vocab]` through the tied token embedding (or a
//! stored `lm_head.weight`). GPT-2's Conv1D weights are stored `[in, out]`, so each projection
//! is a plain Gemm on the 2-D hidden states.

use super::bind::Weights;
use super::graph::GraphBuilder;
use super::hf_config::Gpt2Config;
use super::Inputs;
use crate::error::Result;
use crate::ir::{Attr, Graph, ValueId};

/// Prefix of `GPT2LMHeadModel` checkpoints.
pub(crate) const PREFIX: &str = "transformer.";

/// Stored tensors the model does not use: the causal-mask buffers older checkpoints carry,
/// and task heads.
pub(crate) fn unused(key: &str) -> bool {
    let mask_buffer = key.starts_with("h.")
        && (key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias"));
    mask_buffer || key.starts_with("score.") || key.starts_with("multiple_choice_head.")
}

pub(crate) fn build(c: &Gpt2Config, w: &mut Weights, inputs: &Inputs) -> Result<Graph> {
    let h = c.hidden_size;
    let mut b = GraphBuilder::new();
    let ids = b.token_input("input_ids");
    let mask = inputs
        .attention_mask
        .then(|| b.token_input("attention_mask"));

    let wte = w.take("wte.weight", &[c.vocab_size, h]);
    let wte = b.constant("wte.weight", wte);
    let wpe = w.take("wpe.weight", &[c.max_positions, h]);
    let wpe = b.constant("wpe.weight", wpe);
    let tokens = b.node("Gather", "embeddings.tokens", &[wte, ids], vec![]);
    let seq = b.node(
        "Shape",
        "shape.sequence",
        &[ids],
        vec![("start", Attr::Int(1)), ("end", Attr::Int(2))],
    );
    let zero = b.ints("zero", &[0])?;
    let positions = b.node("Slice", "embeddings.positions", &[wpe, zero, seq], vec![]);
    let x = b.node("Add", "embeddings", &[tokens, positions], vec![]);

    let bs = b.node("Shape", "shape.ids", &[ids], vec![]);
    let width = b.ints("hidden_width", &[h as i64])?;
    let bsh = b.node(
        "Concat",
        "shape.hidden",
        &[bs, width],
        vec![("axis", Attr::Int(0))],
    );
    let flat = b.ints("shape.flat", &[-1, h as i64])?;
    let mut x = b.node("Reshape", "embeddings.flat", &[x, flat], vec![]);
    let keep = b.key_mask(mask)?;
    let split = b.ints("attn.split", &[h as i64; 3])?;

    for i in 0..c.layers {
        let p = format!("h.{i}");
        let conv1d = |b: &mut GraphBuilder, w: &mut Weights, name: &str, x, (n_in, n_out)| {
            let name = format!("{p}.{name}");
            let wt = w.take(&format!("{name}.weight"), &[n_in, n_out]);
            let bias = w.take(&format!("{name}.bias"), &[n_out]);
            let params = (
                b.constant(&format!("{name}.weight"), wt),
                b.constant(&format!("{name}.bias"), bias),
            );
            b.linear(&name, x, params, false)
        };

        let a = norm(&mut b, w, &format!("{p}.ln_1"), x, c);
        let qkv = conv1d(&mut b, w, "attn.c_attn", a, (h, 3 * h));
        let parts = b.node_n(
            "Split",
            &format!("{p}.attn.split"),
            &[qkv, split],
            3,
            vec![("axis", Attr::Int(1))],
        );
        let mut heads = [0; 3];
        for (head, (part, name)) in heads.iter_mut().zip(parts.into_iter().zip(["q", "k", "v"])) {
            *head = b.node("Reshape", &format!("{p}.attn.{name}"), &[part, bsh], vec![]);
        }
        let attn = b.attention(&format!("{p}.attn"), heads, keep, c.heads, true);
        let attn = b.node("Reshape", &format!("{p}.attn.flat"), &[attn, flat], vec![]);
        let y = conv1d(&mut b, w, "attn.c_proj", attn, (h, h));
        x = b.node("Add", &format!("{p}.attn.residual"), &[x, y], vec![]);

        let m = norm(&mut b, w, &format!("{p}.ln_2"), x, c);
        let m = conv1d(&mut b, w, "mlp.c_fc", m, (h, c.inner_size));
        let m = b.activation(&format!("{p}.mlp.act"), m, c.activation);
        let m = conv1d(&mut b, w, "mlp.c_proj", m, (c.inner_size, h));
        x = b.node("Add", &format!("{p}.mlp.residual"), &[x, m], vec![]);
    }
    let x = norm(&mut b, w, "ln_f", x, c);
    let hidden = b.node("Reshape", "last_hidden_state.3d", &[x, bsh], vec![]);
    b.output(hidden, "last_hidden_state");

    // The output projection is the token embedding unless the checkpoint stores its own.
    let head = match w.take_if_present("lm_head.weight", &[c.vocab_size, h]) {
        Some(t) => b.constant("lm_head.weight", t),
        None => wte,
    };
    let logits = b.node(
        "Gemm",
        "lm_head",
        &[x, head],
        vec![("transB", Attr::Int(1))],
    );
    let vocab = b.ints("vocab_width", &[c.vocab_size as i64])?;
    let bsv = b.node(
        "Concat",
        "shape.logits",
        &[bs, vocab],
        vec![("axis", Attr::Int(0))],
    );
    let logits = b.node("Reshape", "logits.3d", &[logits, bsv], vec![]);
    b.output(logits, "logits");
    Ok(b.finish())
}

fn norm(b: &mut GraphBuilder, w: &mut Weights, name: &str, x: ValueId, c: &Gpt2Config) -> ValueId {
    let h = c.hidden_size;
    let gamma = w.take(&format!("{name}.weight"), &[h]);
    let beta = w.take(&format!("{name}.bias"), &[h]);
    let params = (
        b.constant(&format!("{name}.weight"), gamma),
        b.constant(&format!("{name}.bias"), beta),
    );
    b.layer_norm(name, x, params, c.layer_norm_eps)
}
