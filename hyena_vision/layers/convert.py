"""Weights of the original implementation (HazyResearch/safari) -> ``HyenaOperator``.

Key mapping for one operator (prefixes stripped; W = filter width, C = D * (N-1) filter channels)::

    in_proj.{weight,bias}, out_proj.{weight,bias}, short_filter.{weight,bias}   -> same names, copied
    filter_fn.implicit_filter.0.{weight,bias}         -> filter.ffn.input.{weight,bias}
    filter_fn.implicit_filter.1.freq      (1, W)      -> filter.ffn.sin.freq (W,)   (3, 5, ... are the same Sin)
    filter_fn.implicit_filter.{2+2i}.{weight,bias}    -> filter.ffn.inner.{i}.{weight,bias}
    filter_fn.implicit_filter.{last}.weight  (C, W)   -> filter.ffn.output.weight   rows permuted
    filter_fn.bias                        (C,)        -> filter.bias                permuted
    filter_fn.modulation.deltas           (1, 1, C)   -> filter.modulation.deltas   permuted
    filter_fn.pos_emb.z (1, L, E), .t (1, L, 1)       -> filter.pos_emb.z (L, E), .t (L, 1)

Filter channel layouts: ours is o-major (channel o*D + d is long convolution o, model channel d), as in
``standalone_hyena.py``; ``hyena.py`` is v-major (channel d*(N-1) + o). Filter o pairs with gate x_{N-1-o}
in both. For order 2 the layouts coincide.
"""

from __future__ import annotations

import re

import torch

__all__ = ["convert_safari_state_dict", "SAFARI_LAYOUTS"]

SAFARI_LAYOUTS = ("hyena", "standalone")
_COPIED = [f"{m}.{p}" for m in ("in_proj", "out_proj", "short_filter") for p in ("weight", "bias")]
_MLP_KEY = re.compile(r"filter_fn\.implicit_filter\.(\d+)\.(weight|bias|freq)")


def _v_major_to_o_major(channels: int, order: int) -> torch.Tensor:
    """Index i in ours (o * D + d) -> index in the v-major layout (d * (N-1) + o)."""
    steps = order - 1
    return torch.arange(channels).view(channels // steps, steps).t().reshape(-1)


def convert_safari_state_dict(state_dict: dict, order: int, *, layout: str = "hyena") -> dict:
    """Map one safari ``HyenaOperator`` state dict (no prefix) onto ``HyenaOperator`` (num_heads=1, inner_factor=1).

    ``layout``: "hyena" for ``src/models/sequence/hyena.py`` checkpoints (v-major filter channels),
    "standalone" for ``standalone_hyena.py`` (o-major). Unknown or missing keys raise ``KeyError``.
    """
    if layout not in SAFARI_LAYOUTS:
        raise ValueError(f"layout must be one of {SAFARI_LAYOUTS}, got {layout!r}")
    if order < 2:
        raise ValueError(f"order must be >= 2, got {order}")
    known = set(_COPIED) | {
        "filter_fn.bias",
        "filter_fn.modulation.deltas",
        "filter_fn.pos_emb.z",
        "filter_fn.pos_emb.t",
    }
    mlp = {}  # index -> {param: tensor}
    for key, value in state_dict.items():
        match = _MLP_KEY.fullmatch(key)
        if match:
            mlp.setdefault(int(match[1]), {})[match[2]] = value
        elif key not in known:
            raise KeyError(f"unexpected key {key!r} in a safari HyenaOperator state dict")
    missing = sorted(known - set(state_dict))
    if missing or 0 not in mlp:
        raise KeyError(f"missing keys in the safari state dict: {missing or ['filter_fn.implicit_filter.0.weight']}")

    channels = state_dict["filter_fn.bias"].shape[0]
    if channels % (order - 1):
        raise ValueError(f"filter has {channels} channels, not a multiple of order-1={order - 1}")
    perm = _v_major_to_o_major(channels, order) if layout == "hyena" else torch.arange(channels)

    out = {key: state_dict[key] for key in _COPIED}
    linears = sorted(i for i, p in mlp.items() if "weight" in p)  # 0, 2, 4, ..., last
    out["filter.ffn.input.weight"] = mlp[0]["weight"]
    out["filter.ffn.input.bias"] = mlp[0]["bias"]
    out["filter.ffn.sin.freq"] = mlp[1]["freq"].reshape(-1)
    for i, index in enumerate(linears[1:-1]):
        out[f"filter.ffn.inner.{i}.weight"] = mlp[index]["weight"]
        out[f"filter.ffn.inner.{i}.bias"] = mlp[index]["bias"]
    out["filter.ffn.output.weight"] = mlp[linears[-1]]["weight"][perm]
    out["filter.bias"] = state_dict["filter_fn.bias"][perm]
    out["filter.modulation.deltas"] = state_dict["filter_fn.modulation.deltas"].reshape(-1)[perm]
    out["filter.pos_emb.z"] = state_dict["filter_fn.pos_emb.z"].reshape(-1, state_dict["filter_fn.pos_emb.z"].shape[-1])
    out["filter.pos_emb.t"] = state_dict["filter_fn.pos_emb.t"].reshape(-1, 1)
    return out
