//! Keras files: the `.keras` zip (`config.json` + `model.weights.h5` + `metadata.json`), a
//! bare `.weights.h5`, and the legacy `.h5` (a `model_config` attribute beside
//! `model_weights/<layer>/<layer>/<var>`).
//!
//! Keras 3 names weight groups by layer class and order (`layers/dense_1/vars/0`) and keeps
//! the user's layer name in the `vars` group's `name` attribute; legacy files name groups by
//! layer and list each layer's variables, in order, in its `weight_names` attribute. Either
//! way a layer's variables come out in Keras's order (kernel before bias, gamma, beta, moving
//! mean, moving variance), which is what the architecture builder binds by.

use super::hdf5::H5File;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::io::{Cursor, Read};

type Res<T> = std::result::Result<T, String>;

/// Largest `config.json` / `model.weights.h5` read out of a `.keras` zip.
const MAX_ENTRY_BYTES: u64 = 1 << 36;

/// What a Keras file holds.
pub struct KerasFile {
    /// The architecture (`config.json`, or a legacy file's `model_config`), if stored.
    pub config: Option<serde_json::Value>,
    /// Every dataset under its path in the HDF5 file.
    pub tensors: Vec<(String, Tensor)>,
    /// Each layer's variables in Keras order, by the user's layer name; those of sublayers
    /// (a recurrent layer's cell, attention projections, a nested model's layers) by the
    /// path of names down to them: `lstm/lstm_cell`, `mha/query`, `inner/dense_1`.
    pub layers: HashMap<String, Vec<Tensor>>,
}

/// Whether a zip's entry names make it a `.keras` file.
pub fn is_keras_zip(bytes: &[u8]) -> bool {
    zip::ZipArchive::new(Cursor::new(bytes)).is_ok_and(|z| {
        let names: Vec<&str> = z.file_names().collect();
        names.contains(&"config.json") && names.contains(&"model.weights.h5")
    })
}

/// Reads a `.keras` zip; its weights file is read from memory.
pub fn read_zip(bytes: &[u8]) -> Res<KerasFile> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable .keras zip: {e}"))?;
    let mut entry = |name: &str| -> Res<Vec<u8>> {
        let f = zip
            .by_name(name)
            .map_err(|e| format!("{name} in the .keras zip: {e}"))?;
        if f.size() > MAX_ENTRY_BYTES || f.size() > (bytes.len() as u64).saturating_mul(1024) {
            return Err(format!("{name}: implausible size {} bytes", f.size()));
        }
        let mut out = Vec::with_capacity(f.size() as usize);
        f.take(MAX_ENTRY_BYTES)
            .read_to_end(&mut out)
            .map_err(|e| format!("{name} in the .keras zip: {e}"))?;
        Ok(out)
    };
    let config = entry("config.json")?;
    let weights = entry("model.weights.h5")?;
    let config = serde_json::from_slice(&config)
        .map_err(|e| format!("config.json in the .keras zip is not JSON: {e}"))?;
    let mut file = read_h5(weights).map_err(|e| format!("model.weights.h5 in the zip: {e}"))?;
    file.config = Some(config);
    Ok(file)
}

/// Reads a Keras 3 `.weights.h5` or a legacy `.h5` (whose `model_config` becomes `config`).
pub fn read_h5(bytes: Vec<u8>) -> Res<KerasFile> {
    let h5 = H5File::from_bytes(bytes)?;
    let tensors = h5.datasets("")?;
    let legacy_config = h5.attr_string("", "model_config")?;
    let (config, layers) = match legacy_config {
        Some(text) => {
            let config = serde_json::from_str(&text)
                .map_err(|e| format!("the model_config attribute is not JSON: {e}"))?;
            (Some(config), legacy_layers(&h5)?)
        }
        None => (None, keras3_layers(&h5, &tensors)?),
    };
    Ok(KerasFile {
        config,
        tensors,
        layers,
    })
}

/// Keras 3: `…/<group>/vars/<i>`, keyed by the layer's path of user names (see
/// `KerasFile::layers`): each group on the way that has a `vars` child names its object in
/// that child's `name` attribute (`layers/lstm/cell/vars` → `lstm/lstm_cell`).
fn keras3_layers(h5: &H5File, tensors: &[(String, Tensor)]) -> Res<HashMap<String, Vec<Tensor>>> {
    let mut by_group: HashMap<&str, Vec<(usize, Tensor)>> = HashMap::new();
    for (path, t) in tensors {
        let Some((group, index)) = path.rsplit_once('/') else {
            continue;
        };
        let (Some(group), Ok(index)) = (group.strip_suffix("/vars"), index.parse::<usize>()) else {
            continue;
        };
        by_group.entry(group).or_default().push((index, t.clone()));
    }
    let mut layers = HashMap::new();
    for (group, mut vars) in by_group {
        vars.sort_by_key(|(i, _)| *i);
        let name = name_path(h5, group)?;
        let vars = vars.into_iter().map(|(_, t)| t).collect();
        if layers.insert(name.clone(), vars).is_some() {
            return Err(format!("two weight groups name layer '{name}'"));
        }
    }
    Ok(layers)
}

/// The user names of the objects along `group` (a group holding `vars`), outermost first.
fn name_path(h5: &H5File, group: &str) -> Res<String> {
    let mut names = Vec::new();
    let mut end = 0;
    for part in group.split('/') {
        end += part.len();
        let prefix = &group[..end];
        end += 1;
        let name = if prefix.len() == group.len() {
            // The variables' own group: named by its attribute, else by its path.
            h5.attr_string(&format!("{prefix}/vars"), "name")?
                .unwrap_or_else(|| part.to_string())
        } else {
            // Containers (`layers`, `cell`'s parent, …) without a `vars` child name nothing.
            match h5.attr_string(&format!("{prefix}/vars"), "name") {
                Ok(Some(name)) => name,
                _ => continue,
            }
        };
        names.push(name);
    }
    Ok(names.join("/"))
}

/// Legacy: `model_weights/<layer>/<weight name>` in the order of `weight_names`, keyed like
/// Keras 3 layers by the weight name's directory from the layer's own name on
/// (`mlp/dense/kernel` of layer `dense` → `dense`; `lstm/lstm_cell/kernel` → `lstm/lstm_cell`).
fn legacy_layers(h5: &H5File) -> Res<HashMap<String, Vec<Tensor>>> {
    let mut layers: HashMap<String, Vec<Tensor>> = HashMap::new();
    for layer in h5.attr_strings("model_weights", "layer_names")? {
        let group = format!("model_weights/{layer}");
        for w in h5.attr_strings(&group, "weight_names")? {
            let t = h5.dataset(&format!("{group}/{w}"))?;
            let dir = w.rsplit_once('/').map_or("", |(d, _)| d);
            let parts: Vec<&str> = dir.split('/').collect();
            let key = match parts.iter().position(|p| *p == layer) {
                Some(i) => parts[i..].join("/"),
                // Keras 2 names a nested model's weights by its inner layers alone.
                None if dir.is_empty() => layer.clone(),
                None => format!("{layer}/{dir}"),
            };
            layers.entry(key).or_default().push(t);
        }
    }
    Ok(layers)
}
