"""The GPU check's CPU dry run: every step runs at toy size and lands in at most 8 files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path, shared_data):
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "eval/gpu_check.py", "--dry-run", "--out", str(out)], cwd=REPO, check=True, timeout=900
    )
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"summary.md", "results.json", "log.txt"} <= set(files)
    results = json.loads((out / "results.json").read_text())
    status = {row["step"]: row["status"] for row in results["steps"]}
    assert set(status) == {"tests", "fftconv", "fftconv-fp32", "mixers", "resolution", "cifar10"}
    assert all(s == "ok" or s.startswith("skipped") for s in status.values()), status
    summary = (out / "summary.md").read_text()
    assert "| hyena_iso_cifar" in summary and "| L |" in summary  # the CIFAR and mixer tables were folded in
    assert any(name.endswith(".png") for name in files)


def test_gpu_check_refuses_without_gpu_and_unknown_steps(tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    for args, message in ((["--out", str(tmp_path)], "no CUDA device"), (["--steps", "bogus"], "unknown ['bogus']")):
        proc = subprocess.run([sys.executable, "eval/gpu_check.py", *args], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr
