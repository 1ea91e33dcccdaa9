"""What the causal language models share: the model skeleton, GPT-2 initialisation and generation.

``CausalLM`` is the token embedding (tied with the output head), ``n_layer`` ``PreNormBlock`` s of an injected
mixer with a GELU(tanh) MLP (GPT-2's and the original Hyena LM's), a final LayerNorm ``ln_f``, and ``generate``:
one sampling loop for every model, which uses the model's cache (``prefill`` / ``step``) when it has one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import PreNormBlock

__all__ = ["CausalLM", "check_generate_args", "init_gpt2_weights", "padded_vocab_size", "sample_next_token"]


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    if vocab_size < 1 or multiple < 1:
        raise ValueError(f"vocab_size and pad_vocab_size_multiple must be >= 1, got {vocab_size}, {multiple}")
    return math.ceil(vocab_size / multiple) * multiple


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


def gpt2_block(*, mlp_hidden: int, dropout: float, layer_norm_eps: float, device=None, dtype=None):
    """``block(dim, mixer_layer)``: GPT-2's pre-norm block (LayerNorm, GELU(tanh) MLP, dropout on each residual
    branch) around an injected mixer, as the language models and the CLIP text tower use it."""
    return partial(
        PreNormBlock,
        mlp_hidden=mlp_hidden,
        branch_drop=dropout,
        norm_layer=partial(nn.LayerNorm, eps=layer_norm_eps),
        act_layer=partial(nn.GELU, approximate="tanh"),
        device=device,
        dtype=dtype,
    )


class CausalLM(nn.Module):
    """Token ids (B, L) -> logits (B, L, vocab_size), L <= l_max (see the module docstring).

    The embedding has ``vocab_size`` rounded up to ``pad_vocab_size_multiple`` rows (as the original, for
    checkpoint compatibility and fast matmuls); logits of the padding rows are dropped. ``dropout`` acts on each
    residual branch, ``embed_dropout`` on the embeddings. Subclasses build ``mixer_layer`` and call
    ``init_weights`` once every module exists.
    """

    has_cache = False  # whether the subclass implements prefill(ids, total_len) and step(token, cache)

    def __init__(
        self,
        vocab_size: int,
        *,
        mixer_layer: Callable[..., nn.Module],
        d_model: int,
        n_layer: int,
        d_mlp: int,
        l_max: int,
        dropout: float,
        embed_dropout: float,
        pad_vocab_size_multiple: int,
        layer_norm_eps: float,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if n_layer < 1 or d_mlp < 1 or l_max < 1:
            raise ValueError(f"n_layer, d_mlp and l_max must be >= 1, got {n_layer}, {d_mlp}, {l_max}")
        if not 0 <= dropout < 1 or not 0 <= embed_dropout < 1:
            raise ValueError(f"dropout and embed_dropout must be in [0, 1), got {dropout}, {embed_dropout}")
        factory = {"device": device, "dtype": dtype}
        self.vocab_size, self.d_model, self.n_layer, self.l_max = vocab_size, d_model, n_layer, l_max
        self.word_embeddings = nn.Embedding(padded_vocab_size(vocab_size, pad_vocab_size_multiple), d_model, **factory)
        self.embed_dropout = nn.Dropout(embed_dropout)
        block = gpt2_block(mlp_hidden=d_mlp, dropout=dropout, layer_norm_eps=layer_norm_eps, **factory)
        self.layers = nn.ModuleList(block(d_model, mixer_layer) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)

    def init_weights(self) -> None:
        """GPT-2 initialisation (nothing to do on the meta device)."""
        if self.word_embeddings.weight.device.type != "meta":
            init_gpt2_weights(self, self.n_layer)

    def num_params(self) -> int:
        """Parameter count (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def check_ids(self, ids: torch.Tensor) -> None:
        if ids.ndim != 2 or ids.dtype != torch.long:
            raise ValueError(f"input ids must be int64 (B, L), got {ids.dtype} {tuple(ids.shape)}")
        if ids.shape[1] > self.l_max:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds l_max={self.l_max}")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> (B, L, d_model) inputs of the first block (before embedding dropout)."""
        return self.word_embeddings(ids)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., d_model) -> logits (..., vocab_size) through the tied embedding."""
        return F.linear(self.ln_f(x), self.word_embeddings.weight[: self.vocab_size])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.check_ids(ids)
        x = self.embed_dropout(self.embed(ids))  # (B, L, D)
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
        afterwards). With ``use_cache`` a model that has a cache (``has_cache``) processes the prompt once and
        then one token per step; otherwise (or ``use_cache=False``, for testing) the whole sequence is re-run for
        every token.
        """
        check_generate_args(prompt_ids, max_new_tokens, temperature, top_k, self.vocab_size, self.l_max)
        cached = use_cache and self.has_cache
        was_training = self.training
        self.eval()
        try:
            ids = prompt_ids
            if cached:
                logits, cache = self.prefill(prompt_ids, prompt_ids.shape[1] + max_new_tokens)
            else:
                logits = self(ids)[:, -1]
            for i in range(max_new_tokens):
                next_id = sample_next_token(logits, temperature, top_k, generator)  # (B, 1)
                ids = torch.cat([ids, next_id], dim=1)
                if i < max_new_tokens - 1:
                    logits = self.step(next_id[:, 0], cache) if cached else self(ids)[:, -1]
            return ids
        finally:
            self.train(was_training)
