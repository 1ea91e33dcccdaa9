"""Image-caption data for CLIP: CIFAR-10 captions from templates and WordNet glosses; webdataset shards and CSV.

Captions: a template filled with one of the class's WordNet names (drawn per sample), followed half of the time by
the first clause of its gloss, e.g. "a blurry photo of a frog, any of various tailless stout-bodied amphibians with
long hind limbs for leaping." ``TRAIN_TEMPLATES`` make the training captions; ``HELD_OUT_TEMPLATES`` the zero-shot
prompts and the held-out retrieval captions; ``HELD_OUT_CLASSES`` appear in no training caption.

Storage (what open_clip's own trainer reads too):

- webdataset shards, one sample per image with ``.jpg`` (the image bytes) and ``.txt`` (the caption), so CC/LAION
  shards read unchanged (other image fields: ``.jpeg``, ``.png``, ``.webp``); our writer adds ``.cls``;
- a CSV with columns ``filepath,caption`` (relative paths are relative to the CSV's folder).

Readers return (image tensor, token ids (context_length,)). A caption longer than the tokenizer's context raises
unless ``truncate=True`` (then it is cut, counted and reported).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import Dataset, default_collate
from tqdm import tqdm

from .shards import IMAGE_FIELDS, SkipReporter, _field_for

__all__ = [
    "HELD_OUT_CLASSES",
    "HELD_OUT_TEMPLATES",
    "TRAIN_TEMPLATES",
    "CaptionCSV",
    "CaptionSample",
    "CaptionTokenizer",
    "ClassText",
    "caption_samples",
    "caption_shard_pipeline",
    "load_class_texts",
    "make_caption",
    "read_caption_csv",
    "write_caption_csv",
    "write_caption_shards",
]

log = logging.getLogger(__name__)

TRAIN_TEMPLATES = (
    "a photo of a {}",
    "a blurry photo of a {}",
    "a close-up photo of a {}",
    "a low resolution photo of a {}",
    "a bright photo of a {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a pixelated photo of a {}",
    "a photo of a small {}",
    "a jpeg photo of a {}",
)
HELD_OUT_TEMPLATES = ("a dark photo of a {}", "a good photo of a {}", "a photo of one {}", "an image of a {}")
HELD_OUT_CLASSES = ("deer", "truck")


@dataclass(frozen=True)
class ClassText:
    """A class's WordNet names (the first is the usual one) and the first clause of its gloss."""

    names: tuple[str, ...]
    gloss: str


@dataclass(frozen=True)
class CaptionSample:
    path: str
    caption: str
    label: int


def load_class_texts(path: str | os.PathLike, dataset: str = "cifar10") -> dict[str, ClassText]:
    """``class-glosses.tsv`` rows of ``dataset`` -> {usual name: ClassText}, in file order.

    The gloss keeps its first clause (before ';', without quoted usage examples), short enough for a caption.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class glosses {str(path)!r} not found")
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["dataset"] != dataset:
                continue
            names = tuple(n.strip() for n in row["names"].split(","))
            gloss = re.sub(r'"[^"]*"', "", row["gloss"]).split(";")[0].strip()
            out[names[0]] = ClassText(names, gloss)
    if not out:
        raise ValueError(f"no rows for dataset {dataset!r} in {str(path)!r}")
    return out


def make_caption(template: str, text: ClassText, rng: random.Random) -> str:
    """``template`` with a random one of the class's names, then (with probability 1/2) ", <gloss>"; ends in '.'."""
    caption = template.format(rng.choice(text.names))
    if rng.random() < 0.5:
        caption += ", " + text.gloss
    return caption + "."


def caption_samples(
    image_root: str | os.PathLike,
    class_texts: dict[str, ClassText],
    templates: Sequence[str],
    *,
    exclude_classes: Iterable[str] = (),
    per_class: int = 0,
    seed: int = 0,
) -> list[CaptionSample]:
    """One captioned sample per image of an ImageFolder split ``image_root/<class>/<image>`` (sorted), labels being
    the sorted class index; ``per_class`` > 0 keeps the first that many images of each class."""
    root = Path(image_root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    missing = sorted(set(classes) - set(class_texts))
    if missing:
        raise KeyError(f"classes {missing} of {str(root)!r} have no names/gloss in the class texts")
    excluded = set(exclude_classes)
    if excluded - set(classes):
        raise ValueError(f"exclude_classes {sorted(excluded - set(classes))} are not classes of {str(root)!r}")
    rng = random.Random(seed)
    out = []
    for label, name in enumerate(classes):
        if name in excluded:
            continue
        paths = sorted(p for p in (root / name).iterdir() if p.is_file())
        for path in paths[:per_class] if per_class > 0 else paths:
            out.append(CaptionSample(str(path), make_caption(rng.choice(templates), class_texts[name], rng), label))
    return out


def write_caption_shards(
    samples: Sequence[CaptionSample], out_dir: str | os.PathLike, *, maxcount: int, seed: int = 0
) -> list[str]:
    """Write ``samples`` (shuffled with ``seed``) as ``out_dir/captions-NNNNNN.tar``: ``.jpg``/``.png``..., ``.txt``,
    ``.cls`` per sample. Returns the shard paths."""
    out_dir = Path(out_dir)
    if maxcount < 1:
        raise ValueError(f"maxcount must be >= 1, got {maxcount}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.glob("captions-*.tar")):
        raise FileExistsError(f"out_dir {str(out_dir)!r} already holds captions-*.tar shards; use an empty folder")
    order = list(samples)
    random.Random(seed).shuffle(order)
    with wds.ShardWriter(str(out_dir / "captions-%06d.tar"), maxcount=maxcount, verbose=0) as sink:
        for i, s in enumerate(tqdm(order, desc=f"shards {out_dir.name}", unit="img", mininterval=2)):
            data = Path(s.path).read_bytes()
            sink.write({"__key__": f"{i:08d}", _field_for(s.path): data, "txt": s.caption, "cls": s.label})
    return sorted(str(p) for p in out_dir.glob("captions-*.tar"))


def write_caption_csv(samples: Sequence[CaptionSample], path: str | os.PathLike) -> Path:
    """Write ``filepath,caption,label`` rows (paths as given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption", "label"])
        writer.writerows((s.path, s.caption, s.label) for s in samples)
    return path


def read_caption_csv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(image path, caption) rows of a CSV with ``filepath`` and ``caption`` columns (other columns ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption CSV {str(path)!r} not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"filepath", "caption"} <= set(reader.fieldnames or ()):
            raise ValueError(f"caption CSV {str(path)!r} needs columns filepath and caption, got {reader.fieldnames}")
        return [(str(path.parent / row["filepath"]), row["caption"]) for row in reader]


class CaptionTokenizer:
    """An open_clip tokenizer (``SimpleTokenizer``) on one caption -> (context_length,) int64, refusing captions
    that do not fit unless ``truncate`` (then cut by the tokenizer and counted)."""

    def __init__(self, tokenizer, *, truncate: bool = False):
        self.tokenizer, self.truncate, self.num_truncated = tokenizer, truncate, 0

    def __call__(self, caption: str) -> torch.Tensor:
        n_tokens = len(self.tokenizer.encode(caption)) + 2  # with start- and end-of-text
        if n_tokens > self.tokenizer.context_length:
            if not self.truncate:
                raise ValueError(
                    f"caption of {n_tokens} tokens exceeds context_length={self.tokenizer.context_length}: "
                    f"{caption!r} (set data.truncate_captions=true to cut long captions)"
                )
            self.num_truncated += 1
            log.warning("truncated a caption of %d tokens; %d so far", n_tokens, self.num_truncated)
        return self.tokenizer([caption])[0]


class CaptionCSV(Dataset):
    """Map-style (image tensor, token ids) dataset over a caption CSV."""

    def __init__(self, path: str | os.PathLike, *, transform: Callable, tokenize: CaptionTokenizer):
        self.rows, self.transform, self.tokenize = read_caption_csv(path), transform, tokenize

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        path, caption = self.rows[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
        return self.transform(image), self.tokenize(caption)


class _CaptionDecoder:
    """Shard sample -> (image tensor, token ids); None (reported, counted) when the image or text is unreadable."""

    def __init__(self, transform: Callable, tokenize: CaptionTokenizer):
        self.transform, self.tokenize, self.num_bad = transform, tokenize, 0

    def __call__(self, sample: dict):
        try:
            field = next((f for f in IMAGE_FIELDS if f in sample), None)
            if field is None or "txt" not in sample:
                raise KeyError(f"need an image field ({', '.join(IMAGE_FIELDS)}) and txt, got {sorted(sample)}")
            with Image.open(io.BytesIO(sample[field])) as image:
                image = image.convert("RGB")
            caption = sample["txt"].decode("utf-8")
        except (OSError, SyntaxError, ValueError, KeyError, Image.DecompressionBombError) as e:
            self.num_bad += 1
            log.warning(
                "skipping sample %r from %s (%s: %s)", sample.get("__key__"), sample.get("__url__"), type(e).__name__, e
            )
            return None
        return self.transform(image), self.tokenize(caption)


def _is_sample(sample) -> bool:
    return sample is not None


def caption_shard_pipeline(
    urls: str,
    *,
    transform: Callable,
    tokenize: CaptionTokenizer,
    batch_size: int,
    seed: int,
    shuffle_buffer: int = 2000,
) -> wds.DataPipeline:
    """One pass over the shards (``"path/captions-{000000..000009}.tar"`` brace notation or ``::``-joined), shard
    order and samples shuffled by ``seed`` (give each epoch its own), split over loader workers by shard ->
    full batches of (images (B, 3, H, W), token ids (B, context_length)); the last partial batch is dropped."""
    stages = [wds.SimpleShardList(urls)]
    if shuffle_buffer > 0:
        stages.append(wds.detshuffle(bufsize=100, initial=100, seed=seed))  # shard order
    stages += [wds.split_by_worker, wds.tarfile_to_samples(handler=SkipReporter())]
    if shuffle_buffer > 0:
        stages.append(wds.detshuffle(bufsize=shuffle_buffer, initial=shuffle_buffer, seed=seed))
    stages += [
        wds.map(_CaptionDecoder(transform, tokenize)),
        wds.select(_is_sample),
        wds.batched(batch_size, partial=False, collation_fn=default_collate),
    ]
    return wds.DataPipeline(*stages)
