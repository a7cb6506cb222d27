//! Hugging Face architectures: a model folder (`config.json` beside `model.safetensors`,
//! `pytorch_model.bin` or shards) → an IR `Graph` of ONNX ops, so weights-only models get
//! the same optimizer passes, kernels and `Session` API as ONNX files.
//!
//! The builder is chosen by `config.json`'s `model_type`: `bert`, `roberta` and `distilbert`
//! encoders (`bert`) and `gpt2` (`gpt2`). Stored f32 tensors become initializers as loaded
//! (views of the memory-mapped file, not copies; half-precision checkpoints are widened to
//! f32, which copies them); every parameter is bound by name and shape-checked,
//! and one error lists all that is missing, unexpected or mis-shaped. Batch and sequence are
//! symbolic dimensions.

mod bert;
mod bind;
mod gpt2;
mod graph;
mod hf_config;
pub mod keras;
mod keras_attention;
mod keras_layers;
mod keras_recurrent;
mod keras_spatial;

pub use hf_config::{Activation, Architecture, EncoderConfig, EncoderFamily, Gpt2Config, HfConfig};

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::weights::{self, WeightStore};
use bind::Weights;
use std::path::Path;

/// Which optional inputs a built graph declares. One left out takes transformers' default:
/// without `attention_mask` every token is attended (GPT-2 stays causal), without
/// `token_type_ids` every token has type 0. `input_ids` is always an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    pub attention_mask: bool,
    /// Ignored by models without token types (DistilBERT, GPT-2).
    pub token_type_ids: bool,
}

impl Default for Inputs {
    /// Every input the architecture has.
    fn default() -> Self {
        Inputs {
            attention_mask: true,
            token_type_ids: true,
        }
    }
}

impl Inputs {
    /// The inputs among `names` (e.g. the names a caller has tensors for).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Inputs {
        let mut inputs = Inputs {
            attention_mask: false,
            token_type_ids: false,
        };
        for name in names {
            match name {
                "attention_mask" => inputs.attention_mask = true,
                "token_type_ids" => inputs.token_type_ids = true,
                _ => {}
            }
        }
        inputs
    }
}

/// Whether `dir` looks like a Hugging Face model folder (it has a `config.json`).
pub fn is_hf_folder(dir: &Path) -> bool {
    dir.is_dir() && dir.join("config.json").is_file()
}

/// Reads a folder's `config.json`.
pub fn read_config(dir: &Path) -> Result<HfConfig> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(Error::Format {
            path: dir.to_path_buf(),
            reason: "no config.json in this folder: the architecture of its weights is unknown"
                .into(),
        });
    }
    HfConfig::from_file(&path)
}

/// Loads a Hugging Face model folder as a graph with every input.
pub fn load_folder(dir: &Path) -> Result<Graph> {
    load_folder_with(dir, &Inputs::default())
}

/// Loads a Hugging Face model folder as a graph with the chosen optional inputs.
pub fn load_folder_with(dir: &Path, inputs: &Inputs) -> Result<Graph> {
    let config = read_config(dir)?;
    let store = weights::load_weights(dir)?;
    // Errors name the weights file when there is one, else the folder (shards).
    let files = weights::find_weights_files(dir)?;
    let path = match files.as_slice() {
        [one] => one.as_path(),
        _ => dir,
    };
    build(&config, store, path, inputs)
}

/// Builds the graph of `config` over the tensors of `store` (read from `path`, named in
/// errors), declaring the chosen optional `inputs`.
pub fn build(config: &HfConfig, store: WeightStore, path: &Path, inputs: &Inputs) -> Result<Graph> {
    let (prefix, unused): (&str, fn(&str) -> bool) = match &config.arch {
        Architecture::Encoder(c) => bert::binding(c.family),
        Architecture::Gpt2(_) => (gpt2::PREFIX, gpt2::unused),
    };
    let mut w = Weights::new(path, store, prefix, unused)?;
    let mut graph = match &config.arch {
        Architecture::Encoder(c) => bert::build(c, &mut w, inputs)?,
        Architecture::Gpt2(c) => gpt2::build(c, &mut w, inputs)?,
    };
    graph.mapped_files = std::mem::take(&mut w.mapped_files);
    w.finish()?;
    Ok(graph)
}
