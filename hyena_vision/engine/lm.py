"""Train a causal language model (HyenaLM or the GPT baseline) on a tokenized text corpus, one process or many.

    python -m train.lm --config lm/shakespeare_char_cpu
    python -m train.lm --config lm/shakespeare_char_cpu model.arch=gpt out_dir=runs/char_gpt
    torchrun --nproc_per_node=8 -m train.lm --config lm/shakespeare_char
    python -m train.lm --config ... out_dir=runs/x --resume            # continue runs/x/last.pt exactly
    hyena-train-lm --config lm/shakespeare_char_cpu                     # the installed command

``train.batch_size`` is the GLOBAL batch (sequences per optimizer update over all processes and accumulation
steps). Every ``train.eval_every`` updates the loss on a fixed set of ``train.eval_batches`` random validation
windows is logged (the same windows for every run with the same seed); at the end, the loss over the whole
validation split (every token predicted once, windows of ``train.block_size``). The run folder gets config.yaml,
metrics.{jsonl,csv} + tb/ (training), eval/metrics.{jsonl,csv} + eval/tb/ (validation), last.pt (atomic: model,
optimizer, scheduler, RNG and data-sampler states, step, tokenizer, model arguments), summary.json and
model.safetensors. ``load_lm`` rebuilds the model of a run (perplexity, sampling).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from ..data.text import TokenDataset, Tokenizer, prepare_text_corpus, tokenizer_from_state
from ..layers import ImplicitFilterConfig, param_groups
from ..models.gpt import create_lm
from .checkpoint import export_safetensors, load_checkpoint, restore_run, resume_path, save_run
from .config import AdamWCosineConfig, load_config, parse_args, save_config
from .distributed import DistInfo, cleanup_distributed, init_distributed, wrap_model
from .evaluation import evaluate_lm
from .loop import amp_dtype, grad_scaler, train_update
from .metrics import LogWindow, MetricsLogger

# ----------------------------------------------------------------------------------------------------------------
# Config schema (unknown keys anywhere are errors)


@dataclass
class HyenaArgs:
    order: int = 2
    short_filter_order: int = 3
    mixer_dropout: float = 0.0
    # the implicit filters (filter_cfg.lr null: the filter FFN uses optim.lr); sine frequency 14 as the original LM
    filter_cfg: ImplicitFilterConfig = field(default_factory=lambda: ImplicitFilterConfig(w=14.0))


@dataclass
class GPTArgs:
    n_head: int = 4


@dataclass
class ModelConfig:
    arch: str = "hyena"  # hyena | gpt
    d_model: int = 128
    n_layer: int = 4
    d_mlp: int = 512
    l_max: int = 64  # longest sequence the model accepts (>= train.block_size)
    dropout: float = 0.0
    hyena: HyenaArgs = field(default_factory=HyenaArgs)
    gpt: GPTArgs = field(default_factory=GPTArgs)


@dataclass
class DataConfig:
    text: str = "../shared/data/tinyshakespeare.txt"  # tokenized once into cache_dir
    tokenizer: str = "char"  # char | byte | bpe (GPT-2, needs tiktoken)
    val_fraction: float = 0.1  # the last 10% of the characters
    cache_dir: str = ".cache/lm_data"


@dataclass
class TrainConfig:
    steps: int = 2000  # optimizer updates; the cosine schedule spans them
    stop_after: int = 0  # > 0: stop (with a checkpoint) after this many updates; resume later
    batch_size: int = 12  # global sequences per update
    accum_steps: int = 1
    block_size: int = 64  # training context
    amp: str = "none"  # bf16 | fp16 | none
    compile: bool = False
    seed: int = 1337
    eval_every: int = 250
    eval_batches: int = 20  # random validation windows (of batch_size sequences) per evaluation
    log_every: int = 10
    final_eval: bool = True  # the loss over the whole validation split at the end


@dataclass
class LMConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: AdamWCosineConfig = field(default_factory=AdamWCosineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs/lm"


# ----------------------------------------------------------------------------------------------------------------
# Building blocks


def model_arguments(cfg: LMConfig, vocab_size: int) -> dict:
    """Keyword arguments of ``create_lm(arch, ...)``, saved in the checkpoint so evaluation can rebuild the model."""
    m = cfg.model
    args = dict(vocab_size=vocab_size, d_model=m.d_model, n_layer=m.n_layer, d_mlp=m.d_mlp, l_max=m.l_max)
    args["dropout"] = m.dropout
    if m.arch == "gpt":
        return dict(args, n_head=m.gpt.n_head)
    return dict(args, **OmegaConf.to_container(m.hyena))


def create_optimizer_and_scheduler(cfg: LMConfig, model: torch.nn.Module):
    """AdamW over groups that keep the filters' lr / weight-decay hints (no decay on biases, norms, 1-D params);
    linear warmup then cosine decay to ``min_lr`` over ``train.steps``, stepped every update."""
    o = cfg.optim
    groups = param_groups(model, o.lr, o.weight_decay)
    optimizer = create_optimizer_v2(
        groups, opt="adamw", lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas), eps=o.eps
    )
    if not 0 <= o.warmup_steps < cfg.train.steps:
        raise ValueError(f"optim.warmup_steps must be in [0, train.steps), got {o.warmup_steps}")
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=cfg.train.steps - o.warmup_steps,
        lr_min=o.min_lr,
        warmup_t=o.warmup_steps,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    return optimizer, scheduler


def check_config(cfg: LMConfig, world_size: int) -> int:
    """Validate what the schema cannot; returns the per-process micro-batch."""
    t = cfg.train
    if cfg.model.arch not in ("hyena", "gpt"):
        raise ValueError(f"model.arch must be 'hyena' or 'gpt', got {cfg.model.arch!r}")
    amp_dtype(t.amp)
    if not 1 <= t.block_size <= cfg.model.l_max:
        raise ValueError(f"train.block_size must be in [1, model.l_max={cfg.model.l_max}], got {t.block_size}")
    if t.accum_steps < 1 or t.batch_size % (t.accum_steps * world_size):
        raise ValueError(
            f"train.batch_size={t.batch_size} must be divisible by train.accum_steps={t.accum_steps} x "
            f"world size {world_size}"
        )
    if min(t.steps, t.eval_every, t.log_every, t.eval_batches) < 1:
        raise ValueError("train.steps, eval_every, log_every and eval_batches must be >= 1")
    return t.batch_size // (t.accum_steps * world_size)


def prepare_corpus(data: Mapping) -> tuple[Path, Path, Tokenizer]:
    """(train tokens, val tokens, tokenizer) of a run's ``data`` config section, tokenized once into its cache
    folder ``<cache_dir>/<text file stem>-<tokenizer>`` and reused afterwards."""
    cache = Path(data["cache_dir"]) / f"{Path(data['text']).stem}-{data['tokenizer']}"
    return prepare_text_corpus(data["text"], cache, data["tokenizer"], data["val_fraction"])


def load_corpus(cfg: LMConfig, dist_info: DistInfo) -> tuple[TokenDataset, TokenDataset, Tokenizer]:
    """Training and validation windows of ``train.block_size``; rank 0 tokenizes first, the others then read the
    cached files."""
    if dist_info.is_main:
        prepare_corpus(cfg.data)
    if dist_info.distributed:
        torch.distributed.barrier()
    train_path, val_path, tokenizer = prepare_corpus(cfg.data)
    block = cfg.train.block_size
    return TokenDataset(train_path, block), TokenDataset(val_path, block), tokenizer


def fixed_eval_windows(val_data: TokenDataset, cfg: LMConfig, dist_info: DistInfo) -> list:
    """This rank's share of ``train.eval_batches`` random validation batches, the same at every evaluation."""
    t, rank, world = cfg.train, dist_info.rank, dist_info.world_size
    windows = torch.Generator().manual_seed(t.seed)
    eval_set = [val_data.sample(t.batch_size, windows) for _ in range(t.eval_batches)]
    return [(x[rank::world], y[rank::world]) for x, y in eval_set]


def sampled_windows(data: TokenDataset, micro_batch: int, generator: torch.Generator, device: torch.device):
    """Endless random training windows (x, y), (micro_batch, block_size) each, on ``device``."""
    while True:
        x, y = data.sample(micro_batch, generator)
        yield x.to(device), y.to(device)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (B, T, V) logits against (B, T) next tokens."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def validate(
    model: torch.nn.Module, eval_share: list, logger: MetricsLogger, *, step: int, seconds: float, device, amp
) -> float:
    """Loss on the fixed validation windows (all ranks together), logged to ``eval/``."""
    val_loss = evaluate_lm(model, eval_share, device=device, amp_dtype=amp)["loss"]
    logger.log(step, val_loss=val_loss, train_seconds=seconds)
    return val_loss


# ----------------------------------------------------------------------------------------------------------------
# The checkpoint format (written by the trainer, read by perplexity and sampling)


def save(
    path: Path,
    dist_info: DistInfo,
    objects: dict,
    batches: torch.Generator,
    cfg: LMConfig,
    *,
    step: int,
    seconds: float,
    model_args: dict,
    tokenizer: Tokenizer,
) -> None:
    """``last.pt``: ``objects``' state dicts, every rank's RNG and training-window generator, the step, training
    seconds, ``arch`` + ``model_args`` (enough to rebuild the model), the tokenizer and the config."""
    save_run(
        path,
        dist_info,
        objects,
        (batches,),
        step=step,
        seconds=seconds,
        arch=cfg.model.arch,
        model_args=model_args,
        tokenizer=tokenizer.state(),
        config=OmegaConf.to_container(cfg),
    )


def load_lm(run: str | os.PathLike) -> tuple[torch.nn.Module, Tokenizer, dict]:
    """(model in eval mode, tokenizer, checkpoint) of a run folder (its ``last.pt``) or a checkpoint file."""
    path = Path(run)
    state = load_checkpoint(path / "last.pt" if path.is_dir() else path)
    model = create_lm(state["arch"], **state["model_args"])
    model.load_state_dict(state["model"])
    return model.eval(), tokenizer_from_state(state["tokenizer"]), state


# ----------------------------------------------------------------------------------------------------------------
# Training


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv, __doc__)
    cfg = load_config(LMConfig, args.config, args.overrides)
    dist_info = init_distributed()
    device, is_main, t = dist_info.device, dist_info.is_main, cfg.train
    micro_batch = check_config(cfg, dist_info.world_size)
    out_dir = Path(cfg.out_dir)
    checkpoint = resume_path(out_dir, resume=args.resume, resume_from=args.resume_from)
    if is_main:
        save_config(cfg, out_dir)

    train_data, val_data, tokenizer = load_corpus(cfg, dist_info)
    eval_share = fixed_eval_windows(val_data, cfg, dist_info)

    # model: the same initial weights on every rank
    torch.manual_seed(t.seed)
    model_args = model_arguments(cfg, tokenizer.vocab_size)
    model = create_lm(cfg.model.arch, **model_args).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer, scheduler = create_optimizer_and_scheduler(cfg, model)
    amp = amp_dtype(t.amp)
    scaler = grad_scaler(device, amp)
    batches = torch.Generator().manual_seed(t.seed + 1 + dist_info.rank)  # training windows, per rank
    objects = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)

    step, seconds = 0, 0.0
    if checkpoint is not None:
        state = restore_run(checkpoint, dist_info, objects, (batches,), seed=t.seed)
        step, seconds = state["step"], state["seconds"]
    scheduler.step_update(num_updates=step)

    train_model = wrap_model(model, dist_info, compile=t.compile)
    logger = MetricsLogger(out_dir, enabled=is_main)
    eval_logger = MetricsLogger(out_dir / "eval", enabled=is_main)
    if is_main:
        print(
            f"{cfg.model.arch}: {n_params / 1e6:.3f}M params, vocab {tokenizer.vocab_size}, {len(train_data):,} "
            f"train / {len(val_data):,} val tokens, {t.batch_size} x {t.block_size} tokens per update, world "
            f"size {dist_info.world_size}, device {device}"
        )

    last = out_dir / "last.pt"
    checkpoint_info = dict(model_args=model_args, tokenizer=tokenizer)
    stop_at = min(t.steps, t.stop_after) if t.stop_after else t.steps
    val_loss = float("nan")  # the last validation loss
    if step == 0:
        val_loss = validate(model, eval_share, eval_logger, step=step, seconds=seconds, device=device, amp=amp)
    base_group = next(g for g in optimizer.param_groups if g["initial_lr"] == cfg.optim.lr)  # for logging the lr
    window = LogWindow(
        logger,
        total=t.steps,
        initial=step,
        desc=cfg.model.arch,
        rate_name="tokens_per_s",
        items_per_update=t.batch_size * t.block_size,
    )
    windows = sampled_windows(train_data, micro_batch, batches, device)
    while step < stop_at:
        t0 = time.perf_counter()
        train_model.train()
        loss = train_update(
            train_model,
            windows,
            next_token_loss,
            accum_steps=t.accum_steps,
            optimizer=optimizer,
            scaler=scaler,
            clip_grad=cfg.optim.grad_clip,
            device=device,
            amp=amp,
        )
        step += 1
        scheduler.step_update(num_updates=step)
        seconds += time.perf_counter() - t0
        window.update()

        if step % t.log_every == 0 or step == stop_at:
            window.log(step, loss, base_group["lr"])
        if step % t.eval_every == 0 or step == t.steps:
            val_loss = validate(model, eval_share, eval_logger, step=step, seconds=seconds, device=device, amp=amp)
            save(last, dist_info, objects, batches, cfg, step=step, seconds=seconds, **checkpoint_info)
            window.reset()  # throughput excludes evaluation and saving
    window.close()
    if step % t.eval_every and step < t.steps:  # stopped early between evaluations
        save(last, dist_info, objects, batches, cfg, step=step, seconds=seconds, **checkpoint_info)

    summary: dict = {}
    if step == t.steps and math.isnan(val_loss):  # resumed a finished run
        val_loss = evaluate_lm(model, eval_share, device=device, amp_dtype=amp)["loss"]
    if step == t.steps and is_main:
        tokens_per_s = step * t.batch_size * t.block_size / max(seconds, 1e-9)
        summary = dict(
            arch=cfg.model.arch,
            params=n_params,
            steps=step,
            val_loss=val_loss,
            train_seconds=seconds,
            tokens_per_s=tokens_per_s,
        )
        export_safetensors(model, out_dir / "model.safetensors")
    if step == t.steps and t.final_eval:
        share = itertools.islice(val_data.iter_batches(t.batch_size), dist_info.rank, None, dist_info.world_size)
        full = evaluate_lm(model, share, device=device, amp_dtype=amp)
        summary.update(full_val_loss=full["loss"], full_val_ppl=full["ppl"], full_val_tokens=full["tokens"])
    if is_main and summary:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print("summary: " + json.dumps(summary))
    logger.close()
    eval_logger.close()
    cleanup_distributed()
    return summary


if __name__ == "__main__":
    main()
