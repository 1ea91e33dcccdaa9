"""Text for language models: tokenizers, memory-mapped token files, Tiny Shakespeare.

Tokenizers (``encode(str) -> list[int]``, ``decode(ids) -> str``, ``vocab_size``, ``state()`` to save with a
run and ``tokenizer_from_state`` to rebuild): ``ByteTokenizer`` (UTF-8 bytes, 256 ids), ``CharTokenizer``
(characters of a corpus), ``BPETokenizer`` (GPT-2 BPE through the optional ``tiktoken`` package).

Token files are ``.npy`` arrays (uint16 when the vocabulary fits, else uint32) written once and memory-mapped by
``TokenDataset``, which draws random (x, y) windows for training and walks the file in order for evaluation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "TokenDataset",
    "load_tokenizer",
    "prepare_text_corpus",
    "save_tokenizer",
    "tokenizer_from_state",
    "write_tokens",
]


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocabulary 256); decoding replaces invalid byte sequences with U+FFFD."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(_check_ids(ids, self.vocab_size)).decode("utf-8", errors="replace")

    def state(self) -> dict:
        return {"kind": "byte"}


class CharTokenizer:
    """One token per character of a fixed alphabet (``from_text`` collects the sorted characters of a corpus)."""

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars):
            raise ValueError("chars must be a non-empty string of distinct characters")
        self.chars = chars
        self.vocab_size = len(chars)
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the tokenizer's alphabet of {self.vocab_size}") from e

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in _check_ids(ids, self.vocab_size))

    def state(self) -> dict:
        return {"kind": "char", "chars": self.chars}


class BPETokenizer:
    """A tiktoken BPE (GPT-2's by default, 50257 tokens); ``tiktoken`` is an optional dependency."""

    def __init__(self, name: str = "gpt2"):
        try:
            import tiktoken
        except ImportError as e:
            raise ImportError("BPETokenizer needs the optional package tiktoken (pip install tiktoken)") from e
        self.name = name
        self._encoding = tiktoken.get_encoding(name)
        self.vocab_size = self._encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._encoding.decode(_check_ids(ids, self.vocab_size))

    def state(self) -> dict:
        return {"kind": "bpe", "name": self.name}


Tokenizer = ByteTokenizer | CharTokenizer | BPETokenizer


def _check_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got {bad[:5]}")
    return ids


def tokenizer_from_state(state: dict) -> Tokenizer:
    """Rebuild a tokenizer from its ``state()``."""
    kind = state.get("kind")
    if kind == "byte" and set(state) == {"kind"}:
        return ByteTokenizer()
    if kind == "char" and set(state) == {"kind", "chars"}:
        return CharTokenizer(state["chars"])
    if kind == "bpe" and set(state) == {"kind", "name"}:
        return BPETokenizer(state["name"])
    raise ValueError(f"not a tokenizer state (kind byte/char/bpe with its fields): {state!r}")


def save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(tokenizer.state(), ensure_ascii=False).encode()))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    return tokenizer_from_state(json.loads(Path(path).read_text()))


def write_tokens(path: str | os.PathLike, ids: Sequence[int] | np.ndarray, vocab_size: int) -> Path:
    """Write token ids as a ``.npy`` file (uint16 if vocab_size <= 65536, else uint32), atomically."""
    dtype = np.uint16 if vocab_size <= 2**16 else np.uint32
    array = np.asarray(ids)
    if array.ndim != 1 or array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise ValueError(f"ids must be a 1-D sequence of ints in [0, {vocab_size})")

    return atomic_write(path, lambda f: np.save(f, array.astype(dtype)))


class TokenDataset:
    """A memory-mapped token file with ``block_size``-long (x, y) windows, y = x shifted by one.

    ``sample(batch_size, generator)`` draws random windows (training); iterating gives every target exactly once
    in order, in batches of windows of ``block_size`` (the last one shorter when the file does not divide evenly).
    """

    def __init__(self, path: str | os.PathLike, block_size: int):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"token file {str(self.path)!r} not found")
        self.tokens = np.load(self.path, mmap_mode="r")
        if self.tokens.ndim != 1:
            raise ValueError(f"{self.path}: expected a 1-D token array, got shape {self.tokens.shape}")
        if block_size < 1 or len(self.tokens) < block_size + 1:
            raise ValueError(f"block_size must be in [1, {len(self.tokens) - 1}] for {self.path}, got {block_size}")
        self.block_size = block_size

    def __len__(self) -> int:
        """Number of tokens in the file."""
        return len(self.tokens)

    def _window(self, start: int, length: int) -> torch.Tensor:
        return torch.from_numpy(self.tokens[start : start + length + 1].astype(np.int64))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: x, y (batch_size, block_size) int64."""
        starts = torch.randint(len(self.tokens) - self.block_size, (batch_size,), generator=generator)
        chunk = torch.stack([self._window(int(s), self.block_size) for s in starts])  # (B, T+1)
        return chunk[:, :-1], chunk[:, 1:]

    def iter_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive non-overlapping windows covering every target once: (x, y) of (b, T) then (1, T_last)."""
        num_targets = len(self.tokens) - 1
        full = num_targets // self.block_size
        for first in range(0, full, batch_size):
            rows = range(first, min(first + batch_size, full))
            chunk = torch.stack([self._window(r * self.block_size, self.block_size) for r in rows])  # (b, T+1)
            yield chunk[:, :-1], chunk[:, 1:]
        rest = num_targets - full * self.block_size
        if rest:
            chunk = self._window(full * self.block_size, rest)[None]  # (1, rest+1)
            yield chunk[:, :-1], chunk[:, 1:]


def prepare_text_corpus(
    text_path: str | os.PathLike, out_dir: str | os.PathLike, tokenizer: str = "char", val_fraction: float = 0.1
) -> tuple[Path, Path, Tokenizer]:
    """Tokenize a text file once into ``out_dir/{train,val}.npy`` + ``tokenizer.json`` (first 1 - val_fraction of
    the characters for training, the rest for validation; Tiny Shakespeare's usual 90/10 split).

    ``tokenizer``: "char" (alphabet of the whole file), "byte" or "bpe" (GPT-2, needs tiktoken). Files already
    present and written from the same source (size and mtime recorded) are reused.
    """
    text_path, out_dir = Path(text_path), Path(out_dir)
    if not text_path.is_file():
        raise FileNotFoundError(f"text file {str(text_path)!r} not found")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    stat = text_path.stat()
    source = {"path": str(text_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    source.update(tokenizer=tokenizer, val_fraction=val_fraction)
    train_path, val_path, tok_path, meta_path = (
        out_dir / n for n in ("train.npy", "val.npy", "tokenizer.json", "source.json")
    )
    if meta_path.is_file() and json.loads(meta_path.read_text()) == source and tok_path.is_file():
        return train_path, val_path, load_tokenizer(tok_path)
    text = text_path.read_text(encoding="utf-8")
    if tokenizer == "char":
        tok = CharTokenizer.from_text(text)
    elif tokenizer == "byte":
        tok = ByteTokenizer()
    elif tokenizer == "bpe":
        tok = BPETokenizer("gpt2")
    else:
        raise ValueError(f"tokenizer must be 'char', 'byte' or 'bpe', got {tokenizer!r}")
    split = int(len(text) * (1 - val_fraction))
    write_tokens(train_path, tok.encode(text[:split]), tok.vocab_size)
    write_tokens(val_path, tok.encode(text[split:]), tok.vocab_size)
    save_tokenizer(tok, tok_path)
    atomic_write(meta_path, lambda f: f.write(json.dumps(source).encode()))
    return train_path, val_path, tok
