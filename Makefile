# make demo: a realistic end-to-end run on a built-in example.  make test: the test suite.
# `make demo` installs only the package (its runtime dependencies); `make test` adds the test
# extra (pytest, linters, Playwright, psycopg) on top.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The extras `make test` installs: CI adds spark (the Spark tests run there; locally they are
# skipped without pyspark and Java, or deselected with -m 'not spark').
EXTRAS ?= test

.PHONY: demo test stress lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	# bytecode now, as a wheel's install does (else every start compiles the package where
	# PYTHONDONTWRITEBYTECODE is set)
	$(BIN)/python -m compileall -q mlops_cli >/dev/null
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/mlops demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

stress: $(TEST_STAMP)
	MLOPS_STRESS=1 $(BIN)/python -m pytest -q tests/faults

lint: $(TEST_STAMP)
	$(BIN)/ruff check mlops_cli tests benchmarks examples
	$(BIN)/mypy

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
