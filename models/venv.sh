# Sourced by the scripts that need the pinned Python environment (models/build_zoo.sh,
# conformance/build.sh); defines:
#
#   sha256_of FILE...   the sha256 of the files' concatenated contents
#   ensure_venv         creates $root/.cache/venv and installs models/requirements.txt into it,
#                       reinstalling only when the file's hash differs from the one recorded
#                       in .cache/venv/.requirements.sha256; sets $venv
#
# Expects $root (the checkout). Set PYTHON=/path/to/python3 to pick the interpreter the venv
# is created from (3.10+, with pip and venv).

python="${PYTHON:-python3}"
venv="$root/.cache/venv"

# Hash with Python rather than sha256sum/shasum so it works the same on Linux and macOS.
sha256_of() {
    "$python" -c 'import hashlib, sys
h = hashlib.sha256()
for p in sys.argv[1:]:
    h.update(open(p, "rb").read())
print(h.hexdigest())' "$@"
}

ensure_venv() {
    local req="$root/models/requirements.txt"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
        echo "$python is $("$python" --version 2>&1); need Python 3.10+" >&2
        return 1
    }
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "[venv] creating $venv" >&2
        "$python" -m venv "$venv"
    fi
    local req_hash stamp="$venv/.requirements.sha256"
    req_hash="$(sha256_of "$req")"
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$req_hash" ]]; then
        echo "[venv] installing models/requirements.txt into $venv" >&2
        # pip's progress goes to stderr so stdout stays clean for the callers' final path line.
        "$venv/bin/python" -m pip install --disable-pip-version-check --no-cache-dir -r "$req" >&2
        echo "$req_hash" > "$stamp"
    fi
}
