"""Per-parameter optimizer hints and the parameter groups built from them.

A layer marks a parameter with ``set_optim_hints(p, lr=..., weight_decay=...)``; ``param_groups`` turns a model's
parameters into optimizer groups (the form ``torch.optim`` and timm's ``create_optimizer_v2`` accept): hinted
parameters get their own lr / weight decay, biases, norms and 1-D parameters get no weight decay, the rest the base
values.
"""

from __future__ import annotations

import torch
from torch import nn

OPTIM_HINTS_ATTR = "_optim"
__all__ = ["set_optim_hints", "get_optim_hints", "param_groups", "no_weight_decay_names"]


def set_optim_hints(param: nn.Parameter, *, lr: float | None = None, weight_decay: float | None = None) -> None:
    """Attach optimizer hints (the attribute name matches the original Hyena code's ``_optim``)."""
    hints = {}
    if lr is not None:
        hints["lr"] = float(lr)
    if weight_decay is not None:
        hints["weight_decay"] = float(weight_decay)
    setattr(param, OPTIM_HINTS_ATTR, hints)


def get_optim_hints(param: torch.Tensor) -> dict:
    return dict(getattr(param, OPTIM_HINTS_ATTR, {}))


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters whose hints set weight decay to 0 (for timm's ``no_weight_decay``)."""
    return {n for n, p in model.named_parameters() if get_optim_hints(p).get("weight_decay", None) == 0.0}


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    *,
    no_weight_decay: set[str] | frozenset[str] = frozenset(),
) -> list[dict]:
    """Optimizer parameter groups honouring each parameter's hints.

    Parameters named in ``no_weight_decay`` (e.g. ``model.no_weight_decay()``), biases and other 1-D parameters
    get weight decay 0 unless a hint says otherwise. Groups are keyed by (lr, weight_decay); frozen parameters
    are left out. Each group records ``lr`` so schedulers scale every group from its own base.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        hints = get_optim_hints(param)
        default_wd = 0.0 if (param.ndim <= 1 or name in no_weight_decay) else weight_decay
        key = (hints.get("lr", lr), hints.get("weight_decay", default_wd))
        groups.setdefault(key, []).append(param)
    return [{"params": ps, "lr": g_lr, "weight_decay": g_wd} for (g_lr, g_wd), ps in groups.items()]
