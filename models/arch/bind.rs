//! Binding stored tensors to an architecture's parameters by name, with one report of
//! everything that does not fit.

use crate::error::{Error, Result};
use crate::mapped::MappedFile;
use crate::tensor::{DType, Tensor};
use crate::weights::WeightStore;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tensors of a checkpoint, keyed as the bare model names them.
pub(crate) struct Weights {
    path: PathBuf,
    /// The mapped files the tensors view, handed on to the graph.
    pub mapped_files: Vec<MappedFile>,
    tensors: HashMap<String, Tensor>,
    /// Stored keys that belong to heads or buffers the builders do not use (a pooler, a
    /// language-model head, GPT-2's causal-mask buffers): left unread without complaint.
    ignored: fn(&str) -> bool,
    missing: Vec<String>,
    mismatched: Vec<String>,
}

impl Weights {
    /// Takes the store's tensors, stripping `prefix` (the task models' `bert.`, `roberta.`,
    /// `transformer.`, …) so both spellings bind, as Hugging Face's loader does.
    pub fn new(
        path: &Path,
        store: WeightStore,
        prefix: &str,
        ignored: fn(&str) -> bool,
    ) -> Result<Weights> {
        let mut tensors = HashMap::with_capacity(store.tensors.len());
        for (key, t) in store.tensors {
            let bare = key.strip_prefix(prefix).unwrap_or(&key);
            // TensorFlow-era BERT checkpoints name LayerNorm parameters gamma and beta;
            // transformers renames them on load, and so do we.
            let bare = match (bare.strip_suffix(".gamma"), bare.strip_suffix(".beta")) {
                (Some(norm), _) if norm.ends_with("LayerNorm") => format!("{norm}.weight"),
                (_, Some(norm)) if norm.ends_with("LayerNorm") => format!("{norm}.bias"),
                _ => bare.to_string(),
            };
            if tensors.contains_key(&bare) {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    reason: format!("'{key}' and another stored key both name tensor '{bare}'"),
                });
            }
            tensors.insert(bare, t);
        }
        Ok(Weights {
            path: path.to_path_buf(),
            mapped_files: store.mapped_files,
            tensors,
            ignored,
            missing: Vec::new(),
            mismatched: Vec::new(),
        })
    }

    /// The float tensor `key` of shape `shape`, as f32 (half-precision checkpoints are
    /// widened; f32 tensors are passed through uncopied). Problems are recorded for `finish`
    /// and a placeholder is returned so the build can go on and find them all.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Tensor {
        let placeholder = || Tensor::scalar(0f32);
        let Some(t) = self.tensors.remove(key) else {
            self.missing.push(format!("{key} {shape:?}"));
            return placeholder();
        };
        if t.shape() != shape {
            self.mismatched
                .push(format!("{key}: stored {:?}, expected {shape:?}", t.shape()));
            return placeholder();
        }
        match t.dtype() {
            DType::F32 => t,
            DType::F16 | DType::BF16 | DType::F64 => t.cast(DType::F32).unwrap_or_else(|e| {
                self.mismatched.push(format!("{key}: {e}"));
                placeholder()
            }),
            other => {
                self.mismatched
                    .push(format!("{key}: stored as {other}, expected a float type"));
                placeholder()
            }
        }
    }

    /// `key`, when it is stored (e.g. an untied output projection); not stored is no error.
    pub fn take_if_present(&mut self, key: &str, shape: &[usize]) -> Option<Tensor> {
        self.tensors
            .contains_key(key)
            .then(|| self.take(key, shape))
    }

    /// Fails with every missing, unexpected and mis-shaped tensor, if there is any.
    pub fn finish(self) -> Result<()> {
        let ignored = self.ignored;
        let mut unexpected: Vec<&String> = self.tensors.keys().filter(|k| !ignored(k)).collect();
        unexpected.sort();
        if self.missing.is_empty() && self.mismatched.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        let mut reason = String::from("the weights do not fit the architecture of config.json:");
        let mut section = |title: &str, items: &[String]| {
            if !items.is_empty() {
                reason.push_str(&format!("\n  {title} ({}):", items.len()));
                for item in items {
                    reason.push_str(&format!("\n    {item}"));
                }
            }
        };
        let unexpected: Vec<String> = unexpected.into_iter().cloned().collect();
        section("missing", &self.missing);
        section("unexpected", &unexpected);
        section("wrong shape or type", &self.mismatched);
        Err(Error::Format {
            path: self.path,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::WeightFormat;

    fn store(tensors: Vec<(&str, Vec<usize>)>) -> WeightStore {
        WeightStore {
            format: WeightFormat::Safetensors,
            tensors: tensors
                .into_iter()
                .map(|(k, s)| (k.to_string(), Tensor::zeros(DType::F32, s).unwrap()))
                .collect(),
            metadata: Vec::new(),
            mapped_files: Vec::new(),
        }
    }

    #[test]
    fn prefixed_bare_and_gamma_beta_keys_bind_alike() {
        let s = store(vec![
            ("bert.a.weight", vec![2, 3]),
            ("b.weight", vec![3]),
            ("bert.x.LayerNorm.gamma", vec![3]),
        ]);
        let mut w = Weights::new(Path::new("m"), s, "bert.", |_| false).unwrap();
        assert_eq!(w.take("a.weight", &[2, 3]).shape(), &[2, 3]);
        assert_eq!(w.take("b.weight", &[3]).shape(), &[3]);
        assert_eq!(w.take("x.LayerNorm.weight", &[3]).shape(), &[3]);
        w.finish().unwrap();
    }

    #[test]
    fn one_error_lists_every_problem() {
        let s = store(vec![
            ("a", vec![2]),
            ("extra", vec![1]),
            ("pooler.dense.weight", vec![1]),
        ]);
        let mut w = Weights::new(Path::new("dir/model.safetensors"), s, "bert.", |k| {
            k.starts_with("pooler.")
        })
        .unwrap();
        w.take("a", &[3]);
        w.take("b", &[4]);
        let e = w.finish().unwrap_err().to_string();
        assert!(e.starts_with("dir/model.safetensors:"), "{e}");
        assert!(e.contains("missing (1):\n    b [4]"), "{e}");
        assert!(e.contains("unexpected (1):\n    extra"), "{e}");
        assert!(e.contains("a: stored [2], expected [3]"), "{e}");
        assert!(!e.contains("pooler"), "{e}");
    }

    #[test]
    fn a_key_stored_twice_is_refused() {
        let s = store(vec![("bert.a", vec![1]), ("a", vec![1])]);
        assert!(Weights::new(Path::new("m"), s, "bert.", |_| false).is_err());
    }
}
