//! The parts of a Hugging Face `config.json` the builders read, checked once.
//!
//! Each family names its fields differently (`hidden_size` / `dim` / `n_embd`); they are
//! read into one `Encoder` or `Gpt2` description so the builders see plain numbers.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// The activation between the two feed-forward layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact, erf-based GELU.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    Relu,
}

/// Which BERT-family layout the weights follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderFamily {
    Bert,
    /// BERT's layout; positions count from `pad_token_id + 1` and skip padding.
    Roberta,
    /// Its own weight names, no token types.
    DistilBert,
}

/// A BERT-family encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub family: EncoderFamily,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    /// 0 when the model has no token-type embedding (DistilBERT).
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub activation: Activation,
    pub pad_token_id: i64,
}

/// A GPT-2 decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub inner_size: usize,
    pub max_positions: usize,
    pub layer_norm_eps: f32,
    pub activation: Activation,
    /// The logits reuse the token embedding (else the checkpoint stores `lm_head.weight`).
    pub tie_word_embeddings: bool,
}

/// An architecture the builders know.
#[derive(Clone, Debug, PartialEq)]
pub enum Architecture {
    Encoder(EncoderConfig),
    Gpt2(Gpt2Config),
}

/// A parsed `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    pub model_type: String,
    pub arch: Architecture,
}

impl HfConfig {
    /// Reads and checks `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<HfConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        HfConfig::from_json(&text).map_err(|reason| Error::Format {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<HfConfig, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let obj = json
            .as_object()
            .ok_or("the configuration is not a JSON object")?;
        let c = Fields(obj);
        let model_type = c.str("model_type")?.to_string();
        let arch = match model_type.as_str() {
            "bert" | "roberta" => {
                let family = if model_type == "bert" {
                    EncoderFamily::Bert
                } else {
                    EncoderFamily::Roberta
                };
                let position_type = c.str_or("position_embedding_type", "absolute")?;
                if position_type != "absolute" {
                    return Err(format!(
                        "position_embedding_type '{position_type}' is not supported (only \
                         'absolute')"
                    ));
                }
                Architecture::Encoder(EncoderConfig {
                    family,
                    vocab_size: c.usize("vocab_size")?,
                    hidden_size: c.usize("hidden_size")?,
                    layers: c.usize("num_hidden_layers")?,
                    heads: c.usize("num_attention_heads")?,
                    intermediate_size: c.usize("intermediate_size")?,
                    max_positions: c.usize("max_position_embeddings")?,
                    type_vocab_size: c.usize("type_vocab_size")?,
                    layer_norm_eps: c.f32_or("layer_norm_eps", 1e-12)?,
                    activation: activation(c.str_or("hidden_act", "gelu")?)?,
                    pad_token_id: c.i64_or(
                        "pad_token_id",
                        if family == EncoderFamily::Roberta {
                            1
                        } else {
                            0
                        },
                    )?,
                })
            }
            "distilbert" => Architecture::Encoder(EncoderConfig {
                family: EncoderFamily::DistilBert,
                vocab_size: c.usize("vocab_size")?,
                hidden_size: c.usize("dim")?,
                layers: c.usize("n_layers")?,
                heads: c.usize("n_heads")?,
                intermediate_size: c.usize("hidden_dim")?,
                max_positions: c.usize("max_position_embeddings")?,
                type_vocab_size: 0,
                // DistilBERT's LayerNorms are built with this epsilon, not from the config.
                layer_norm_eps: 1e-12,
                activation: activation(c.str_or("activation", "gelu")?)?,
                pad_token_id: c.i64_or("pad_token_id", 0)?,
            }),
            "gpt2" => {
                if c.bool_or("scale_attn_by_inverse_layer_idx", false)? {
                    return Err("scale_attn_by_inverse_layer_idx is not supported".into());
                }
                if !c.bool_or("scale_attn_weights", true)? {
                    return Err("scale_attn_weights = false is not supported".into());
                }
                let hidden_size = c.usize("n_embd")?;
                Architecture::Gpt2(Gpt2Config {
                    vocab_size: c.usize("vocab_size")?,
                    hidden_size,
                    layers: c.usize("n_layer")?,
                    heads: c.usize("n_head")?,
                    // `n_inner: null` means four times the width.
                    inner_size: c.opt_usize("n_inner")?.unwrap_or(4 * hidden_size),
                    max_positions: c.usize("n_positions")?,
                    layer_norm_eps: c.f32_or("layer_norm_epsilon", 1e-5)?,
                    activation: activation(c.str_or("activation_function", "gelu_new")?)?,
                    tie_word_embeddings: c.bool_or("tie_word_embeddings", true)?,
                })
            }
            other => {
                return Err(format!(
                    "model_type '{other}' has no architecture builder (supported: bert, \
                     roberta, distilbert, gpt2)"
                ))
            }
        };
        let (hidden, heads) = match &arch {
            Architecture::Encoder(e) => (e.hidden_size, e.heads),
            Architecture::Gpt2(g) => (g.hidden_size, g.heads),
        };
        if heads == 0 || hidden % heads != 0 {
            return Err(format!(
                "hidden size {hidden} is not a multiple of the {heads} attention heads"
            ));
        }
        Ok(HfConfig { model_type, arch })
    }

    /// Transformer blocks.
    pub fn layers(&self) -> usize {
        match &self.arch {
            Architecture::Encoder(e) => e.layers,
            Architecture::Gpt2(g) => g.layers,
        }
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        match &self.arch {
            Architecture::Encoder(e) => e.hidden_size,
            Architecture::Gpt2(g) => g.hidden_size,
        }
    }

    /// Attention heads per layer.
    pub fn heads(&self) -> usize {
        match &self.arch {
            Architecture::Encoder(e) => e.heads,
            Architecture::Gpt2(g) => g.heads,
        }
    }
}

fn activation(name: &str) -> Result<Activation, String> {
    Ok(match name {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => return Err(format!("activation '{other}' is not supported")),
    })
}

/// Typed field access with errors naming the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<&str, String> {
        match self.get(key) {
            Some(v) => v.as_str().ok_or(format!("'{key}' is not a string")),
            None => Err(format!("no '{key}' field")),
        }
    }

    fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str, String> {
        self.get(key).map_or(Ok(default), |_| self.str(key))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, String> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n <= 1 << 32)
                    .ok_or(format!("'{key}' is not a size: {v}"))
            })
            .transpose()
    }

    fn usize(&self, key: &str) -> Result<usize, String> {
        self.opt_usize(key)?.ok_or(format!("no '{key}' field"))
    }

    fn i64_or(&self, key: &str, default: i64) -> Result<i64, String> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_i64().ok_or(format!("'{key}' is not an integer: {v}"))
        })
    }

    fn f32_or(&self, key: &str, default: f32) -> Result<f32, String> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or(format!("'{key}' is not a number: {v}"))
        })
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_bool().ok_or(format!("'{key}' is not a boolean: {v}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minilm_config_reads_as_a_bert_encoder() {
        let c = HfConfig::from_json(
            r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
                "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
                "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
                "layer_norm_eps": 1e-12, "pad_token_id": 0}"#,
        )
        .unwrap();
        assert_eq!((c.layers(), c.hidden_size(), c.heads()), (6, 384, 12));
        let Architecture::Encoder(e) = c.arch else {
            panic!("not an encoder")
        };
        assert_eq!(e.family, EncoderFamily::Bert);
        assert_eq!(e.activation, Activation::Gelu);
    }

    #[test]
    fn gpt2_defaults_inner_size_to_four_times_the_width() {
        let c = HfConfig::from_json(
            r#"{"model_type": "gpt2", "vocab_size": 50, "n_embd": 32, "n_layer": 2,
                "n_head": 4, "n_positions": 64, "n_inner": null}"#,
        )
        .unwrap();
        let Architecture::Gpt2(g) = c.arch else {
            panic!("not gpt2")
        };
        assert_eq!(g.inner_size, 128);
        assert_eq!(g.activation, Activation::GeluTanh);
    }

    #[test]
    fn unknown_model_types_and_bad_fields_are_named() {
        let e = HfConfig::from_json(r#"{"model_type": "llama"}"#).unwrap_err();
        assert!(e.contains("llama"), "{e}");
        let e = HfConfig::from_json(r#"{"model_type": "gpt2", "n_embd": "x"}"#).unwrap_err();
        assert!(e.contains("vocab_size") || e.contains("n_embd"), "{e}");
        let e = HfConfig::from_json(
            r#"{"model_type": "gpt2", "vocab_size": 5, "n_embd": 30, "n_layer": 1,
                "n_head": 4, "n_positions": 8}"#,
        )
        .unwrap_err();
        assert!(e.contains("multiple"), "{e}");
    }
}
