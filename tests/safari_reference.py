"""An independent float64 reference of the original (HazyResearch/safari) Hyena operator, written from
../shared/docs/hyena-reference-facts.md: a function of a safari-layout state dict, with the long convolution done
directly (O(L^2), no FFT), so it shares no code with hyena_vision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def safari_positional_embedding(emb_dim: int, l_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z (1, L, emb_dim) and t (1, L, 1) exactly as the facts state them."""
    t = torch.linspace(0, 1, l_max, dtype=torch.float64)[None, :, None]
    bands = (emb_dim - 1) // 2
    w = 2 * math.pi * torch.arange(l_max, dtype=torch.float64)[None, :, None] / l_max
    f = torch.linspace(1e-4, bands - 1, bands, dtype=torch.float64)[None, None]
    return torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1), t


def random_safari_state_dict(
    d_model: int,
    l_max: int,
    order: int,
    *,
    emb_dim: int = 5,
    filter_order: int = 16,
    num_inner_mlps: int = 2,
    w: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """A random float64 state dict with the keys and shapes of one safari ``HyenaOperator`` (short filter 3).

    Values are random (not the init) so a converter that recomputes instead of copying something is caught.
    """

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, dtype=torch.float64, generator=generator) * scale

    inner, channels, width = (order + 1) * d_model, d_model * (order - 1), filter_order
    z, t = safari_positional_embedding(emb_dim, l_max)
    freq = w + 0.1 * rand(1, width)  # one Sin module, shared by every use
    sd = {
        "in_proj.weight": rand(inner, d_model, scale=d_model**-0.5),
        "in_proj.bias": rand(inner, scale=0.1),
        "out_proj.weight": rand(d_model, d_model, scale=d_model**-0.5),
        "out_proj.bias": rand(d_model, scale=0.1),
        "short_filter.weight": rand(inner, 1, 3, scale=0.5),
        "short_filter.bias": rand(inner, scale=0.1),
        "filter_fn.bias": rand(channels),
        "filter_fn.pos_emb.z": z + 0.01 * rand(*z.shape),
        "filter_fn.pos_emb.t": t,
        "filter_fn.implicit_filter.0.weight": rand(width, emb_dim),
        "filter_fn.implicit_filter.0.bias": rand(width),
        "filter_fn.implicit_filter.1.freq": freq,
        "filter_fn.modulation.deltas": torch.linspace(
            math.log(1e-2) / 1.5, math.log(1e-2) / 0.3, channels, dtype=torch.float64
        )[None, None]
        * (1 + 0.1 * rand(1, 1, channels)),
    }
    for i in range(num_inner_mlps):
        sd[f"filter_fn.implicit_filter.{2 + 2 * i}.weight"] = rand(width, width, scale=width**-0.5)
        sd[f"filter_fn.implicit_filter.{2 + 2 * i}.bias"] = rand(width, scale=0.1)
        sd[f"filter_fn.implicit_filter.{3 + 2 * i}.freq"] = freq
    sd[f"filter_fn.implicit_filter.{2 + 2 * num_inner_mlps}.weight"] = rand(channels, width, scale=width**-0.5)
    return sd


def direct_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y[..., c, t] = sum_{s <= t} k[c, s] u[..., c, t - s], by a loop over lags (no FFT)."""
    length = u.shape[-1]
    y = torch.zeros_like(u)
    for s in range(min(length, k.shape[-1])):
        y[..., s:] += k[:, s, None] * u[..., : length - s]
    return y


def safari_operator_forward(
    sd: dict[str, torch.Tensor], u: torch.Tensor, order: int, *, layout: str, modulate: bool = True
) -> torch.Tensor:
    """The original operator's output for input u (B, L, D) with L <= l_max.

    layout "hyena": filter channel c = d * (N-1) + o; "standalone": c = o * D + d.
    """
    batch, length, d_model = u.shape
    steps = order - 1
    z = F.linear(u, sd["in_proj.weight"], sd["in_proj.bias"]).transpose(1, 2)  # (B, (N+1) D, L)
    z = F.conv1d(z, sd["short_filter.weight"], sd["short_filter.bias"], padding=2, groups=z.shape[1])[..., :length]
    *x, v = z.split(d_model, dim=1)

    freq = sd["filter_fn.implicit_filter.1.freq"]
    linears = sorted(
        int(key.split(".")[2]) for key in sd if key.startswith("filter_fn.implicit_filter.") and key.endswith("weight")
    )
    h = sd["filter_fn.pos_emb.z"][0, :length]  # (L, E)
    for index in linears[:-1]:
        prefix = f"filter_fn.implicit_filter.{index}"
        h = torch.sin(freq * F.linear(h, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]))
    h = F.linear(h, sd[f"filter_fn.implicit_filter.{linears[-1]}.weight"])  # (L, C)
    if modulate:
        t = sd["filter_fn.pos_emb.t"][0, :length]  # (L, 1)
        h = h * torch.exp(-t * sd["filter_fn.modulation.deltas"][0].abs())

    def per_step(flat: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., N-1, D)
        if layout == "hyena":
            return flat.reshape(*flat.shape[:-1], d_model, steps).transpose(-1, -2)
        return flat.reshape(*flat.shape[:-1], steps, d_model)

    k = per_step(h).permute(1, 2, 0)  # (N-1, D, L)
    skip = per_step(sd["filter_fn.bias"])  # (N-1, D)
    for o, x_i in enumerate(reversed(x[1:])):
        v = v * x_i
        v = direct_causal_conv(v, k[o]) + skip[o][:, None] * v
    y = (v * x[0]).transpose(1, 2)  # (B, L, D)
    return F.linear(y, sd["out_proj.weight"], sd["out_proj.bias"])
