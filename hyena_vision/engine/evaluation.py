"""Evaluation loops: a classifier's accuracy and loss over a loader, a language model's loss over token windows.
Under torch.distributed each rank evaluates its own share and the sums are reduced over all ranks."""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .loop import autocast

__all__ = ["evaluate_classifier", "evaluate_lm"]


@torch.no_grad()
def evaluate_classifier(
    model: torch.nn.Module,
    loader,
    *,
    num_classes: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    return_predictions: bool = False,
) -> dict:
    """Top-1 / top-5 accuracy (torchmetrics, micro average: the fraction of images), mean cross-entropy, image count
    and throughput over ``loader``; under torch.distributed the metrics are summed over all ranks.

    ``return_predictions``: also ``"predictions"`` and ``"targets"``, the (N,) int64 predicted and true classes in
    loader order (one process only), for paired tests between models evaluated on the same images.
    """
    if return_predictions and dist.is_available() and dist.is_initialized():
        raise ValueError("return_predictions=True needs a single process (each rank sees only its share of images)")
    from torchmetrics.classification import MulticlassAccuracy

    was_training = model.training
    model.eval()
    top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro").to(device)
    top5 = MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), average="micro").to(device)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, images)
    predictions, labels = [], []
    start = time.perf_counter()
    for images, targets in tqdm(loader, desc="eval", unit="batch", disable=not progress, leave=False):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(images)  # (B, num_classes)
        logits = logits.float()
        totals[0] += F.cross_entropy(logits, targets, reduction="sum").double()
        totals[1] += targets.numel()
        top1.update(logits, targets)
        top5.update(logits, targets)
        if return_predictions:
            predictions.append(logits.argmax(dim=1).cpu())
            labels.append(targets.cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    model.train(was_training)
    images = int(totals[1].item())
    if images == 0:
        raise ValueError("evaluation loader yielded no images")
    metrics = {
        "top1": 100.0 * top1.compute().item(),
        "top5": 100.0 * top5.compute().item(),
        "loss": totals[0].item() / images,
        "images": images,
        "img_per_s": images / seconds,
    }
    if return_predictions:
        metrics["predictions"], metrics["targets"] = torch.cat(predictions), torch.cat(labels)  # (N,), (N,)
    return metrics


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, batches, *, device: torch.device, amp_dtype: torch.dtype | None = None) -> dict:
    """Mean next-token cross-entropy (nats) and token count over ``batches`` of (x, y) (B, T) int64 windows.

    Under torch.distributed the sums are reduced over all ranks (give each rank its own share of the batches).
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, tokens)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast(device, amp_dtype):
            logits = model(x)  # (B, T, V)
        totals[0] += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").double()
        totals[1] += y.numel()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    model.train(was_training)
    loss = (totals[0] / totals[1].clamp(min=1)).item()
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": int(totals[1].item())}
