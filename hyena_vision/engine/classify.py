"""Train an image classifier (any timm model, ours included) on one process or many (torchrun, DDP).

    python -m train.classify --config cifar10/hyena_iso data.root=../shared/data/cifar10-jpg.tar.gz train.epochs=10
    torchrun --nproc_per_node=8 -m train.classify --config imagenet/hyena_vit_s data.root=/data/imagenet
    python -m train.classify --config ... out_dir=runs/x --resume          # continue runs/x/last.pt
    hyena-train --config cifar10/vit_iso ...                                # the installed command

``--config`` is a YAML path or a shipped name (``hyena_vision.engine.config.shipped_configs()``).
``train.batch_size`` is the GLOBAL batch (images per optimizer update over all processes and accumulation steps);
the schedule counts epochs and steps per update. The run folder gets config.yaml, metrics.{jsonl,csv}, tb/,
last.pt (atomic: model, optimizer, scheduler, scaler, EMA, RNG, position), summary.json, model.safetensors and
predictions.pt (the final evaluation's predicted and true class per test image, single process).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, fields
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

from .. import models  # noqa: F401  (registers our models with timm)
from ..data.images import ImageSettings, TrainAugment
from ..data.loaders import TrainStream, eval_loader, eval_transform, num_classes_of, train_stream, train_transform
from ..layers import param_groups
from .checkpoint import export_safetensors, load_checkpoint, restore_run, resume_path, save_run, seed_everything
from .config import load_config, parse_args, save_config
from .distributed import DistInfo, cleanup_distributed, init_distributed, wrap_model
from .evaluation import evaluate_classifier
from .loop import amp_dtype, grad_scaler, train_update
from .metrics import LogWindow, MetricsLogger
from .stats import pop_predictions, save_predictions

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


def data_settings(cfg: ClassifyConfig, model: torch.nn.Module) -> tuple[ImageSettings, float]:
    """(image settings, evaluation crop_pct): the model's pretrained_cfg where ``cfg.data`` leaves them unset."""
    settings = resolve_data_config(model=model)
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct"):
        value = cfg.data[key]
        if value is not None:
            settings[key] = value
    return ImageSettings.from_data_config(settings), settings["crop_pct"]


def train_augment(cfg: ClassifyConfig) -> TrainAugment:
    """The image augmentation of ``cfg.aug`` (its keys of the same names); Mixup/CutMix and label smoothing belong
    to the loss."""
    return TrainAugment(**{f.name: cfg.aug[f.name] for f in fields(TrainAugment)})


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


def create_loaders(cfg: ClassifyConfig, image: ImageSettings, crop_pct: float, dist_info: DistInfo):
    """(training stream of micro-batches with ``updates_per_epoch``, validation loader for this rank's share)."""
    d = cfg.data
    train_tf = train_transform(d.kind, image, train_augment(cfg))  # both first: a bad setting fails before any data
    eval_tf = eval_transform(d.kind, image, crop_pct)
    common = {key: d[key] for key in ("root", "num_workers", "cache_dir", "download")}  # as named in DataConfig
    common.update(
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        seed=cfg.train.seed,
        pin_memory=d.pin_memory and dist_info.device.type == "cuda",
    )
    stream = train_stream(
        d.kind,
        split=d.train_split,
        shards=d.train_shards,
        train_samples=d.train_samples,
        transform=train_tf,
        global_batch=cfg.train.batch_size,
        accum_steps=cfg.train.accum_steps,
        subset=d.train_subset,
        shuffle_buffer=d.shuffle_buffer,
        **common,
    )
    val_loader = eval_loader(
        d.kind,
        split=d.val_split,
        shards=d.val_shards,
        transform=eval_tf,
        batch_size=d.eval_batch_size or stream.micro_batch,
        subset=d.val_subset,
        **common,
    )
    return stream, val_loader


def micro_batches(stream: TrainStream, epoch: int, start_update: int, cfg: ClassifyConfig, mixup, device):
    """The epoch's micro-batches from ``start_update`` on, on ``device`` (channels_last, mixed up when asked)."""
    for images, targets in stream.epoch_batches(epoch, start_update):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, targets = mixup(images, targets)  # targets: (B, num_classes) soft labels
        yield images, targets


def validate(cfg: ClassifyConfig, model, ema, val_loader, num_classes: int, device, *, predict: bool = False):
    """(``val_*`` metrics of the model and ``val_ema_*`` of its EMA when there is one, per-image predictions of the
    exported model, the EMA's when there is one, when ``predict`` else {})."""
    kwargs = dict(
        num_classes=num_classes,
        device=device,
        amp_dtype=amp_dtype(cfg.train.amp),
        channels_last=cfg.train.channels_last,
        return_predictions=predict,
    )
    metrics = evaluate_classifier(model, val_loader, **kwargs)
    predictions = pop_predictions(metrics)
    row = {f"val_{k}": v for k, v in metrics.items()}
    if ema is not None:
        metrics = evaluate_classifier(ema.module, val_loader, **kwargs)
        predictions = pop_predictions(metrics)
        row.update({f"val_ema_{k}": v for k, v in metrics.items()})
    return row, predictions


def save(
    path: Path,
    dist_info: DistInfo,
    objects: dict,
    cfg: ClassifyConfig,
    *,
    epoch: int,
    update: int,
    step: int,
    seconds: float,
    num_classes: int,
) -> None:
    """The classifier's ``last.pt``: ``objects``' state dicts, every rank's RNG, the position (epoch, the update
    within it, step, training seconds), num_classes and the config (``load_classifier`` rebuilds the model from
    them)."""
    position = dict(epoch=epoch, update=update, step=step, seconds=seconds)
    save_run(path, dist_info, objects, **position, num_classes=num_classes, config=OmegaConf.to_container(cfg))


def load_classifier(path: str | os.PathLike, *, ema: bool = False) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, its training config) of a ``last.pt`` that ``save`` wrote; ``ema``: the EMA weights."""
    state = load_checkpoint(path)
    weights = state["ema"] if ema else state["model"]
    if weights is None:
        raise ValueError(f"EMA weights asked for, but checkpoint {str(path)!r} holds none (train.ema was off)")
    if ema:  # ModelEmaV3 state dict: the model's keys under "module."
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    cfg = state["config"]
    model = timm.create_model(cfg["model"]["name"], num_classes=state["num_classes"], **cfg["model"]["kwargs"])
    model.load_state_dict(weights)
    return model.eval(), cfg


def check_config(cfg: ClassifyConfig) -> None:
    amp_dtype(cfg.train.amp)
    if cfg.train.accum_steps < 1:
        raise ValueError(f"train.accum_steps must be >= 1, got {cfg.train.accum_steps}")


# ----------------------------------------------------------------------------------------------------------------
# Training


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv, __doc__)
    cfg = load_config(ClassifyConfig, args.config, args.overrides)
    check_config(cfg)
    dist_info = init_distributed()
    device, is_main, t = dist_info.device, dist_info.is_main, cfg.train
    out_dir = Path(cfg.out_dir)
    checkpoint = resume_path(out_dir, resume=args.resume, resume_from=args.resume_from)
    if is_main:
        save_config(cfg, out_dir)

    # model: the same initial weights on every rank (DDP broadcasts them too)
    seed_everything(t.seed)
    d = cfg.data
    num_classes = d.num_classes or num_classes_of(
        d.kind, split=d.train_split, shards=d.train_shards, root=d.root, cache_dir=d.cache_dir
    )
    model = create_model(cfg, num_classes).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    image, crop_pct = data_settings(cfg, model)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)

    # data: per-rank augmentation randomness from here on
    seed_everything(t.seed + dist_info.rank)
    stream, val_loader = create_loaders(cfg, image, crop_pct, dist_info)
    upe = stream.updates_per_epoch

    optimizer, scheduler = create_optimizer_and_scheduler(cfg, model, upe)
    mixup, criterion = create_loss(cfg, num_classes)
    amp = amp_dtype(t.amp)
    scaler = grad_scaler(device, amp)
    ema = ModelEmaV3(model, decay=t.ema_decay) if t.ema else None
    objects = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema)

    # resume: everything that decides the next update, including every RNG
    epoch, start_update, step, seconds = 0, 0, 0, 0.0
    if checkpoint is not None:
        state = restore_run(checkpoint, dist_info, objects, seed=t.seed)
        epoch, start_update, step, seconds = state["epoch"], state["update"], state["step"], state["seconds"]
        scheduler.step_update(num_updates=step)

    train_model = wrap_model(model, dist_info, compile=t.compile)
    logger = MetricsLogger(out_dir, enabled=is_main)
    if is_main:
        print(
            f"{cfg.model.name}: {n_params / 1e6:.3f}M params, {num_classes} classes, {upe} updates/epoch of "
            f"{t.batch_size} images, world size {dist_info.world_size}, device {device}"
        )

    last = out_dir / "last.pt"
    stop = False
    summary: dict = {}
    while epoch < t.epochs and not stop:
        train_model.train()
        batches = micro_batches(stream, epoch, start_update, cfg, mixup, device)
        window = LogWindow(
            logger,
            total=upe,
            initial=start_update,
            desc=f"epoch {epoch}",
            rate_name="img_per_s",
            items_per_update=t.batch_size,
        )
        for update in range(start_update, upe):
            t0 = time.perf_counter()
            loss = train_update(
                train_model,
                batches,
                criterion,
                accum_steps=t.accum_steps,
                optimizer=optimizer,
                scaler=scaler,
                clip_grad=t.clip_grad,
                device=device,
                amp=amp,
            )
            step += 1
            scheduler.step_update(num_updates=step)
            if ema is not None:
                ema.update(model, step=step)
            seconds += time.perf_counter() - t0
            window.update()

            if step % t.log_every == 0 or update == upe - 1:
                lr = optimizer.param_groups[0]["lr"]
                window.log(step, loss, lr, epoch=epoch + (update + 1) / upe)
            stop = bool(t.max_steps) and step >= t.max_steps
            if stop or (t.ckpt_every and step % t.ckpt_every == 0):
                position = dict(epoch=epoch, update=update + 1, step=step, seconds=seconds)
                save(last, dist_info, objects, cfg, **position, num_classes=num_classes)
            if stop:
                break
        window.close()
        if stop:
            break

        epoch, start_update = epoch + 1, 0
        if epoch % t.eval_every == 0 or epoch == t.epochs:
            final = epoch == t.epochs and not dist_info.distributed  # per-image predictions for paired tests
            row, predictions = validate(cfg, model, ema, val_loader, num_classes, device, predict=final)
            if final and is_main:
                save_predictions(out_dir / "predictions.pt", predictions)
            logger.log(step, epoch=epoch, train_seconds=seconds, **row)
            if is_main:
                print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
            summary = {"epoch": epoch, "step": step, **row}
        save(last, dist_info, objects, cfg, epoch=epoch, update=0, step=step, seconds=seconds, num_classes=num_classes)

    if not stop and is_main:
        export_safetensors(ema.module if ema is not None else model, out_dir / "model.safetensors")
        summary.update(
            model=cfg.model.name,
            params=n_params,
            num_classes=num_classes,
            train_seconds=seconds,
            train_img_per_s=step * t.batch_size / max(seconds, 1e-9),
        )
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    logger.close()
    cleanup_distributed()
    return summary


if __name__ == "__main__":
    main()
