//! Compute kernels for `infer`.
