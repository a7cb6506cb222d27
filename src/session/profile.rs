//! Where a run's time goes: wall time per operator type and per node, summed over profiled
//! runs, and each node's time run by run (for medians: on a shared machine a mean is mostly
//! the neighbours' noise).

use std::collections::HashMap;
use std::time::Duration;

/// Time spent in each operator type's kernels over the runs profiled into it
/// (`Session::run_profiled`). Fused ops appear under their own names (e.g. `Conv` with an
/// activation epilogue is still `Conv`); shape-only steps served from the cache cost nothing.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    runs: usize,
    by_op: HashMap<String, OpTime>,
    by_node: HashMap<String, NodeTime>,
}

/// One node's share of the profiled runs: which of several same-type nodes is slow, and on
/// what shapes (to tell, say, a 7×7 convolution from a 56×56 one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeTime {
    pub node: String,
    pub op_type: String,
    /// The input shapes of its first profiled run, e.g. `[1,64,56,56] [64,64,3,3]`.
    pub input_shapes: String,
    pub total: Duration,
    pub calls: usize,
    /// Its time in each profiled run (summed over its calls in that run; zero in a run it
    /// was not called in).
    pub per_run: Vec<Duration>,
}

impl NodeTime {
    /// The median of its per-run times.
    pub fn median_per_run(&self) -> Duration {
        let mut runs = self.per_run.clone();
        runs.sort_unstable();
        runs.get(runs.len() / 2).copied().unwrap_or_default()
    }
}

/// One operator type's share of the profiled runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpTime {
    pub op_type: String,
    /// Kernel time summed over all its steps and runs.
    pub total: Duration,
    /// Steps run, summed over runs.
    pub calls: usize,
}

impl Profile {
    pub fn new() -> Profile {
        Profile::default()
    }

    /// Runs profiled so far.
    pub fn runs(&self) -> usize {
        self.runs
    }

    pub(crate) fn begin_run(&mut self) {
        self.runs += 1;
    }

    /// Adds one step's time; `input_shapes` is called only the first time a node is seen.
    pub(crate) fn record(
        &mut self,
        node: &str,
        op_type: &str,
        elapsed: Duration,
        input_shapes: impl FnOnce() -> String,
    ) {
        let by_node = self
            .by_node
            .entry(node.to_string())
            .or_insert_with(|| NodeTime {
                node: node.to_string(),
                op_type: op_type.to_string(),
                input_shapes: input_shapes(),
                ..NodeTime::default()
            });
        by_node.total += elapsed;
        by_node.calls += 1;
        by_node.per_run.resize(self.runs.max(1), Duration::ZERO);
        if let Some(this_run) = by_node.per_run.last_mut() {
            *this_run += elapsed;
        }
        let entry = self
            .by_op
            .entry(op_type.to_string())
            .or_insert_with(|| OpTime {
                op_type: op_type.to_string(),
                ..OpTime::default()
            });
        entry.total += elapsed;
        entry.calls += 1;
    }

    /// Operator types by total time, largest first.
    pub fn by_op_type(&self) -> Vec<OpTime> {
        let mut ops: Vec<OpTime> = self.by_op.values().cloned().collect();
        ops.sort_by(|a, b| b.total.cmp(&a.total).then(a.op_type.cmp(&b.op_type)));
        ops
    }

    /// Nodes by median time per run, largest first.
    pub fn by_node(&self) -> Vec<NodeTime> {
        let mut nodes: Vec<NodeTime> = self
            .by_node
            .values()
            .map(|n| {
                let mut n = n.clone();
                // Runs after a node's last call count as zero for it.
                n.per_run.resize(self.runs, Duration::ZERO);
                n
            })
            .collect();
        nodes.sort_by_cached_key(|n| (std::cmp::Reverse(n.median_per_run()), n.node.clone()));
        nodes
    }

    /// Kernel time of all operator types together.
    pub fn total(&self) -> Duration {
        self.by_op.values().map(|o| o.total).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_op_type_and_sorts_by_time() {
        let mut p = Profile::new();
        p.begin_run();
        p.record("c1", "Conv", Duration::from_millis(5), || {
            "[1,3,8,8]".into()
        });
        p.record("r1", "Relu", Duration::from_millis(1), String::new);
        p.record("c2", "Conv", Duration::from_millis(3), String::new);
        p.record("c1", "Conv", Duration::from_millis(4), || unreachable!());
        let ops = p.by_op_type();
        assert_eq!(ops[0].op_type, "Conv");
        assert_eq!(ops[0].total, Duration::from_millis(12));
        assert_eq!(ops[0].calls, 3);
        assert_eq!(p.total(), Duration::from_millis(13));
        let nodes = p.by_node();
        assert_eq!(nodes[0].node, "c1");
        assert_eq!(nodes[0].total, Duration::from_millis(9));
        assert_eq!(nodes[0].input_shapes, "[1,3,8,8]");
        assert_eq!(nodes[1].node, "c2");
        assert_eq!(p.runs(), 1);
    }

    #[test]
    fn node_medians_ignore_one_slow_run() {
        let mut p = Profile::new();
        for ms in [2, 3, 40, 3] {
            p.begin_run();
            p.record("c", "Conv", Duration::from_millis(ms), String::new);
            p.record("r", "Relu", Duration::from_millis(5), String::new);
        }
        // A node missing from the last runs counts zero there.
        p.begin_run();
        p.record("c", "Conv", Duration::from_millis(3), String::new);
        let nodes = p.by_node();
        assert_eq!(nodes[0].node, "r");
        assert_eq!(nodes[0].per_run.len(), 5);
        assert_eq!(nodes[0].median_per_run(), Duration::from_millis(5));
        assert_eq!(nodes[1].median_per_run(), Duration::from_millis(3));
        assert_eq!(nodes[1].total, Duration::from_millis(51));
    }
}
