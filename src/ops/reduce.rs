//! Reductions and normalizing reductions (ReduceMean, ArgMax, Softmax, ...).

#[path = "reduce_num.rs"]
pub(crate) mod num;

use super::{BuildCtx, Kernel};
use crate::error::Result;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    let _ = (op, ctx);
    None
}
