#!/usr/bin/env bash
# Build (or reuse) the ONNX model zoo used by the Rust tests.
#
#   models/build_zoo.sh [--small] [--only name1,name2]
#
# - Python venv at .cache/venv; models/requirements.txt is (re)installed only when its
#   hash differs from the one recorded in .cache/venv/.requirements.sha256.
# - Output goes to .cache/zoo/<hash of zoo.py + requirements.txt>[-small]/, so editing
#   the script or bumping a pin regenerates into a fresh directory, while reruns of
#   the same script skip every model that is already complete.
# - .cache/zoo/current (or .cache/zoo/current-small with --small) is pointed at it.
# - The last line printed is the zoo directory (for callers: `dir=$(... | tail -1)`).
#
# Needs only python3 (3.10+) with pip and venv, plus PyPI access for the first install.
# Set PYTHON=/path/to/python3 to pick the interpreter the venv is created from.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/models/requirements.txt"
zoo_py="$root/models/zoo.py"
# shellcheck source=models/venv.sh
source "$root/models/venv.sh"

small=0
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --small) small=1; args+=("$1"); shift ;;
        --only) [[ $# -ge 2 ]] || { echo "--only needs a value" >&2; exit 2; }; args+=("$1" "$2"); shift 2 ;;
        --only=*) args+=("$1"); shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

ensure_venv

zoo_hash="$(sha256_of "$zoo_py" "$req" | cut -c1-16)"
suffix=""
link="current"
if [[ $small -eq 1 ]]; then
    suffix="-small"
    link="current-small"
fi
zoo_dir="$root/.cache/zoo/$zoo_hash$suffix"
mkdir -p "$zoo_dir"

# nice: the export is CPU-heavy and usually shares the machine with cargo builds.
nice -n 10 "$venv/bin/python" "$zoo_py" --out "$zoo_dir" ${args[@]+"${args[@]}"} >&2

# Relative link, so the checkout can be moved.
ln -sfn "$zoo_hash$suffix" "$root/.cache/zoo/$link"
echo "$zoo_dir"
