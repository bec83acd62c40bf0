# llmpulse: `make run` starts the server with demo traffic; `make test` runs every quality gate.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint typecheck pytest bench clean test-deps fuzz otlp-clients

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-all

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-all

run: $(VENV)/.installed-all
	$(BIN)/llmpulse serve --demo --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test-deps:
	bash scripts/test-deps.sh

# Arize Phoenix in .venv-phoenix/ (its pins are not llmpulse's), the independent receiver of the OTLP
# exporter's interoperability test; cached by a stamp of its version (a build takes ~60 s)
.PHONY: phoenix-venv
phoenix-venv:
	bash scripts/phoenix-venv.sh

pytest: phoenix-venv

# the GenAI instrumentations the OTLP receiver is tested with (openai<3, their own OpenTelemetry) in
# .venv-otlp-clients/; cached by a hash of tests/server/otlp_clients/requirements.txt (a build ~45 s)
otlp-clients:
	bash scripts/otlp-clients-venv.sh $(PYTHON)

pytest: otlp-clients

pytest: $(VENV)/.installed-test test-deps
	$(BIN)/pytest -q

test: lint typecheck pytest

# a long schemathesis run against the OpenAPI document (make test runs a short one): no answer may be a 5xx
FUZZ_EXAMPLES ?= 1000
fuzz: $(VENV)/.installed-test
	LLMPULSE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q --timeout=1800 tests/server/test_fuzz.py

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-otlp-clients .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/out
