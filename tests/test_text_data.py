"""Tokenizers, memory-mapped token files and the Tiny Shakespeare split."""

import importlib.util

import numpy as np
import pytest
import torch

from hyena_vision.data.text import (
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    TokenDataset,
    load_tokenizer,
    prepare_text_corpus,
    save_tokenizer,
    tokenizer_from_state,
    write_tokens,
)

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak. Ünïcödé ✓"


def test_byte_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode(TEXT)
    assert max(ids) < 256 and len(ids) == len(TEXT.encode())
    assert tok.decode(ids) == TEXT
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.decode([256])


def test_char_round_trip_and_state(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    assert tok.vocab_size == len(set(TEXT)) and tok.decode(tok.encode(TEXT)) == TEXT
    save_tokenizer(tok, tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert isinstance(again, CharTokenizer) and again.encode(TEXT) == tok.encode(TEXT)
    with pytest.raises(ValueError, match="character 'Z' is not in the tokenizer's alphabet"):
        tok.encode("Z")
    with pytest.raises(ValueError, match="not a tokenizer state"):
        tokenizer_from_state({"kind": "char", "chars": "ab", "extra": 1})


@pytest.mark.skipif(importlib.util.find_spec("tiktoken") is None, reason="tiktoken (optional) not installed")
def test_bpe_round_trip():
    tok = BPETokenizer("gpt2")
    assert tok.vocab_size == 50257
    assert tok.decode(tok.encode(TEXT)) == TEXT


def test_token_dataset(tmp_path):
    ids = np.arange(103) % 50
    path = write_tokens(tmp_path / "toks.npy", ids, vocab_size=50)
    assert np.load(path).dtype == np.uint16
    data = TokenDataset(path, block_size=10)
    x, y = data.sample(4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.int64
    assert torch.equal((x[:, 1:]), y[:, :-1])
    targets = torch.cat([y.flatten() for _, y in data.iter_batches(4)])  # every target once, in order
    assert torch.equal(targets, torch.from_numpy(ids[1:]).long())
    with pytest.raises(ValueError, match="block_size"):
        TokenDataset(path, block_size=103)
    with pytest.raises(ValueError, match=r"ints in \[0, 50\)"):
        write_tokens(tmp_path / "bad.npy", [0, 50], vocab_size=50)
    assert np.load(write_tokens(tmp_path / "big.npy", [70000], vocab_size=70001)).dtype == np.uint32


def test_tiny_shakespeare_split(shared_data, tmp_path):
    train, val, tok = prepare_text_corpus(shared_data / "tinyshakespeare.txt", tmp_path, tokenizer="char")
    assert tok.vocab_size == 65
    n_train, n_val = len(np.load(train, mmap_mode="r")), len(np.load(val, mmap_mode="r"))
    assert n_train + n_val == 1_115_394 and n_train == int(1_115_394 * 0.9)
    text = (shared_data / "tinyshakespeare.txt").read_text()
    assert tok.decode(np.load(val, mmap_mode="r")[:100]) == text[n_train : n_train + 100]
    assert prepare_text_corpus(shared_data / "tinyshakespeare.txt", tmp_path)[2].chars == tok.chars  # reused
