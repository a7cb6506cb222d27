//! `infer run`: outputs printed, or saved as `.npy` files.

use super::inputs;
use infer::{arch, npy, Tensor, Value};
use std::path::{Path, PathBuf};

pub fn run(
    model: &Path,
    input_args: &[String],
    out_dir: Option<&Path>,
    session_args: super::SessionArgs,
    keras_config: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let given = inputs::load(input_args)?;
    let session = match (&given, keras_config) {
        // A Keras weights file with its architecture given separately.
        (_, Some(config)) => {
            let graph = arch::keras::load_with_config(model, config)?;
            super::builder(session_args).build_from_graph(graph)?
        }
        // A Hugging Face folder declares only the optional inputs given (attention_mask,
        // token_type_ids); the others take transformers' defaults.
        (inputs::Given::Named(named), None) if arch::is_hf_folder(model) => {
            let names = named.iter().map(|(n, _)| n.as_str());
            let graph = arch::load_folder_with(model, &arch::Inputs::from_names(names))?;
            super::builder(session_args).build_from_graph(graph)?
        }
        _ => super::session(model, session_args)?,
    };
    let outputs = given.run(&session)?;
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (name, value) in outputs.iter() {
                for (name, t) in tensors_of(name, value) {
                    let path = output_path(dir, &name);
                    npy::write_npy(&path, t)?;
                    println!("{name} -> {}", path.display());
                }
            }
        }
        None => {
            for (name, value) in outputs.iter() {
                let tensors = tensors_of(name, value);
                if tensors.is_empty() {
                    println!("{name}: empty {}", value.kind());
                }
                for (name, t) in tensors {
                    println!("{name}: {} {:?} {}", t.dtype(), t.shape(), preview(t));
                }
            }
        }
    }
    Ok(())
}

/// The tensors an output holds, named `<output>` for a tensor and `<output>_<i>` for the
/// items of a sequence; an empty optional holds none.
fn tensors_of<'a>(name: &str, value: &'a Value) -> Vec<(String, &'a Tensor)> {
    match value {
        Value::Tensor(t) => vec![(name.to_string(), t)],
        Value::Sequence(s) => s
            .items()
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{name}_{i}"), t))
            .collect(),
        Value::Optional(inner) => inner
            .as_deref()
            .map_or_else(Vec::new, |v| tensors_of(name, v)),
    }
}

/// `DIR/<name>.npy` with every character outside `[A-Za-z0-9._-]` replaced by `_` (a stable
/// contract other tools rely on).
pub fn output_path(dir: &Path, name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{safe}.npy"))
}

/// The first few values, for a quick look.
fn preview(t: &Tensor) -> String {
    const SHOWN: usize = 8;
    let head: Vec<String> = match (t.as_strings(), t.to_f64_vec()) {
        (Ok(s), _) => s.iter().take(SHOWN).map(|s| format!("{s:?}")).collect(),
        (_, Ok(v)) => v.iter().take(SHOWN).map(|v| format!("{v:.6}")).collect(),
        _ => return String::new(),
    };
    let more = if t.len() > SHOWN { ", ..." } else { "" };
    format!("[{}{more}]", head.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_are_sanitized() {
        let p = output_path(Path::new("out"), "logits/0:x y");
        assert_eq!(p, Path::new("out").join("logits_0_x_y.npy"));
    }
}
