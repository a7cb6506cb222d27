//! Packed single-precision GEMM with fused epilogues.
