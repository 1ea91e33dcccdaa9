"""CPU speed of the torch path: the Hyena operator and the CIFAR models, forward+backward, fp32 and bf16.

    python eval/bench_cpu.py                                   # models + operator vs the original's steps
    python eval/bench_cpu.py --base /path/to/old/checkout      # ... + training steps against an older tree
    python eval/bench_cpu.py --quick --base .                  # toy sizes, seconds (the smoke test)

Three tables (Markdown, printed and written to ``<out>/bench_cpu.md``):

1. each CIFAR model's forward+backward time per batch and images/s, fp32 and bf16 autocast (the transforms stay
   float32 inside; bf16 pays only on CPUs with native bf16, ``cpu_supports_bf16``);
2. ``HyenaOperator`` (order 2, causal) against the original implementation's steps written out below (in_proj,
   depthwise Conv1d with padding 2 and a crop, channels-first split, per step: gate, rfft of size 2L, multiply,
   irfft, crop, skip term; the same weights), timed alternately in this process;
3. with ``--base``: a training step (forward, backward, AdamW) of ``hyena_iso_cifar`` and ``hyena_seq_cifar`` with
   this tree's code against the code at ``--base``, in alternating fresh processes (``PYTHONPATH`` set to each).

Times are medians of CPU time (``time.process_time``) with ``--threads`` threads: on a shared machine wall time
counts other people's work; CPU time does not (contended caches still add noise, hence the alternation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

import hyena_vision.models  # noqa: F401  (registers the models with timm)
from hyena_vision.engine.bench import add_timing_args
from hyena_vision.layers import HyenaOperator

MODELS = ("hyena_iso_cifar", "s4nd_iso_cifar", "vit_iso_cifar", "hyena_seq_cifar")
TRAIN_MODELS = ("hyena_iso_cifar", "hyena_seq_cifar")
SECTIONS = ("models", "operator", "base")
QUICK_MODEL_KWARGS = {"embed_dim": 8, "depth": 1}


class OriginalStepsOperator(nn.Module):
    """The original Hyena operator's forward (order 2, causal), step by step, on a ``HyenaOperator``'s weights."""

    def __init__(self, operator: HyenaOperator):
        super().__init__()
        if operator.order != 2 or not operator.causal:
            raise ValueError("OriginalStepsOperator follows the causal order-2 operator")
        self.op = operator

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        op, length = self.op, u.shape[1]
        z = op.in_proj(u).transpose(1, 2)  # (B, 3D, L)
        conv = op.short_filter
        z = F.conv1d(z, conv.weight, conv.bias, padding=conv.padding[0], groups=conv.groups)[..., :length]
        x0, x1, v = z.split(op.d_inner, dim=1)  # (B, D, L) each
        k = op.filter(length)  # (D, L)
        n = 2 * length
        v = v * x1
        k_f = torch.fft.rfft(k, n=n) / n
        y = torch.fft.irfft(torch.fft.rfft(v, n=n) * k_f, n=n, norm="forward")[..., :length]
        v = y + v * op.filter.bias[:, None]
        return op.out_proj((v * x0).transpose(1, 2))  # (B, L, D)


def cpu_ms(fn, warmup: int, iters: int) -> float:
    """Median CPU time of fn in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1e3)
    return statistics.median(times)


def model_step(name: str, batch: int, quick: bool, train: bool, amp: torch.dtype | None):
    """A closure running forward+backward (and an AdamW step when train) of a CIFAR model on random images."""
    torch.manual_seed(0)
    model = timm.create_model(name, **(QUICK_MODEL_KWARGS if quick else {}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3) if train else None
    images, labels = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)

    return step


def bench_models(args) -> list[dict]:
    rows = []
    for name in args.models:
        for precision, amp in (("fp32", None), ("bf16", torch.bfloat16)):
            ms = cpu_ms(model_step(name, args.batch, args.quick, False, amp), args.warmup, args.iters)
            rows.append({"model": name, "precision": precision, "ms": ms, "img_s": args.batch / ms * 1e3})
            print(f"  {name} {precision}: {ms:.1f} ms/batch", flush=True)
    return rows


def fwd_bwd(module: nn.Module, u: torch.Tensor, grad: torch.Tensor):
    def run():
        module(u).backward(grad)
        u.grad = None
        module.zero_grad(set_to_none=True)

    return run


def bench_operator(args) -> list[dict]:
    rows = []
    for length in args.lengths:
        torch.manual_seed(0)
        ours = HyenaOperator(args.d_model, length, order=2, causal=True, short_filter_order=3)
        original = OriginalStepsOperator(ours)
        u = torch.randn(args.op_batch, length, args.d_model, requires_grad=True)
        grad = torch.randn_like(u)
        with torch.no_grad():
            err = ((ours(u) - original(u)).norm() / original(u).norm()).item()
        if err > 1e-4:
            raise RuntimeError(f"operator and original-steps baseline disagree at L={length}: rel err {err:.2e}")

        times = {"ours": [], "original": []}
        for _ in range(args.rounds):  # alternate A/B: both sides see the same load
            for key, module in (("original", original), ("ours", ours)):
                times[key].append(cpu_ms(fwd_bwd(module, u, grad), args.warmup, args.iters))
        row = {"length": length, **{key: statistics.median(t) for key, t in times.items()}, "rel_err": err}
        row["speedup"] = row["original"] / row["ours"]
        rows.append(row)
        print(f"  operator L={length}: original {row['original']:.1f} ms, ours {row['ours']:.1f} ms", flush=True)
    return rows


def worker(args) -> None:
    """Child process: time a training step of one model with whatever code PYTHONPATH points at."""
    torch.set_num_threads(args.threads)
    step = model_step(args.worker, args.batch, args.quick, True, None)
    print(json.dumps({"ms": cpu_ms(step, args.warmup, args.iters)}))


def run_worker(tree: Path, name: str, args) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--batch", str(args.batch)]
    cmd += ["--threads", str(args.threads), "--warmup", str(args.warmup), "--iters", str(args.iters)]
    cmd += ["--quick"] if args.quick else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker for {name} with PYTHONPATH={tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["ms"]


def bench_against_base(args) -> list[dict]:
    here, base = Path(__file__).resolve().parents[1], Path(args.base).resolve()
    rows = []
    for name in TRAIN_MODELS:
        times = {"base": [], "this": []}
        for _ in range(args.rounds):  # alternating fresh processes
            for key, tree in (("base", base), ("this", here)):
                times[key].append(run_worker(tree, name, args))
        row = {"model": name, **{key: statistics.median(t) for key, t in times.items()}}
        row["speedup"] = row["base"] / row["this"]
        rows.append(row)
        print(f"  train step {name}: base {row['base']:.1f} ms, this {row['this']:.1f} ms", flush=True)
    return rows


def machine() -> str:
    from hyena_vision.ops import cpu_supports_bf16  # here: workers import this file with an older tree's package

    name = platform.processor() or "unknown CPU"
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"{name}, {os.cpu_count()} cores, native bf16: {cpu_supports_bf16()}, load average {load}"


def markdown(args, models: list[dict], operator: list[dict], base: list[dict]) -> str:
    lines = [
        f"Machine: {machine()}; torch {torch.__version__}; {args.threads} thread(s); "
        f"{time.strftime('%Y-%m-%d %H:%M')}; median CPU time over {args.iters} iterations x {args.rounds} rounds."
    ]
    if models:
        lines += ["", f"| model | precision | fwd+bwd ms / batch of {args.batch} | img/s |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['precision']} | {r['ms']:.1f} | {r['img_s']:.1f} |" for r in models]
    if operator:
        lines += [
            "",
            f"| operator, fp32 fwd+bwd, B={args.op_batch}, D={args.d_model} | L | original ms | ours ms | speedup |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| HyenaOperator order 2 | {r['length']} | {r['original']:.1f} | {r['ours']:.1f} | {r['speedup']:.2f}x |"
            for r in operator
        ]
    if base:
        lines += [
            "",
            f"| training step (fwd+bwd+AdamW), batch {args.batch}, fp32 | base ms | this ms | speedup |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r['model']} | {r['base']:.1f} | {r['this']:.1f} | {r['speedup']:.2f}x |" for r in base]
        lines += ["", f"Base: `{args.base}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch", type=int, default=32, help="images per batch")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096], help="operator sequence lengths")
    parser.add_argument("--op-batch", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    add_timing_args(parser, warmup=1, iters=3)
    parser.add_argument("--rounds", type=int, default=5, help="alternations of A and B")
    parser.add_argument("--base", default=None, help="checkout of older code to time training steps against")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke test in seconds")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="tables to make")
    parser.add_argument("--out", default="runs/bench_cpu")
    parser.add_argument("--worker", default=None, choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.quick:
        args.batch, args.lengths, args.op_batch, args.d_model = 2, [64], 2, 8
        args.warmup, args.iters, args.rounds = 1, 1, 1
    torch.set_num_threads(args.threads)
    models, operator, base = [], [], []
    if "models" in args.sections:
        print("models:", flush=True)
        models = bench_models(args)
    if "operator" in args.sections:
        print("operator vs the original's steps:", flush=True)
        operator = bench_operator(args)
    if args.base and "base" in args.sections:
        print(f"training steps vs {args.base}:", flush=True)
        base = bench_against_base(args)
    table = markdown(args, models, operator, base)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cpu.md").write_text(table)
    results = {"models": models, "operator": operator, "base": base}
    (out / "bench_cpu.json").write_text(json.dumps(results, indent=1))
    print(table)
    return results


if __name__ == "__main__":
    main()
