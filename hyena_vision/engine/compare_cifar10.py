"""Compare Hyena-ISO, S4ND-ISO, ViT-ISO and the Hyena sequence model on CIFAR-10 with one budget and one seed.

    hyena-compare-cifar10 --budget demo                 # a few minutes on a CPU (the `make demo` job)
    hyena-compare-cifar10 --budget cpu                  # reduced budget: about 20 minutes on 2 busy cores
    hyena-compare-cifar10 --budget paper --out out/compare_cifar10_paper   # the paper's 100 epochs (GPU)
    hyena-compare-cifar10 --budget cpu --reuse          # re-tabulate finished runs without training

(``python eval/compare_cifar10.py ...`` in a source checkout.) Each model trains with the classification trainer
(``python -m hyena_vision.engine.classify``, its own process) from the shipped config ``cifar10/<model>`` plus the
budget's overrides (and any extra dot-list overrides given after the options), in OUT/<model>/. The script writes
OUT/results.md (a Markdown table: params, top-1, train time, img/s), OUT/results.json and OUT/accuracy.png (test
top-1 vs epoch), and prints the table. Data: --data, else ../shared/data/cifar10-jpg.tar.gz from the working
directory or beside the source checkout; nothing is downloaded (no image set ships inside the installed packages,
so without CIFAR-10 the script stops and says so).
The CIFAR-10 copy in ../shared/data is JPEG-compressed: accuracies can sit a little below the binary release's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .metrics import read_metrics

CIFAR10_TAR = Path("shared") / "data" / "cifar10-jpg.tar.gz"
MODELS = ("hyena_iso", "s4nd_iso", "vit_iso", "hyena_seq")

# Budgets: overrides applied on top of every model's config. The same seed and data for all models.
# Both CPU budgets: 1,000 training images, 2 epochs of batch 50, no warmup, full precision, data in the main process.
CPU_RUN = (
    "data.train_subset=1000 train.epochs=2 train.batch_size=50 sched.warmup_epochs=0 optim.lr=3e-3 train.amp=none "
    "data.num_workers=0 train.log_every=5"
).split()
BUDGETS = {
    "paper": {
        "about": "paper budget: full train set (50k), 100 epochs, batch 128, full test set (10k), bf16",
        "overrides": [],
    },
    "cpu": {
        "about": "reduced CPU budget: full-size models, 1,000 training images, 2 epochs, batch 50, 400 test images",
        "overrides": [*CPU_RUN, "data.val_subset=400"],
    },
    "demo": {
        "about": "demo budget: width-32 depth-2 variants of every model, 1,000 training images, 2 epochs, batch 50, "
        "300 test images",
        "overrides": ["model.kwargs.embed_dim=32", "model.kwargs.depth=2", *CPU_RUN, "data.val_subset=300"],
    },
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=tuple(BUDGETS), default="cpu")
    p.add_argument("--data", help="CIFAR-10 ImageFolder or a tar of one (default: ../shared/data/cifar10-jpg.tar.gz)")
    p.add_argument("--out", help="output folder (default: out/compare_cifar10_<budget> in the working directory)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="skip models whose run already has a summary.json")
    p.add_argument("overrides", nargs="*", help="extra dot-list overrides for every model, e.g. train.epochs=2")
    return p.parse_args(argv)


def default_data() -> Path:
    """../shared/data/cifar10-jpg.tar.gz from the working directory (the repository root), else beside the source
    checkout that holds this package."""
    candidates = [Path.cwd().parent / CIFAR10_TAR, Path(__file__).resolve().parents[3] / CIFAR10_TAR]
    return next((path for path in candidates if path.exists()), candidates[0])


def train(model: str, data: Path, out: Path, budget: str, seed: int, extra: list[str]) -> None:
    overrides = [f"data.root={data}", f"out_dir={out}", f"train.seed={seed}", *BUDGETS[budget]["overrides"], *extra]
    command = [sys.executable, "-m", "hyena_vision.engine.classify", "--config", f"cifar10/{model}", *overrides]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def table(results: dict[str, dict], about: str) -> str:
    lines = [
        f"CIFAR-10, {about}; seed and data identical for all models.",
        "",
        "| model | params | test top-1 (%) | train time (s) | train img/s | eval img/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in results.values():
        lines.append(
            f"| {s['model']} | {s['params']:,} | {s['val_top1']:.2f} | {s['train_seconds']:.0f} | "
            f"{s['train_img_per_s']:.1f} | {s['val_img_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, about: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        epochs, accuracy = zip(*points, strict=True)
        ax.plot(epochs, accuracy, marker="o", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("CIFAR-10: " + about.split(":")[0], fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    data = Path(args.data) if args.data else default_data()
    if not data.exists():
        sys.exit(
            f"CIFAR-10 not found at {data}: pass --data with an ImageFolder of CIFAR-10 (train/, test/) or a tar "
            "of one; no image set ships inside the installed packages, so the comparison needs it"
        )
    out = Path(args.out) if args.out else Path("out") / f"compare_cifar10_{args.budget}"
    about = BUDGETS[args.budget]["about"] + (f"; overrides {' '.join(args.overrides)}" if args.overrides else "")
    results, curves = {}, {}
    for model in args.models:
        run = out / model
        if not (args.reuse and (run / "summary.json").is_file()):
            shutil.rmtree(run, ignore_errors=True)  # a fresh run: this script's own output folder
            train(model, data.resolve(), run, args.budget, args.seed, args.overrides)
        results[model] = json.loads((run / "summary.json").read_text())
        curves[model] = [(r["epoch"], r["val_top1"]) for r in read_metrics(run / "metrics.jsonl") if "val_top1" in r]
    text = table(results, about)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"about": about, "results": results, "curves": curves}, indent=1))
    plot(curves, out / "accuracy.png", about)
    print("\n" + text + f"\nwritten: {out / 'results.md'}, {out / 'accuracy.png'}")
    return results


if __name__ == "__main__":
    main()
