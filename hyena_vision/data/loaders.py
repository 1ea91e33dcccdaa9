"""Transforms and data loaders for classification training and evaluation over every supported source.

Sources (``kind``): "folder" (an ImageFolder directory with split subfolders, or a tar of one), "shards"
(webdataset URLs / brace patterns), "torchvision_cifar10", each transformed per image (``images``), and
"memory_cifar10" (CIFAR-10 decoded into memory and transformed in whole batches, ``cifar_memory``). Each function
here takes ``kind`` and picks the reader and transforms for it. Training reads whole optimizer updates:
``global_batch = micro_batch * accum_steps * world_size`` images per update.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset

from . import cifar_memory
from .cifar_memory import MemoryStream, TensorBatches
from .images import (
    EpochSampler,
    ImageSettings,
    TrainAugment,
    build_eval_transform,
    build_train_transform,
    image_dataset,
    shard_indices,
    subset_indices,
)
from .shards import eval_shard_pipeline, read_meta, train_shard_pipeline

__all__ = [
    "KINDS",
    "TrainStream",
    "eval_loader",
    "eval_transform",
    "micro_batch_size",
    "num_classes_of",
    "train_stream",
    "train_transform",
]

KINDS = ("folder", "shards", "torchvision_cifar10", cifar_memory.KIND)


def micro_batch_size(global_batch: int, accum_steps: int, world_size: int) -> int:
    per_update = accum_steps * world_size
    if global_batch % per_update != 0:
        raise ValueError(
            f"train.batch_size (global, {global_batch}) must be divisible by accum_steps * world_size ({per_update})"
        )
    return global_batch // per_update


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"data.kind must be one of {KINDS}, got {kind!r}")


def _reject_shards(shards: str | None, option: str) -> None:
    if shards:
        raise ValueError(
            f"data.kind={cifar_memory.KIND} reads data.root, not shards: {option} must be unset, got {shards!r}"
        )


def _eval_indices(n: int, subset: int, seed: int, rank: int, world_size: int) -> list[int]:
    """This rank's share of the evaluation images (all ``n``, or a seeded random ``subset`` of them)."""
    indices = subset_indices(n, subset, seed)
    return [indices[i] for i in shard_indices(len(indices), rank, world_size)]


def train_transform(kind: str, image: ImageSettings, aug: TrainAugment) -> Callable:
    """The training transform for ``kind``: per PIL image, or per uint8 batch for memory_cifar10 (which supports
    the "cifar" and "none" policies on 32x32 images only)."""
    _check_kind(kind)
    if kind == cifar_memory.KIND:
        return cifar_memory.batch_train_transform(image, aug)
    return build_train_transform(image, aug)


def eval_transform(kind: str, image: ImageSettings, crop_pct: float) -> Callable:
    """The evaluation transform for ``kind``: resize + centre crop + normalize per PIL image, or normalize a uint8
    batch for memory_cifar10 (whole 32x32 images: ``crop_pct`` must be 1)."""
    _check_kind(kind)
    if kind == cifar_memory.KIND:
        return cifar_memory.batch_eval_transform(image, crop_pct)
    return build_eval_transform(image, crop_pct)


@dataclass
class TrainStream:
    """Micro-batches for training, ``updates_per_epoch`` optimizer updates per epoch.

    Map-style sources (folder, CIFAR-10) resume exactly mid-epoch: ``epoch_batches(epoch, start_update)`` skips the
    samples of the updates already done, and the loader's own generator is seeded from (seed, epoch, start_update),
    so no global RNG is consumed. Shards are an endless resampled stream; after a resume it is re-seeded, so the
    samples differ from an uninterrupted run (the schedule and update count do not).
    """

    loader: DataLoader
    updates_per_epoch: int
    accum_steps: int
    micro_batch: int
    seed: int
    sampler: EpochSampler | None = None
    _stream: Iterator | None = None

    def epoch_batches(self, epoch: int, start_update: int) -> Iterator:
        n_micro = (self.updates_per_epoch - start_update) * self.accum_steps
        self.loader.generator.manual_seed(self.seed * 1_000_003 + epoch * 10_007 + start_update)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, start_update * self.accum_steps * self.micro_batch)
            return iter(self.loader)
        if self._stream is None:
            self._stream = iter(self.loader)
        return itertools.islice(self._stream, n_micro)


def train_stream(
    kind: str,
    *,
    root: str | None,
    split: str,
    shards: str | None,
    train_samples: int,
    transform: Callable,
    global_batch: int,
    accum_steps: int,
    rank: int,
    world_size: int,
    seed: int,
    subset: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    shuffle_buffer: int = 5000,
    cache_dir: str | None = None,
    download: bool = False,
) -> TrainStream | MemoryStream:
    """Micro-batches of ``split`` (``transform`` from ``train_transform``), ``updates_per_epoch`` updates per epoch.
    ``train_samples`` and ``shuffle_buffer`` are for shards; ``num_workers`` and ``pin_memory`` for the DataLoader
    of every kind but memory_cifar10, which has no worker processes."""
    _check_kind(kind)
    micro = micro_batch_size(global_batch, accum_steps, world_size)
    if kind == cifar_memory.KIND:
        _reject_shards(shards, "data.train_shards")
        images, labels = cifar_memory.load_cifar10(split, root=root, cache_dir=cache_dir, download=download)
        if subset:
            keep = torch.tensor(subset_indices(len(labels), subset, seed))
            images, labels = images[keep], labels[keep]
        sampler = EpochSampler(len(labels), global_batch=global_batch, rank=rank, world_size=world_size, seed=seed)
        return MemoryStream(images, labels, transform, sampler, micro, accum_steps, seed, rank)
    generator = torch.Generator()
    common = dict(num_workers=num_workers, pin_memory=pin_memory, generator=generator, persistent_workers=False)
    if kind == "shards":
        if not shards:
            raise ValueError("data.train_shards must name the training shards when data.kind='shards'")
        if train_samples <= 0:
            meta = read_meta(shards)
            if meta is None:
                raise ValueError(
                    "data.train_samples must give the number of training samples per epoch for shards "
                    "without a meta.json beside them"
                )
            train_samples = meta["num_samples"]
        pipeline = train_shard_pipeline(
            shards, transform=transform, batch_size=micro, seed=seed + 1000 * rank, shuffle_buffer=shuffle_buffer
        )
        loader = DataLoader(pipeline, batch_size=None, **common)
        return TrainStream(loader, train_samples // global_batch, accum_steps, micro, seed)
    if root is None:
        raise ValueError(f"data.root must be given when data.kind={kind!r}")
    dataset = image_dataset(kind, root, split, transform, cache_dir=cache_dir, download=download)
    if subset:
        dataset = Subset(dataset, subset_indices(len(dataset), subset, seed))
    sampler = EpochSampler(len(dataset), global_batch=global_batch, rank=rank, world_size=world_size, seed=seed)
    loader = DataLoader(dataset, batch_size=micro, sampler=sampler, drop_last=True, **common)
    return TrainStream(loader, sampler.updates_per_epoch, accum_steps, micro, seed, sampler)


def eval_loader(
    kind: str,
    *,
    root: str | None,
    split: str,
    shards: str | None,
    transform: Callable,
    batch_size: int,
    rank: int,
    world_size: int,
    subset: int = 0,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    cache_dir: str | None = None,
    download: bool = False,
) -> DataLoader | TensorBatches:
    """Every evaluation image exactly once across ranks, in the data's order (``subset`` > 0: a seeded random
    subset of that size, the same images for every map-style kind); ``num_workers`` and ``pin_memory`` have nothing
    to do for memory_cifar10."""
    _check_kind(kind)
    if kind == cifar_memory.KIND:
        _reject_shards(shards, "data.val_shards")
        images, labels = cifar_memory.load_cifar10(split, root=root, cache_dir=cache_dir, download=download)
        keep = torch.tensor(_eval_indices(len(labels), subset, seed, rank, world_size), dtype=torch.int64)
        return TensorBatches(images[keep], labels[keep], transform, batch_size)
    common = dict(num_workers=num_workers, pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))
    if kind == "shards":
        if not shards:
            raise ValueError("data.val_shards must name the evaluation shards when data.kind='shards'")
        if subset:
            raise ValueError("data.val_subset is not supported for shards (make a smaller shard set instead)")
        return DataLoader(
            eval_shard_pipeline(shards, transform=transform, batch_size=batch_size), batch_size=None, **common
        )
    if root is None:
        raise ValueError(f"data.root must be given when data.kind={kind!r}")
    dataset = image_dataset(kind, root, split, transform, cache_dir=cache_dir, download=download)
    dataset = Subset(dataset, _eval_indices(len(dataset), subset, seed, rank, world_size))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)


def num_classes_of(kind: str, *, root: str | None, split: str, shards: str | None, cache_dir: str | None = None) -> int:
    """Class count of a data source (folder: its class folders; shards: meta.json; CIFAR-10: 10)."""
    _check_kind(kind)
    if kind == cifar_memory.KIND:
        _reject_shards(shards, "data.train_shards")
    if kind in ("torchvision_cifar10", cifar_memory.KIND):
        return cifar_memory.NUM_CLASSES
    if kind == "shards":
        meta = read_meta(shards or "")
        if meta is None:
            raise ValueError("data.num_classes must be given for shards without a meta.json beside them")
        return len(meta["classes"])
    if root is None:
        raise ValueError("data.root must be given when data.kind='folder'")
    return len(image_dataset(kind, root, split, None, cache_dir=cache_dir).classes)
