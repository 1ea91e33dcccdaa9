"""Validation loss and perplexity of a language model over a whole token split (every target predicted once).

    hyena-perplexity runs/lm/shakespeare_char_cpu                  # a language-model run (its last.pt)
    hyena-perplexity runs/x/last.pt --split train --block-size 64 --json ppl.json
    hyena-perplexity --timm-model hyena_lm_153m --weights safari.ckpt --no-modulate \\
        --text wikitext-103/wiki.test.raw --tokenizer bpe --block-size 2048   # the original's released weights

The text is cut into consecutive windows of ``--block-size`` tokens (default: the run's training context); each
window starts without context, so longer windows give lower (better) numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import timm
import torch

from .. import models  # noqa: F401  (registers hyena_lm_* with timm)
from ..data.text import TokenDataset, tokenizer_from_state, write_tokens
from .evaluation import evaluate_lm
from .lm import load_lm, prepare_corpus
from .loop import AMP_DTYPES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="language-model run folder or checkpoint file")
    parser.add_argument("--split", choices=["val", "train"], default="val", help="split of the run's corpus")
    parser.add_argument("--block-size", type=int, help="window length (default: the run's train.block_size)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=list(AMP_DTYPES), default="none")
    parser.add_argument("--json", help="also write the result to this JSON file")
    parser.add_argument("--timm-model", help="instead of a run: a registered model, e.g. hyena_lm_153m")
    parser.add_argument("--weights", help="with --timm-model: our safetensors/state dict or an original checkpoint")
    parser.add_argument("--no-modulate", action="store_true", help="with --timm-model: filter_cfg.modulate=False")
    parser.add_argument("--text", help="with --timm-model: text file to evaluate (all of it)")
    parser.add_argument("--tokenizer", choices=["bpe", "byte"], default="bpe", help="with --timm-model")
    return parser.parse_args(argv)


def run_model_and_tokens(args) -> tuple[torch.nn.Module, Path, int]:
    """Model, token file and default block size of a language-model run."""
    model, tokenizer, state = load_lm(args.run)
    data = state["config"]["data"]
    train_path, val_path, corpus_tokenizer = prepare_corpus(data)
    if corpus_tokenizer.state() != tokenizer.state():
        raise ValueError(f"the corpus {data['text']} now tokenizes differently from when the run was trained")
    return model, train_path if args.split == "train" else val_path, state["config"]["train"]["block_size"]


def timm_model_and_tokens(args) -> tuple[torch.nn.Module, Path, int]:
    """A registered model with --weights (any format timm's loader and our filter accept) and a whole text file."""
    if not args.text:
        raise SystemExit("--timm-model needs --text (the file to evaluate)")
    overlay = dict(file=args.weights) if args.weights else None
    kwargs = dict(filter_cfg=dict(modulate=False)) if args.no_modulate else {}
    model = timm.create_model(
        args.timm_model, pretrained=args.weights is not None, pretrained_cfg_overlay=overlay, **kwargs
    ).eval()
    tokenizer = tokenizer_from_state({"kind": args.tokenizer, **({"name": "gpt2"} if args.tokenizer == "bpe" else {})})
    if tokenizer.vocab_size > model.vocab_size:
        raise SystemExit(f"{args.tokenizer} tokenizer has {tokenizer.vocab_size} tokens, the model {model.vocab_size}")
    text = Path(args.text)
    tokens = Path(".cache/lm_eval") / f"{text.stem}-{args.tokenizer}.npy"
    write_tokens(tokens, tokenizer.encode(text.read_text(encoding="utf-8")), tokenizer.vocab_size)
    return model, tokens, model.l_max


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if (args.run is None) == (args.timm_model is None):
        raise SystemExit("give either a run folder / checkpoint or --timm-model")
    model, tokens, block_size = (run_model_and_tokens if args.run else timm_model_and_tokens)(args)
    block_size = args.block_size or block_size
    data = TokenDataset(tokens, block_size)
    device = torch.device(args.device)
    start = time.perf_counter()
    batches = data.iter_batches(args.batch_size)
    result = evaluate_lm(model.to(device), batches, device=device, amp_dtype=AMP_DTYPES[args.amp])
    result.update(block_size=block_size, tokens_file=str(tokens), seconds=time.perf_counter() - start)
    print(
        f"{result['tokens']:,} tokens, windows of {block_size}: loss {result['loss']:.4f} nats/token, "
        f"perplexity {result['ppl']:.3f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
