"""CIFAR-10 comparison reports: finished training runs and the shipped pretrained pair as table rows and curves.

A run folder (written by the image trainer) gives a row from ``summary.json``, ``config.yaml`` (batch size,
precision) and ``predictions.pt`` (the final evaluation, per test image); its curve comes from ``metrics.jsonl``.
The shipped pair (``hyena_vision/weights/<arch>.c10.safetensors``) is evaluated here, its training figures read
from the ``.json`` written beside the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..ops import cpu_supports_bf16
from .stats import RunResult, comparison_table, load_predictions, plot_curves

__all__ = [
    "PAIR",
    "PRECISIONS",
    "default_amp",
    "run_curve",
    "run_result",
    "shipped_results",
    "write_report",
]

PAIR = ("hyena_vit_cifar", "vit_iso_cifar")  # the shipped pair; the first is the reference of its table
PRECISIONS = {"bf16": "bf16", "fp16": "fp16", "none": "fp32"}  # train.amp -> what ran


def default_amp(device_type: str) -> str:
    """train.amp for a comparison: bf16 on CUDA and on CPUs with native bf16, else none (fp32)."""
    return "bf16" if device_type == "cuda" or cpu_supports_bf16() else "none"


def run_result(run_dir: str | os.PathLike, name: str | None = None) -> RunResult:
    """A finished run folder as a table row (``name`` default: the model name)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = OmegaConf.load(run_dir / "config.yaml")
    predictions = load_predictions(run_dir / "predictions.pt")
    return RunResult(
        name=name or summary["model"],
        params=summary["params"],
        precision=PRECISIONS[cfg.train.amp],
        images_seen=summary["step"] * cfg.train.batch_size,
        train_seconds=summary["train_seconds"],
        train_img_per_s=summary["train_img_per_s"],
        correct=predictions["predictions"] == predictions["targets"],
    )


def run_curve(run_dir: str | os.PathLike) -> list[tuple[float, int, float, int]]:
    """(train seconds, images seen, test top-1 %, test images) at every evaluation of a run."""
    run_dir = Path(run_dir)
    batch = OmegaConf.load(run_dir / "config.yaml").train.batch_size
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [
        (r["train_seconds"], r["step"] * batch, r["val_top1"], int(r["val_images"])) for r in rows if "val_top1" in r
    ]


def shipped_results(like: str | os.PathLike) -> list[RunResult]:
    """The shipped pair evaluated on the test images of the finished run ``like`` (its data source, seeded
    ``data.val_subset`` and precision), each with its own mean/std; models without shipped weights are left out."""
    import timm
    from timm.data import resolve_data_config

    import hyena_vision.models  # noqa: F401  (registers the models and their shipped tags)

    from ..data.cifar_memory import KIND
    from ..data.images import ImageSettings
    from ..data.loaders import eval_loader, eval_transform
    from ..models._shipped import weights_file
    from .evaluation import evaluate_classifier

    cfg = OmegaConf.load(Path(like) / "config.yaml")
    reference = load_predictions(Path(like) / "predictions.pt")["targets"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for arch in PAIR:
        path = weights_file(arch, "c10")
        if not path.is_file():
            continue
        # the file named explicitly: the same weights the registered tag "arch.c10" loads
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).to(device)
        image = ImageSettings.from_data_config(resolve_data_config(model=model))
        loader = eval_loader(
            KIND,
            root=cfg.data.root,
            split="test",
            shards=None,
            transform=eval_transform(KIND, image, crop_pct=1.0),
            batch_size=500,
            rank=0,
            world_size=1,
            subset=cfg.data.val_subset,
            seed=cfg.train.seed,
            cache_dir=cfg.data.cache_dir,
            download=cfg.data.download,
        )
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[cfg.train.amp]
        metrics = evaluate_classifier(
            model, loader, num_classes=10, device=device, amp_dtype=amp_dtype, return_predictions=True
        )
        if not torch.equal(metrics["targets"], reference):
            raise ValueError(f"{arch}.c10 was evaluated on other test images than the run in {str(like)!r}")
        trained = json.loads(path.with_suffix(".json").read_text())  # written when the weights were shipped
        results.append(
            RunResult(
                name=f"{arch}.c10",
                params=sum(p.numel() for p in model.parameters()),
                precision=f"{trained['precision']} (eval {PRECISIONS[cfg.train.amp]})",
                images_seen=trained["images_seen"],
                train_seconds=trained["train_seconds"],
                train_img_per_s=trained["train_img_per_s"],
                correct=metrics["predictions"] == metrics["targets"],
            )
        )
    return results


def write_report(
    out: str | os.PathLike,
    tables: list[tuple[str, list[RunResult], str]],
    curves: dict[str, list[tuple[float, int, float, int]]],
    title: str,
    footer: str = "",
) -> str:
    """``out/results.md`` (one comparison table per (heading, rows, reference name), then ``footer``) and
    ``out/accuracy.png`` (the curves); returns the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [title, ""]
    for heading, rows, reference in tables:
        parts += [f"### {heading}", "", comparison_table(rows, reference)]
    text = "\n".join(parts) + footer
    (out / "results.md").write_text(text)
    plot_curves(curves, out / "accuracy.png", title)
    return text
