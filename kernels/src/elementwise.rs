//! Vectorized elementwise math (exp, tanh, erf, activations) with run-time ISA dispatch.
