"""Runtime and peak memory of the Hyena operator vs attention as the sequence grows (the paper's Figure 4.3).

    python eval/bench_mixers.py --device cuda                        # L = 1K..64K, batch 1, d 768, bf16
    python eval/bench_mixers.py --device cuda --long                 # ... and 128K
    python eval/bench_mixers.py --cpu-tiny                           # CPU setting: d 128, L = 256..16K

Both mixers include their projections: ``HyenaOperator(d, L, order=2)`` (in_proj, short conv, implicit filters,
FFT long convolutions, out_proj) vs ``CausalSelfAttention`` (qkv, ``F.scaled_dot_product_attention(is_causal=True)``,
which runs FlashAttention on recent GPUs for bf16/fp16, out_proj). Times are medians over ``--iters`` runs after
``--warmup`` runs (CUDA events on a GPU); memory is the peak allocated during one run beyond the inputs and
weights (CUDA only). Writes a Markdown table, the crossover length and the ratio at 64K to ``<out>/bench.md`` and
a plot to ``<out>/bench.png``. The paper's figure (A100, batch 1 assumed): Hyena 0.9 / 1.5 / 11.3 ms at
1K / 8K / 64K vs FlashAttention 0.29 / 2.1 / 129 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hyena_vision.engine.bench import add_timing_args
from hyena_vision.engine.figures import save_figure, subplots
from hyena_vision.engine.stats import write_results
from hyena_vision.layers import HyenaOperator
from hyena_vision.models.gpt import CausalSelfAttention

PAPER_MS = {1024: (0.9, 0.29), 8192: (1.5, 2.1), 65536: (11.3, 129.0)}  # L: (Hyena, FlashAttention) forward


def time_ms(fn, device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mib(fn, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def measure(mixer: torch.nn.Module, x: torch.Tensor, args, device: torch.device) -> dict:
    grad = torch.randn_like(x)

    def forward():
        with torch.no_grad():
            mixer(x)

    def forward_backward():
        mixer(x).backward(grad)
        x.grad = None
        mixer.zero_grad(set_to_none=True)

    result = {}
    for name, fn in (("fwd", forward), ("fwd_bwd", forward_backward)):
        try:
            result[f"{name}_ms"] = time_ms(fn, device, args.warmup, args.iters)
            result[f"{name}_mib"] = peak_mib(fn, device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            result[f"{name}_ms"] = result[f"{name}_mib"] = "OOM"
    return result


def fmt(value, digits=2) -> str:
    if value is None:
        return "n/a"
    return value if isinstance(value, str) else f"{value:.{digits}f}"


def ratio(a, b) -> str:
    return f"{b / a:.2f}x" if isinstance(a, float) and isinstance(b, float) else "-"


def crossover(rows: list[dict], key: str) -> int | None:
    """Smallest L from which Hyena stays faster than attention (OOM counts as slower)."""
    for i, row in enumerate(rows):
        rest = rows[i:]
        if all(r["attention"][key] == "OOM" or r["hyena"][key] < r["attention"][key] for r in rest):
            return row["length"]
    return None


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024 * 2**i for i in range(7)])
    parser.add_argument("--long", action="store_true", help="also L = 131072")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12, help="attention heads (head dim 64 at d 768)")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="on CUDA; CPU uses fp32")
    add_timing_args(parser, warmup=3, iters=10, device=True)
    parser.add_argument("--cpu-tiny", action="store_true", help="CPU setting: d 128, 2 heads, L 256..16K, 5 iters")
    parser.add_argument("--out", default="runs/bench_mixers")
    args = parser.parse_args(argv)
    if args.cpu_tiny:
        args.device, args.d_model, args.heads, args.iters, args.warmup = "cpu", 128, 2, 5, 2
        args.lengths = [256 * 2**i for i in range(7)]
    if args.long:
        args.lengths = sorted(set(args.lengths) | {131072})
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    dtype = dtype if device.type == "cuda" else torch.float32
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU only (no GPU)"

    rows = []
    for length in args.lengths:
        torch.manual_seed(0)
        x = torch.randn(args.batch, length, args.d_model, device=device, dtype=dtype, requires_grad=True)
        row = {"length": length}
        for name, mixer in (
            ("hyena", HyenaOperator(args.d_model, length, order=2, causal=True, device=device, dtype=dtype)),
            ("attention", CausalSelfAttention(args.d_model, args.heads, device=device, dtype=dtype)),
        ):
            row[name] = measure(mixer, x, args, device)
            del mixer
        rows.append(row)
        h, a = row["hyena"], row["attention"]
        print(
            f"L={length:>6}: fwd hyena {fmt(h['fwd_ms'])} ms attention {fmt(a['fwd_ms'])} ms | "
            f"fwd+bwd hyena {fmt(h['fwd_bwd_ms'])} ms attention {fmt(a['fwd_bwd_ms'])} ms",
            flush=True,
        )

    lines = [
        f"Mixer benchmark on {gpu}: batch {args.batch}, d_model {args.d_model}, {args.heads} heads, {dtype}, "
        f"median of {args.iters} runs. Speed-up = attention time / Hyena time.",
        "",
        "| L | Hyena fwd ms | attention fwd ms | speed-up | Hyena fwd+bwd ms | attention fwd+bwd ms | speed-up "
        "| Hyena fwd+bwd MiB | attention fwd+bwd MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        h, a = row["hyena"], row["attention"]
        lines.append(
            f"| {row['length']} | {fmt(h['fwd_ms'])} | {fmt(a['fwd_ms'])} | {ratio(h['fwd_ms'], a['fwd_ms'])} | "
            f"{fmt(h['fwd_bwd_ms'])} | {fmt(a['fwd_bwd_ms'])} | {ratio(h['fwd_bwd_ms'], a['fwd_bwd_ms'])} | "
            f"{fmt(h['fwd_bwd_mib'], 0)} | {fmt(a['fwd_bwd_mib'], 0)} |"
        )
    at_64k = next((r for r in rows if r["length"] == 65536), None)
    lines += [
        "",
        f"Crossover (Hyena faster from this L on): forward {crossover(rows, 'fwd_ms')}, "
        f"forward+backward {crossover(rows, 'fwd_bwd_ms')}.",
    ]
    if at_64k:
        speedup = ratio(at_64k["hyena"]["fwd_ms"], at_64k["attention"]["fwd_ms"])
        lines.append(f"At 64K, forward: attention / Hyena = {speedup} (paper: {129.0 / 11.3:.1f}x).")
    out = write_results(args.out, "bench", "\n".join(lines) + "\n", {"device": gpu, "args": vars(args), "rows": rows})

    fig, ax = subplots(figsize=(6, 4))
    for name, style in (("hyena", "-o"), ("attention", "-s")):
        for key, alpha in (("fwd_ms", 1.0), ("fwd_bwd_ms", 0.5)):
            points = [(r["length"], r[name][key]) for r in rows if isinstance(r[name][key], float)]
            if points:
                ax.plot(*zip(*points, strict=True), style, alpha=alpha, label=f"{name} {key[:-3].replace('_', '+')}")
    if device.type == "cuda":
        ax.plot(list(PAPER_MS), [v[0] for v in PAPER_MS.values()], "k:", label="paper Hyena fwd")
        ax.plot(list(PAPER_MS), [v[1] for v in PAPER_MS.values()], "k--", label="paper FlashAttention fwd")
    ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="ms", title=gpu)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, out / "bench.png")
    return rows


if __name__ == "__main__":
    main()
