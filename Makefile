# `make demo` and `make test` create .venv when it is missing (pinned versions from constraints.txt).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q tests
	bash tests/timm_generic/run.sh   # timm's own generic model tests, on our models

demo: $(STAMP)
	$(BIN)/python eval/associative_recall.py --quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
