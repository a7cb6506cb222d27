//! Topological order of a graph's nodes, with cycle detection.

use crate::error::{Error, Result};
use crate::ir::Graph;
use std::collections::HashMap;

/// Node indices in an order where every node comes after the producers of its inputs.
pub fn topological_order(g: &Graph) -> Result<Vec<usize>> {
    let mut producer: HashMap<usize, usize> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for v in n.outputs.iter().flatten() {
            producer.insert(*v, i);
        }
    }
    // Kahn's algorithm over node→node edges.
    let mut indegree = vec![0usize; g.nodes.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for v in n.inputs.iter().flatten() {
            if let Some(&p) = producer.get(v) {
                indegree[i] += 1;
                consumers[p].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..g.nodes.len()).filter(|&i| indegree[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(g.nodes.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &c in consumers[i].iter().rev() {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(c);
            }
        }
    }
    if order.len() != g.nodes.len() {
        let stuck = (0..g.nodes.len())
            .find(|&i| indegree[i] > 0)
            .map(|i| g.nodes[i].name.clone())
            .unwrap_or_default();
        return Err(Error::Graph(format!(
            "the graph has a cycle (through node '{stuck}')"
        )));
    }
    Ok(order)
}
