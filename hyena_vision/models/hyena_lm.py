"""HyenaLM: the causal Hyena language model (Poli et al. 2023), with cached generation and original-weight loading.

Token embedding (tied with the output head), ``n_layer`` pre-norm blocks ``x = x + mixer(norm1(x));
x = x + mlp(norm2(x))`` with a causal ``HyenaOperator`` as the mixer, a final LayerNorm ``ln_f``; no positional
embedding (the implicit filters know positions). GPT-2 initialisation as in the original ``ConvLMHeadModel``:
N(0, 0.02) on every Linear (the filters' FFNs included) and on the embedding, zero biases, residual projections
(``out_proj``, ``mlp.fc2``) with std 0.02 / sqrt(2 * n_layer).

``generate`` keeps a cache per layer (the short convolution's input window and the history of the gated inputs
of every long convolution), so each new token costs one dot product over the history per channel, O(L) work per
layer, instead of re-running the whole sequence.

Weights of the original (HazyResearch/safari ``ConvLMHeadModel``) load through ``convert_safari_lm_state_dict`` /
``HyenaLM.from_safari_state_dict``; with timm, ``timm.create_model('hyena_lm_153m', pretrained=True,
pretrained_cfg_overlay=dict(file=path), modulate=False)`` accepts such a checkpoint too (released weights are
evaluated with ``modulate=False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ..layers import HyenaOperator, convert_safari_state_dict
from ..ops import fftconv

__all__ = [
    "HyenaLM",
    "Mlp",
    "convert_safari_lm_state_dict",
    "init_gpt2_weights",
    "sample_next_token",
]


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    if vocab_size < 1 or multiple < 1:
        raise ValueError(f"vocab_size and pad_vocab_size_multiple must be >= 1, got {vocab_size}, {multiple}")
    return math.ceil(vocab_size / multiple) * multiple


class Mlp(nn.Module):
    """Linear -> GELU(tanh) -> Linear, the MLP of GPT-2 and of the original Hyena LM."""

    def __init__(self, d_model: int, d_mlp: int, *, device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_mlp, device=device, dtype=dtype)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(d_mlp, d_model, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def init_gpt2_weights(model: nn.Module, n_layer: int, std: float = 0.02) -> None:
    """N(0, std) on every Linear and Embedding, zero Linear biases, ``*.out_proj.weight`` and ``*.fc2.weight``
    (the projections that write into the residual stream) with std / sqrt(2 * n_layer)."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for name, param in model.named_parameters():
        if name.endswith(("out_proj.weight", "fc2.weight")):
            nn.init.normal_(param, std=std / math.sqrt(2 * n_layer))


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, V) logits -> (B, 1) token ids: argmax when ``temperature == 0``, else top-k sampling at ``temperature``."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


def check_generate_args(
    prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int | None, vocab_size: int, l_max: int
) -> None:
    if prompt_ids.ndim != 2 or prompt_ids.shape[1] < 1 or prompt_ids.dtype != torch.long:
        raise ValueError(
            f"prompt_ids must be int64 (B, T) with T >= 1, got {prompt_ids.dtype} {tuple(prompt_ids.shape)}"
        )
    if prompt_ids.min() < 0 or prompt_ids.max() >= vocab_size:
        raise ValueError(f"prompt_ids must lie in [0, vocab_size={vocab_size})")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if prompt_ids.shape[1] + max_new_tokens > l_max:
        raise ValueError(
            f"prompt length {prompt_ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds the model's l_max={l_max}"
        )
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be None or >= 1, got {top_k}")


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


class HyenaBlock(nn.Module):
    """Pre-norm residual block: ``x + dropout(mixer(norm1(x)))``, then ``x + dropout(mlp(norm2(x)))``."""

    def __init__(self, d_model: int, d_mlp: int, mixer: HyenaOperator, *, dropout: float, eps: float, device, dtype):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=eps, device=device, dtype=dtype)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(d_model, eps=eps, device=device, dtype=dtype)
        self.mlp = Mlp(d_model, d_mlp, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.mixer(self.norm1(x)))
        return x + self.dropout(self.mlp(self.norm2(x)))

    def prefill(self, x: torch.Tensor, total_len: int) -> tuple[torch.Tensor, HyenaMixerCache]:
        y, cache = hyena_prefill(self.mixer, self.norm1(x), total_len)
        x = x + y
        return x + self.mlp(self.norm2(x)), cache

    def step(self, x: torch.Tensor, cache: HyenaMixerCache) -> torch.Tensor:
        x = x + hyena_step(self.mixer, self.norm1(x), cache)
        return x + self.mlp(self.norm2(x))


class HyenaLM(nn.Module):
    """Causal Hyena language model: token ids (B, L) -> logits (B, L, vocab_size).

    The embedding has ``vocab_size`` rounded up to ``pad_vocab_size_multiple`` rows (as the original, for
    checkpoint compatibility and fast matmuls); logits of the padding rows are dropped. ``order`` counts the
    original's way (N gates, N-1 long convolutions). ``filter_order`` is the filter FFN's width,
    ``num_inner_mlps`` its hidden layers (2 = four Linear layers), ``w`` its sine frequency, ``emb_dim`` the
    width of its positional features. ``dropout`` acts on each residual branch, ``embed_dropout`` on the
    embeddings, ``mixer_dropout`` inside the operator.
    """

    def __init__(
        self,
        vocab_size: int = 50257,
        *,
        d_model: int = 768,
        n_layer: int = 12,
        d_mlp: int = 3072,
        l_max: int = 2048,
        order: int = 2,
        filter_order: int = 64,
        emb_dim: int = 3,
        num_inner_mlps: int = 2,
        w: float = 1.0,
        short_filter_order: int = 3,
        modulate: bool = True,
        dropout: float = 0.0,
        embed_dropout: float = 0.0,
        mixer_dropout: float = 0.0,
        filter_lr: float | None = 1e-3,
        lr_pos_emb: float = 1e-5,
        pad_vocab_size_multiple: int = 8,
        layer_norm_eps: float = 1e-5,
        fftconv_backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if n_layer < 1 or d_mlp < 1:
            raise ValueError(f"n_layer and d_mlp must be >= 1, got {n_layer}, {d_mlp}")
        if not 0 <= dropout < 1 or not 0 <= embed_dropout < 1:
            raise ValueError(f"dropout and embed_dropout must be in [0, 1), got {dropout}, {embed_dropout}")
        factory = {"device": device, "dtype": dtype}
        self.vocab_size, self.d_model, self.n_layer, self.l_max = vocab_size, d_model, n_layer, l_max
        self.word_embeddings = nn.Embedding(padded_vocab_size(vocab_size, pad_vocab_size_multiple), d_model, **factory)
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList(
            HyenaBlock(
                d_model,
                d_mlp,
                HyenaOperator(
                    d_model,
                    l_max,
                    order=order,
                    filter_order=filter_order,
                    short_filter_order=short_filter_order,
                    causal=True,
                    dropout=mixer_dropout,
                    emb_dim=emb_dim,
                    num_inner_mlps=num_inner_mlps,
                    w=w,
                    modulate=modulate,
                    filter_lr=filter_lr,
                    lr_pos_emb=lr_pos_emb,
                    fftconv_backend=fftconv_backend,
                    **factory,
                ),
                dropout=dropout,
                eps=layer_norm_eps,
                **factory,
            )
            for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        if self.word_embeddings.weight.device.type != "meta":
            init_gpt2_weights(self, n_layer)

    def num_params(self) -> int:
        """Parameter count (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.ndim != 2 or ids.dtype != torch.long:
            raise ValueError(f"input ids must be int64 (B, L), got {ids.dtype} {tuple(ids.shape)}")
        if ids.shape[1] > self.l_max:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds l_max={self.l_max}")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., d_model) -> logits (..., vocab_size) through the tied embedding."""
        return F.linear(self.ln_f(x), self.word_embeddings.weight[: self.vocab_size])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self._check_ids(ids)
        x = self.embed_dropout(self.word_embeddings(ids))  # (B, L, D)
        for layer in self.layers:
            x = layer(x)
        return self.logits(x)  # (B, L, V)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        *,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt_ids`` (B, T) by ``max_new_tokens`` tokens -> (B, T + max_new_tokens).

        ``temperature=0`` is greedy decoding. T + max_new_tokens must fit in l_max. Runs in eval mode (restored
        afterwards). ``use_cache=False`` re-runs the whole sequence for every token (for testing).
        """
        check_generate_args(prompt_ids, max_new_tokens, temperature, top_k, self.vocab_size, self.l_max)
        was_training = self.training
        self.eval()
        try:
            ids = prompt_ids
            if not use_cache:
                for _ in range(max_new_tokens):
                    next_id = sample_next_token(self(ids)[:, -1], temperature, top_k, generator)
                    ids = torch.cat([ids, next_id], dim=1)
                return ids
            total_len = prompt_ids.shape[1] + max_new_tokens
            logits, caches = self.prefill(prompt_ids, total_len)
            for i in range(max_new_tokens):
                next_id = sample_next_token(logits, temperature, top_k, generator)  # (B, 1)
                ids = torch.cat([ids, next_id], dim=1)
                if i < max_new_tokens - 1:
                    logits = self.step(next_id[:, 0], caches)
            return ids
        finally:
            self.train(was_training)

    def prefill(self, ids: torch.Tensor, total_len: int) -> tuple[torch.Tensor, list[HyenaMixerCache]]:
        """Process the prompt (B, T); returns the last position's logits (B, V) and per-layer caches."""
        self._check_ids(ids)
        x = self.word_embeddings(ids)  # (B, T, D)
        caches = []
        for layer in self.layers:
            x, cache = layer.prefill(x, total_len)
            caches.append(cache)
        return self.logits(x[:, -1]), caches

    def step(self, token: torch.Tensor, caches: list[HyenaMixerCache]) -> torch.Tensor:
        """One token per sequence (B,) -> logits (B, V) for the next position, updating ``caches``."""
        x = self.word_embeddings(token)  # (B, D)
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer.step(x, cache)
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


def checkpoint_filter_fn(state_dict: dict, model: HyenaLM) -> dict:
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
    return build_model_with_cfg(HyenaLM, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def hyena_lm_125m(pretrained: bool = False, **kwargs) -> HyenaLM:
    """12 x 768, MLP 3072, order 3, filter FFN width 64 with 4 Linear layers, emb_dim 33, sine frequency 14."""
    args = dict(vocab_size=50257, d_model=768, n_layer=12, d_mlp=3072, l_max=2048, order=3, filter_order=64)
    args.update(emb_dim=33, num_inner_mlps=2, w=14.0)
    return _create_hyena_lm("hyena_lm_125m", pretrained, **dict(args, **kwargs))


@register_model
def hyena_lm_153m(pretrained: bool = False, **kwargs) -> HyenaLM:
    """The original's Pile "Hyena small": 18 x 864, MLP 1728, order 2, emb_dim 33, w 14, l_max 2048."""
    args = dict(vocab_size=50257, d_model=864, n_layer=18, d_mlp=1728, l_max=2048, order=2, filter_order=64)
    args.update(emb_dim=33, num_inner_mlps=2, w=14.0)
    return _create_hyena_lm("hyena_lm_153m", pretrained, **dict(args, **kwargs))


@register_model
def hyena_lm_char_small(pretrained: bool = False, **kwargs) -> HyenaLM:
    """Character-level size of nanoGPT's CPU baby GPT: 4 x 128, MLP 512, context 64 (Tiny Shakespeare, 65 chars)."""
    args = dict(vocab_size=65, d_model=128, n_layer=4, d_mlp=512, l_max=64, order=2, filter_order=64)
    args.update(emb_dim=3, num_inner_mlps=2, w=14.0)
    return _create_hyena_lm("hyena_lm_char_small", pretrained, **dict(args, **kwargs))
