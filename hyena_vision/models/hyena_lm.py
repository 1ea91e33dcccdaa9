"""HyenaLM: the causal Hyena language model (Poli et al. 2023), with cached generation and original-weight loading.

A ``CausalLM`` (``_lm.py``): token embedding (tied with the output head), ``n_layer`` pre-norm blocks
``x = x + mixer(norm1(x)); x = x + mlp(norm2(x))`` with a causal ``HyenaOperator`` as the mixer, a final LayerNorm
``ln_f``; no positional embedding (the implicit filters know positions). GPT-2 initialisation as in the original
``ConvLMHeadModel``: N(0, 0.02) on every Linear (the filters' FFNs included) and on the embedding, zero biases,
residual projections (``out_proj``, ``mlp.fc2``) with std 0.02 / sqrt(2 * n_layer).

``generate`` keeps a cache per layer (the short convolution's input window and the history of the gated inputs
of every long convolution), so each new token costs one dot product over the history per channel, O(L) work per
layer, instead of re-running the whole sequence.

Weights of the original (HazyResearch/safari ``ConvLMHeadModel``) load through ``convert_safari_lm_state_dict`` /
``HyenaLM.from_safari_state_dict``; with timm, ``timm.create_model('hyena_lm_153m', pretrained=True,
pretrained_cfg_overlay=dict(file=path), filter_cfg=dict(modulate=False))`` accepts such a checkpoint too (released
weights are evaluated with ``modulate=False``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..layers import HyenaOperator, ImplicitFilterConfig, convert_safari_state_dict
from ..ops import fftconv
from ._helpers import variant_kwargs
from ._lm import CausalLM, init_gpt2_weights, sample_next_token

__all__ = [
    "HyenaLM",
    "convert_safari_lm_state_dict",
    "init_gpt2_weights",
    "lm_checkpoint_filter_fn",
    "sample_next_token",
]


# ----------------------------------------------------------------------------------------------------------------
# Incremental (cached) evaluation of one causal HyenaOperator


@dataclass
class HyenaMixerCache:
    """State of one causal ``HyenaOperator`` after ``steps`` tokens.

    ``window``: the last ``short_filter_order - 1`` inputs of the short convolution (B, (N+1) D, K-1);
    ``history``: gated inputs of every long convolution (N-1, B, D, T_total); ``kernels_reversed``: the long
    filters for T_total steps, time-reversed (N-1, D, T_total); ``skip`` (N-1, D).
    """

    window: torch.Tensor
    history: torch.Tensor
    kernels_reversed: torch.Tensor
    skip: torch.Tensor
    steps: int


def hyena_prefill(mixer: HyenaOperator, u: torch.Tensor, total_len: int) -> tuple[torch.Tensor, HyenaMixerCache]:
    """Run ``mixer`` on the prompt u (B, T, D) and return its output with a cache sized for ``total_len`` tokens."""
    if not mixer.causal or mixer.training:
        raise ValueError("cached evaluation needs a causal HyenaOperator in eval mode")
    batch, length, _ = u.shape
    kernel_size = mixer.short_filter.kernel_size[0]
    k, skip = mixer.long_filters(total_len)  # (N-1, D, T_total), (N-1, D)
    z = mixer.in_proj(u).transpose(1, 2)  # (B, (N+1) D, T)
    window = F.pad(z, (kernel_size - 1, 0))[..., z.shape[-1] :]  # (B, (N+1) D, K-1), zeros before the start
    z = mixer.short_filter(z)[..., :length]
    *x, v = z.split(mixer.d_inner, dim=1)  # (B, D, T) each
    history = u.new_zeros(mixer.order - 1, batch, mixer.d_inner, total_len)
    for o, x_i in enumerate(x[:0:-1]):
        history[o, ..., :length] = v * x_i
        v = fftconv(history[o, ..., :length], k[o, :, :length], skip[o], backend=mixer.fftconv_backend)
    y = mixer.out_proj((v * x[0]).transpose(1, 2))  # (B, T, D)
    return y, HyenaMixerCache(window, history, k.flip(-1), skip, length)


def hyena_step(mixer: HyenaOperator, u: torch.Tensor, cache: HyenaMixerCache) -> torch.Tensor:
    """One new token u (B, D) -> (B, D); updates ``cache`` in place. O(steps * D) work."""
    t, total_len = cache.steps, cache.history.shape[-1]
    if t >= total_len:
        raise ValueError(f"cache is full ({total_len} steps)")
    z = mixer.in_proj(u)  # (B, (N+1) D)
    window = torch.cat([cache.window, z[..., None]], dim=-1)  # (B, (N+1) D, K)
    cache.window = window[..., 1:]
    z = (window * mixer.short_filter.weight[:, 0]).sum(-1) + mixer.short_filter.bias  # (B, (N+1) D)
    *x, v = z.split(mixer.d_inner, dim=-1)
    for o, x_i in enumerate(x[:0:-1]):
        gated = v * x_i
        cache.history[o, ..., t] = gated
        kernel = cache.kernels_reversed[o, :, total_len - 1 - t :]  # k[o, :, t], ..., k[o, :, 0]   (D, t+1)
        v = torch.einsum("bdt,dt->bd", cache.history[o, ..., : t + 1], kernel) + cache.skip[o] * gated
    cache.steps = t + 1
    return mixer.out_proj(v * x[0])


# ----------------------------------------------------------------------------------------------------------------
# Model


class HyenaLM(CausalLM):
    """Causal Hyena language model: token ids (B, L) -> logits (B, L, vocab_size) (see the module docstring).

    ``order`` counts the original's way (N gates, N-1 long convolutions). ``filter_cfg`` holds the implicit filters
    of every layer (``ImplicitFilterConfig`` or a mapping of its fields, None: its defaults): the filter FFN's width
    ``filter_order``, its hidden layers ``num_inner_mlps`` (2 = four Linear layers), its sine frequency ``w``, the
    width ``emb_dim`` of its positional features, their optimizer hints ``lr`` and ``lr_pos_emb``. ``dropout`` acts
    on each residual branch, ``embed_dropout`` on the embeddings, ``mixer_dropout`` inside the operator. See
    ``CausalLM`` for the vocabulary padding.
    """

    has_cache = True

    def __init__(
        self,
        vocab_size: int = 50257,
        *,
        d_model: int = 768,
        n_layer: int = 12,
        d_mlp: int = 3072,
        l_max: int = 2048,
        order: int = 2,
        short_filter_order: int = 3,
        filter_cfg: ImplicitFilterConfig | Mapping | None = None,
        dropout: float = 0.0,
        embed_dropout: float = 0.0,
        mixer_dropout: float = 0.0,
        pad_vocab_size_multiple: int = 8,
        layer_norm_eps: float = 1e-5,
        fftconv_backend: str = "auto",
        device=None,
        dtype=None,
    ):
        mixer_layer = partial(
            HyenaOperator,
            l_max=l_max,
            order=order,
            short_filter_order=short_filter_order,
            causal=True,
            dropout=mixer_dropout,
            fftconv_backend=fftconv_backend,
            filter_cfg=ImplicitFilterConfig.resolve(filter_cfg),
        )
        super().__init__(
            vocab_size,
            mixer_layer=mixer_layer,
            d_model=d_model,
            n_layer=n_layer,
            d_mlp=d_mlp,
            l_max=l_max,
            dropout=dropout,
            embed_dropout=embed_dropout,
            pad_vocab_size_multiple=pad_vocab_size_multiple,
            layer_norm_eps=layer_norm_eps,
            device=device,
            dtype=dtype,
        )
        self.init_weights()

    def prefill(self, ids: torch.Tensor, total_len: int) -> tuple[torch.Tensor, list[HyenaMixerCache]]:
        """Process the prompt (B, T); returns the last position's logits (B, V) and per-layer caches."""
        self.check_ids(ids)
        x = self.embed(ids)  # (B, T, D)
        caches = []
        for layer in self.layers:
            y, cache = hyena_prefill(layer.mixer, layer.norm1(x), total_len)
            x = layer.mlp_residual(x + y)
            caches.append(cache)
        return self.logits(x[:, -1]), caches

    def step(self, token: torch.Tensor, caches: list[HyenaMixerCache]) -> torch.Tensor:
        """One token per sequence (B,) -> logits (B, V) for the next position, updating ``caches``."""
        x = self.embed(token)  # (B, D)
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer.mlp_residual(x + hyena_step(layer.mixer, layer.norm1(x), cache))
        return self.logits(x)

    @classmethod
    def from_safari_state_dict(cls, state_dict: dict, *, layout: str = "hyena", **kwargs) -> HyenaLM:
        """Build a ``HyenaLM(**kwargs)`` and load an original ``ConvLMHeadModel`` state dict into it (strict)."""
        model = cls(**kwargs)
        order = model.layers[0].mixer.order
        model.load_state_dict(convert_safari_lm_state_dict(state_dict, order, layout=layout))
        return model


def convert_safari_lm_state_dict(state_dict: dict, order: int, *, layout: str = "hyena") -> dict:
    """Original ``ConvLMHeadModel`` keys (optionally under a Lightning ``model.`` prefix) -> ``HyenaLM`` keys.

    ``backbone.embeddings.word_embeddings.weight`` -> ``word_embeddings.weight``; ``backbone.layers.{i}.mixer.*``
    through ``convert_safari_state_dict``; norms and MLP keep their names; ``backbone.ln_f.*`` -> ``ln_f.*``;
    ``lm_head.weight`` must equal the embedding (tied) and is dropped. Unknown keys raise ``KeyError``.
    """
    prefix = "model." if any(k.startswith("model.backbone.") for k in state_dict) else ""
    out, mixers = {}, {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            raise KeyError(f"unexpected key {key!r} in a safari ConvLMHeadModel state dict")
        name = key[len(prefix) :]
        parts = name.split(".")
        if name == "backbone.embeddings.word_embeddings.weight":
            out["word_embeddings.weight"] = value
        elif name.startswith("backbone.ln_f."):
            out[name.removeprefix("backbone.")] = value
        elif name == "lm_head.weight":
            continue
        elif len(parts) > 4 and parts[:2] == ["backbone", "layers"] and parts[3] == "mixer":
            mixers.setdefault(int(parts[2]), {})[".".join(parts[4:])] = value
        elif len(parts) > 4 and parts[:2] == ["backbone", "layers"] and parts[3] in ("norm1", "norm2", "mlp"):
            out[f"layers.{parts[2]}.{'.'.join(parts[3:])}"] = value
        else:
            raise KeyError(f"unexpected key {key!r} in a safari ConvLMHeadModel state dict")
    head = state_dict.get(prefix + "lm_head.weight")
    if head is not None and not torch.equal(head, out["word_embeddings.weight"]):
        raise ValueError("lm_head.weight differs from the word embeddings; HyenaLM ties them")
    for index, mixer_sd in mixers.items():
        for key, value in convert_safari_state_dict(mixer_sd, order, layout=layout).items():
            out[f"layers.{index}.mixer.{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------------------------
# timm registration


def lm_checkpoint_filter_fn(state_dict: dict, model: HyenaLM) -> dict:
    """Accept our own state dicts as they are and original (safari) ones through the converter."""
    if not any(k.startswith(("backbone.", "model.backbone.")) for k in state_dict):
        return state_dict
    return convert_safari_lm_state_dict(state_dict, model.layers[0].mixer.order)


def _cfg(**kwargs) -> dict:
    # num_classes -1 and input_size None: timm passes no image keyword arguments (num_classes, in_chans) to HyenaLM
    return {"url": "", "num_classes": -1, "input_size": None, "classifier": None, "license": "apache-2.0", **kwargs}


default_cfgs = generate_default_cfgs(
    {
        "hyena_lm_125m.untrained": _cfg(),
        "hyena_lm_153m.untrained": _cfg(),
        "hyena_lm_char_small.untrained": _cfg(),
    }
)


def _create_hyena_lm(variant: str, pretrained: bool = False, **kwargs) -> HyenaLM:
    return build_model_with_cfg(HyenaLM, variant, pretrained, pretrained_filter_fn=lm_checkpoint_filter_fn, **kwargs)


@register_model
def hyena_lm_125m(pretrained: bool = False, **kwargs) -> HyenaLM:
    """12 x 768, MLP 3072, order 3, filter FFN width 64 with 4 Linear layers, emb_dim 33, sine frequency 14."""
    args = dict(vocab_size=50257, d_model=768, n_layer=12, d_mlp=3072, l_max=2048, order=3)
    args.update(filter_cfg=dict(emb_dim=33, w=14.0))
    return _create_hyena_lm("hyena_lm_125m", pretrained, **variant_kwargs(args, kwargs))


@register_model
def hyena_lm_153m(pretrained: bool = False, **kwargs) -> HyenaLM:
    """The original's Pile "Hyena small": 18 x 864, MLP 1728, order 2, emb_dim 33, w 14, l_max 2048."""
    args = dict(vocab_size=50257, d_model=864, n_layer=18, d_mlp=1728, l_max=2048, order=2)
    args.update(filter_cfg=dict(emb_dim=33, w=14.0))
    return _create_hyena_lm("hyena_lm_153m", pretrained, **variant_kwargs(args, kwargs))


@register_model
def hyena_lm_char_small(pretrained: bool = False, **kwargs) -> HyenaLM:
    """Character-level size of nanoGPT's CPU baby GPT: 4 x 128, MLP 512, context 64 (Tiny Shakespeare, 65 chars)."""
    args = dict(vocab_size=65, d_model=128, n_layer=4, d_mlp=512, l_max=64, order=2)
    args.update(filter_cfg=dict(w=14.0))
    return _create_hyena_lm("hyena_lm_char_small", pretrained, **variant_kwargs(args, kwargs))
