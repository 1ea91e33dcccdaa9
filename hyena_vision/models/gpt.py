"""A small GPT (GPT-2 architecture) as the attention baseline for HyenaLM, and ``create_lm`` for either.

Same blocks, embedding, tying, head and initialisation as ``HyenaLM`` with causal multi-head self-attention
(``F.scaled_dot_product_attention``, FlashAttention on GPUs) as the mixer and learned positional embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .hyena_lm import HyenaLM, Mlp, check_generate_args, init_gpt2_weights, padded_vocab_size, sample_next_token

__all__ = ["GPT", "CausalSelfAttention", "LM_ARCHITECTURES", "create_lm"]


class CausalSelfAttention(nn.Module):
    """(B, L, d_model) -> (B, L, d_model), ``n_head`` heads of d_model / n_head channels."""

    def __init__(self, d_model: int, n_head: int, *, dropout: float = 0.0, device=None, dtype=None):
        super().__init__()
        if n_head < 1 or d_model % n_head:
            raise ValueError(f"n_head must divide d_model={d_model}, got {n_head}")
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, device=device, dtype=dtype)
        self.out_proj = nn.Linear(d_model, d_model, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.n_head, d_model // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, d_head)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, H, L, d_head)
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, d_model))


class GPTBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, d_mlp: int, *, dropout: float, eps: float, device, dtype):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=eps, device=device, dtype=dtype)
        self.mixer = CausalSelfAttention(d_model, n_head, dropout=dropout, device=device, dtype=dtype)
        self.norm2 = nn.LayerNorm(d_model, eps=eps, device=device, dtype=dtype)
        self.mlp = Mlp(d_model, d_mlp, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.mixer(self.norm1(x)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class GPT(nn.Module):
    """GPT-2 style causal Transformer: token ids (B, L) -> logits (B, L, vocab_size), L <= l_max."""

    def __init__(
        self,
        vocab_size: int = 50257,
        *,
        d_model: int = 768,
        n_layer: int = 12,
        n_head: int = 12,
        d_mlp: int = 3072,
        l_max: int = 1024,
        dropout: float = 0.0,
        pad_vocab_size_multiple: int = 8,
        layer_norm_eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if n_layer < 1 or l_max < 1:
            raise ValueError(f"n_layer and l_max must be >= 1, got {n_layer}, {l_max}")
        factory = {"device": device, "dtype": dtype}
        self.vocab_size, self.d_model, self.n_layer, self.l_max = vocab_size, d_model, n_layer, l_max
        self.word_embeddings = nn.Embedding(padded_vocab_size(vocab_size, pad_vocab_size_multiple), d_model, **factory)
        self.position_embeddings = nn.Embedding(l_max, d_model, **factory)
        self.embed_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            GPTBlock(d_model, n_head, d_mlp, dropout=dropout, eps=layer_norm_eps, **factory) for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        if self.word_embeddings.weight.device.type != "meta":
            init_gpt2_weights(self, n_layer)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 2 or ids.dtype != torch.long:
            raise ValueError(f"input ids must be int64 (B, L), got {ids.dtype} {tuple(ids.shape)}")
        if ids.shape[1] > self.l_max:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds l_max={self.l_max}")
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.embed_dropout(self.word_embeddings(ids) + self.position_embeddings(positions))  # (B, L, D)
        for layer in self.layers:
            x = layer(x)
        return F.linear(self.ln_f(x), self.word_embeddings.weight[: self.vocab_size])  # (B, L, V)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt_ids`` (B, T) -> (B, T + max_new_tokens), re-running the sequence for every token."""
        check_generate_args(prompt_ids, max_new_tokens, temperature, top_k, self.vocab_size, self.l_max)
        was_training = self.training
        self.eval()
        try:
            ids = prompt_ids
            for _ in range(max_new_tokens):
                ids = torch.cat([ids, sample_next_token(self(ids)[:, -1], temperature, top_k, generator)], dim=1)
            return ids
        finally:
            self.train(was_training)


LM_ARCHITECTURES = {"hyena": HyenaLM, "gpt": GPT}


def create_lm(arch: str, **kwargs) -> HyenaLM | GPT:
    """``HyenaLM(**kwargs)`` for arch "hyena", ``GPT(**kwargs)`` for "gpt" (unknown keywords raise TypeError)."""
    if arch not in LM_ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(LM_ARCHITECTURES)}, got {arch!r}")
    return LM_ARCHITECTURES[arch](**kwargs)
