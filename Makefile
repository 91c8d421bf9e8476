# Two entry points the README promises: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.toml

.PHONY: install run test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	npm install --no-audit --no-fund --loglevel=error

run: install
	$(BIN)/tollgate serve --config $(CONFIG)

lint: install
	$(BIN)/ruff check gateway ingest store ui tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) node_modules data .pytest_cache .mypy_cache .ruff_cache
