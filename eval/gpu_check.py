"""One prepared call that measures everything on a GPU (one H100/H200), or a CPU dry run.

    bash eval/gpu_check.sh --prepare          # here, once: copies CIFAR-10 and the missing wheels into .gpu/
    bash eval/gpu_check.sh --steps tests fftconv fftconv-fp32 mixers   # on the GPU machine (device tool: carry .gpu)
    python eval/gpu_check.py --dry-run        # every step at toy size on the CPU (run by the test suite)

Steps, each a subprocess with its own time cap so one slow step cannot eat the others' time: the fftconv tests on CUDA
(8 processes: pytest-xdist is on the GPU image), bench_fftconv in bf16 (L = 1K..32K, gated, forward and
forward+backward, the tuning sweep and the 2D sizes of Hyena-ISO, every Triton row checked against float64 at full size,
each default Triton row's device time per kernel) and in fp32 (1K, 4K, 16K), bench_mixers (Hyena vs
scaled_dot_product_attention, d 768, L = 1K..64K), the resolution benchmark, and a short bf16 CIFAR-10 training of the
CIFAR models through compare_cifar10's `gpu` budget (img/s and top-1). The caps add up to about 13 minutes, more than
one 10-minute call: the first four steps (9 minutes) make one call, the last two another. Everything lands in --out
($OUT when set), at most 8 files: summary.md (every table and each step's status), results.json (each step's JSON),
log.txt (every step's output), and the steps' plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIFAR_TAR = REPO / ".gpu" / "cifar10-jpg.tar.gz"  # the copy that travels with the call
SHARED_CIFAR_TAR = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
MAX_FILES = 8


@dataclasses.dataclass
class Step:
    name: str
    args: list[str]  # run as `python <args...> --out <dir>` unless `out_flag` is None
    cap_s: int  # wall-clock cap on the GPU
    dry_args: list[str] | None = None  # replaces args in --dry-run
    out_flag: str | None = "--out"
    needs: str | None = None  # a file that must exist for the step to run (else it is reported as skipped)


def steps(cifar: Path) -> list[Step]:
    tests = ["tests/test_fftconv.py", "tests/test_dispatch.py", "tests/test_triton_fftconv.py", "tests/test_hyena.py"]
    pytest = ["-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider"]
    tiny_fftconv = ["--batch", "1", "--channels", "4", "--iters", "1", "--sizes-2d", "8", "--batch-2d", "2"]
    return [
        Step(
            "tests",  # in 8 processes (pytest-xdist, on the GPU image): the Triton compiles dominate, one core each
            [*pytest, "-n", "8", *tests],
            cap_s=130,
            dry_args=[*pytest, "tests/test_dispatch.py"],
            out_flag=None,
        ),
        Step(
            "fftconv",  # bf16: the lengths and the tuning sweep
            ["eval/bench_fftconv.py", "--dtypes", "bf16", "--lengths", *(str(256 << i) for i in range(2, 8))]
            + ["--sweep", "--kernel-times", "--compile-workers", "6", "--warmup", "3", "--iters", "15"],
            cap_s=260,
            dry_args=["eval/bench_fftconv.py", "--dtypes", "bf16", "--lengths", "64", *tiny_fftconv, "--sweep"],
        ),
        Step(
            "fftconv-fp32",
            ["eval/bench_fftconv.py", "--dtypes", "fp32", "--lengths", "1024", "4096", "16384", "--sizes-2d", "32"]
            + ["--kernel-times", "--compile-workers", "6", "--iters", "10"],
            cap_s=80,
            dry_args=["eval/bench_fftconv.py", "--dtypes", "fp32", "--lengths", "64", *tiny_fftconv],
        ),
        Step(
            "mixers",
            ["eval/bench_mixers.py", "--device", "cuda", "--iters", "5"],
            cap_s=50,
            dry_args=["eval/bench_mixers.py", "--device", "cpu", "--lengths", "64", "--d-model", "16", "--heads", "2"]
            + ["--iters", "1", "--warmup", "1"],
        ),
        Step(
            "resolution",
            ["eval/bench_resolution.py"],
            cap_s=50,
            dry_args=["eval/bench_resolution.py", "--quick"],
            needs="eval/bench_resolution.py",
        ),
        Step(
            "cifar10",
            ["eval/compare_cifar10.py", "--budget", "gpu", "--data", str(cifar)],
            cap_s=190,
            dry_args=["eval/compare_cifar10.py", "--budget", "demo", "--data", str(cifar)]
            + ["data.train_subset=20", "data.val_subset=20", "train.epochs=1", "train.batch_size=10"]
            + ["model.kwargs.embed_dim=8", "--models", "hyena_iso", "vit_iso"],
        ),
    ]


def run_step(step: Step, work: Path, log, dry_run: bool) -> dict:
    """Run one step under its cap; its output folder is ``work/<name>``. Returns its status row."""
    out = work / step.name
    out.mkdir(parents=True, exist_ok=True)
    if step.needs and not (REPO / step.needs).exists():
        return {"step": step.name, "status": f"skipped ({step.needs} does not exist yet)", "seconds": 0.0}
    args = (step.dry_args if dry_run and step.dry_args else step.args) + (
        [step.out_flag, str(out)] * bool(step.out_flag)
    )
    command = [sys.executable, *args]
    cap = 300 if dry_run else step.cap_s
    log.write(f"\n===== {step.name}: $ {' '.join(command)} (cap {cap} s)\n")
    log.flush()
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=cap, check=False)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = f"stopped at its {cap} s cap"
    seconds = time.perf_counter() - start
    log.write(f"===== {step.name}: {status} in {seconds:.0f} s\n")
    log.flush()
    print(f"{step.name}: {status} in {seconds:.0f} s", flush=True)
    return {"step": step.name, "status": status, "seconds": round(seconds, 1)}


def collect(work: Path, rows: list[dict], dest: Path, about: str) -> list[Path]:
    """Fold every step's Markdown into summary.md and JSON into results.json; copy plots while files remain."""
    summary = [f"# GPU check\n\n{about}\n", "| step | status | seconds |", "|---|---|---:|"]
    summary += [f"| {r['step']} | {r['status']} | {r['seconds']:.0f} |" for r in rows]
    results: dict = {"about": about, "steps": rows}
    plots = []
    for row in rows:
        folder = work / row["step"]
        for md in sorted(folder.rglob("*.md")):
            summary += ["", f"## {row['step']}: {md.relative_to(folder)}", "", md.read_text()]
        for js in sorted(folder.rglob("*.json")):
            results.setdefault(row["step"], {})[str(js.relative_to(folder))] = json.loads(js.read_text())
        plots += [(row["step"], png) for png in sorted(folder.rglob("*.png"))]
    (dest / "summary.md").write_text("\n".join(summary) + "\n")
    (dest / "results.json").write_text(json.dumps(results, indent=1))
    written = [dest / "summary.md", dest / "results.json", dest / "log.txt"]
    for step, png in plots[: MAX_FILES - len(written)]:
        target = dest / f"{step}-{png.stem}.png"
        shutil.copyfile(png, target)
        written.append(target)
    return written


def environment() -> str:
    import torch
    import triton

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (CPU dry run)"
    versions = f"torch {torch.__version__}, triton {triton.__version__}"
    return f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {gpu}; {versions}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step at toy size on the CPU")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "out/gpu_check"))
    parser.add_argument("--steps", nargs="+", help="only these steps (default: all)")
    args = parser.parse_args(argv)
    cifar = CIFAR_TAR if CIFAR_TAR.is_file() else SHARED_CIFAR_TAR
    chosen = [s for s in steps(cifar) if not args.steps or s.name in args.steps]
    if unknown := set(args.steps or ()) - {s.name for s in steps(cifar)}:
        parser.error(f"--steps: unknown {sorted(unknown)}; choose from {[s.name for s in steps(cifar)]}")
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run with --dry-run on a CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    about = environment()
    print(f"GPU check: {about}; output in {args.out}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, open(args.out / "log.txt", "w") as log:
        rows = [run_step(step, Path(tmp), log, args.dry_run) for step in chosen]
        log.flush()
        written = collect(Path(tmp), rows, args.out, about)
    print((args.out / "summary.md").read_text())
    print("written: " + ", ".join(str(p) for p in written))
    return rows


if __name__ == "__main__":
    main()
