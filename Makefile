# Ferry developer entry points. `make serve` and `make test` are all you need.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: `make serve` needs Ferry alone (wheels only, no compiler); `make test` adds the
# test extras, which include what serving needs, so neither re-installs after the other.
SERVE_STAMP := $(VENV)/.serve-stamp
TEST_STAMP  := $(VENV)/.test-stamp

DIR   ?= ./share
PORT  ?= 2049
BIND  ?= 127.0.0.1
PYTEST_ARGS ?=
BENCH_ARGS  ?=
FUZZ_SECONDS ?= 600
DEPS  ?= install
NOBODY := 65534

.PHONY: venv deps serve test test-unit test-interop test-ceph bench bench-quick lint clean fuzz soak

# The Debian packages the tests need (scripts/debian-packages, shared with .ci/run): installed
# when missing, with apt-get as root or sudo without a password; else the command is printed
# and make stops. DEPS=skip leaves them to you.
deps:
ifneq ($(DEPS),skip)
	@scripts/debian-packages install
endif

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(SERVE_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(TEST_STAMP): pyproject.toml | deps $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test,s3]'
	@touch $@ $(SERVE_STAMP)

# The whole development environment: Ferry with its test and s3 extras.
venv: deps $(TEST_STAMP)

# DIR is made if missing; made by root, it belongs to $(NOBODY):$(NOBODY), the user Ferry squashes
# client root to (root_squash), so root's own `ferry put` can write there (README, Quick start).
serve: $(SERVE_STAMP)
	@if [ ! -e "$(DIR)" ]; then \
	    if [ "$$(id -u)" = 0 ]; then install -d -o $(NOBODY) -g $(NOBODY) "$(DIR)"; \
	    else mkdir -p "$(DIR)"; fi; \
	fi
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
