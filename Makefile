# make demo: a realistic end-to-end run on a built-in example.  make test: the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test stress lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mlops demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

stress: $(STAMP)
	MLOPS_STRESS=1 $(BIN)/python -m pytest -q tests/faults

lint: $(STAMP)
	$(BIN)/ruff check mlops_cli tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
