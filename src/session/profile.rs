//! Where a run's time goes: wall time per operator type, summed over profiled runs.

use std::collections::HashMap;
use std::time::Duration;

/// Time spent in each operator type's kernels over the runs profiled into it
/// (`Session::run_profiled`). Fused ops appear under their own names (e.g. `Conv` with an
/// activation epilogue is still `Conv`); shape-only steps served from the cache cost nothing.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    runs: usize,
    by_op: HashMap<String, OpTime>,
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

    pub(crate) fn record(&mut self, op_type: &str, elapsed: Duration) {
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
        p.record("Conv", Duration::from_millis(5));
        p.record("Relu", Duration::from_millis(1));
        p.record("Conv", Duration::from_millis(3));
        let ops = p.by_op_type();
        assert_eq!(ops[0].op_type, "Conv");
        assert_eq!(ops[0].total, Duration::from_millis(8));
        assert_eq!(ops[0].calls, 2);
        assert_eq!(p.total(), Duration::from_millis(9));
        assert_eq!(p.runs(), 1);
    }
}
