"""A small GPT (GPT-2 architecture) as the attention baseline for HyenaLM, and ``create_lm`` for either.

The same ``CausalLM`` as ``HyenaLM`` (blocks, embedding, tying, head, initialisation, generation) with causal
multi-head self-attention (``F.scaled_dot_product_attention``, FlashAttention on GPUs) as the mixer and learned
positional embeddings.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ._lm import CausalLM
from .hyena_lm import HyenaLM

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


class GPT(CausalLM):
    """GPT-2 style causal Transformer: token ids (B, L) -> logits (B, L, vocab_size), L <= l_max.

    ``dropout`` acts on the embeddings, the attention weights and each residual branch. Generation re-runs the
    sequence for every token (no cache).
    """

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
        super().__init__(
            vocab_size,
            mixer_layer=partial(CausalSelfAttention, n_head=n_head, dropout=dropout),
            d_model=d_model,
            n_layer=n_layer,
            d_mlp=d_mlp,
            l_max=l_max,
            dropout=dropout,
            embed_dropout=dropout,
            pad_vocab_size_multiple=pad_vocab_size_multiple,
            layer_norm_eps=layer_norm_eps,
            device=device,
            dtype=dtype,
        )
        self.position_embeddings = nn.Embedding(l_max, d_model, device=device, dtype=dtype)
        self.init_weights()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.word_embeddings(ids) + self.position_embeddings(positions)  # (B, L, D)


LM_ARCHITECTURES = {"hyena": HyenaLM, "gpt": GPT}


def create_lm(arch: str, **kwargs) -> HyenaLM | GPT:
    """``HyenaLM(**kwargs)`` for arch "hyena", ``GPT(**kwargs)`` for "gpt" (unknown keywords raise TypeError)."""
    if arch not in LM_ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(LM_ARCHITECTURES)}, got {arch!r}")
    return LM_ARCHITECTURES[arch](**kwargs)
