# Two entry points the README promises: `make run` and `make test`.
# `make run ARGS="--listen 127.0.0.1:9000"` passes serve options through.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.toml
ARGS ?=

.PHONY: install install-py run test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Stamps make `install` incremental: pip and npm run again only when their manifests change (or on a fresh
# checkout). `npm ci` empties node_modules first, under a `make run` server that may still be using it.
# `make clean` (or deleting a stamp) forces a reinstall.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[demo,test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The Python side only: enough for the bench (the Node peers are for the demo and the tests).
install-py: $(VENV)/.installed

install: install-py node_modules/.installed

# The venv's bin goes first on PATH so the demo upstream's `python3` finds the mcp SDK.
run: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/tollgate serve --config $(CONFIG) $(ARGS)

lint: install
	$(BIN)/ruff check gateway ingest store ui tests bench
	$(BIN)/mypy

test: lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

# `make bench BENCH_ARGS=--quick` for the two-minute run. The session page row needs /usr/bin/chromium
# (`apt-get install chromium`, as .ci/run does): the bench stops at once without it.
bench: install-py
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules data .pytest_cache .mypy_cache .ruff_cache
