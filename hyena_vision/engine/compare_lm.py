"""HyenaLM vs the GPT baseline under one config: same data, steps, batch, schedule; a Markdown table and a PNG.

    hyena-compare-lm --config lm/shakespeare_char_cpu --out runs/compare_char_cpu
    hyena-compare-lm --config lm/shakespeare_char --out runs/compare_char train.amp=bf16

(``python eval/compare_lm.py ...`` in a source checkout.) Each architecture trains with the language-model trainer
(``python -m hyena_vision.engine.lm``, one after the other, each in its own process) into ``<out>/<arch>``; an existing
finished run is reused (delete it to retrain). Writes ``<out>/comparison.md`` and ``<out>/val_loss.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .config import config_file
from .figures import save_figure, subplots
from .metrics import read_metrics


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML path or shipped name, e.g. lm/shakespeare_char_cpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--archs", nargs="+", default=["hyena", "gpt"], choices=["hyena", "gpt"])
    parser.add_argument("overrides", nargs="*", help="dot-list overrides for every run, e.g. train.steps=500")
    args = parser.parse_args(argv)
    out = Path(args.out)
    config = config_file(args.config)

    runs = {}
    for arch in args.archs:
        run_dir = out / arch
        if not (run_dir / "summary.json").is_file():
            command = [sys.executable, "-m", "hyena_vision.engine.lm", "--config", str(config.resolve())]
            command += [*args.overrides, f"model.arch={arch}", f"out_dir={run_dir.resolve()}"]
            if (run_dir / "last.pt").is_file():
                command.append("--resume")  # an interrupted run continues where it stopped
            print("$ " + " ".join(command), flush=True)
            subprocess.run(command, check=True)
        runs[arch] = (
            json.loads((run_dir / "summary.json").read_text()),
            read_metrics(run_dir / "eval" / "metrics.jsonl"),
        )

    lines = [
        f"Config `{args.config}` {' '.join(args.overrides)}".rstrip(),
        "",
        "| model | params | steps | val loss (fixed batches) | val loss (whole split) | val ppl | train time "
        "| tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arch, (summary, _) in runs.items():
        lines.append(
            f"| {arch} | {summary['params'] / 1e6:.3f}M | {summary['steps']} | {summary['val_loss']:.4f} | "
            f"{summary.get('full_val_loss', float('nan')):.4f} | {summary.get('full_val_ppl', float('nan')):.3f} | "
            f"{summary['train_seconds']:.0f} s | {summary['tokens_per_s']:.0f} |"
        )
    steps = sorted({row["step"] for _, rows in runs.values() for row in rows})
    lines += ["", "Validation loss (fixed batches) by step:", ""]
    lines += ["| step | " + " | ".join(runs) + " |", "|---:|" + "---:|" * len(runs)]
    for step in steps:
        cells = []
        for _, rows in runs.values():
            match = [r["val_loss"] for r in rows if r["step"] == step]
            cells.append(f"{match[-1]:.4f}" if match else "")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (out / "comparison.md").write_text(table)

    fig, ax = subplots(figsize=(6, 4))
    for arch, (summary, rows) in runs.items():
        label = f"{arch} ({summary['params'] / 1e6:.2f}M)"
        ax.plot([r["step"] for r in rows], [r["val_loss"] for r in rows], marker="o", ms=3, label=label)
    ax.set(xlabel="update", ylabel="validation loss (nats/token)", title=config.stem)
    ax.set_ylim(top=min(ax.get_ylim()[1], 3.0))
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out / "val_loss.png")
    print(table)
    return table


if __name__ == "__main__":
    main()
