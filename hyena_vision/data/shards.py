"""Webdataset shards of an image folder: writer and readers.

A shard is a tar of samples ``<key>.jpg`` (the original encoded bytes; ``.png``/``.webp`` kept as such) plus
``<key>.cls`` (the class index as text). ``write_shards`` also writes ``meta.json`` (classes, sample count, shard
names, skipped files) beside the shards. Readers take local paths, URLs or brace patterns
(``/data/train-{000000..000146}.tar``, ``pipe:curl -s https://host/train-{000000..000146}.tar``).

Unreadable samples (a truncated JPEG, a missing label, a truncated tar) are reported with their key and URL,
counted, and skipped: a long run never dies on one bad sample, and never loses them silently.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

import webdataset as wds
from PIL import Image
from torch.utils.data import default_collate
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from tqdm import tqdm

__all__ = ["SampleDecoder", "SkipReporter", "eval_shard_pipeline", "read_meta", "train_shard_pipeline", "write_shards"]

log = logging.getLogger(__name__)

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")


def _field_for(path: str) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    return "jpg" if ext == "jpeg" else ext


def _check_image(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # a full decode: catches truncated files that a header check would pass


def write_shards(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    maxcount: int,
    maxsize: float = 3e9,
    prefix: str = "shard",
    shuffle_seed: int | None = 0,
    verify: bool = True,
    progress: bool = True,
) -> dict:
    """Turn an ImageFolder ``src/<class>/<image>`` into shards ``out_dir/<prefix>-NNNNNN.tar``.

    ``maxcount`` samples (and at most ``maxsize`` bytes) per shard; samples are shuffled with ``shuffle_seed``
    (None keeps folder order) so every shard mixes classes. With ``verify`` each image is decoded first and
    unreadable ones are reported and left out (listed in ``meta.json`` under "skipped"). Returns the meta dict.
    """
    src, out_dir = Path(src), Path(out_dir)
    if maxcount < 1:
        raise ValueError(f"maxcount must be >= 1, got {maxcount}")
    if not src.is_dir():
        raise FileNotFoundError(f"src {str(src)!r} is not a folder")
    classes, class_to_idx = find_classes(str(src))
    samples = make_dataset(str(src), class_to_idx, extensions=IMG_EXTENSIONS)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(samples)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.glob(f"{prefix}-*.tar")):
        raise FileExistsError(f"out_dir {str(out_dir)!r} already holds {prefix}-*.tar shards; use an empty folder")
    skipped, written = [], 0
    with wds.ShardWriter(str(out_dir / f"{prefix}-%06d.tar"), maxcount=maxcount, maxsize=maxsize, verbose=0) as sink:
        for path, target in tqdm(samples, desc=f"shards {out_dir.name}", unit="img", disable=not progress):
            data = Path(path).read_bytes()
            if verify:
                try:
                    _check_image(data)
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                    log.warning("skipping unreadable image %s (%s: %s)", path, type(e).__name__, e)
                    skipped.append(str(Path(path).relative_to(src)))
                    continue
            rel = Path(path).relative_to(src).with_suffix("")
            key = "_".join(rel.parts).replace(".", "_")  # webdataset keys may not contain dots
            sink.write({"__key__": key, _field_for(path): data, "cls": target})
            written += 1
    shard_names = sorted(p.name for p in out_dir.glob(f"{prefix}-*.tar"))
    meta = {"classes": classes, "num_samples": written, "shards": shard_names, "skipped": skipped}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    if skipped:
        log.warning("%d of %d images were unreadable and left out (see meta.json)", len(skipped), len(samples))
    return meta


def read_meta(urls: str) -> dict | None:
    """``meta.json`` beside local shards written by ``write_shards`` (None for remote or foreign shards)."""
    first = urls.split("::")[0]
    if first.startswith(("pipe:", "http://", "https://", "gs://", "s3://")):
        return None
    meta = Path(first).parent / "meta.json"
    return json.loads(meta.read_text()) if meta.is_file() else None


class SkipReporter:
    """Webdataset exception handler: log the error (it carries the shard URL), count it, keep going."""

    def __init__(self):
        self.count = 0

    def __call__(self, exn: BaseException) -> bool:
        self.count += 1
        log.warning("skipping unreadable shard data (%s: %s); %d skipped so far", type(exn).__name__, exn, self.count)
        return True


class SampleDecoder:
    """Sample dict -> (transformed image, class index); None (reported with key and URL, counted) when unreadable."""

    def __init__(self, transform: Callable | None):
        self.transform = transform
        self.num_bad = 0

    def __call__(self, sample: dict):
        key, url = sample.get("__key__"), sample.get("__url__")
        try:
            field = next((f for f in IMAGE_FIELDS if f in sample), None)
            if field is None:
                raise KeyError(f"no image field ({', '.join(IMAGE_FIELDS)}) in fields {sorted(sample)}")
            with Image.open(io.BytesIO(sample[field])) as image:
                image.load()
                image = image.convert("RGB")
            target = int(sample["cls"])
        except (OSError, SyntaxError, ValueError, KeyError, Image.DecompressionBombError) as e:
            self.num_bad += 1
            log.warning(
                "skipping bad sample %r from %s (%s: %s); %d skipped so far",
                key,
                url,
                type(e).__name__,
                e,
                self.num_bad,
            )
            return None
        return (self.transform(image) if self.transform is not None else image), target


def _is_sample(sample) -> bool:
    return sample is not None


def train_shard_pipeline(
    urls: str, *, transform: Callable | None, batch_size: int, seed: int, shuffle_buffer: int = 5000
) -> wds.DataPipeline:
    """An endless stream of full batches for training (use with ``DataLoader(..., batch_size=None)``).

    Shards are resampled with replacement, seeded by (seed, rank, worker, pass), so every rank and worker reads an
    independent stream and all ranks get the same number of batches per epoch (the training loop counts them).
    """
    stages = [wds.ResampledShards(urls, seed=seed, deterministic=True), wds.tarfile_to_samples(handler=SkipReporter())]
    if shuffle_buffer > 0:
        stages.append(wds.detshuffle(shuffle_buffer, seed=seed))
    stages += [
        wds.map(SampleDecoder(transform)),
        wds.select(_is_sample),
        wds.batched(batch_size, partial=False, collation_fn=default_collate),
    ]
    return wds.DataPipeline(*stages)


def eval_shard_pipeline(urls: str, *, transform: Callable | None, batch_size: int) -> wds.DataPipeline:
    """Every sample once, split across ranks (by shard) and loader workers, in batches (the last may be partial)."""
    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_node,
        wds.split_by_worker,
        wds.tarfile_to_samples(handler=SkipReporter()),
        wds.map(SampleDecoder(transform)),
        wds.select(_is_sample),
        wds.batched(batch_size, partial=True, collation_fn=default_collate),
    )
