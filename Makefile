# Ferry developer entry points. `make serve` and `make test` are all you need.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp
BIN    := $(VENV)/bin

DIR   ?= ./share
PORT  ?= 2049
BIND  ?= 127.0.0.1
PYTEST_ARGS ?=
BENCH_ARGS  ?=
FUZZ_SECONDS ?= 600

.PHONY: venv serve test test-unit test-interop test-ceph bench bench-quick lint clean fuzz soak

venv: $(STAMP)

# Re-install only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,s3]'
	@touch $@

serve: venv
	@mkdir -p "$(DIR)"
	$(BIN)/ferry serve "$(DIR)" --port $(PORT) --bind $(BIND)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest -m 'not interop' $(PYTEST_ARGS)

test-interop: venv
	$(BIN)/python -m pytest -m interop $(PYTEST_ARGS)

# CephFS/S3 backends and several servers over one throwaway Ceph cluster (docs/scale-out.md)
test-ceph: venv
	$(BIN)/python -m pytest -m ceph $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/server_bench.py $(BENCH_ARGS)

bench-quick: venv
	$(BIN)/python benchmarks/server_bench.py --quick $(BENCH_ARGS)

# Coverage-guided fuzzing (atheris, from the `fuzz` extra): each target in fuzz/ runs for its
# share of FUZZ_SECONDS; working corpora and crash inputs go to build/fuzz (docs/fuzzing.md).
fuzz: venv
	@$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[test,fuzz]'
	$(BIN)/python fuzz/run.py --all --seconds $(FUZZ_SECONDS)

# Long hardening runs (docs/hardening.md): 100 SIGKILL cycles, a 30-minute soak, bigger floods.
soak: venv
	FERRY_LONG=1 $(BIN)/python -m pytest tests/hardening -p no:cacheprovider $(PYTEST_ARGS)

# ruff and mypy come from the `dev` extra; installed on demand here.
lint: venv
	@$(BIN)/python -c 'import ruff, mypy' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@rc=0; \
	$(BIN)/ruff check src tests benchmarks || rc=1; \
	$(BIN)/ruff format --check src tests benchmarks || rc=1; \
	$(BIN)/mypy || rc=1; \
	exit $$rc

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.egg-info' -type d -prune -exec rm -rf {} +
