"""Train a causal language model (HyenaLM or the GPT baseline) on a tokenized text corpus, one process or many.

    python -m train.lm --config configs/lm/shakespeare_char_cpu.yaml
    python -m train.lm --config configs/lm/shakespeare_char_cpu.yaml model.arch=gpt out_dir=runs/char_gpt
    torchrun --nproc_per_node=8 -m train.lm --config configs/lm/shakespeare_char.yaml
    python -m train.lm --config ... out_dir=runs/x --resume            # continue runs/x/last.pt exactly

``train.batch_size`` is the GLOBAL batch (sequences per optimizer update over all processes and accumulation
steps). Every ``train.eval_every`` updates the loss on a fixed set of ``train.eval_batches`` random validation
windows is logged (the same windows for every run with the same seed); at the end, the loss over the whole
validation split (every token predicted once, windows of ``train.block_size``). The run folder gets config.yaml,
metrics.{jsonl,csv} + tb/ (training), eval/metrics.{jsonl,csv} + eval/tb/ (validation), last.pt (atomic: model,
optimizer, scheduler, RNG and data-sampler states, step, tokenizer, model arguments), summary.json and
model.safetensors.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from tqdm import tqdm

from hyena_vision.data.text import TokenDataset, prepare_text_corpus
from hyena_vision.layers import param_groups
from hyena_vision.models.gpt import create_lm
from hyena_vision.models.hyena_lm import evaluate_lm
from hyena_vision.training import (
    MetricsLogger,
    cleanup_distributed,
    export_safetensors,
    init_distributed,
    load_checkpoint,
    load_config,
    resume_path,
    rng_state,
    save_checkpoint,
    save_config,
    set_rng_state,
    unwrap_model,
)

# ----------------------------------------------------------------------------------------------------------------
# Config schema (unknown keys anywhere are errors)


@dataclass
class HyenaArgs:
    order: int = 2
    filter_order: int = 64  # width of the filter FFN
    emb_dim: int = 3
    num_inner_mlps: int = 2
    w: float = 14.0  # sine frequency of the filter FFN
    short_filter_order: int = 3
    modulate: bool = True
    mixer_dropout: float = 0.0
    filter_lr: float | None = 1e-3  # null: the filter FFN uses optim.lr
    lr_pos_emb: float = 1e-5


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
class OptimConfig:
    lr: float = 1e-3  # peak; parameters with optimizer hints (filters) keep their own
    min_lr: float = 1e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-8
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max global grad norm; 0: off


@dataclass
class TrainConfig:
    steps: int = 2000  # optimizer updates; the cosine schedule spans them
    stop_after: int = 0  # > 0: stop (with a checkpoint) after this many updates; resume later
    batch_size: int = 12  # global sequences per update
    accum_steps: int = 1
    block_size: int = 64  # training context
    amp: str = "none"  # bf16 | none
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
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs/lm"


AMP_DTYPES = {"bf16": torch.bfloat16, "none": None}


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
    optimizer = create_optimizer_v2(groups, opt="adamw", lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas),
                                    eps=o.eps)  # fmt: skip
    if not 0 <= o.warmup_steps < cfg.train.steps:
        raise ValueError(f"optim.warmup_steps must be in [0, train.steps), got {o.warmup_steps}")
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.train.steps - o.warmup_steps, lr_min=o.min_lr,
                                  warmup_t=o.warmup_steps, warmup_lr_init=0.0, warmup_prefix=True,
                                  t_in_epochs=False)  # fmt: skip
    return optimizer, scheduler


def check_config(cfg: LMConfig, world_size: int) -> int:
    """Validate what the schema cannot; returns the per-process micro-batch."""
    t = cfg.train
    if cfg.model.arch not in ("hyena", "gpt"):
        raise ValueError(f"model.arch must be 'hyena' or 'gpt', got {cfg.model.arch!r}")
    if t.amp not in AMP_DTYPES:
        raise ValueError(f"train.amp must be one of {list(AMP_DTYPES)}, got {t.amp!r}")
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


# ----------------------------------------------------------------------------------------------------------------
# Training


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (see configs/lm/); omitted: schema defaults + overrides")
    parser.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    parser.add_argument("--resume-from", metavar="PATH", help="continue from this checkpoint (implies --resume)")
    parser.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. optim.lr=1e-3 train.steps=500")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(LMConfig, args.config, args.overrides)
    dist_info = init_distributed()
    device, is_main, world = dist_info.device, dist_info.is_main, dist_info.world_size
    micro_batch = check_config(cfg, world)
    t = cfg.train
    out_dir = Path(cfg.out_dir)
    checkpoint_path = resume_path(out_dir, resume=args.resume, resume_from=args.resume_from)
    if is_main:
        save_config(cfg, out_dir)

    # data: tokenized once (rank 0 first, the others then read the cached files)
    data_dir = Path(cfg.data.cache_dir) / f"{Path(cfg.data.text).stem}-{cfg.data.tokenizer}"
    if is_main:
        prepare_text_corpus(cfg.data.text, data_dir, cfg.data.tokenizer, cfg.data.val_fraction)
    if dist_info.distributed:
        torch.distributed.barrier()
    train_path, val_path, tokenizer = prepare_text_corpus(cfg.data.text, data_dir, cfg.data.tokenizer,
                                                          cfg.data.val_fraction)  # fmt: skip
    train_data, val_data = TokenDataset(train_path, t.block_size), TokenDataset(val_path, t.block_size)
    eval_windows = torch.Generator().manual_seed(t.seed)  # the same validation windows at every evaluation
    eval_set = [val_data.sample(t.batch_size, eval_windows) for _ in range(t.eval_batches)]
    eval_share = [(x[dist_info.rank :: world], y[dist_info.rank :: world]) for x, y in eval_set]

    # model: the same initial weights on every rank
    torch.manual_seed(t.seed)
    model_args = model_arguments(cfg, tokenizer.vocab_size)
    model = create_lm(cfg.model.arch, **model_args).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer, scheduler = create_optimizer_and_scheduler(cfg, model)
    amp_dtype = AMP_DTYPES[t.amp]
    batches = torch.Generator().manual_seed(t.seed + 1 + dist_info.rank)  # training windows, per rank

    step, train_seconds, ckpt_path = 0, 0.0, out_dir / "last.pt"
    if checkpoint_path is not None:
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, train_seconds = state["step"], state["seconds"]
        set_rng_state(state["rng"][dist_info.rank])
        batches.set_state(state["batches"][dist_info.rank])
    scheduler.step_update(num_updates=step)

    def save() -> None:
        states = [(rng_state(), batches.get_state())]
        if dist_info.distributed:
            states = [None] * world
            torch.distributed.all_gather_object(states, (rng_state(), batches.get_state()))
        if is_main:
            save_checkpoint(ckpt_path, {
                "model": unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": [s[0] for s in states], "batches": [s[1] for s in states],
                "step": step, "seconds": train_seconds, "arch": cfg.model.arch, "model_args": model_args,
                "tokenizer": tokenizer.state(), "config": OmegaConf.to_container(cfg),
            })  # fmt: skip

    train_model = torch.compile(model) if t.compile else model
    if dist_info.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    logger = MetricsLogger(out_dir, enabled=is_main)
    eval_logger = MetricsLogger(out_dir / "eval", enabled=is_main)
    if is_main:
        print(f"{cfg.model.arch}: {n_params / 1e6:.3f}M params, vocab {tokenizer.vocab_size}, {len(train_data):,} "
              f"train / {len(val_data):,} val tokens, {t.batch_size} x {t.block_size} tokens per update, world "
              f"size {world}, device {device}")  # fmt: skip

    def evaluate_and_log() -> float:
        val_loss = evaluate_lm(model, eval_share, device=device, amp_dtype=amp_dtype)["loss"]
        eval_logger.log(step, val_loss=val_loss, train_seconds=train_seconds)
        return val_loss

    tokens_per_update = t.batch_size * t.block_size
    stop_at = min(t.steps, t.stop_after) if t.stop_after else t.steps
    val_loss = evaluate_and_log() if step == 0 else float("nan")
    base_group = next(g for g in optimizer.param_groups if g["initial_lr"] == cfg.optim.lr)  # for logging the lr
    bar = tqdm(total=t.steps, initial=step, desc=cfg.model.arch, unit="upd", disable=not is_main, mininterval=2)
    window_start, window_updates = time.perf_counter(), 0
    while step < stop_at:
        t0 = time.perf_counter()
        train_model.train()
        loss_sum = torch.zeros((), device=device)
        for micro in range(t.accum_steps):
            x, y = (z.to(device) for z in train_data.sample(micro_batch, batches))  # (b, T) each
            last_micro = micro == t.accum_steps - 1
            no_sync = train_model.no_sync if dist_info.distributed and not last_micro else contextlib.nullcontext
            with (
                no_sync(),
                torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None),
            ):
                logits = train_model(x)  # (b, T, V)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten()) / t.accum_steps
            loss.backward()
            loss_sum += loss.detach()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        scheduler.step_update(num_updates=step)
        train_seconds += time.perf_counter() - t0
        window_updates += 1
        bar.update(1)

        if step % t.log_every == 0 or step == stop_at:
            if dist_info.distributed:
                torch.distributed.all_reduce(loss_sum, op=torch.distributed.ReduceOp.AVG)
            if not math.isfinite(loss_sum.item()):
                raise FloatingPointError(f"loss is {loss_sum.item()} at step {step}")
            tok_per_s = window_updates * tokens_per_update / (time.perf_counter() - window_start)
            lr = base_group["lr"]
            logger.log(step, train_loss=loss_sum.item(), lr=lr, tokens_per_s=tok_per_s)
            bar.set_postfix(loss=f"{loss_sum.item():.4f}", val=f"{val_loss:.4f}", tok_s=f"{tok_per_s:.0f}")
            window_start, window_updates = time.perf_counter(), 0
        if step % t.eval_every == 0 or step == t.steps:
            val_loss = evaluate_and_log()
            bar.set_postfix(loss=f"{loss_sum.item():.4f}", val=f"{val_loss:.4f}")
            save()
            window_start, window_updates = time.perf_counter(), 0  # throughput excludes evaluation and saving
    bar.close()
    if step % t.eval_every and step < t.steps:  # stopped early between evaluations
        save()

    summary: dict = {}
    if step == t.steps and math.isnan(val_loss):  # resumed a finished run
        val_loss = evaluate_lm(model, eval_share, device=device, amp_dtype=amp_dtype)["loss"]
    if step == t.steps and is_main:
        tokens_per_s = step * tokens_per_update / max(train_seconds, 1e-9)
        summary = dict(arch=cfg.model.arch, params=n_params, steps=step, val_loss=val_loss,
                       train_seconds=train_seconds, tokens_per_s=tokens_per_s)  # fmt: skip
        export_safetensors(model, out_dir / "model.safetensors")
    if step == t.steps and t.final_eval:
        share = itertools.islice(val_data.iter_batches(t.batch_size), dist_info.rank, None, world)
        full = evaluate_lm(model, share, device=device, amp_dtype=amp_dtype)
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
