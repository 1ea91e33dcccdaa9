"""The recipe of the shipped CIFAR-10 pair, ``hyena_vit_cifar`` and ``vit_iso_cifar``: one procedure for both.

1. Learning-rate sweep, the same for both models: each lr in ``SWEEP_LRS`` trains ``sweep_epochs`` epochs on
   training images 0..9,999 of a fixed permutation of the training set and is validated on images 10,000..14,999
   of it (never the test set); the lr with the best final validation top-1 wins (ties: the smaller lr).
2. Full run per model with its lr: the model's config (configs/cifar10/<name>.yaml: the same augmentation,
   schedule, batch and weight decay for both) for ``epochs`` epochs (at least 50 for the shipped weights) on all
   50,000 training images, evaluated on the full test set. Every run is resumable: running the recipe again
   continues an interrupted run from its last checkpoint and skips finished ones.
3. ``ship``: the final weights go into ``hyena_vision/weights/<name>.c10.safetensors`` (timm tag ``c10``) with a
   JSON of their training figures; the results table (top-1 with 95% CIs, McNemar against hyena_vit_cifar) and
   the plot go to the output folder.

Data: CIFAR-10 decoded in memory (``data.kind=memory_cifar10``), so the models, not JPEG decoding, set the pace.

The same recipe trains ``hyena_vit2d_cifar`` (2D Hyena filters over the patch grid) for the 2D-vs-1D comparison:
``--model hyena_vit2d_cifar``; its row then joins the report, and ``ship`` ships it beside the pair.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import compare_cifar10
from .cifar_report import PAIR, PRECISIONS, default_amp, run_curve, run_result, write_report

__all__ = ["SWEEP_LRS", "Recipe", "main", "run_recipe"]

TRAINER = "hyena_vision.engine.classify"  # the image trainer, run as ``python -m TRAINER`` (its own process)
CONFIGS = {  # shipped config names
    "hyena_vit_cifar": "cifar10/hyena_vit",
    "vit_iso_cifar": "cifar10/vit_iso",
    "hyena_vit2d_cifar": "cifar10/hyena_vit2d",  # the 2D-vs-1D comparison, trained with --model
}
SWEEP_LRS = (5e-4, 1e-3, 2e-3)
SWEEP_TRAIN, SWEEP_VAL = "train:0:10000", "train:10000:15000"
FULL_EVAL_EVERY = 5  # epochs between test-set evaluations of a full run (the curve's points; the last one always)


@dataclass
class Recipe:
    out: Path
    data: str | None  # CIFAR-10 JPEG tar / ImageFolder / torchvision folder; None: torchvision download
    epochs: int = 50
    sweep_epochs: int = 10
    lrs: tuple[float, ...] = SWEEP_LRS
    sweep_train: str = SWEEP_TRAIN
    sweep_val: str = SWEEP_VAL
    train_subset: int = 0  # > 0: a seeded subset of the 50,000 training images (toy runs only)
    val_subset: int = 0  # > 0: a seeded subset of the 10,000 test images (toy runs only)
    amp: str = "none"
    seed: int = 0
    extra: tuple[str, ...] = ()  # more dot-list overrides for every run (toy sizes)


def _train(model: str, run: Path, overrides: list[str], recipe: Recipe) -> None:
    """One trainer run in ``run``: skipped when finished, resumed when interrupted, else started."""
    if (run / "summary.json").is_file():
        print(f"{run}: finished, reused", flush=True)
        return
    resume = ["--resume"] if (run / "last.pt").is_file() else []
    if not resume and run.exists():
        shutil.rmtree(run)  # a run that never checkpointed: start it again
    data = [f"data.root={recipe.data}"] if recipe.data else ["data.root=null", "data.download=true"]
    command = [sys.executable, "-m", TRAINER, "--config", CONFIGS[model], *resume]
    command += ["data.kind=memory_cifar10", *data, "data.num_workers=0", f"train.amp={recipe.amp}"]
    command += [f"train.seed={recipe.seed}", f"out_dir={run}", *overrides, *recipe.extra]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def sweep(model: str, recipe: Recipe) -> tuple[float, dict[float, float]]:
    """(chosen lr, {lr: final validation top-1}) of the learning-rate sweep."""
    scores = {}
    for lr in recipe.lrs:
        run = recipe.out / "sweep" / f"{model}_lr{lr:g}"
        overrides = [f"optim.lr={lr}", f"train.epochs={recipe.sweep_epochs}", "sched.warmup_epochs=1"]
        overrides += [f"train.eval_every={recipe.sweep_epochs}"]  # the sweep reads the final validation only
        overrides += [f"data.train_split={recipe.sweep_train}", f"data.val_split={recipe.sweep_val}"]
        _train(model, run, overrides, recipe)
        scores[lr] = json.loads((run / "summary.json").read_text())["val_top1"]
    best = max(scores.values())
    return min(lr for lr, score in scores.items() if score == best), scores


def ship(model: str, run: Path) -> Path:
    """Copy a full run's weights into the package as tag c10, with its training figures beside them."""
    from ..models._shipped import weights_file

    target = weights_file(model, "c10")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "model.safetensors", target)
    r = run_result(run)
    figures = {name: getattr(r, name) for name in ("precision", "images_seen", "train_seconds", "train_img_per_s")}
    figures.update(test_top1=r.top1, test_images=r.correct.numel())
    target.with_suffix(".json").write_text(json.dumps(figures, indent=1) + "\n")
    return target


def train_model(model: str, recipe: Recipe) -> tuple[float, dict[float, float]]:
    """One model's part of the recipe: its sweep, then its full run; returns the sweep's (chosen lr, scores)."""
    lr, scores = sweep(model, recipe)
    overrides = [f"optim.lr={lr}", f"train.epochs={recipe.epochs}", "data.val_split=test"]
    overrides += [f"train.eval_every={min(FULL_EVAL_EVERY, recipe.epochs)}"]
    overrides += [f"data.train_subset={recipe.train_subset}", f"data.val_subset={recipe.val_subset}"]
    _train(model, recipe.out / "full" / model, overrides, recipe)
    return lr, scores


def report_models(out: Path) -> tuple[str, ...]:
    """The pair, then every other model of ``CONFIGS`` whose full run in ``out`` has finished."""
    return (*PAIR, *(m for m in CONFIGS if m not in PAIR and (out / "full" / m / "summary.json").is_file()))


def run_recipe(recipe: Recipe, *, ship_weights: bool = False) -> str:
    """Sweep, full runs, report (and shipping); returns the Markdown report."""
    models = report_models(recipe.out)
    chosen, sweeps = {}, {}
    for model in models:
        chosen[model], sweeps[model] = train_model(model, recipe)
    runs = {model: recipe.out / "full" / model for model in models}
    lines = [
        f"Learning-rate sweep ({recipe.sweep_epochs} epochs, train {recipe.sweep_train}, validate {recipe.sweep_val}"
        " of a fixed permutation of the training set), final validation top-1 %:",
        "",
        "| model | " + " | ".join(f"lr {lr:g}" for lr in recipe.lrs) + " | chosen |",
        "|---|" + "---:|" * len(recipe.lrs) + "---|",
    ]
    for model in models:
        scores = " | ".join(f"{sweeps[model][lr]:.2f}" for lr in recipe.lrs)
        lines.append(f"| {model} | {scores} | {chosen[model]:g} |")
    title = (
        f"CIFAR-10 (JPEG copy), {recipe.epochs} epochs, one recipe for every model, precision "
        f"{PRECISIONS[recipe.amp]}, seed {recipe.seed}"
        + (f", overrides {' '.join(recipe.extra)}" if recipe.extra else "")
    )
    rows = [run_result(runs[model]) for model in models]
    text = write_report(
        recipe.out,
        [("Full runs", rows, PAIR[0])],
        {model: run_curve(run) for model, run in runs.items()},
        title,
        footer="\n" + "\n".join(lines) + "\n",  # the sweep
    )
    (recipe.out / "sweep.json").write_text(json.dumps({"chosen": chosen, "scores": sweeps}, indent=1))
    if ship_weights:
        for model in models:
            print(f"shipped {ship(model, runs[model])}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_data = compare_cifar10.default_data()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help=f"CIFAR-10 (default: {default_data} if present, else torchvision's download)")
    p.add_argument("--out", default=str(Path("out") / "cifar_pair"), help="output folder (runs, report)")
    p.add_argument("--epochs", type=int, default=50, help="epochs of the full runs (at least 50 to ship)")
    p.add_argument("--sweep-epochs", type=int, default=10)
    p.add_argument("--lrs", type=float, nargs="+", default=list(SWEEP_LRS))
    p.add_argument("--sweep-train", default=SWEEP_TRAIN, help="training piece of the sweep (train:<start>:<stop>)")
    p.add_argument("--sweep-val", default=SWEEP_VAL, help="validation piece of the sweep")
    p.add_argument("--train-subset", type=int, default=0, help="toy runs: this many training images (0: all)")
    p.add_argument("--val-subset", type=int, default=0, help="toy runs: this many test images (0: all 10,000)")
    p.add_argument("--amp", choices=tuple(PRECISIONS), help="default: bf16 on CUDA or a CPU with native bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ship", action="store_true", help="copy the final weights into hyena_vision/weights")
    p.add_argument(
        "--model",
        choices=tuple(CONFIGS),
        help="train only this model's sweep and full run (one process per model, e.g. one per core); "
        "a run without --model then reuses the finished runs and writes the report",
    )
    p.add_argument("overrides", nargs="*", help="extra dot-list overrides for every run (toy sizes)")
    args = p.parse_args(argv)
    if args.data is None and default_data.is_file():
        args.data = str(default_data)
    if args.ship and args.model:
        p.error("--ship needs both models: run without --model once both are trained")
    if args.ship and (args.epochs < 50 or args.train_subset or args.val_subset or args.overrides):
        p.error("--ship needs the full recipe: --epochs >= 50, all training and test images, no overrides")
    return args


def main(argv: list[str] | None = None) -> str:
    import torch

    args = parse_args(argv)
    if args.data is None:
        print("CIFAR-10: no local copy found; torchvision's release will be downloaded into the cache folder")
    recipe = Recipe(
        out=Path(args.out),
        data=args.data,
        epochs=args.epochs,
        sweep_epochs=args.sweep_epochs,
        lrs=tuple(args.lrs),
        sweep_train=args.sweep_train,
        sweep_val=args.sweep_val,
        train_subset=args.train_subset,
        val_subset=args.val_subset,
        amp=args.amp or default_amp("cuda" if torch.cuda.is_available() else "cpu"),
        seed=args.seed,
        extra=tuple(args.overrides),
    )
    if args.model:
        lr, scores = train_model(args.model, recipe)
        text = f"{args.model}: sweep {scores}, chosen lr {lr:g}; full run in {recipe.out / 'full' / args.model}"
        print(text)
        return text
    text = run_recipe(recipe, ship_weights=args.ship)
    print("\n" + text)
    return text
