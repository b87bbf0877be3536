# Two commands on a fresh machine with only Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp

.PHONY: run test check lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

run: $(STAMP)
	$(BIN)/p2pshare

check: $(TEST_STAMP)
	$(BIN)/ruff format --check p2pshare tests bench
	$(BIN)/ruff check p2pshare tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: check
	$(BIN)/python -m pytest -q

format: $(TEST_STAMP)
	$(BIN)/ruff format p2pshare tests bench
	$(BIN)/ruff check --fix p2pshare tests bench

bench: $(STAMP)
	$(BIN)/python bench/chunking.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/transfer.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/gossip.py
	$(BIN)/python bench/tui.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
