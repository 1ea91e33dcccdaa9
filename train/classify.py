"""Train an image classifier (any timm model, ours included) on one process or many (torchrun, DDP).

    python -m train.classify --config configs/cifar10/hyena_iso.yaml train.epochs=10 optim.lr=2e-3
    torchrun --nproc_per_node=8 -m train.classify --config configs/imagenet/hyena_vit_s.yaml data.root=/data/imagenet
    python -m train.classify --config ... out_dir=runs/x --resume          # continue runs/x/last.pt

``train.batch_size`` is the GLOBAL batch (images per optimizer update over all processes and accumulation steps);
the schedule counts epochs and steps per update. The run folder gets config.yaml, metrics.{jsonl,csv}, tb/,
last.pt (atomic: model, optimizer, scheduler, scaler, EMA, RNG, position), summary.json, model.safetensors and
predictions.pt (the final evaluation's predicted and true class per test image, single process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from omegaconf import MISSING, OmegaConf
from timm.data import Mixup, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from tqdm import tqdm

import hyena_vision.models  # noqa: F401  (registers our models with timm, also under a namespace-package install)
from hyena_vision.data import cifar_memory
from hyena_vision.data.images import build_eval_transform, build_train_transform
from hyena_vision.data.loaders import eval_loader, num_classes_of, train_stream
from hyena_vision.engine.stats import pop_predictions, save_predictions
from hyena_vision.layers import param_groups
from hyena_vision.training import (
    MetricsLogger,
    cleanup_distributed,
    evaluate_classifier,
    export_safetensors,
    init_distributed,
    load_checkpoint,
    load_config,
    resume_path,
    rng_state,
    save_checkpoint,
    save_config,
    seed_everything,
    set_rng_state,
    unwrap_model,
)

# ----------------------------------------------------------------------------------------------------------------
# Config schema (unknown keys anywhere are errors)


@dataclass
class ModelConfig:
    name: str = MISSING  # a timm model name
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for timm.create_model
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0


@dataclass
class DataConfig:
    kind: str = "folder"  # folder (ImageFolder dir or tar of one) | shards | torchvision_cifar10 | memory_cifar10
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    train_shards: str | None = None  # webdataset URLs / brace pattern
    val_shards: str | None = None
    train_samples: int = 0  # shards: samples per epoch (0: from meta.json beside the shards)
    num_classes: int = 0  # 0: from the data
    train_subset: int = 0  # > 0: a seeded random subset of the training set
    val_subset: int = 0
    num_workers: int = 8
    pin_memory: bool = True
    shuffle_buffer: int = 5000
    cache_dir: str | None = None  # where tars are extracted (default ~/.cache/hyena_vision)
    download: bool = False  # torchvision_cifar10 only
    input_size: list[int] | None = None  # (C, H, W); default: the model's pretrained_cfg
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None  # evaluation crop
    eval_batch_size: int = 0  # per process; 0: the training micro-batch


@dataclass
class AugConfig:
    policy: str = "timm"  # timm (RandomResizedCrop, RandAugment, ...) | cifar (pad-4 crop + flip) | none
    rand_augment: str | None = None  # e.g. rand-m9-mstd0.5
    hflip: float = 0.5
    color_jitter: float = 0.0
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_padding: int = 4
    re_prob: float = 0.0  # random erasing
    mixup: float = 0.0  # alpha
    cutmix: float = 0.0  # alpha
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0


@dataclass
class OptimConfig:
    opt: str = "adamw"  # any timm optimizer name
    lr: float = 1e-3  # for the global batch; filter parameters keep their own lr hints
    weight_decay: float = 0.05
    betas: list[float] | None = field(default_factory=lambda: [0.9, 0.999])  # null for optimizers without betas
    eps: float | None = 1e-8
    momentum: float = 0.9  # SGD-type optimizers only


@dataclass
class SchedConfig:
    name: str = "cosine"  # any timm scheduler name
    warmup_epochs: int = 0  # linear warmup from warmup_lr; the decay then spans the remaining epochs
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128  # global: per process * accum_steps * world size
    accum_steps: int = 1
    clip_grad: float = 0.0  # max global grad norm; 0: off
    amp: str = "bf16"  # bf16 | fp16 | none
    channels_last: bool = False
    compile: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    seed: int = 0
    max_steps: int = 0  # stop after this many updates in total (with a checkpoint); 0: run every epoch
    eval_every: int = 1  # epochs
    ckpt_every: int = 0  # also checkpoint every N updates; 0: at the end of each epoch only
    log_every: int = 50  # updates


@dataclass
class ClassifyConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs/classify"


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


# ----------------------------------------------------------------------------------------------------------------
# Building blocks


def create_model(cfg: ClassifyConfig, num_classes: int) -> torch.nn.Module:
    """``timm.create_model``; a misspelt ``model.kwargs`` key raises TypeError from the model's constructor."""
    return timm.create_model(
        cfg.model.name,
        num_classes=num_classes,
        drop_rate=cfg.model.drop_rate,
        drop_path_rate=cfg.model.drop_path_rate,
        **OmegaConf.to_container(cfg.model.kwargs),
    )


def data_settings(cfg: ClassifyConfig, model: torch.nn.Module) -> dict:
    """input_size / mean / std / interpolation / crop_pct: the model's pretrained_cfg unless the config says."""
    settings = resolve_data_config(model=model)
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct"):
        value = cfg.data[key]
        if value is not None:
            settings[key] = tuple(value) if OmegaConf.is_list(value) else value
    return settings


def create_optimizer_and_scheduler(cfg: ClassifyConfig, model: torch.nn.Module, updates_per_epoch: int):
    """AdamW (or any timm optimizer) over parameter groups that keep each filter's lr / weight-decay hints, and a
    timm scheduler counted in epochs but stepped every update (``step_update``)."""
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups = param_groups(model, cfg.optim.lr, cfg.optim.weight_decay, no_weight_decay=no_decay)
    extra = {}
    if cfg.optim.betas is not None:
        extra["betas"] = tuple(cfg.optim.betas)
    if cfg.optim.eps is not None:
        extra["eps"] = cfg.optim.eps
    optimizer = create_optimizer_v2(
        groups,
        opt=cfg.optim.opt,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        momentum=cfg.optim.momentum,
        **extra,
    )
    if not 0 <= cfg.sched.warmup_epochs < cfg.train.epochs:
        raise ValueError(f"sched.warmup_epochs must be in [0, train.epochs), got {cfg.sched.warmup_epochs}")
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.sched.name,
        num_epochs=cfg.train.epochs - cfg.sched.warmup_epochs,  # the decay after the warmup prefix
        warmup_epochs=cfg.sched.warmup_epochs,
        warmup_prefix=True,
        warmup_lr=cfg.sched.warmup_lr,
        min_lr=cfg.sched.min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    return optimizer, scheduler


def create_loss(cfg: ClassifyConfig, num_classes: int):
    """(mixup or None, training loss): soft targets with Mixup/CutMix, else (label-smoothed) cross-entropy."""
    aug = cfg.aug
    if aug.mixup > 0 or aug.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=aug.mixup,
            cutmix_alpha=aug.cutmix,
            prob=aug.mixup_prob,
            switch_prob=aug.mixup_switch_prob,
            label_smoothing=aug.label_smoothing,
            num_classes=num_classes,
        )
        return mixup, SoftTargetCrossEntropy()
    if aug.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=aug.label_smoothing)
    return None, torch.nn.CrossEntropyLoss()


def data_kwargs(cfg: ClassifyConfig) -> dict:
    d = cfg.data
    return dict(root=d.root, cache_dir=d.cache_dir, download=d.download)


def data_functions(kind: str) -> tuple:
    """The transform builders and readers for ``data.kind``: memory_cifar10 has its own, with the same arguments
    (decoded CIFAR-10 kept in memory, augmented in whole batches)."""
    if kind == cifar_memory.KIND:
        m = cifar_memory
        return m.build_train_transform, m.build_eval_transform, m.train_stream, m.eval_loader, m.num_classes_of
    return build_train_transform, build_eval_transform, train_stream, eval_loader, num_classes_of


# ----------------------------------------------------------------------------------------------------------------
# Training


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (see configs/); omitted: schema defaults + overrides")
    parser.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    parser.add_argument("--resume-from", metavar="PATH", help="continue from this checkpoint (implies --resume)")
    parser.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. optim.lr=1e-3 train.epochs=10")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(ClassifyConfig, args.config, args.overrides)
    if cfg.train.amp not in AMP_DTYPES:
        raise ValueError(f"train.amp must be one of {list(AMP_DTYPES)}, got {cfg.train.amp!r}")
    if cfg.train.accum_steps < 1:
        raise ValueError(f"train.accum_steps must be >= 1, got {cfg.train.accum_steps}")
    dist_info = init_distributed()
    device, is_main = dist_info.device, dist_info.is_main
    out_dir = Path(cfg.out_dir)
    checkpoint_path = resume_path(out_dir, resume=args.resume, resume_from=args.resume_from)
    if is_main:
        save_config(cfg, out_dir)

    # model: the same initial weights on every rank (DDP broadcasts them too)
    seed_everything(cfg.train.seed)
    d = cfg.data
    build_train_transform, build_eval_transform, train_stream, eval_loader, num_classes_of = data_functions(d.kind)
    num_classes = d.num_classes or num_classes_of(
        d.kind, split=d.train_split, shards=d.train_shards, root=d.root, cache_dir=d.cache_dir
    )
    model = create_model(cfg, num_classes).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    settings = data_settings(cfg, model)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)

    # data: per-rank augmentation randomness from here on
    seed_everything(cfg.train.seed + dist_info.rank)
    aug = cfg.aug
    train_tf = build_train_transform(
        aug.policy,
        input_size=settings["input_size"],
        mean=settings["mean"],
        std=settings["std"],
        interpolation=settings["interpolation"],
        hflip=aug.hflip,
        color_jitter=aug.color_jitter,
        rand_augment=aug.rand_augment,
        re_prob=aug.re_prob,
        scale=aug.scale,
        crop_padding=aug.crop_padding,
    )
    eval_tf = build_eval_transform(
        input_size=settings["input_size"],
        mean=settings["mean"],
        std=settings["std"],
        interpolation=settings["interpolation"],
        crop_pct=settings["crop_pct"],
    )
    stream = train_stream(
        d.kind,
        split=d.train_split,
        shards=d.train_shards,
        train_samples=d.train_samples,
        transform=train_tf,
        global_batch=cfg.train.batch_size,
        accum_steps=cfg.train.accum_steps,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        seed=cfg.train.seed,
        subset=d.train_subset,
        num_workers=d.num_workers,
        pin_memory=d.pin_memory and device.type == "cuda",
        shuffle_buffer=d.shuffle_buffer,
        **data_kwargs(cfg),
    )
    val_loader = eval_loader(
        d.kind,
        split=d.val_split,
        shards=d.val_shards,
        transform=eval_tf,
        batch_size=d.eval_batch_size or stream.micro_batch,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        subset=d.val_subset,
        seed=cfg.train.seed,
        num_workers=d.num_workers,
        pin_memory=d.pin_memory and device.type == "cuda",
        **data_kwargs(cfg),
    )
    upe = stream.updates_per_epoch

    optimizer, scheduler = create_optimizer_and_scheduler(cfg, model, upe)
    mixup, criterion = create_loss(cfg, num_classes)
    amp_dtype = AMP_DTYPES[cfg.train.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    ema = ModelEmaV3(model, decay=cfg.train.ema_decay) if cfg.train.ema else None

    # resume: everything that decides the next update, including every RNG
    epoch, start_update, step, train_seconds = 0, 0, 0, 0.0
    ckpt_path = out_dir / "last.pt"
    if checkpoint_path is not None:
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        epoch, start_update, step, train_seconds = state["epoch"], state["update"], state["step"], state["seconds"]
        if len(state["rng"]) == dist_info.world_size:
            set_rng_state(state["rng"][dist_info.rank])
        else:  # a different number of processes: the data order is kept, the augmentation randomness cannot be
            print(f"resuming {len(state['rng'])}-process state on {dist_info.world_size} processes: RNG re-seeded")
            seed_everything(cfg.train.seed + dist_info.rank + 7919 * step)
        scheduler.step_update(num_updates=step)

    def save(epoch: int, update: int) -> None:
        rng = [None] * dist_info.world_size
        if dist_info.distributed:
            torch.distributed.all_gather_object(rng, rng_state())
        else:
            rng = [rng_state()]
        if is_main:
            save_checkpoint(
                ckpt_path,
                {
                    "model": unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "rng": rng,
                    "epoch": epoch,
                    "update": update,
                    "step": step,
                    "seconds": train_seconds,
                    "num_classes": num_classes,
                    "world_size": dist_info.world_size,
                    "config": OmegaConf.to_container(cfg),
                },
            )

    train_model = model
    if cfg.train.compile:
        train_model = torch.compile(train_model)
    if dist_info.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    logger = MetricsLogger(out_dir, enabled=is_main)
    if is_main:
        print(
            f"{cfg.model.name}: {n_params / 1e6:.3f}M params, {num_classes} classes, {upe} updates/epoch of "
            f"{cfg.train.batch_size} images, world size {dist_info.world_size}, device {device}"
        )

    stop = False
    summary: dict = {}
    while epoch < cfg.train.epochs and not stop:
        train_model.train()
        batches = stream.epoch_batches(epoch, start_update)
        bar = tqdm(total=upe, initial=start_update, desc=f"epoch {epoch}", unit="upd", disable=not is_main)
        window_start, window_updates = time.perf_counter(), 0
        for update in range(start_update, upe):
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            for micro in range(cfg.train.accum_steps):
                images, targets = next(batches)
                images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                if cfg.train.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                if mixup is not None:
                    images, targets = mixup(images, targets)  # targets: (B, num_classes) soft labels
                last_micro = micro == cfg.train.accum_steps - 1
                no_sync = train_model.no_sync if dist_info.distributed and not last_micro else contextlib.nullcontext
                with (
                    no_sync(),
                    torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None),
                ):
                    loss = criterion(train_model(images).float(), targets) / cfg.train.accum_steps
                scaler.scale(loss).backward()
                loss_sum += loss.detach()
            if cfg.train.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            scheduler.step_update(num_updates=step)
            if ema is not None:
                ema.update(model, step=step)
            train_seconds += time.perf_counter() - t0
            window_updates += 1
            bar.update(1)

            if step % cfg.train.log_every == 0 or update == upe - 1:
                if dist_info.distributed:
                    torch.distributed.all_reduce(loss_sum, op=torch.distributed.ReduceOp.AVG)
                elapsed = time.perf_counter() - window_start
                img_per_s = window_updates * cfg.train.batch_size / elapsed
                lr = optimizer.param_groups[0]["lr"]
                if not math.isfinite(loss_sum.item()):
                    raise FloatingPointError(f"loss is {loss_sum.item()} at step {step}")
                logger.log(
                    step, epoch=epoch + (update + 1) / upe, train_loss=loss_sum.item(), lr=lr, img_per_s=img_per_s
                )
                bar.set_postfix(loss=f"{loss_sum.item():.4f}", lr=f"{lr:.2e}", img_s=f"{img_per_s:.0f}")
                window_start, window_updates = time.perf_counter(), 0
            if cfg.train.ckpt_every and step % cfg.train.ckpt_every == 0:
                save(epoch, update + 1)
            if cfg.train.max_steps and step >= cfg.train.max_steps:
                save(epoch, update + 1)
                stop = True
                break
        bar.close()
        if stop:
            break

        epoch, start_update = epoch + 1, 0
        if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs:
            final = epoch == cfg.train.epochs and not dist_info.distributed  # per-image predictions for paired tests
            metrics = evaluate_classifier(
                model,
                val_loader,
                num_classes=num_classes,
                device=device,
                amp_dtype=amp_dtype,
                channels_last=cfg.train.channels_last,
                return_predictions=final,
            )
            predictions = pop_predictions(metrics)
            row = {f"val_{k}": v for k, v in metrics.items()}
            if ema is not None:
                ema_metrics = evaluate_classifier(
                    ema.module,
                    val_loader,
                    num_classes=num_classes,
                    device=device,
                    amp_dtype=amp_dtype,
                    channels_last=cfg.train.channels_last,
                    return_predictions=final,
                )
                predictions = pop_predictions(ema_metrics)  # the exported model's
                row.update({f"val_ema_{k}": v for k, v in ema_metrics.items()})
            if final:
                save_predictions(out_dir / "predictions.pt", predictions)
            logger.log(step, epoch=epoch, train_seconds=train_seconds, **row)
            if is_main:
                print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
            summary = {"epoch": epoch, "step": step, **row}
        save(epoch, 0)

    if not stop and is_main:
        final = ema.module if ema is not None else model
        export_safetensors(final, out_dir / "model.safetensors")
        summary.update(
            model=cfg.model.name,
            params=n_params,
            num_classes=num_classes,
            train_seconds=train_seconds,
            train_img_per_s=step * cfg.train.batch_size / max(train_seconds, 1e-9),
        )
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    logger.close()
    cleanup_distributed()
    return summary


if __name__ == "__main__":
    main()
