#!/usr/bin/env bash
# Run the Shapley engine benchmark (dposhap vs shapiq and pyDVL).
#
# Creates bench/.venv with Python >= 3.12 if missing, installs the peers pinned in
# requirements.txt and dposhap from the repository root (maturin builds the abi3 wheel),
# then runs bench_shapley.py with the arguments given here (e.g. --quick).
#
# Environment:
#   DPOSHAP_BENCH_PYTHON        interpreter used to create the venv (default: a Python 3.12)
#   DPOSHAP_BENCH_SKIP_INSTALL  set to 1 to reuse the installed packages as they are
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/bench/.venv"

find_python() {
    if [[ -n "${DPOSHAP_BENCH_PYTHON:-}" ]]; then
        echo "$DPOSHAP_BENCH_PYTHON"; return
    fi
    local candidates=(python3.13 python3.12)
    if command -v pyenv >/dev/null 2>&1; then
        local pyroot
        pyroot="$(pyenv root)"
        for v in "$pyroot"/versions/3.12.* "$pyroot"/versions/3.13.*; do
            [[ -x "$v/bin/python3" ]] && candidates+=("$v/bin/python3")
        done
    fi
    candidates+=(python3)
    for py in "${candidates[@]}"; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
            command -v "$py"; return
        fi
    done
    echo "error: the Shapley benchmark needs Python >= 3.12 (shapiq 1.8); set DPOSHAP_BENCH_PYTHON" >&2
    exit 2
}

if [[ ! -x "$venv/bin/python" ]]; then
    py="$(find_python)"
    echo "creating $venv with $py" >&2
    "$py" -m venv "$venv"
fi

if [[ "${DPOSHAP_BENCH_SKIP_INSTALL:-0}" != "1" ]]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
    echo "building and installing dposhap from $root" >&2
    "$venv/bin/python" -m pip install --quiet "$root"
fi

exec "$venv/bin/python" "$here/bench_shapley.py" "$@"
