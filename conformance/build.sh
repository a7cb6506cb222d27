#!/usr/bin/env bash
# Build (or reuse) the ONNX backend conformance cases used by tests/conformance.rs.
#
#   conformance/build.sh
#
# - Python venv at .cache/venv (shared with models/build_zoo.sh, see models/venv.sh).
# - Output goes to .cache/conformance/<hash of generate.py + models/requirements.txt>/, so
#   editing the generator or bumping the onnx pin regenerates into a fresh directory, while
#   reruns reuse a complete one (generate.py renames its folder into place when done).
# - .cache/conformance/current is pointed at it.
# - The last line printed is the cases directory (for callers: `dir=$(... | tail -1)`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=models/venv.sh
source "$root/models/venv.sh"

case "${1:-}" in
    "") ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

ensure_venv

gen="$root/conformance/generate.py"
hash="$(sha256_of "$gen" "$root/models/requirements.txt" | cut -c1-16)"
dir="$root/.cache/conformance/$hash"
if [[ ! -f "$dir/cases.json" ]]; then
    mkdir -p "$root/.cache/conformance"
    nice -n 10 "$venv/bin/python" "$gen" --out "$dir" >&2
fi

# Relative link, so the checkout can be moved.
ln -sfn "$hash" "$root/.cache/conformance/current"
echo "$dir"
