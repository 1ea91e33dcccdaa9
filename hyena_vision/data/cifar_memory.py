"""CIFAR-10 decoded once into memory and augmented in whole batches (``data.kind: memory_cifar10``).

Decoding 32x32 JPEGs and augmenting them one by one in PIL costs far more than a small model's training step on a
CPU. Decoded, CIFAR-10 is 180 MB of uint8 (N, 3, 32, 32): it is decoded once, cached on disk as a ``.pt`` file,
kept in memory, and each micro-batch is cropped, flipped and normalized as one tensor operation.

Sources (``root``): the ImageFolder JPEG tar of ``../shared/data`` (or an ImageFolder directory), read in
ImageFolder order (sorted class folders, sorted file names), so subsets and predictions line up with
``data.kind=folder``; torchvision's pickled release (a folder holding ``cifar-10-batches-py``); or, with
``root=None`` and ``download=True``, torchvision's download of that release into the cache folder.

``loaders`` serves this kind from the pieces here (``train_transform`` / ``eval_transform``, ``train_stream`` /
``eval_loader`` / ``num_classes_of`` with ``kind="memory_cifar10"``): ``load_cifar10``, the batched transforms and
the ``MemoryStream`` / ``TensorBatches`` iterables.

Splits: "train", "test", and "train:<start>:<stop>", the images ``start:stop`` of one fixed random permutation of
the training set: disjoint pieces of it (e.g. "train:0:10000" to train and "train:10000:15000" to validate a
learning-rate sweep without touching the test set).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .images import EpochSampler, ImageSettings, TrainAugment, default_cache_dir, find_split_dir, is_tar

__all__ = [
    "KIND",
    "NUM_CLASSES",
    "BatchAugment",
    "BatchNormalize",
    "MemoryStream",
    "TensorBatches",
    "batch_eval_transform",
    "batch_train_transform",
    "load_cifar10",
]

KIND = "memory_cifar10"
SPLITS = ("train", "test")
PIECE_SEED = 0  # the permutation that "train:<start>:<stop>" slices
TORCHVISION_FOLDER = "cifar-10-batches-py"
TORCHVISION_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
IMAGE_SIZE = (3, 32, 32)
NUM_CLASSES = 10

_loaded: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}  # decoded splits kept for this process


# ----------------------------------------------------------------------------------------------------------------
# Reading and caching


def _decode_jpegs(items: Iterator[tuple[str, int, bytes]], total: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(name, label, JPEG bytes) in any order -> uint8 (N, 3, 32, 32), int64 (N,) sorted by (label, name)."""
    decoded = []
    for name, label, data in tqdm(items, total=total, desc="decoding CIFAR-10", unit="img", leave=False):
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # (32, 32, 3)
        if image.shape != (32, 32, 3):
            raise ValueError(f"{name}: CIFAR-10 images are 32x32 RGB, got shape {image.shape}")
        decoded.append((label, name, image))
    if not decoded:
        raise FileNotFoundError("no images found")
    decoded.sort(key=lambda t: (t[0], t[1]))
    images = torch.from_numpy(np.stack([t[2] for t in decoded])).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return images, torch.tensor([t[0] for t in decoded], dtype=torch.int64)


def _classes(names: Sequence[str], where: str) -> dict[str, int]:
    classes = sorted(set(names))
    if len(classes) != 10:
        raise ValueError(f"{where}: CIFAR-10 needs 10 class folders, found {len(classes)}: {classes[:12]}")
    return {c: i for i, c in enumerate(classes)}


def _read_tar(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``.../<split>/<class>/<file>`` members of an ImageFolder tar, decoded without extracting it."""
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and len(p := m.name.split("/")) >= 3 and p[-3] == split]
        if not members:
            raise FileNotFoundError(f"no <{split}>/<class>/<image> files in {str(path)!r}")
        index = _classes([m.name.split("/")[-2] for m in members], str(path))
        items = ((m.name, index[m.name.split("/")[-2]], tar.extractfile(m).read()) for m in members)
        return _decode_jpegs(items, len(members))


def _read_folder(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    split_dir = find_split_dir(path, split)
    files = sorted(p for p in split_dir.glob("*/*") if p.is_file())
    index = _classes([f.parent.name for f in files], str(split_dir))
    return _decode_jpegs(((str(f), index[f.parent.name], f.read_bytes()) for f in files), len(files))


def _read_torchvision(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's pickled batches: dicts with b"data" (N, 3072) uint8, channel-major, and b"labels"."""
    images, labels = [], []
    for name in TORCHVISION_FILES[split]:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(torch.from_numpy(np.asarray(batch[b"data"], dtype=np.uint8)).reshape(-1, *IMAGE_SIZE))
        labels.append(torch.tensor(batch[b"labels"], dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def _download(cache_dir: Path) -> Path:
    """torchvision's CIFAR-10 release, downloaded (md5-checked) and extracted into ``cache_dir``."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(CIFAR10.url, str(cache_dir), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    return cache_dir / TORCHVISION_FOLDER


def _torchvision_folder(root: Path) -> Path | None:
    for folder in (root, root / TORCHVISION_FOLDER):
        if (folder / "test_batch").is_file():
            return folder
    return None


def load_cifar10(
    split: str,
    *,
    root: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``split`` ("train" / "test") as uint8 (N, 3, 32, 32) images and int64 (N,) labels.

    ``root``: a JPEG ImageFolder tar or directory (decoded once, cached in ``cache_dir`` as
    ``cifar10-<hash>-<split>.pt``), or a folder with torchvision's ``cifar-10-batches-py``. ``root=None``: the
    torchvision release in ``cache_dir`` (default ``$HYENA_VISION_CACHE`` or ``~/.cache/hyena_vision``), downloaded
    there first when ``download`` is set. Each split is read once per process and then kept in memory.
    """
    if split.startswith("train:"):
        return _train_piece(split, root=root, cache_dir=cache_dir, download=download)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or 'train:<start>:<stop>' for CIFAR-10, got {split!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if root is None:
        folder = _torchvision_folder(cache_dir)
        if folder is None:
            if not download:
                raise FileNotFoundError(
                    f"data.root is not given and {str(cache_dir / TORCHVISION_FOLDER)!r} does not exist: give "
                    "data.root (CIFAR-10 JPEG tar / ImageFolder / torchvision folder) or set data.download=true"
                )
            print(f"CIFAR-10: downloading torchvision's release into {cache_dir}", flush=True)
            folder = _download(cache_dir)
        root = folder
    root = Path(root).resolve()
    key = (str(root), split)
    if key in _loaded:
        return _loaded[key]
    if not root.exists():
        raise FileNotFoundError(f"data.root {str(root)!r} does not exist")
    folder = _torchvision_folder(root) if root.is_dir() else None
    if folder is not None:
        data = _read_torchvision(folder, split)
    else:
        if not (root.is_dir() or is_tar(root)):
            raise FileNotFoundError(f"data.root {str(root)!r} is neither a folder nor a .tar/.tar.gz/.tgz file")
        stat = root.stat()
        tag = hashlib.sha1(f"{root}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        cached = cache_dir / f"cifar10-{tag}-{split}.pt"
        if cached.is_file():
            saved = torch.load(cached, map_location="cpu", weights_only=True)
            data = saved["images"], saved["labels"]
        else:
            data = _read_tar(root, split) if is_tar(root) else _read_folder(root, split)
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            torch.save({"images": data[0], "labels": data[1]}, tmp)
            os.replace(tmp, cached)  # atomic: a half-written cache is never read
    _loaded[key] = data
    return data


def _train_piece(
    split: str, *, root: str | os.PathLike | None, cache_dir: str | os.PathLike | None, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """'train:<start>:<stop>': images start..stop-1 of a fixed (seed ``PIECE_SEED``) permutation of the train set."""
    try:
        start, stop = (int(v) for v in split.split(":")[1:])
    except ValueError:
        raise ValueError(f"split must look like 'train:<start>:<stop>' (integers), got {split!r}") from None
    images, labels = load_cifar10("train", root=root, cache_dir=cache_dir, download=download)
    if not 0 <= start < stop <= len(labels):
        raise ValueError(f"split {split!r}: need 0 <= start < stop <= {len(labels)}")
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(PIECE_SEED))[start:stop]
    return images[keep], labels[keep]


# ----------------------------------------------------------------------------------------------------------------
# Batched transforms


class BatchNormalize:
    """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return images.float().mul_(self.scale).sub_(self.shift)


class BatchAugment(BatchNormalize):
    """Random crop after zero padding by ``padding``, horizontal flip with probability ``hflip``, normalize, and
    optional random erasing (timm's, per image): the "cifar" policy for a whole uint8 (B, C, H, W) batch at once."""

    def __init__(self, *, mean: Sequence[float], std: Sequence[float], padding: int, hflip: float, re_prob: float):
        super().__init__(mean, std)
        if padding < 0 or not 0.0 <= hflip <= 1.0:
            raise ValueError(f"crop_padding must be >= 0 and hflip in [0, 1], got {padding} and {hflip}")
        self.padding, self.hflip = padding, hflip
        self.erase = None
        if re_prob > 0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(re_prob, mode="pixel", device="cpu")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, channels, height, width = images.shape
        p = self.padding
        padded = F.pad(images, (p, p, p, p))  # (B, C, H + 2p, W + 2p), zeros as torchvision's RandomCrop
        top = torch.randint(0, 2 * p + 1, (batch, 1, 1, 1), generator=generator)
        left = torch.randint(0, 2 * p + 1, (batch, 1, 1, 1), generator=generator)
        flip = torch.rand(batch, 1, 1, 1, generator=generator) < self.hflip
        rows = top + torch.arange(height).view(1, 1, height, 1)  # (B, 1, H, 1)
        cols = torch.arange(width).view(1, 1, 1, width)
        cols = left + torch.where(flip, width - 1 - cols, cols)  # (B, 1, 1, W): a flip reads the crop mirrored
        crops = padded[torch.arange(batch).view(-1, 1, 1, 1), torch.arange(channels).view(1, -1, 1, 1), rows, cols]
        out = super().__call__(crops)  # (B, C, H, W) float32
        return self.erase(out) if self.erase is not None else out


def _check_size(image: ImageSettings) -> None:
    if image.input_size != IMAGE_SIZE:
        raise ValueError(
            f"data.kind={KIND} serves 32x32 RGB images: input_size must be {IMAGE_SIZE}, got {image.input_size}"
        )


def batch_train_transform(image: ImageSettings, aug: TrainAugment) -> BatchNormalize:
    """Batched counterpart of ``images.build_train_transform`` for the "cifar" (pad + crop + flip) and "none"
    policies. ``image.interpolation`` and ``aug.scale`` belong to the "timm" policy, which is per image: use
    data.kind=folder for it."""
    _check_size(image)
    if aug.policy == "timm" or aug.color_jitter > 0 or aug.rand_augment:
        raise ValueError(
            f"data.kind={KIND} augments whole batches and supports aug.policy 'cifar' or 'none' without "
            f"color_jitter / rand_augment (got policy {aug.policy!r}, color_jitter {aug.color_jitter}, rand_augment "
            f"{aug.rand_augment!r}); use data.kind=folder for per-image timm augmentation"
        )
    if aug.policy == "cifar":
        return BatchAugment(
            mean=image.mean, std=image.std, padding=aug.crop_padding, hflip=aug.hflip, re_prob=aug.re_prob
        )
    return BatchNormalize(image.mean, image.std)  # policy "none"


def batch_eval_transform(image: ImageSettings, crop_pct: float) -> BatchNormalize:
    """Normalization only: CIFAR models evaluate the whole 32x32 image (``crop_pct`` 1)."""
    _check_size(image)
    if crop_pct != 1.0:
        raise ValueError(f"data.kind={KIND} evaluates whole 32x32 images: crop_pct must be 1.0, got {crop_pct}")
    return BatchNormalize(image.mean, image.std)


# ----------------------------------------------------------------------------------------------------------------
# Streams


@dataclass
class MemoryStream:
    """Micro-batches for training (``loaders.TrainStream``'s interface). Resumes exactly mid-epoch: the order comes
    from ``EpochSampler`` and each micro-batch's augmentation from a generator seeded with (seed, rank, epoch,
    micro-batch index), so no global RNG is consumed (except by random erasing, whose state checkpoints keep)."""

    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64
    transform: Callable
    sampler: EpochSampler
    micro_batch: int
    accum_steps: int
    seed: int
    rank: int

    @property
    def updates_per_epoch(self) -> int:
        return self.sampler.updates_per_epoch

    def epoch_batches(self, epoch: int, start_update: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start_micro = start_update * self.accum_steps
        self.sampler.set_epoch(epoch, start_micro * self.micro_batch)
        indices = torch.tensor(list(self.sampler), dtype=torch.int64)
        generator = torch.Generator()
        for j, i in enumerate(range(0, len(indices) - self.micro_batch + 1, self.micro_batch), start=start_micro):
            generator.manual_seed((((self.seed * 1_000_003 + self.rank) * 10_007 + epoch) * 1_000_003 + j) % 2**63)
            batch = indices[i : i + self.micro_batch]
            yield self.transform(self.images[batch], generator), self.labels[batch]


@dataclass
class TensorBatches:
    """Evaluation batches, in order, of (transformed images, labels)."""

    images: torch.Tensor
    labels: torch.Tensor
    transform: Callable
    batch_size: int

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.labels), self.batch_size):
            yield self.transform(self.images[i : i + self.batch_size]), self.labels[i : i + self.batch_size]
