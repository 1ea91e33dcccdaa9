"""Throughput and peak memory of Hyena-ViT-S (1D and 2D filters) vs timm's ViT-S as the image grows.

    python eval/bench_resolution.py                                   # 224..1024 px, CUDA if present
    nice -n 19 python eval/bench_resolution.py --device cpu --iters 2 # the CPU setting
    python eval/bench_resolution.py --quick                           # toy widths, 32/64 px: a smoke test

Models, each built for the resolution (``img_size``), patch 16, 12 blocks of width 384: ``hyena_vit_s`` (1D
filters over the flattened token sequence), ``hyena_vit2d_s`` (gated 2D Hyena over the patch grid) and
``vit_small_patch16_224`` (timm's ViT-S, attention through ``F.scaled_dot_product_attention``). Tokens grow as
(px / 16)^2: 196 at 224 px, 4096 at 1024 px. Attention costs O(N^2) in the tokens, Hyena O(N log N).

Forward (``no_grad``, eval) and forward+backward (train, loss = mean of the logits) images/s: median over
``--iters`` timed runs after ``--warmup`` runs, with the slowest and fastest runs as the interval; the runs alternate
between the three models, so that load changes on a shared machine hit them alike. Peak memory of one
more run: on CUDA the peak allocated beyond the weights and inputs; on the CPU (Linux) the peak resident set size
beyond the resident size before the run, after returning freed heap pages (``malloc_trim``) and resetting the
kernel's high-water mark (``/proc/self/clear_refs``). Batch: ``--batch``, or by default as many images as keep the
tokens per batch at ``--tokens-per-batch`` (at least 1). Writes ``<out>/bench.md`` (table, crossover resolutions),
``bench.json`` and ``bench.png``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import time
from pathlib import Path

import matplotlib.ticker
import timm
import torch
from tqdm import tqdm

import hyena_vision.models  # noqa: F401  (registers the Hyena models with timm)
from hyena_vision.engine.bench import add_timing_args
from hyena_vision.engine.figures import save_figure, subplots

MODELS = {
    "hyena_vit_s": "Hyena-ViT-S 1D",
    "hyena_vit2d_s": "Hyena-ViT-S 2D",
    "vit_small_patch16_224": "ViT-S (SDPA)",
}
HYENAS = ("hyena_vit_s", "hyena_vit2d_s")
ATTENTION = "vit_small_patch16_224"
TOY = {"depth": 1, "embed_dim": 32}  # --quick: one block of width 32 (2 attention heads)
MODES = ("fwd", "fwd_bwd")


def build(name: str, img_size: int, toy: bool, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    kwargs = dict(img_size=img_size, **(TOY if toy else {}))
    if toy and name == ATTENTION:
        kwargs["num_heads"] = 2
    return timm.create_model(name, **kwargs).to(device=device, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_mib(key: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key)) / 1024  # KiB -> MiB


def peak_memory_mib(fn, device: torch.device) -> float | None:
    """Peak memory of one call of ``fn`` beyond what is held before it (None where it cannot be measured)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap pages back, so that reuse shows as growth
        base = _proc_status_mib("VmRSS:")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the peak resident set size (VmHWM) to the current one
    except OSError:
        return None
    fn()
    return _proc_status_mib("VmHWM:") - base


def _runs(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """The two measured callables of one model: forward (eval, no grad) and forward+backward (train)."""

    def forward():
        with torch.no_grad():
            model.eval()(x)

    def forward_backward():
        model.train()(x).float().mean().backward()
        model.zero_grad(set_to_none=True)

    return {"fwd": forward, "fwd_bwd": forward_backward}


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measure(img_size: int, batch: int, *, device, dtype, toy: bool, warmup: int, iters: int) -> dict:
    """Images/s and peak memory of every model at one resolution, forward then forward+backward.

    The timed runs alternate between the models (model 1, 2, 3, 1, 2, 3, ...), so that a change of load on a
    shared machine hits all of them alike; a model out of memory is marked "OOM" for that mode.
    """
    x = torch.randn(batch, 3, img_size, img_size, device=device, dtype=dtype)
    models = {}
    for name in MODELS:
        torch.manual_seed(0)
        models[name] = build(name, img_size, toy, device, dtype)
    result = {name: {"params": sum(p.numel() for p in m.parameters())} for name, m in models.items()}
    for mode in MODES:
        runs = {name: _runs(model, x)[mode] for name, model in models.items()}
        times = {name: [] for name in models}
        for step in range(warmup + iters):
            for name, fn in runs.items():
                if result[name].get(mode) == "OOM":
                    continue
                try:
                    elapsed = _timed(fn, device)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    result[name][mode] = "OOM"
                    continue
                if step >= warmup:
                    times[name].append(elapsed)
        for name, fn in runs.items():
            if result[name].get(mode) != "OOM":
                rates = sorted(batch / t for t in times[name])  # images/s
                mib = peak_memory_mib(fn, device)
                result[name][mode] = {"img_s": statistics.median(rates), "low": rates[0], "high": rates[-1], "mib": mib}
    return result


def default_batch(img_size: int, patch: int, tokens_per_batch: int) -> int:
    return max(1, tokens_per_batch // (img_size // patch) ** 2)


def crossover(rows: list[dict], hyena: str, mode: str) -> int | None:
    """Smallest resolution from which ``hyena`` stays faster than attention (attention OOM counts as slower)."""

    def faster(row):
        h, a = row[hyena][mode], row[ATTENTION][mode]
        return a == "OOM" or (h != "OOM" and h["img_s"] > a["img_s"])

    return next((row["img_size"] for i, row in enumerate(rows) if all(faster(r) for r in rows[i:])), None)


def _cell(result, key: str, digits: int) -> str:
    if result == "OOM":
        return "OOM"
    value = result[key]
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(rows: list[dict], header: str) -> str:
    columns = " | ".join(f"{MODELS[m]} {mode.replace('_', '+')} img/s" for mode in MODES for m in MODELS)
    memory = " | ".join(f"{MODELS[m]} fwd+bwd MiB" for m in MODELS)
    lines = [header, "", f"| px | tokens | batch | {columns} | {memory} |", "|---:" * (3 + 3 * len(MODELS)) + "|"]
    for row in rows:
        rates = " | ".join(
            f"{_cell(row[m][mode], 'img_s', 2)} ({_cell(row[m][mode], 'low', 2)}-{_cell(row[m][mode], 'high', 2)})"
            for mode in MODES
            for m in MODELS
        )
        mib = " | ".join(_cell(row[m]["fwd_bwd"], "mib", 0) for m in MODELS)
        lines.append(f"| {row['img_size']} | {row['tokens']} | {row['batch']} | {rates} | {mib} |")
    lines.append("")
    for hyena in HYENAS:
        found = ", ".join(f"{mode.replace('_', '+')} {crossover(rows, hyena, mode)}" for mode in MODES)
        lines.append(f"Crossover (px from which {MODELS[hyena]} stays faster than {MODELS[ATTENTION]}): {found}.")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    fig, (speed, memory) = subplots(1, 2, figsize=(10, 4))
    for i, (model, marker) in enumerate(zip(MODELS, "osd", strict=True)):
        for mode, style in zip(MODES, ("-", "--"), strict=True):
            points = [(r["img_size"], r[model][mode]) for r in rows if r[model][mode] != "OOM"]
            if not points:
                continue
            px, cells = zip(*points, strict=True)
            rate = [c["img_s"] for c in cells]
            error = [[c["img_s"] - c["low"] for c in cells], [c["high"] - c["img_s"] for c in cells]]
            label = f"{MODELS[model]} {mode.replace('_', '+')}"
            speed.errorbar(px, rate, yerr=error, fmt=style + marker, color=f"C{i}", capsize=3, label=label)
            if mode == "fwd_bwd" and all(c["mib"] is not None for c in cells):
                memory.plot(px, [c["mib"] for c in cells], style + marker, color=f"C{i}", label=MODELS[model])
    speed.set(yscale="log", ylabel="images/s (slowest-fastest run)", title=title)
    memory.set(yscale="log", ylabel="peak MiB (fwd+bwd)")
    sizes = [r["img_size"] for r in rows]
    for ax in (speed, memory):
        ax.set(xscale="log", xlabel="image size (px, patch 16)")
        ax.set_xticks(sizes, [str(px) for px in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 384, 512, 768, 1024])
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default: --tokens-per-batch)")
    parser.add_argument("--tokens-per-batch", type=int, default=None, help="default: 16384 on CUDA, 1 on the CPU")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="on CUDA; the CPU uses fp32")
    add_timing_args(parser, warmup=1, iters=3, device=True)
    parser.add_argument("--quick", action="store_true", help="toy widths, 32 and 64 px, one run")
    parser.add_argument("--out", default="runs/bench_resolution")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.warmup, args.iters = [32, 64], 0, 1
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" and args.dtype == "bf16" else torch.float32
    tokens_per_batch = args.tokens_per_batch or (16384 if device.type == "cuda" else 1)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"

    header = (
        f"Resolution benchmark on {where}, {str(dtype).split('.')[-1]}, {torch.get_num_threads()} intra-op threads, "
        f"patch 16, median images/s of {args.iters} runs (slowest-fastest), peak memory of fwd+bwd"
        + (" (toy widths)" if args.quick else "")
        + "."
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    options = dict(device=device, dtype=dtype, toy=args.quick, warmup=args.warmup, iters=args.iters)
    for size in tqdm(args.sizes, desc="bench_resolution", unit="size"):
        batch = args.batch or default_batch(size, 16, tokens_per_batch)
        row = {"img_size": size, "tokens": (size // 16) ** 2, "batch": batch, **measure(size, batch, **options)}
        for model in MODELS:
            fwd = row[model]["fwd"]
            tqdm.write(f"{size} px {MODELS[model]}: " + ("OOM" if fwd == "OOM" else f"{fwd['img_s']:.2f} img/s fwd"))
        rows.append(row)
        table = report(rows, header)  # rewritten after every resolution: a long run leaves what it measured
        (out / "bench.md").write_text(table)
        (out / "bench.json").write_text(json.dumps({"device": where, "args": vars(args), "rows": rows}, indent=1))
        plot(rows, out / "bench.png", where)
    print(table)
    return rows


if __name__ == "__main__":
    main()
