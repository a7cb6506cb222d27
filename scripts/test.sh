#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds the model zoo (pinned Python venv and
# exported models, both cached under .cache/ by content hash), then runs every Rust test in
# release mode, including the zoo parity tests that compare against onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."

zoo=$(models/build_zoo.sh | tail -n 1)
echo "zoo: $zoo"
export INFER_ZOO_DIR="$zoo"

cargo test --release -p infer -p infer-kernels -- --include-ignored
