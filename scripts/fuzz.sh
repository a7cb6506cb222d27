#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each (default 60), one after
# another, after seeding fuzz/corpus/<target>/ from the test models and samples.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs `cargo install cargo-fuzz`. Stable Rust is enough: the targets build without a
# sanitizer, with RUSTC_BOOTSTRAP=1 for the coverage flags cargo-fuzz passes. Seeds come
# from the repository and, when present, from the ONNX conformance cases, the weights samples,
# the Hugging Face samples and the Keras samples (INFER_CONFORMANCE_DIR, INFER_WEIGHTS_SAMPLES,
# INFER_HF_SAMPLES, INFER_KERAS_SAMPLES; defaults under .cache/ as scripts/test.sh builds
# them). With FUZZ_MAX_RUNS=N a target also stops after N executions (the issue's bar is
# 10 minutes or 1M executions, whichever comes first). A crash is saved under
# fuzz/artifacts/<target>/ and stops the run with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(onnx npy safetensors torch hf_config keras tf_index)

first_dir() { for d in "$@"; do [[ -d "$d" ]] && { echo "$d"; return; }; done; echo ""; }
conformance=${INFER_CONFORMANCE_DIR:-$(first_dir .cache/conformance/current)}
weights=${INFER_WEIGHTS_SAMPLES:-$(first_dir .cache/weights-samples/*)}
hf=${INFER_HF_SAMPLES:-$(first_dir .cache/hf-samples/*)}
keras=${INFER_KERAS_SAMPLES:-$(first_dir .cache/keras-samples/*)}

seed() { # seed TARGET FILE [PREFIX-BYTE]: copies FILE into the corpus, named by its hash.
    local dir="fuzz/corpus/$1" file=$2 prefix=${3:-}
    mkdir -p "$dir"
    local tmp="$dir/.seed"
    { [[ -n "$prefix" ]] && printf "$prefix"; cat "$file"; } > "$tmp"
    local hash
    hash=$(sha1sum "$tmp" | cut -c1-16)
    mv "$tmp" "$dir/$hash"
}
seed_all() {
    seed onnx models/example/tiny_cnn.onnx
    if [[ -n "$conformance" && -d "$conformance/node" ]]; then
        # One small model per operator family is plenty to start from.
        for m in $(ls -d "$conformance"/node/*/ | awk 'NR % 6 == 1'); do
            [[ -f "$m/model.onnx" ]] && seed onnx "$m/model.onnx"
        done
    fi
    for f in models/example/*.npy; do seed npy "$f" '\x00'; done
    # .npz archives of the same arrays, stored and deflated (prefix byte 'z').
    local npz
    npz=$(mktemp -d)
    python3 - "$npz" models/example/*.npy <<'PY'
import sys, zipfile
out, files = sys.argv[1], sys.argv[2:]
for method, name in [(zipfile.ZIP_STORED, "stored"), (zipfile.ZIP_DEFLATED, "deflated")]:
    with zipfile.ZipFile(f"{out}/{name}.npz", "w", method) as z:
        for f in files:
            z.write(f, f.rsplit("/", 1)[-1])
PY
    for f in "$npz"/*.npz; do seed npy "$f" 'z'; done
    rm -rf "$npz"
    if [[ -n "$weights" ]]; then
        for f in "$weights"/*.safetensors "$weights"/hf_bert_safetensors/*.safetensors; do
            [[ -f "$f" && $(stat -c %s "$f") -lt 65536 ]] && seed safetensors "$f"
        done
        for f in "$weights"/*.pt "$weights"/*.pkl; do [[ -f "$f" ]] && seed torch "$f"; done
    fi
    if [[ -n "$hf" ]]; then
        for f in "$hf"/*/config.json; do seed hf_config "$f"; done
    fi
    if [[ -n "$keras" ]]; then
        # The smallest model in each of the three layouts (.weights.h5, .keras, legacy .h5).
        for f in "$keras"/mlp.weights.h5 "$keras"/mlp.keras "$keras"/mlp_legacy.h5; do
            [[ -f "$f" ]] && seed keras "$f"
        done
        # tf_index takes the index followed by its (single) data shard.
        local both
        both=$(mktemp)
        for prefix in "$keras"/ckpt/ckpt "$keras"/saved_model/variables/variables; do
            if [[ -f "$prefix.index" && -f "$prefix.data-00000-of-00001" ]]; then
                cat "$prefix.index" "$prefix.data-00000-of-00001" > "$both"
                seed tf_index "$both"
            fi
        done
        rm -f "$both"
    fi
    for t in "${targets[@]}"; do mkdir -p "fuzz/corpus/$t"; done
}
seed_all

cd fuzz
export RUSTC_BOOTSTRAP=1
status=0
for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s"
    # -rss_limit_mb bounds a run's memory; -timeout flags a single input over 20 s as a hang.
    if ! cargo fuzz run --sanitizer none "$t" "corpus/$t" -- \
        -max_total_time="$seconds" ${FUZZ_MAX_RUNS:+-runs=$FUZZ_MAX_RUNS} -rss_limit_mb=4096 -timeout=20 -max_len=65536 \
        -print_final_stats=1 2>&1 | tee "/tmp/infer-fuzz-$t.log" | grep -E "^(Done|stat::|==|SUMMARY|.*ERROR)"; then
        :
    fi
    if grep -qE "ERROR: libFuzzer|SUMMARY|panicked" "/tmp/infer-fuzz-$t.log"; then
        echo "!! $t found a crash: see fuzz/artifacts/$t/ and /tmp/infer-fuzz-$t.log"
        status=1
    fi
done
exit $status
