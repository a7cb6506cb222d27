//! Hugging Face model folders: `config.json` beside either one weights file
//! (`model.safetensors`, `pytorch_model.bin`) or shards listed by an index
//! (`model.safetensors.index.json` → `{"weight_map": {tensor: shard file}}`).

use super::{load_file, WeightStore};
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Single-file weights names, by preference (safetensors first: it maps without parsing).
const SINGLE: &[&str] = &["model.safetensors", "pytorch_model.bin"];

fn folder_err(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Format {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// The weights files of a folder in load order: its single weights file, or the shards its
/// index names, sorted (shard names number them).
pub fn find_weights_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(match find_index(dir)? {
        Some((_, shards)) => shards,
        None => vec![single_file(dir)?],
    })
}

fn single_file(dir: &Path) -> Result<PathBuf> {
    SINGLE
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            folder_err(
                dir,
                format!(
                    "no weights file in this folder (looked for {} and their .index.json)",
                    SINGLE.join(", ")
                ),
            )
        })
}

/// A single weights file wins over an index (folders sometimes keep both). Returns the
/// index's tensor keys and its shard files.
fn find_index(dir: &Path) -> Result<Option<(Vec<String>, Vec<PathBuf>)>> {
    if single_file(dir).is_ok() {
        return Ok(None);
    }
    let Some(index) = SINGLE
        .iter()
        .map(|n| dir.join(format!("{n}.index.json")))
        .find(|p| p.is_file())
    else {
        return Ok(None);
    };
    let err = |reason: String| folder_err(&index, reason);
    let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
        path: index.clone(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| err("no \"weight_map\" object".into()))?;
    let mut names = Vec::new();
    for (key, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| err(format!("shard of '{key}' is not a file name")))?;
        // Shards are files of this folder; an index must not point elsewhere.
        if shard.is_empty() || shard.contains(['/', '\\']) || shard == ".." {
            return Err(err(format!(
                "shard name '{shard}' is not a file of this folder"
            )));
        }
        names.push(shard);
    }
    names.sort_unstable();
    names.dedup();
    let keys = map.keys().cloned().collect();
    Ok(Some((keys, names.iter().map(|n| dir.join(n)).collect())))
}

/// Loads every tensor of a folder's weights, shard after shard.
pub(super) fn load_folder(dir: &Path) -> Result<WeightStore> {
    let Some((keys, shards)) = find_index(dir)? else {
        return load_file(&single_file(dir)?);
    };
    let mut stores = shards.iter().map(|s| load_file(s));
    let mut all = match stores.next() {
        Some(first) => first?,
        None => return Err(folder_err(dir, "the index lists no shards")),
    };
    for store in stores {
        let store = store?;
        if store.format != all.format {
            return Err(folder_err(dir, "the shards are not all of one format"));
        }
        all.tensors.extend(store.tensors);
        all.metadata.extend(store.metadata);
        all.mapped_files.extend(store.mapped_files);
    }
    let mut seen = HashSet::with_capacity(all.tensors.len());
    if let Some((dup, _)) = all.tensors.iter().find(|(k, _)| !seen.insert(k.as_str())) {
        return Err(folder_err(
            dir,
            format!("tensor '{dup}' is in several shards"),
        ));
    }
    if let Some(missing) = keys.iter().find(|k| !seen.contains(k.as_str())) {
        return Err(folder_err(
            dir,
            format!("the index lists tensor '{missing}' but no shard holds it"),
        ));
    }
    Ok(all)
}
