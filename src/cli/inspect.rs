//! `infer inspect`: what a model contains, without planning it.

use std::collections::BTreeMap;
use std::path::Path;

pub fn inspect(model: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let g = infer::onnx::load_file(model)?;
    let mut opsets: Vec<_> = g.opsets.iter().collect();
    opsets.sort();
    println!("model: {}", model.display());
    for (domain, v) in opsets {
        let d = if domain.is_empty() { "ai.onnx" } else { domain };
        println!("opset: {d} {v}");
    }
    println!("inputs:");
    for &i in &g.inputs {
        println!("  {}: {}", g.values[i].name, g.values[i].ty);
    }
    println!("outputs:");
    for &o in &g.outputs {
        println!("  {}: {}", g.values[o].name, g.values[o].ty);
    }
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &g.nodes {
        *hist.entry(n.op_type.as_str()).or_default() += 1;
    }
    println!("operators ({} nodes):", g.nodes.len());
    for (op, count) in hist {
        println!("  {op}: {count}");
    }
    let (params, bytes) = g.parameter_count();
    println!(
        "parameters: {params} ({:.2} MiB)",
        bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
