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
venv="$root/.cache/venv"
req="$root/models/requirements.txt"
zoo_py="$root/models/zoo.py"
python="${PYTHON:-python3}"

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

# Hash with Python rather than sha256sum/shasum so it works the same on Linux and macOS.
sha256_of() {
    "$python" -c 'import hashlib, sys
h = hashlib.sha256()
for p in sys.argv[1:]:
    h.update(open(p, "rb").read())
print(h.hexdigest())' "$@"
}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "build_zoo.sh: $python is $("$python" --version 2>&1); need Python 3.10+" >&2
    exit 1
}

if [[ ! -x "$venv/bin/python" ]]; then
    echo "[build_zoo] creating venv at $venv" >&2
    "$python" -m venv "$venv"
fi

req_hash="$(sha256_of "$req")"
stamp="$venv/.requirements.sha256"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$req_hash" ]]; then
    echo "[build_zoo] installing models/requirements.txt into $venv" >&2
    # pip's progress goes to stderr so stdout stays clean for the final path line.
    "$venv/bin/python" -m pip install --disable-pip-version-check -r "$req" >&2
    echo "$req_hash" > "$stamp"
fi

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
