//! Turning command-line input arguments into named or positional tensors.

use infer::{npy, Session, Tensor};
use std::path::Path;

/// Inputs as the user gave them.
pub enum Given {
    Named(Vec<(String, Tensor)>),
    Positional(Vec<Tensor>),
}

/// Parses `PATH.npy`, `NAME=PATH.npy` and `FILE.npz` arguments. Mixing positional and named
/// inputs is an error: positions would be ambiguous.
pub fn load(args: &[String]) -> Result<Given, Box<dyn std::error::Error>> {
    let mut named = Vec::new();
    let mut positional = Vec::new();
    for arg in args {
        if let Some((name, path)) = arg.split_once('=') {
            named.push((name.to_string(), npy::read_npy(Path::new(path))?));
        } else if arg.ends_with(".npz") {
            named.extend(npy::read_npz(Path::new(arg))?);
        } else {
            positional.push(npy::read_npy(Path::new(arg))?);
        }
    }
    match (named.is_empty(), positional.is_empty()) {
        (_, true) => Ok(Given::Named(named)),
        (true, false) => Ok(Given::Positional(positional)),
        (false, false) => {
            Err("give inputs either all by name (NAME=PATH.npy, .npz) or all by position".into())
        }
    }
}

impl Given {
    pub fn run(&self, session: &Session) -> infer::Result<infer::Outputs> {
        match self {
            Given::Named(v) => session.run(v.iter().map(|(n, t)| (n.as_str(), t.clone()))),
            Given::Positional(v) => session.run_positional(v.clone()),
        }
    }

    /// `run`, adding each kernel's time to `profile`.
    pub fn run_profiled(
        &self,
        session: &Session,
        profile: &mut infer::Profile,
    ) -> infer::Result<infer::Outputs> {
        match self {
            Given::Named(v) => {
                session.run_profiled(v.iter().map(|(n, t)| (n.as_str(), t.clone())), profile)
            }
            Given::Positional(v) => {
                let names: Vec<String> = session.inputs().into_iter().map(|io| io.name).collect();
                if names.len() != v.len() {
                    // Let the ordinary binding report the mismatch.
                    return session.run_positional(v.clone());
                }
                let named = names.iter().map(String::as_str).zip(v.iter().cloned());
                session.run_profiled(named, profile)
            }
        }
    }
}
