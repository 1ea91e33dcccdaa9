"""Smoke run of the CPU benchmark at toy sizes: every table is written, and the baselines agree with our code."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_cpu_quick(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "eval/bench_cpu.py", "--quick", "--base", str(ROOT), "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "bench_cpu.json").read_text())
    models = {(r["model"], r["precision"]) for r in results["models"]}
    names = ("hyena_iso_cifar", "s4nd_iso_cifar", "vit_iso_cifar", "hyena_seq_cifar")
    assert models == {(name, precision) for name in names for precision in ("fp32", "bf16")}
    assert all(r["ms"] > 0 and r["img_s"] > 0 for r in results["models"])
    (operator,) = results["operator"]
    assert operator["length"] == 64 and operator["rel_err"] < 1e-4 and operator["speedup"] > 0
    assert [r["model"] for r in results["base"]] == ["hyena_iso_cifar", "hyena_seq_cifar"]
    table = (tmp_path / "bench_cpu.md").read_text()
    assert table.count("| hyena_iso_cifar |") == 3 and "x |" in table and "native bf16" in table
