"""Associative recall (Hyena paper, section 4.1): key-value pairs, then a query key; predict the key's value.

Vocabulary ``vocab_size`` (even): keys are ids ``0 .. V/2-1``, values ``V/2 .. V-1``. Every sequence has its own
random key -> value map (a bijection); its ``(seq_len - 1) // 2`` pairs use keys drawn uniformly (repeats allowed,
always with the same value), and the last token is a key that occurred earlier. The model must output that key's
value at the last position. An even ``seq_len`` starts with one random value token that belongs to no pair::

    inputs  k3 v7 k1 v5 k3 v7 ... k1      (seq_len tokens)
    target  v5
"""

from __future__ import annotations

import torch

__all__ = ["associative_recall_batch"]


def associative_recall_batch(
    batch_size: int, seq_len: int, vocab_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (batch_size, seq_len) and targets (batch_size,), int64."""
    if vocab_size < 4 or vocab_size % 2:
        raise ValueError(f"vocab_size must be even and >= 4 (half keys, half values), got {vocab_size}")
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 (a pair, then a query), got {seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_keys, num_pairs = vocab_size // 2, (seq_len - 1) // 2
    mapping = torch.rand(batch_size, num_keys, generator=generator).argsort(dim=1) + num_keys  # (B, K) values
    keys = torch.randint(num_keys, (batch_size, num_pairs), generator=generator)  # (B, P)
    values = mapping.gather(1, keys)  # (B, P)
    pick = torch.randint(num_pairs, (batch_size, 1), generator=generator)
    query = keys.gather(1, pick)  # (B, 1), a key present in the sequence
    filler = torch.randint(num_keys, vocab_size, (batch_size, seq_len - 2 * num_pairs - 1), generator=generator)
    inputs = torch.cat([filler, torch.stack([keys, values], dim=2).flatten(1), query], dim=1)  # (B, seq_len)
    return inputs, mapping.gather(1, query)[:, 0]
