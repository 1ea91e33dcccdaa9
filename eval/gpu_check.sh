#!/usr/bin/env bash
# The GPU check as one call (see eval/gpu_check.py). Two uses:
#   bash eval/gpu_check.sh --prepare   here, before the call: CIFAR-10 and the wheels the GPU machine lacks into .gpu/
#   bash eval/gpu_check.sh [ARGS]      there (device tool: carry [".gpu"]): installs .gpu/wheels, runs gpu_check.py
set -euo pipefail
cd "$(dirname "$0")/.."
# The GPU image has torch, triton, torchvision, torchmetrics, pytest, hypothesis, pyyaml, regex and huggingface-hub
# (see the device tool's KINDS.md); these are the rest (omegaconf 2.4 needs no antlr4), as wheels, and timm, whose
# copy there (seen 2026-11-30) predates timm.models._input.
WHEELS="timm==1.0.31 omegaconf==2.4.0 webdataset==1.0.2 braceexpand==0.1.7 open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4"
if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p .gpu/wheels
    cp ../shared/data/cifar10-jpg.tar.gz .gpu/
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/wheels $WHEELS
    du -sh .gpu
    exit 0
fi
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/wheels/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
exec python3 eval/gpu_check.py "$@"
