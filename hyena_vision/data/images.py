"""Image classification data: ImageFolder directories, tars of them, torchvision's CIFAR-10; transforms; samplers.

An "image folder" is torchvision's layout ``<root>/<split>/<class>/<image>``; a tar (``.tar``, ``.tar.gz``, ``.tgz``)
holding one is extracted once into a cache folder. Class indices are the sorted class folder names (ImageNet's
sorted wnids, CIFAR-10's sorted names). Images that fail to decode are reported with their path, counted and
replaced by the next readable image, so a long run never dies on one bad file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import datasets
from torchvision import transforms as T

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "POLICIES",
    "EpochSampler",
    "ImageSettings",
    "RobustImageFolder",
    "TrainAugment",
    "build_eval_transform",
    "build_train_transform",
    "extract_tar",
    "find_split_dir",
    "image_dataset",
    "is_tar",
    "shard_indices",
    "subset_indices",
]

log = logging.getLogger(__name__)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
POLICIES = ("timm", "cifar", "none")  # training augmentation policies (TrainAugment)


def is_tar(path: str | os.PathLike) -> bool:
    return str(path).endswith(TAR_SUFFIXES)


def default_cache_dir() -> Path:
    return Path(os.environ.get("HYENA_VISION_CACHE", Path.home() / ".cache" / "hyena_vision"))


def extract_tar(tar_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Extract a tar (optionally gzipped) once into ``cache_dir`` (default ``$HYENA_VISION_CACHE`` or
    ``~/.cache/hyena_vision``) and return the folder.

    The folder name hashes the tar's absolute path, size and mtime; extraction goes to a temp folder renamed into
    place, so an interrupted extraction is never mistaken for a finished one. Processes extracting the same tar at once
    (DDP ranks, parallel jobs) each extract; the first rename wins and the others discard their copy.
    """
    tar_path = Path(tar_path).resolve()
    if not tar_path.is_file():
        raise FileNotFoundError(f"tar_path {str(tar_path)!r} not found")
    stat = tar_path.stat()
    tag = f"{tar_path}|{stat.st_size}|{stat.st_mtime_ns}"
    name = tar_path.name.split(".")[0] + "-" + hashlib.sha1(tag.encode()).hexdigest()[:12]
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache_dir / name
    if dest.is_dir():
        return dest
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{name}."))
    try:
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, members=(m for m in tar if m.isfile() or m.isdir()), filter="data")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():
                raise
            shutil.rmtree(tmp)  # another process renamed its copy into place first (ENOTEMPTY / EEXIST)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def find_split_dir(root: str | os.PathLike, split: str) -> Path:
    """``root/split`` or, for an archive with one top folder, ``root/<top>/split``."""
    root = Path(root)
    for candidate in (root / split, *sorted(p / split for p in root.iterdir() if p.is_dir())):
        if candidate.is_dir():
            return candidate
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise FileNotFoundError(f"split {split!r} not found under {str(root)!r} (folders there: {found})")


class RobustImageFolder(datasets.ImageFolder):
    """``ImageFolder`` that reports unreadable images (path, count) and serves the next readable one instead."""

    max_consecutive_bad = 100

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None):
        super().__init__(str(root), transform=transform)
        self.num_bad = 0

    def __getitem__(self, index: int):
        for attempt in range(self.max_consecutive_bad):
            i = (index + attempt) % len(self.samples)
            path, target = self.samples[i]
            try:
                image = self.loader(path)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                self.num_bad += 1
                log.warning(
                    "skipping unreadable image %s (%s: %s); %d skipped so far", path, type(e).__name__, e, self.num_bad
                )
                continue
            if self.transform is not None:
                image = self.transform(image)
            return image, target
        raise RuntimeError(f"{self.max_consecutive_bad} unreadable images in a row from index {index} in {self.root}")


def image_dataset(
    kind: str,
    root: str | os.PathLike,
    split: str,
    transform: Callable | None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> Dataset:
    """A map-style dataset of (image, class index).

    ``kind``: "folder" (an ImageFolder directory with split subfolders, or a tar of one) or "torchvision_cifar10"
    (torchvision's CIFAR10 under ``root``; ``split`` "train" or "test"; ``download`` only when asked).
    """
    if kind == "folder":
        root = Path(root)
        if is_tar(root):
            root = extract_tar(root, cache_dir)
        elif not root.is_dir():
            raise FileNotFoundError(f"data root {str(root)!r} is neither a folder nor a .tar/.tar.gz/.tgz file")
        return RobustImageFolder(find_split_dir(root, split), transform=transform)
    if kind == "torchvision_cifar10":
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test' for torchvision_cifar10, got {split!r}")
        return datasets.CIFAR10(str(root), train=split == "train", transform=transform, download=download)
    raise ValueError(f"kind must be 'folder' or 'torchvision_cifar10' (shards have their own reader), got {kind!r}")


def subset_indices(n: int, size: int, seed: int) -> list[int]:
    """``size`` distinct indices out of ``n`` drawn with ``seed`` (all of them, in order, when size is 0)."""
    if size < 0 or size > n:
        raise ValueError(f"subset size must be in [0, {n}], got {size}")
    if size == 0:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:size].tolist())


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Evaluation split across ranks: every index exactly once, none padded or dropped."""
    return list(range(rank, n, world_size))


class EpochSampler(Sampler[int]):
    """Shuffled indices for one rank in one epoch, resumable mid-epoch.

    Each epoch draws one permutation of the dataset from ``(seed, epoch)``, keeps the first
    ``updates_per_epoch * global_batch`` indices (whole optimizer updates only) and gives this rank every
    ``world_size``-th of them, so update u of rank r covers part of the same global batch a single process would
    draw. ``set_epoch(epoch, start)`` skips the first ``start`` indices of this rank's list (the micro-batches
    already consumed before a checkpoint) without touching any global RNG.
    """

    def __init__(self, num_samples: int, *, global_batch: int, rank: int, world_size: int, seed: int):
        if num_samples < global_batch:
            raise ValueError(f"dataset has {num_samples} samples, fewer than one global batch of {global_batch}")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.updates_per_epoch = num_samples // global_batch
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g)[: self.updates_per_epoch * self.global_batch]
        return iter(perm[self.rank :: self.world_size][self.start :].tolist())

    def __len__(self) -> int:
        return self.updates_per_epoch * self.global_batch // self.world_size - self.start


@dataclass(frozen=True)
class ImageSettings:
    """What a model expects of its input images: ``input_size`` (C, H, W), per-channel ``mean`` / ``std`` and the
    resize ``interpolation`` (timm's data config, less the evaluation crop)."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"

    def __post_init__(self):  # lists (YAML, timm configs) become tuples: settings are hashable values
        for name in ("input_size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def from_data_config(cls, config: dict) -> ImageSettings:
        """From a ``timm.data.resolve_data_config`` dict (its ``crop_pct`` is the evaluation's, not read here)."""
        return cls(config["input_size"], config["mean"], config["std"], config["interpolation"])


@dataclass(frozen=True)
class TrainAugment:
    """Training augmentation. ``policy``: "timm" (RandomResizedCrop over ``scale`` + flip + optional RandAugment /
    colour jitter + random erasing, via ``timm.data.create_transform``), "cifar" (random crop after zero padding by
    ``crop_padding`` + flip: the "basic augmentation" of CIFAR papers, and optional random erasing) or "none" (the
    evaluation transform at full size). ``hflip``: flip probability; ``re_prob``: random erasing probability."""

    policy: str
    hflip: float = 0.5
    color_jitter: float = 0.0
    rand_augment: str | None = None  # e.g. "rand-m9-mstd0.5"
    re_prob: float = 0.0
    scale: tuple[float, float] = (0.08, 1.0)
    crop_padding: int = 4

    def __post_init__(self):
        object.__setattr__(self, "scale", tuple(self.scale))
        if self.policy not in POLICIES:
            raise ValueError(f"augmentation policy must be 'timm', 'cifar' or 'none', got {self.policy!r}")


def build_train_transform(image: ImageSettings, aug: TrainAugment) -> Callable:
    """Per-image training transform of a PIL image (``aug.policy`` says which)."""
    from timm.data import create_transform

    if aug.policy == "timm":
        return create_transform(
            **asdict(image),  # input_size, mean, std, interpolation: create_transform's own names
            is_training=True,
            scale=aug.scale,
            hflip=aug.hflip,
            color_jitter=aug.color_jitter,
            auto_augment=aug.rand_augment,
            re_prob=aug.re_prob,
            re_mode="pixel",
            re_count=1,
        )
    if aug.policy == "cifar":
        steps = [T.RandomCrop(image.input_size[-2:], padding=aug.crop_padding, padding_mode="constant")]
        if aug.hflip > 0:
            steps.append(T.RandomHorizontalFlip(aug.hflip))
        steps += [T.ToTensor(), T.Normalize(image.mean, image.std)]
        if aug.re_prob > 0:
            from timm.data.random_erasing import RandomErasing

            steps.append(RandomErasing(aug.re_prob, mode="pixel", device="cpu"))
        return T.Compose(steps)
    return build_eval_transform(image, crop_pct=1.0)  # policy "none"


def build_eval_transform(image: ImageSettings, crop_pct: float) -> Callable:
    """Resize to ``input_size / crop_pct``, centre crop, normalize (timm's evaluation transform)."""
    from timm.data import create_transform

    return create_transform(**asdict(image), is_training=False, crop_pct=crop_pct)
