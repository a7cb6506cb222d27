//! Graph cleanups that need no pattern knowledge: constant folding and dead-node removal.

use super::topo::topological_order;
use crate::error::Result;
use crate::ir::{Graph, Node};
use crate::ops::{self, BuildCtx};
use crate::tensor::{Tensor, Value};
use std::collections::HashSet;

/// Nodes whose output must not be computed once at plan time, subgraphs included.
fn is_nondeterministic(node: &Node) -> bool {
    let random = matches!(
        node.op_type.as_str(),
        "RandomNormal"
            | "RandomUniform"
            | "RandomNormalLike"
            | "RandomUniformLike"
            | "Multinomial"
            | "Bernoulli"
    );
    random
        || node
            .attrs
            .graphs()
            .any(|g| g.nodes.iter().any(is_nondeterministic))
}

/// Evaluates every node whose inputs are all constants, replacing it by its outputs.
///
/// A node whose kernel cannot be built is left in place: the plan reports it with context.
pub fn fold_constants(g: &mut Graph) -> Result<()> {
    let order = topological_order(g)?;
    let mut folded = vec![false; g.nodes.len()];
    for i in order {
        let node = &g.nodes[i];
        if is_nondeterministic(node)
            || !node
                .inputs
                .iter()
                .flatten()
                .all(|v| g.initializers.contains_key(v))
        {
            continue;
        }
        let constants: Vec<Option<&Tensor>> = node
            .inputs
            .iter()
            .map(|v| v.and_then(|v| g.initializers.get(&v)))
            .collect();
        let opset = g
            .opsets
            .get(&node.domain)
            .copied()
            .unwrap_or_else(|| g.onnx_opset());
        let ctx = BuildCtx {
            node,
            opset,
            constants: constants.clone(),
            // Folded constants are exact fp32 whatever the session's options.
            options: Default::default(),
        };
        let Ok(kernel) = ops::build(&ctx) else {
            continue;
        };
        let args: Vec<Option<Value>> = constants
            .iter()
            .map(|t| t.cloned().map(Value::Tensor))
            .collect();
        let args: Vec<Option<&Value>> = args.iter().map(Option::as_ref).collect();
        let outputs = kernel
            .run_values(&args)
            .map_err(|e| e.at_node(&node.name, &node.op_type))?;
        // Sequences and optionals are not constants the IR can hold: such nodes stay.
        let Ok(outputs) = outputs
            .into_iter()
            .map(Value::into_tensor)
            .collect::<Result<Vec<Tensor>>>()
        else {
            continue;
        };
        let targets: Vec<_> = node.outputs.clone();
        for (v, t) in targets.into_iter().zip(outputs) {
            if let Some(v) = v {
                g.initializers.insert(v, t);
            }
        }
        folded[i] = true;
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !folded[i - 1]
    });
    Ok(())
}

/// Removes nodes whose outputs never reach a graph output, and unused constants.
pub fn remove_dead_nodes(g: &mut Graph) {
    let mut live: HashSet<usize> = g.outputs.iter().copied().collect();
    let mut keep = vec![false; g.nodes.len()];
    // Walk backwards until no new node becomes live (nodes may be in any order).
    loop {
        let mut changed = false;
        for (i, n) in g.nodes.iter().enumerate().rev() {
            if !keep[i] && n.outputs.iter().flatten().any(|v| live.contains(v)) {
                keep[i] = true;
                changed = true;
                live.extend(n.inputs.iter().flatten().copied());
            }
        }
        if !changed {
            break;
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    g.initializers.retain(|v, _| live.contains(v));
}
