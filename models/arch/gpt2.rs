//! GPT-2 → IR graph.
//!
//! Inputs `input_ids` and (unless left out, see `Inputs`) `attention_mask` (int64
//! `[batch, sequence]`; positions count from 0,
//! as transformers does without a cache); outputs `last_hidden_state` `[batch, sequence,
//! hidden]` and `logits` `[batch, sequence, vocab]` through the tied token embedding (or,
//! with `tie_word_embeddings: false`, the stored `lm_head.weight`). GPT-2's Conv1D weights are stored `[in, out]`, so each projection
//! is a plain Gemm on the 2-D hidden states.

use super::bind::Weights;
use super::graph::GraphBuilder;
use super::hf_config::Gpt2Config;
use super::Inputs;
use crate::error::Result;
use crate::ir::{Attr, Graph};

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
    let (h, eps) = (c.hidden_size, c.layer_norm_eps);
    let mut b = GraphBuilder::new();
    let ids = b.token_input("input_ids");
    let mask = inputs
        .attention_mask
        .then(|| b.token_input("attention_mask"));

    let shapes = b.token_shapes(ids, h)?;
    let wte = b.weight(w, "wte.weight", &[c.vocab_size, h]);
    let wpe = b.weight(w, "wpe.weight", &[c.max_positions, h]);
    let tokens = b.node("Gather", "embeddings.tokens", &[wte, ids], vec![]);
    let positions = b.leading_rows("embeddings.positions", wpe, ids)?;
    let x = b.node("Add", "embeddings", &[tokens, positions], vec![]);
    let mut x = b.reshape("embeddings.flat", x, shapes.flat);
    let keep = b.key_mask(mask)?;
    let split = b.ints("attn.split", &[h as i64; 3])?;
    for i in 0..c.layers {
        let p = format!("h.{i}");
        let a = b.layer_norm(w, &format!("{p}.ln_1"), x, h, eps);
        let qkv = b.linear(w, &format!("{p}.attn.c_attn"), a, [h, 3 * h], false);
        let axis = vec![("axis", Attr::Int(1))];
        let parts = b.node_n("Split", &format!("{p}.attn.split"), &[qkv, split], 3, axis);
        let mut heads = [0; 3];
        for ((head, part), name) in heads.iter_mut().zip(parts).zip(["q", "k", "v"]) {
            *head = b.reshape(&format!("{p}.attn.{name}"), part, shapes.hidden);
        }
        let attn = b.attention(&format!("{p}.attn"), heads, keep, c.heads, true);
        let attn = b.reshape(&format!("{p}.attn.flat"), attn, shapes.flat);
        let y = b.linear(w, &format!("{p}.attn.c_proj"), attn, [h, h], false);
        x = b.node("Add", &format!("{p}.attn.residual"), &[x, y], vec![]);

        let m = b.layer_norm(w, &format!("{p}.ln_2"), x, h, eps);
        let m = b.linear(w, &format!("{p}.mlp.c_fc"), m, [h, c.inner_size], false);
        let m = b.activation(&format!("{p}.mlp.act"), m, c.activation);
        let m = b.linear(w, &format!("{p}.mlp.c_proj"), m, [c.inner_size, h], false);
        x = b.node("Add", &format!("{p}.mlp.residual"), &[x, m], vec![]);
    }
    let x = b.layer_norm(w, "ln_f", x, h, eps);
    let hidden = b.reshape("last_hidden_state.3d", x, shapes.hidden);
    b.output(hidden, "last_hidden_state", h);

    // Tied: the token embedding is the output projection (a stored copy, as PyTorch
    // checkpoints keep one, is the same tensor and goes unused).
    let head = if c.tie_word_embeddings {
        w.take_if_present("lm_head.weight", &[c.vocab_size, h]);
        wte
    } else {
        b.weight(w, "lm_head.weight", &[c.vocab_size, h])
    };
    let transposed = vec![("transB", Attr::Int(1))];
    let logits = b.node("Gemm", "lm_head", &[x, head], transposed);
    let bsv = b.widen(shapes.batch_seq, "shape.logits", c.vocab_size)?;
    let logits = b.reshape("logits.3d", logits, bsv);
    b.output(logits, "logits", c.vocab_size);
    Ok(b.finish())
}
