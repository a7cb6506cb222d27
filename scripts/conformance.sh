#!/usr/bin/env bash
# ONNX backend conformance: builds the test cases shipped in the pinned onnx package (cached
# under .cache/conformance/, see conformance/build.sh), runs every one in release mode, writes
# docs/conformance.md, and fails if a case of conformance/expected_pass.txt no longer passes.
#
#   scripts/conformance.sh                           # check and report
#   INFER_CONFORMANCE_UPDATE=1 scripts/conformance.sh  # also accept new passes into the list
#   INFER_CONFORMANCE_FILTER=Conv scripts/conformance.sh  # only one op / matching cases
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(conformance/build.sh | tail -n 1)
echo "conformance cases: $dir"
export INFER_CONFORMANCE_DIR="$dir"

cargo test --release --test conformance -- --ignored --nocapture
