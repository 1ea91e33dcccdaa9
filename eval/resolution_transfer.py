"""Resolution transfer on CIFAR-10: 2D-filter Hyena-ViT vs 1D Hyena-ViT vs ViT, trained at 32 px.

    python eval/resolution_transfer.py                               # full run: 50k images, 30 epochs (a GPU)
    nice -n 19 python eval/resolution_transfer.py --tiny             # a check that it runs (minutes on a CPU)
    python eval/resolution_transfer.py --models hyena_vit2d_cifar "hyena_vit2d_cifar:mixer=hyena1d" vit_iso_cifar
    python eval/resolution_transfer.py --from-runs out/cifar_pair --models hyena_vit2d_cifar hyena_vit_cifar \
        vit_iso_cifar                          # the 50-epoch runs of eval/train_cifar_pair.py, not retrained here
    python eval/resolution_transfer.py --from-runs out/cifar_pair --models hyena_vit2d_cifar \
        --include out/pair/results.json        # one more model beside the rows of an earlier run (same settings)

Every model (``name`` or ``name:key=value,...`` with timm keyword arguments) trains with one recipe at 32 px
(AdamW, cosine schedule with warmup, the filters' own lr hints, random crop + flip), then is evaluated on the test
images upsampled (bilinear) to each of ``--sizes``:

- ``as is``: the same weights on the larger grid. Hyena models run with ``dynamic_img_size``: their filters are
  extended at the same lag spacing (a 2D lag keeps its displacement; the 1D model's row length changes). ViT
  interpolates its position embedding (timm's dynamic size).
- ``stretch`` (Hyena models): the weights loaded into a model built for the size with
  ``filter_cfg=dict(resize_mode='stretch')``, so the filters cover the same image fraction as at 32 px.
- ``fine-tuned``: ``set_input_size`` then ``--finetune-epochs`` more epochs at the size (upsampled training
  images, lr ``--finetune-lr``).

Top-1 (%) with 95% Wilson intervals over the test images; writes ``<out>/results.md``, ``results.json`` and
``accuracy.png``. Data: ``--data``, else ``../shared/data/cifar10-jpg.tar.gz`` beside the checkout (JPEG-compressed
CIFAR-10: accuracies can sit a little below the binary release's).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T
from tqdm import tqdm

import hyena_vision.models  # noqa: F401  (registers the models with timm)
from hyena_vision.data.images import (
    ImageSettings,
    TrainAugment,
    build_eval_transform,
    build_train_transform,
    image_dataset,
    subset_indices,
)
from hyena_vision.engine.evaluation import evaluate_classifier
from hyena_vision.engine.figures import save_figure, subplots
from hyena_vision.engine.stats import wilson_interval
from hyena_vision.layers import param_groups
from hyena_vision.models._helpers import CIFAR10_MEAN, CIFAR10_STD

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
DEFAULT_MODELS = ["hyena_vit2d_cifar", "hyena_vit_cifar", "vit_iso_cifar"]
TINY_KWARGS = {"embed_dim": 32, "depth": 1}


def parse_model(spec: str) -> tuple[str, dict]:
    """'name' or 'name:key=value,...' (values parsed as JSON when they can be, else strings)."""
    name, _, rest = spec.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"model keyword arguments are key=value, got {item!r} in {spec!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    if name not in timm.list_models():
        raise ValueError(f"unknown model {name!r} in {spec!r}")
    return name, kwargs


def loader(args, split: str, size: int, train: bool) -> DataLoader:
    image = ImageSettings((3, size, size), CIFAR10_MEAN, CIFAR10_STD, interpolation="bilinear")
    if train:  # upsample first, then the CIFAR crop (padding scaled with the size) and flip
        crop = build_train_transform(image, TrainAugment("cifar", crop_padding=size // 8))
        transform = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), crop])
    else:
        transform = build_eval_transform(image, crop_pct=1.0)
    dataset = image_dataset("folder", args.data, split, transform)
    subset = args.train_subset if train else args.test_subset
    dataset = Subset(dataset, subset_indices(len(dataset), subset, args.seed))
    generator = torch.Generator().manual_seed(args.seed)
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=train, generator=generator, drop_last=train)


def train(model: torch.nn.Module, data: DataLoader, *, epochs: int, lr: float, args, desc: str) -> float:
    """AdamW + cosine with warmup (per step), cross-entropy with label smoothing; returns the seconds taken."""
    groups = param_groups(model, lr, args.weight_decay, no_weight_decay=model.no_weight_decay())
    optimizer = create_optimizer_v2(groups, opt="adamw", lr=lr, weight_decay=args.weight_decay)
    steps = epochs * len(data)
    warmup = min(args.warmup_steps, steps // 2)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=steps, warmup_t=warmup, warmup_lr_init=lr / 100, t_in_epochs=False
    )
    model.train()
    start, step = time.perf_counter(), 0
    with tqdm(total=steps, desc=desc, unit="step") as progress:
        for _ in range(epochs):
            for images, targets in data:
                loss = F.cross_entropy(model(images), targets, label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                step += 1
                scheduler.step_update(step)
                rate = step * len(images) / (time.perf_counter() - start)
                progress.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.1f}")
                progress.update()
    return time.perf_counter() - start


def evaluate(model: torch.nn.Module, data: DataLoader) -> dict:
    result = evaluate_classifier(model, data, num_classes=10, device=torch.device("cpu"))
    low, high = wilson_interval(round(result["top1"] / 100 * result["images"]), result["images"])
    return {"top1": result["top1"], "low": 100 * low, "high": 100 * high, "images": result["images"]}


def recipe_run(args, name: str) -> Path:
    """The folder of ``name``'s full run in ``--from-runs`` (eval/train_cifar_pair.py's layout)."""
    return Path(args.from_runs) / "full" / name


def run_model(spec: str, args, test_loaders: dict[int, DataLoader]) -> dict:
    name, kwargs = parse_model(spec)
    tiny = TINY_KWARGS if args.tiny and not args.from_runs else {}  # a run's weights fix the architecture
    kwargs = {**tiny, **kwargs, "num_classes": 10, "dynamic_img_size": True}
    hyena = name.startswith("hyena")
    torch.manual_seed(args.seed)
    model = timm.create_model(name, **kwargs)
    if args.from_runs:  # the 32 px weights of a finished trainer run (the CIFAR recipe's), not trained here
        run = recipe_run(args, name)
        model.load_state_dict(load_file(run / "model.safetensors"))
        seconds = json.loads((run / "summary.json").read_text())["train_seconds"]
    else:
        seconds = train(model, loader(args, "train", 32, True), epochs=args.epochs, lr=args.lr, args=args, desc=spec)
    row = {"model": spec, "params": sum(p.numel() for p in model.parameters()), "train_s": seconds}
    row["32"] = evaluate(model, test_loaders[32])
    for size in args.sizes:
        row[f"{size} as is"] = evaluate(model, test_loaders[size])
        if hyena:
            filter_cfg = {**kwargs.get("filter_cfg", {}), "resize_mode": "stretch"}
            stretched = timm.create_model(name, **{**kwargs, "img_size": size, "filter_cfg": filter_cfg})
            stretched.load_state_dict(model.state_dict())
            row[f"{size} stretch"] = evaluate(stretched, test_loaders[size])
        tuned = copy.deepcopy(model)
        tuned.set_input_size(img_size=size)
        data = loader(args, "train", size, True)
        train(tuned, data, epochs=args.finetune_epochs, lr=args.finetune_lr, args=args, desc=f"{spec} @{size}px")
        row[f"{size} fine-tuned"] = evaluate(tuned, test_loaders[size])
    return row


# what must match for rows of two runs to share one table (the models may differ)
SHARED_SETTINGS = ("data", "sizes", "epochs", "finetune_epochs", "batch_size", "lr", "finetune_lr", "weight_decay")
SHARED_SETTINGS += ("warmup_steps", "train_subset", "test_subset", "seed", "tiny", "from_runs")


def included_rows(path: str, args) -> list[dict]:
    """The rows of an earlier run's results.json, for one table with this run's; its settings must be this run's."""
    earlier = json.loads(Path(path).read_text())
    settings = earlier["args"]
    differ = [
        f"{k}={settings.get(k)!r} (here {getattr(args, k)!r})"
        for k in SHARED_SETTINGS
        if settings.get(k) != getattr(args, k)
    ]
    if differ:
        raise ValueError(f"--include {path}: its run had other settings: {', '.join(differ)}")
    return earlier["rows"]


def report(rows: list[dict], args) -> str:
    columns = ["32"] + [f"{s} {kind}" for s in args.sizes for kind in ("as is", "stretch", "fine-tuned")]
    lines = [
        "Resolution transfer on CIFAR-10 (JPEG copy): "
        + (
            f"weights of the runs in {args.from_runs}/full (trained at 32 px by the CIFAR recipe)"
            if args.from_runs
            else f"trained at 32 px for {args.epochs} epochs on {args.train_subset or 50000} images"
        )
        + f", evaluated on {rows[0]['32']['images']} test images upsampled; fine-tune {args.finetune_epochs} "
        f"epoch(s) on {args.train_subset or 50000} upsampled training images at lr {args.finetune_lr:g}. "
        f"Top-1 % [95% Wilson interval], seed {args.seed}.",
        "",
        "| model | params | "
        + " | ".join(c.replace(" ", " px ", 1) if " " in c else f"{c} px" for c in columns)
        + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for row in rows:
        cells = [
            f"{row[c]['top1']:.1f} [{row[c]['low']:.1f}, {row[c]['high']:.1f}]" if c in row else "-" for c in columns
        ]
        lines.append(f"| {row['model']} | {row['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], args, path: Path) -> None:
    fig, ax = subplots(figsize=(7, 4))
    for i, row in enumerate(rows):
        for kind, style in (("as is", "-o"), ("stretch", ":^"), ("fine-tuned", "--s")):
            keys = ["32"] + [f"{s} {kind}" for s in args.sizes]
            points = [(int(k.split()[0]), row[k]) for k in keys if k in row]
            if len(points) < 2:
                continue
            sizes, cells = zip(*points, strict=True)
            top1 = [c["top1"] for c in cells]
            error = [[c["top1"] - c["low"] for c in cells], [c["high"] - c["top1"] for c in cells]]
            ax.errorbar(sizes, top1, yerr=error, fmt=style, color=f"C{i}", capsize=3, label=f"{row['model']} {kind}")
    ax.set(xlabel="test image size (px, upsampled from 32)", ylabel="top-1 (%)", xticks=[32, *args.sizes])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 ImageFolder or a tar of one")
    p.add_argument("--sizes", type=int, nargs="+", default=[48, 64])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--finetune-lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--train-subset", type=int, default=0, help="training images (0: all)")
    p.add_argument("--test-subset", type=int, default=0, help="test images (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="width 32, depth 1, 200/100 images, 1 epoch, 48 px only")
    p.add_argument("--out", default="out/resolution_transfer")
    p.add_argument(
        "--from-runs",
        help="folder of eval/train_cifar_pair.py (its full/<model>/ runs): evaluate and fine-tune their 32 px "
        "weights instead of training here (models by name, no keyword arguments)",
    )
    p.add_argument(
        "--include",
        nargs="+",
        default=[],
        metavar="RESULTS_JSON",
        help="results.json of earlier runs with the same settings: their rows lead this run's table and plot",
    )
    if p.parse_known_args(argv)[0].tiny:  # defaults of the tiny run; explicit options still win
        p.set_defaults(train_subset=200, test_subset=100, epochs=1, finetune_epochs=1, batch_size=50, sizes=[48])
        p.set_defaults(warmup_steps=1)
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        raise FileNotFoundError(f"CIFAR-10 not found at {args.data}: pass --data (an ImageFolder or its tar)")
    for spec in args.models:
        name, kwargs = parse_model(spec)  # fail before training anything
        if args.from_runs and (kwargs or not (recipe_run(args, name) / "summary.json").is_file()):
            raise ValueError(
                f"--from-runs: {spec!r} needs a finished run {recipe_run(args, name)} and no keyword arguments"
            )
    earlier = [row for path in args.include for row in included_rows(path, args)]  # checked before any work
    test_loaders = {size: loader(args, "test", size, False) for size in [32, *args.sizes]}
    rows = earlier + [run_model(spec, args, test_loaders) for spec in args.models]
    table = report(rows, args)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    plot(rows, args, out / "accuracy.png")
    return rows


if __name__ == "__main__":
    main()
