//! BERT-family encoders (BERT, RoBERTa, DistilBERT) → IR graph.
//!
//! Inputs `input_ids`, `attention_mask` and (except DistilBERT) `token_type_ids`, all int64
//! `[batch, sequence]` (the last two can be left out, see `Inputs`); output `last_hidden_state` `[batch, sequence, hidden]`. Between the
//! embeddings and the output the hidden states are kept 2-D, `[batch · sequence, hidden]`, so
//! every Linear layer is one Gemm over the stored `[out, in]` weight (packed once at plan time,
//! no transposed copy) with its bias and activation fused into the GEMM epilogue.

use super::bind::Weights;
use super::graph::GraphBuilder;
use super::hf_config::{EncoderConfig, EncoderFamily};
use super::Inputs;
use crate::error::Result;
use crate::ir::{Attr, Graph, ValueId};
use crate::tensor::{DType, Tensor};

/// The weight names of one family.
struct Layout {
    /// Prefix of the task models' checkpoints (`BertForMaskedLM` stores `bert.embeddings…`).
    prefix: &'static str,
    layer: &'static str,
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attn_out: &'static str,
    attn_norm: &'static str,
    ffn_in: &'static str,
    ffn_out: &'static str,
    out_norm: &'static str,
    /// Stored tensors the encoder does not use (task heads, buffers).
    ignored: fn(&str) -> bool,
}

const BERT: Layout = Layout {
    prefix: "bert.",
    layer: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    out_norm: "output.LayerNorm",
    ignored: bert_unused,
};

const DISTILBERT: Layout = Layout {
    prefix: "distilbert.",
    layer: "transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    ffn_in: "ffn.lin1",
    ffn_out: "ffn.lin2",
    out_norm: "output_layer_norm",
    ignored: distilbert_unused,
};

fn bert_unused(key: &str) -> bool {
    const HEADS: [&str; 5] = ["pooler.", "cls.", "lm_head.", "classifier.", "qa_outputs."];
    HEADS.iter().any(|h| key.starts_with(h))
        || key == "embeddings.position_ids"
        || key == "embeddings.token_type_ids"
}

fn distilbert_unused(key: &str) -> bool {
    const HEADS: [&str; 6] = [
        "vocab_transform.",
        "vocab_layer_norm.",
        "vocab_projector.",
        "pre_classifier.",
        "classifier.",
        "qa_outputs.",
    ];
    HEADS.iter().any(|h| key.starts_with(h)) || key == "embeddings.position_ids"
}

/// The checkpoint prefix and unused-tensor filter of a family.
pub(crate) fn binding(family: EncoderFamily) -> (&'static str, fn(&str) -> bool) {
    let layout = layout(family);
    (layout.prefix, layout.ignored)
}

fn layout(family: EncoderFamily) -> Layout {
    match family {
        EncoderFamily::Bert => BERT,
        EncoderFamily::Roberta => Layout {
            prefix: "roberta.",
            ..BERT
        },
        EncoderFamily::DistilBert => DISTILBERT,
    }
}

/// Builds the encoder; weight problems are collected in `w` (see `Weights::finish`).
pub(crate) fn build(c: &EncoderConfig, w: &mut Weights, inputs: &Inputs) -> Result<Graph> {
    let l = layout(c.family);
    let h = c.hidden_size;
    let mut b = GraphBuilder::new();
    let ids = b.token_input("input_ids");
    let mask = inputs
        .attention_mask
        .then(|| b.token_input("attention_mask"));
    let types = match (c.type_vocab_size, inputs.token_type_ids) {
        (0, _) => None,
        (_, true) => Some(b.token_input("token_type_ids")),
        // Type 0 everywhere: row 0 of the table, broadcast (folded at plan time).
        (_, false) => Some(b.constant("token_type_ids.default", Tensor::scalar(0i64))),
    };

    let shapes = b.token_shapes(ids, h)?;
    let x = embeddings(&mut b, c, w, ids, types)?;
    let mut x = b.reshape("embeddings.flat", x, shapes.flat);
    let keep = b.key_mask(mask)?;
    for i in 0..c.layers {
        let p = format!("{}.{i}", l.layer);
        let mut heads = [0; 3];
        for (head, name) in heads.iter_mut().zip([l.query, l.key, l.value]) {
            let name = format!("{p}.{name}");
            let y = b.linear(w, &name, x, [h, h], true);
            *head = b.reshape(&format!("{name}.3d"), y, shapes.hidden);
        }
        let attn = b.attention(&format!("{p}.attention"), heads, keep, c.heads, false);
        let attn = b.reshape(&format!("{p}.attention.flat"), attn, shapes.flat);
        let y = b.linear(w, &format!("{p}.{}", l.attn_out), attn, [h, h], true);
        x = residual_norm(&mut b, w, &format!("{p}.{}", l.attn_norm), y, x, c);

        let ffn_in = format!("{p}.{}", l.ffn_in);
        let y = b.linear(w, &ffn_in, x, [c.intermediate_size, h], true);
        let y = b.activation(&format!("{ffn_in}.act"), y, c.activation);
        let ffn_out = format!("{p}.{}", l.ffn_out);
        let y = b.linear(w, &ffn_out, y, [h, c.intermediate_size], true);
        x = residual_norm(&mut b, w, &format!("{p}.{}", l.out_norm), y, x, c);
    }
    let out = b.reshape("last_hidden_state.3d", x, shapes.hidden);
    b.output(out, "last_hidden_state", h);
    Ok(b.finish())
}

/// Word + position (+ token type) embeddings, normalized: `[batch, sequence, hidden]`.
fn embeddings(
    b: &mut GraphBuilder,
    c: &EncoderConfig,
    w: &mut Weights,
    ids: ValueId,
    types: Option<ValueId>,
) -> Result<ValueId> {
    let h = c.hidden_size;
    let words = b.weight(w, "embeddings.word_embeddings.weight", &[c.vocab_size, h]);
    let positions = b.weight(
        w,
        "embeddings.position_embeddings.weight",
        &[c.max_positions, h],
    );
    let mut x = b.node("Gather", "embeddings.words", &[words, ids], vec![]);
    let pos = if c.family == EncoderFamily::Roberta {
        let pos_ids = roberta_positions(b, ids, c.pad_token_id)?;
        b.node(
            "Gather",
            "embeddings.positions",
            &[positions, pos_ids],
            vec![],
        )
    } else {
        b.leading_rows("embeddings.positions", positions, ids)?
    };
    x = b.node("Add", "embeddings.add_positions", &[x, pos], vec![]);
    if let Some(types) = types {
        let key = "embeddings.token_type_embeddings.weight";
        let table = b.weight(w, key, &[c.type_vocab_size, h]);
        let t = b.node("Gather", "embeddings.types", &[table, types], vec![]);
        x = b.node("Add", "embeddings.add_types", &[x, t], vec![]);
    }
    Ok(b.layer_norm(w, "embeddings.LayerNorm", x, h, c.layer_norm_eps))
}

/// RoBERTa's position ids: `pad + cumsum(ids != pad)` at tokens, `pad` at padding.
fn roberta_positions(b: &mut GraphBuilder, ids: ValueId, pad: i64) -> Result<ValueId> {
    let pad_id = b.constant("pad_token_id", Tensor::scalar(pad));
    let is_pad = b.node("Equal", "positions.is_pad", &[ids, pad_id], vec![]);
    let token = b.node("Not", "positions.is_token", &[is_pad], vec![]);
    let token = b.node(
        "Cast",
        "positions.token_count",
        &[token],
        vec![("to", Attr::Int(i64::from(DType::I64.onnx_code())))],
    );
    let axis = b.constant("positions.axis", Tensor::scalar(1i64));
    let count = b.node("CumSum", "positions.cumsum", &[token, axis], vec![]);
    let count = b.node("Mul", "positions.masked", &[count, token], vec![]);
    Ok(b.node("Add", "position_ids", &[count, pad_id], vec![]))
}

/// `LayerNorm(y + residual)` with the norm's weights at `name`.
fn residual_norm(
    b: &mut GraphBuilder,
    w: &mut Weights,
    name: &str,
    y: ValueId,
    residual: ValueId,
    c: &EncoderConfig,
) -> ValueId {
    let sum = b.node("Add", &format!("{name}.residual"), &[y, residual], vec![]);
    b.layer_norm(w, name, sum, c.hidden_size, c.layer_norm_eps)
}
