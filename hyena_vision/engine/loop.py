"""The training step every trainer shares: micro-batches accumulated under autocast (DDP syncs gradients only on
the last one), then one optimizer update with optional clipping through the AMP grad scaler."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

__all__ = ["AMP_DTYPES", "amp_dtype", "autocast", "grad_scaler", "train_update"]

# train.amp / --amp names -> autocast dtype (None: full precision)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def amp_dtype(name: str, *, key: str = "train.amp") -> torch.dtype | None:
    """The autocast dtype of an AMP name, or a ValueError naming ``key`` and the choices."""
    if name not in AMP_DTYPES:
        raise ValueError(f"{key} must be one of {list(AMP_DTYPES)}, got {name!r}")
    return AMP_DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op context when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its gradients underflow); a pass-through scaler otherwise."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def train_update(
    train_model: torch.nn.Module,
    micro_batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    accum_steps: int,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    clip_grad: float,
    device: torch.device,
    amp: torch.dtype | None,
) -> torch.Tensor:
    """One optimizer update from ``accum_steps`` (inputs, targets) pairs drawn from ``micro_batches`` (on
    ``device``, drawn one at a time so random draws keep their order); returns the mean loss (a 0-d tensor, this
    rank's).

    ``loss_fn(outputs.float(), targets)`` is the mean loss of one micro-batch; it is divided by ``accum_steps``
    so the gradients are those of the whole batch. Under DDP gradients are all-reduced only after the last
    micro-batch. ``clip_grad > 0`` clips the global gradient norm (after unscaling).
    """
    loss_sum = torch.zeros((), device=device)
    for micro in range(accum_steps):
        inputs, targets = next(micro_batches)
        last = micro == accum_steps - 1
        is_ddp = isinstance(train_model, torch.nn.parallel.DistributedDataParallel)
        with train_model.no_sync() if is_ddp and not last else contextlib.nullcontext():
            with autocast(device, amp):
                loss = loss_fn(train_model(inputs).float(), targets) / accum_steps
            scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(train_model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum
