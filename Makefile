# `make demo` and `make test` create .venv when it is missing (pinned versions from constraints.txt).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-interpreter test-rest demo lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	touch $(STAMP)

venv: $(STAMP)

# Two jobs at once, one per core of the 2-core CI machine (8-9 minutes each there): the Triton kernels in the
# interpreter, and every other test followed by timm's own generic model tests on our models. Each prints its output
# whole when it ends. One intra-op thread each: the tests run many small ops, and thread pools on 2 shared cores
# were ~8x slower.
INTERPRETER_TESTS := tests/test_triton_fftconv.py
test: $(STAMP)
	@echo "make test: test-interpreter and test-rest at once; each prints its output when it ends"
	$(MAKE) --no-print-directory -j2 --output-sync=target test-interpreter test-rest

test-interpreter test-rest: export OMP_NUM_THREADS = 1
test-interpreter: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider $(INTERPRETER_TESTS)

test-rest: $(STAMP)
	$(BIN)/pytest -q tests --ignore=$(INTERPRETER_TESTS)
	bash tests/timm_generic/run.sh

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
