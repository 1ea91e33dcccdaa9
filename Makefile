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

# One intra-op thread: the tests run many small ops, and thread pools on 2 shared cores were ~8x slower.
test: export OMP_NUM_THREADS = 1
test: $(STAMP)
	$(BIN)/pytest -q tests
	bash tests/timm_generic/run.sh   # timm's own generic model tests, on our models

# The main job: train and compare Hyena-ISO, S4ND-ISO, ViT-ISO and the sequence model on real CIFAR-10 (read from
# ../shared/data or --data), a few minutes on a CPU, then print the table.
demo: export OMP_NUM_THREADS = 1
demo: $(STAMP)
	$(BIN)/python eval/compare_cifar10.py --budget demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
