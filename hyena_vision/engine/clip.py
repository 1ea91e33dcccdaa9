"""Contrastive (CLIP) training of open_clip models on image-caption data, zero-shot and retrieval evaluation.

    python -m train.clip --config clip/hyena_clip_cifar
    python -m train.clip --config clip/hyena_clip_cifar model.name=clip_vit_cifar out_dir=runs/clip/vit
    python -m train.clip --config ... out_dir=runs/x --resume               # continue runs/x/last.pt exactly
    python -m eval.compare_clip runs/clip/hyena runs/clip/vit --out runs/clip/compare

The model is ``open_clip.create_model_and_transforms(model.name, pretrained=model.pretrained)`` with its tokenizer
``open_clip.get_tokenizer(model.name)``; the loss is ``open_clip.loss.ClipLoss``. ``data.train`` is webdataset
shards (``.jpg`` + ``.txt`` per sample, e.g. CC/LAION shards) or a ``.csv`` of ``filepath,caption``; left empty,
CIFAR-10 caption shards (``hyena_vision.data.captions``: training templates, the held-out classes left out) are
built once into ``data.cache_dir``. At the end (``eval.cifar``): zero-shot top-1 on the CIFAR-10 test set with
open_clip's zero-shot classifier from the class names and the held-out templates (all ten classes, the held-out
classes alone, the seen classes alone) and image-to-text / text-to-image recall@1/@5 over test images captioned
with the held-out templates; each with a 95% Wilson interval. The run folder gets config.yaml, metrics.jsonl/.csv
+ tb/, last.pt (atomic: model, optimizer, scheduler, RNG, data position), summary.json, model.safetensors (loads
with ``open_clip.create_model_and_transforms(name, pretrained=path)``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
from omegaconf import OmegaConf
from open_clip.loss import ClipLoss
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..data.captions import (
    HELD_OUT_CLASSES,
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    CaptionCSV,
    CaptionTokenizer,
    caption_samples,
    caption_shard_pipeline,
    load_class_texts,
    write_caption_shards,
)
from ..data.images import extract_tar, find_split_dir, image_dataset, is_tar
from ..layers import param_groups
from .checkpoint import export_safetensors, load_checkpoint, restore_run, resume_path, save_run
from .config import AdamWCosineConfig, load_config, parse_args, save_config
from .distributed import init_distributed
from .figures import save_figure, subplots
from .loop import grad_scaler, train_update
from .metrics import LogWindow, MetricsLogger

__all__ = ["ClipConfig", "compare_main", "evaluate_cifar", "main", "wilson_interval"]

# ----------------------------------------------------------------------------------------------------------------
# Config schema (unknown keys anywhere are errors)


@dataclass
class ModelConfig:
    name: str = "hyena_clip_cifar"  # an open_clip model name (hyena_clip_cifar, clip_vit_cifar, ViT-B-32, ...)
    pretrained: str = ""  # an open_clip pretrained tag or a local file; "": random initialisation


@dataclass
class DataConfig:
    train: str = ""  # webdataset shards (brace/:: URLs) or a .csv; "": CIFAR-10 caption shards built below
    truncate_captions: bool = False  # cut captions longer than the context (counted) instead of raising
    shuffle_buffer: int = 2000  # shards: samples shuffled in a buffer of this size
    workers: int = 0
    cifar: str = "../shared/data/cifar10-jpg.tar.gz"  # CIFAR-10 ImageFolder (train/, test/) or a tar of one
    glosses: str = "../shared/data/class-glosses.tsv"
    held_out_classes: list[str] = field(default_factory=lambda: list(HELD_OUT_CLASSES))
    shard_size: int = 5000  # samples per built shard
    cache_dir: str = ".cache/clip_data"


@dataclass
class TrainConfig:
    steps: int = 600  # optimizer updates; the cosine schedule spans them
    stop_after: int = 0  # > 0: stop (with a checkpoint) after this many updates; resume later
    batch_size: int = 128
    seed: int = 0
    log_every: int = 10
    save_every: int = 200


@dataclass
class EvalConfig:
    cifar: bool = True  # zero-shot and retrieval on the CIFAR-10 test set at the end
    test_images: int = 0  # > 0: zero-shot on this many test images (a seeded subset); 0: all 10,000
    retrieval_per_class: int = 50  # test images per class captioned with the held-out templates
    batch_size: int = 500


@dataclass
class ClipConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: AdamWCosineConfig = field(  # CLIP's usual betas and eps
        default_factory=lambda: AdamWCosineConfig(min_lr=1e-5, betas=[0.9, 0.98], eps=1e-6, warmup_steps=50)
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "runs/clip"


def check_config(cfg: ClipConfig) -> None:
    """Validate what the schema cannot."""
    t, o = cfg.train, cfg.optim
    if min(t.steps, t.batch_size, t.log_every, t.save_every, cfg.eval.batch_size) < 1:
        raise ValueError("train.steps, batch_size, log_every, save_every and eval.batch_size must be >= 1")
    if t.batch_size < 2:
        raise ValueError(f"train.batch_size must be >= 2 (a contrastive batch needs negatives), got {t.batch_size}")
    if not 0 <= o.warmup_steps < t.steps:
        raise ValueError(f"optim.warmup_steps must be in [0, train.steps), got {o.warmup_steps}")
    if min(cfg.data.workers, cfg.data.shuffle_buffer, cfg.eval.test_images, cfg.eval.retrieval_per_class) < 0:
        raise ValueError("data.workers, data.shuffle_buffer, eval.test_images, eval.retrieval_per_class must be >= 0")
    if cfg.data.shard_size < 1:
        raise ValueError(f"data.shard_size must be >= 1, got {cfg.data.shard_size}")


# ----------------------------------------------------------------------------------------------------------------
# Data


def cifar_caption_shards(cfg: ClipConfig) -> str:
    """Build (once) CIFAR-10 training caption shards without the held-out classes; returns their URL."""
    d = cfg.data
    name = f"cifar10-captions-seed{cfg.train.seed}-minus-{'-'.join(sorted(d.held_out_classes))}"
    out = Path(d.cache_dir) / name
    done = out / "done.json"
    if not done.is_file():
        train_dir = find_split_dir(_folder(d.cifar), "train")
        samples = caption_samples(
            train_dir,
            load_class_texts(d.glosses),
            TRAIN_TEMPLATES,
            exclude_classes=d.held_out_classes,
            seed=cfg.train.seed,
        )
        if out.exists():  # an interrupted build: start over
            for path in out.glob("captions-*.tar"):
                path.unlink()
        shards = write_caption_shards(samples, out, maxcount=d.shard_size, seed=cfg.train.seed)
        done.write_text(json.dumps({"shards": [Path(s).name for s in shards], "num_samples": len(samples)}))
    names = json.loads(done.read_text())["shards"]
    return "::".join(str(out / n) for n in names)


def _folder(path: str) -> Path:
    return extract_tar(path) if is_tar(path) else Path(path)


def epoch_loader(cfg: ClipConfig, source: str, epoch: int, transform, tokenize: CaptionTokenizer) -> DataLoader:
    """Training batches of one epoch (images (B, 3, H, W), token ids (B, L)), shuffled by (seed, epoch); the loader's
    own generator seeds its workers, so an epoch is the same whatever happened before it."""
    seed = cfg.train.seed * 100_003 + epoch
    generator = torch.Generator().manual_seed(seed)
    common = dict(num_workers=cfg.data.workers, generator=generator, persistent_workers=False)
    if source.endswith(".csv"):
        dataset = CaptionCSV(source, transform=transform, tokenize=tokenize)
        if len(dataset) < cfg.train.batch_size:
            raise ValueError(f"data.train {source!r} has {len(dataset)} rows, fewer than train.batch_size")
        return DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True, **common)
    pipeline = caption_shard_pipeline(
        source,
        transform=transform,
        tokenize=tokenize,
        batch_size=cfg.train.batch_size,
        seed=seed,
        shuffle_buffer=cfg.data.shuffle_buffer,
    )
    return DataLoader(pipeline, batch_size=None, **common)


class ContrastiveLoss(torch.nn.Module):
    """The CLIP model and open_clip's ``ClipLoss`` as one module, (images, token ids) -> loss, so that the engine's
    update loop (``train_update``) drives contrastive training like the other trainers."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.loss = model, ClipLoss()

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        image_features, text_features, logit_scale = self.model(*batch)  # (B, E), (B, E), ()
        return self.loss(image_features, text_features, logit_scale)


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n``."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need n >= 1 and 0 <= successes <= n, got {successes}, {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _proportion(successes: int, n: int) -> dict:
    lo, hi = wilson_interval(successes, n)
    return {"value": successes / n, "successes": successes, "n": n, "ci95": [lo, hi]}


@torch.no_grad()
def _image_features(model, dataset, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for images, targets in tqdm(DataLoader(dataset, batch_size=batch_size), desc="image features", mininterval=2):
        feats.append(model.encode_image(images.to(device), normalize=True).float().cpu())  # (B, E)
        labels.append(targets)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def evaluate_cifar(
    model,
    preprocess,
    tokenizer,
    *,
    cifar: str,
    glosses: str,
    held_out_classes,
    test_images: int = 0,
    retrieval_per_class: int = 50,
    batch_size: int = 500,
    seed: int = 0,
    device=None,
) -> dict:
    """Zero-shot top-1 (open_clip's ``build_zero_shot_classifier`` over the usual class names and the held-out
    templates) for all classes, the held-out ones alone and the seen ones alone, and recall@1/@5 both ways over
    ``retrieval_per_class`` test images per class with held-out-template captions. Proportions with 95% Wilson
    intervals. ``device`` defaults to the model's."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    root = _folder(cifar)
    test = image_dataset("folder", root, "test", preprocess)
    class_texts = load_class_texts(glosses)
    classnames = [class_texts[c].names[0] for c in test.classes]
    templates = [t + "." for t in HELD_OUT_TEMPLATES]
    weights = open_clip.build_zero_shot_classifier(model, tokenizer, classnames, templates, device=device)  # (E, C)
    subset = test
    if test_images:
        g = torch.Generator().manual_seed(seed)
        subset = Subset(test, sorted(torch.randperm(len(test), generator=g)[:test_images].tolist()))
    feats, labels = _image_features(model, subset, batch_size, device)  # (N, E), (N,)
    logits = feats @ weights.cpu()  # (N, C)
    unknown = sorted(set(held_out_classes) - set(test.classes))
    if unknown:
        raise ValueError(f"held_out_classes {unknown} are not classes of the test set {test.classes}")
    held = [test.class_to_idx[c] for c in held_out_classes]
    seen = [i for i in range(len(test.classes)) if i not in held]
    out = {"zero_shot_top1": _proportion(int((logits.argmax(1) == labels).sum()), len(labels))}
    for key, cols in (("zero_shot_top1_held_out", held), ("zero_shot_top1_seen", seen)):
        cols_t = torch.tensor(cols)
        rows = torch.isin(labels, cols_t)
        pred = cols_t[logits[rows][:, cols_t].argmax(1)]
        out[key] = _proportion(int((pred == labels[rows]).sum()), int(rows.sum()))

    # retrieval: each test image with one caption from a held-out template
    samples = caption_samples(
        find_split_dir(root, "test"), class_texts, HELD_OUT_TEMPLATES, per_class=retrieval_per_class, seed=seed + 1
    )
    index = {path: i for i, (path, _) in enumerate(test.samples)}
    img_feats, _ = _image_features(model, Subset(test, [index[s.path] for s in samples]), batch_size, device)
    tokenize = CaptionTokenizer(tokenizer)
    texts = torch.stack([tokenize(s.caption) for s in samples])  # (M, L)
    txt_feats = torch.cat(
        [model.encode_text(t.to(device), normalize=True).float().cpu() for t in texts.split(batch_size)]
    )
    sim = img_feats @ txt_feats.T  # (M, M), pair i on the diagonal
    truth = sim.diagonal()[:, None]
    rank_i2t = (sim > truth).sum(1)  # captions scoring above the image's own
    rank_t2i = (sim.T > truth).sum(1)
    for k in (1, 5):
        out[f"i2t_recall@{k}"] = _proportion(int((rank_i2t < k).sum()), len(samples))
        out[f"t2i_recall@{k}"] = _proportion(int((rank_t2i < k).sum()), len(samples))
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Training


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv, __doc__)
    cfg = load_config(ClipConfig, args.config, args.overrides)
    check_config(cfg)
    dist_info = init_distributed()
    if dist_info.distributed:
        raise NotImplementedError("CLIP training runs in one process; multi-process (torchrun) is not supported yet")
    device, t = dist_info.device, cfg.train
    out_dir = Path(cfg.out_dir)
    checkpoint_path = resume_path(out_dir, resume=args.resume, resume_from=args.resume_from)
    save_config(cfg, out_dir)

    torch.manual_seed(t.seed)
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        cfg.model.name, pretrained=cfg.model.pretrained or None, device=device
    )
    tokenizer = open_clip.get_tokenizer(cfg.model.name)
    tokenize = CaptionTokenizer(tokenizer, truncate=cfg.data.truncate_captions)
    source = cfg.data.train or cifar_caption_shards(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    o = cfg.optim
    groups = param_groups(model, o.lr, o.weight_decay, no_weight_decay={"logit_scale"})
    optimizer = create_optimizer_v2(
        groups, opt="adamw", lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas), eps=o.eps
    )
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=t.steps - o.warmup_steps,
        lr_min=o.min_lr,
        warmup_t=o.warmup_steps,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    contrastive = ContrastiveLoss(model)
    scaler = grad_scaler(device, None)

    step, epoch, batch_in_epoch, train_seconds, ckpt_path = 0, 0, 0, 0.0, out_dir / "last.pt"
    if checkpoint_path is not None:
        saved = load_checkpoint(checkpoint_path)  # the data position first: the skipped batches draw random numbers
        step, epoch, batch_in_epoch, train_seconds = saved["step"], saved["epoch"], saved["batch"], saved["seconds"]
    scheduler.step_update(num_updates=step)
    batches = iter(epoch_loader(cfg, source, epoch, preprocess_train, tokenize))
    for _ in range(batch_in_epoch):  # skip this epoch's batches already trained on, then restore the RNG
        next(batches)
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    if checkpoint_path is not None:
        restore_run(checkpoint_path, dist_info, objects, seed=t.seed)

    def training_batches():  # ((images (B, 3, H, W), token ids (B, L)), no targets), across epochs
        nonlocal batches, epoch, batch_in_epoch
        while True:
            try:
                images, texts = next(batches)
            except StopIteration:
                if batch_in_epoch == 0:
                    raise ValueError(f"data.train {source[:200]!r} holds no full batch of train.batch_size") from None
                epoch, batch_in_epoch = epoch + 1, 0
                batches = iter(epoch_loader(cfg, source, epoch, preprocess_train, tokenize))
                continue
            batch_in_epoch += 1
            yield (images.to(device), texts.to(device)), None

    logger = MetricsLogger(out_dir, enabled=True)
    print(f"{cfg.model.name}: {n_params / 1e6:.3f}M params, data {source[:80]}, batch {t.batch_size}, device {device}")
    stop_at = min(t.steps, t.stop_after) if t.stop_after else t.steps
    base_group = next(g for g in optimizer.param_groups if g["initial_lr"] == o.lr)  # for logging the lr
    window = LogWindow(
        logger, total=t.steps, initial=step, desc=cfg.model.name, rate_name="img_per_s", items_per_update=t.batch_size
    )
    stream = training_batches()
    model.train()
    while step < stop_at:
        t0 = time.perf_counter()
        update = dict(optimizer=optimizer, scaler=scaler, clip_grad=o.grad_clip, device=device, amp=None)
        loss = train_update(contrastive, stream, lambda loss, _: loss, accum_steps=1, **update)
        with torch.no_grad():  # as CLIP: the temperature may not go below 1/100
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        scheduler.step_update(num_updates=step)
        train_seconds += time.perf_counter() - t0
        window.update()
        if step % t.log_every == 0 or step == stop_at:
            window.log(step, loss, base_group["lr"], logit_scale=model.logit_scale.exp().item(), epoch=epoch)
        if step % t.save_every == 0 or step == stop_at:
            position = dict(step=step, epoch=epoch, batch=batch_in_epoch, seconds=train_seconds)
            save_run(ckpt_path, dist_info, objects, **position, config=OmegaConf.to_container(cfg))
            window.reset()  # throughput counts training only
    window.close()
    logger.close()

    summary: dict = {}
    if step == t.steps:
        export_safetensors(model, out_dir / "model.safetensors")
        summary = dict(
            model=cfg.model.name,
            params=n_params,
            steps=step,
            batch_size=t.batch_size,
            epochs=epoch,
            train_seconds=train_seconds,
            img_per_s=step * t.batch_size / max(train_seconds, 1e-9),
        )
        if cfg.eval.cifar:
            e = cfg.eval
            summary["eval"] = evaluate_cifar(
                model,
                preprocess_val,
                tokenizer,
                cifar=cfg.data.cifar,
                glosses=cfg.data.glosses,
                held_out_classes=cfg.data.held_out_classes,
                test_images=e.test_images,
                retrieval_per_class=e.retrieval_per_class,
                batch_size=e.batch_size,
                seed=t.seed,
                device=device,
            )
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print("summary: " + json.dumps(summary))
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Comparison of finished runs


METRICS = (
    "zero_shot_top1",
    "zero_shot_top1_seen",
    "zero_shot_top1_held_out",
    "i2t_recall@1",
    "i2t_recall@5",
    "t2i_recall@1",
    "t2i_recall@5",
)


def compare_main(argv: list[str] | None = None) -> str:
    """Markdown table + PNG (95% Wilson intervals) of the ``summary.json`` of finished CLIP runs."""
    parser = argparse.ArgumentParser(description="Compare finished CLIP runs (train.clip) on CIFAR-10 captions.")
    parser.add_argument("runs", nargs="+", help="run folders holding summary.json")
    parser.add_argument("--out", required=True, help="folder for compare.md and compare.png")
    args = parser.parse_args(argv)
    summaries = []
    for run in args.runs:
        path = Path(run) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} not found: is {run!r} a finished train.clip run?")
        summary = json.loads(path.read_text())
        if "eval" not in summary:
            raise ValueError(f"{str(path)!r} has no evaluation (the run had eval.cifar=false)")
        summaries.append(summary)
    head = (
        "| metric | "
        + " | ".join(f"{s['model']} ({s['params'] / 1e6:.2f}M, {s['steps']} x {s['batch_size']})" for s in summaries)
        + " |"
    )
    lines = [head, "|---" * (len(summaries) + 1) + "|"]
    for metric in METRICS:
        cells = []
        for s in summaries:
            m = s["eval"][metric]
            cells.append(f"{100 * m['value']:.1f} [{100 * m['ci95'][0]:.1f}, {100 * m['ci95'][1]:.1f}] (n={m['n']})")
        lines.append(f"| {metric} (%) | " + " | ".join(cells) + " |")
    lines.append(
        "| train seconds (img/s) | "
        + " | ".join(f"{s['train_seconds']:.0f} ({s['img_per_s']:.0f})" for s in summaries)
        + " |"
    )
    table = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(table)

    fig, ax = subplots(figsize=(10, 4))
    width = 0.8 / len(summaries)
    for i, s in enumerate(summaries):
        vals = [100 * s["eval"][m]["value"] for m in METRICS]
        err = [
            [100 * (s["eval"][m]["value"] - s["eval"][m]["ci95"][0]) for m in METRICS],
            [100 * (s["eval"][m]["ci95"][1] - s["eval"][m]["value"]) for m in METRICS],
        ]
        xs = [j + i * width for j in range(len(METRICS))]
        ax.bar(xs, vals, width, yerr=err, capsize=3, label=s["model"])
    ax.set_xticks([j + width * (len(summaries) - 1) / 2 for j in range(len(METRICS))], METRICS, rotation=20)
    ax.set_ylabel("% (95% Wilson interval)")
    ax.set_title("CLIP on CIFAR-10 captions")
    ax.legend()
    save_figure(fig, out / "compare.png")
    print(table)
    return table
