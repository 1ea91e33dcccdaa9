"""Evaluate an image classifier: top-1 / top-5 (torchmetrics), loss, parameters, FLOPs, throughput; JSON out.

    hyena-evaluate --checkpoint runs/cifar10/hyena_iso/last.pt --data ../shared/data/cifar10-jpg.tar.gz
    hyena-evaluate --model hyena_iso_cifar --pretrained-file runs/x/model.safetensors --data DIR --split test
    hyena-evaluate --model hyena_vit_cifar.c10 --pretrained --kind memory_cifar10 --data DIR --split test
    hyena-evaluate --model hyena_vit_s --kind shards --shards '/data/val-{000000..000049}.tar' --out val.json

(``python eval/evaluate.py ...`` in a source checkout.) A checkpoint (``last.pt`` of the classification trainer)
brings its model name, model kwargs and data settings; a model name uses the model's pretrained_cfg (input size,
mean/std, crop, interpolation) unless overridden.
FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matmuls and convolutions but not FFTs:
for Hyena models they are a lower bound (the output says so).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config

from .. import models  # noqa: F401  (registers our models with timm)
from ..data.images import ImageSettings
from ..data.loaders import KINDS, eval_loader, eval_transform, num_classes_of
from .classify import load_classifier
from .evaluation import evaluate_classifier
from .loop import AMP_DTYPES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a last.pt written by the classification trainer")
    src.add_argument("--model", help="a timm model name")
    p.add_argument("--pretrained", action="store_true", help="load --model's pretrained weights (e.g. a shipped tag)")
    p.add_argument("--pretrained-file", help="safetensors/pth weights for --model (timm pretrained_cfg_overlay)")
    p.add_argument("--model-kwargs", default="{}", help="JSON dict of extra timm.create_model kwargs for --model")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="default: the model's")
    p.add_argument("--crop-pct", type=float, help="evaluation centre-crop fraction (default: the model's)")
    p.add_argument("--num-classes", type=int, default=0, help="0: from the checkpoint / data / model default")
    p.add_argument(
        "--kind",
        choices=KINDS,
        default=None,
        help="data source kind (default: the checkpoint's, else folder)",
    )
    p.add_argument("--data", help="ImageFolder root (or tar of one) / torchvision CIFAR-10 root")
    p.add_argument("--split", default=None, help="split folder (default: the checkpoint's val split, else 'val')")
    p.add_argument("--shards", help="webdataset URLs / brace pattern (with --kind shards)")
    p.add_argument("--subset", type=int, default=0, help="evaluate a seeded random subset of this many images")
    p.add_argument("--cache-dir", help="where tars are extracted")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default="none")
    p.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    p.add_argument("--out", help="write the JSON here too")
    args = p.parse_args(argv)
    if args.checkpoint and (args.pretrained or args.pretrained_file):
        p.error("--pretrained / --pretrained-file go with --model: a --checkpoint brings its own weights")
    return args


def load_model(args: argparse.Namespace) -> tuple[torch.nn.Module, dict, dict]:
    """(model in eval mode, data settings, saved training config or {})."""
    if args.checkpoint:
        model, cfg = load_classifier(args.checkpoint, ema=args.ema)
        overrides = {k: cfg["data"][k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct")}
    else:
        kwargs = json.loads(args.model_kwargs)
        kwargs["pretrained"] = args.pretrained
        if args.num_classes:
            kwargs["num_classes"] = args.num_classes
        if args.pretrained_file:
            overlay = dict(file=args.pretrained_file)
            if args.num_classes:
                overlay["num_classes"] = args.num_classes
            kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
        model = timm.create_model(args.model, **kwargs)
        cfg, overrides = {}, {}
    overrides.update({k: v for k, v in (("input_size", args.input_size), ("crop_pct", args.crop_pct)) if v})
    settings = resolve_data_config(model=model)
    settings.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None})
    return model.eval(), settings, cfg


def count_flops(model: torch.nn.Module, input_size: tuple[int, ...], device: torch.device) -> int | None:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:  # not under no_grad: FlopCounterMode's module hooks need autograd
        model(torch.zeros(1, *input_size, device=device))
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    model, settings, cfg = load_model(args)
    model.to(device)
    data_cfg = cfg.get("data", {})
    kind = args.kind or data_cfg.get("kind", "folder")
    split = args.split or data_cfg.get("val_split", "val")
    transform = eval_transform(kind, ImageSettings.from_data_config(settings), settings["crop_pct"])
    loader = eval_loader(
        kind,
        root=args.data,
        split=split,
        shards=args.shards,
        transform=transform,
        batch_size=args.batch_size,
        rank=0,
        world_size=1,
        subset=args.subset,
        num_workers=args.num_workers,
        cache_dir=args.cache_dir,
    )
    num_classes = model.num_classes if hasattr(model, "num_classes") else args.num_classes
    data_classes = num_classes_of(kind, root=args.data, split=split, shards=args.shards, cache_dir=args.cache_dir)
    if data_classes != num_classes:
        raise ValueError(f"the model predicts {num_classes} classes but the data has {data_classes}")
    start = time.perf_counter()
    metrics = evaluate_classifier(
        model, loader, num_classes=num_classes, device=device, amp_dtype=AMP_DTYPES[args.amp], progress=True
    )
    flops = count_flops(model, tuple(settings["input_size"]), device)
    result = {
        "model": cfg["model"]["name"] if cfg else args.model,
        "checkpoint": args.checkpoint,
        "pretrained": args.pretrained,
        "pretrained_file": args.pretrained_file,
        "data": args.shards or args.data,
        "split": split,
        **metrics,
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_image": flops,
        "flops_note": "FlopCounterMode: matmuls and convolutions only; FFT convolutions are not counted",
        "input_size": list(settings["input_size"]),
        "seconds": time.perf_counter() - start,
        "device": str(device),
        "amp": args.amp,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return result


if __name__ == "__main__":
    main()
