"""Image data: folders and tars of them, the epoch sampler, evaluation splits, webdataset shards (round trip, bad
samples reported and skipped), all on real CIFAR-10 JPEGs from ../shared/data."""

from __future__ import annotations

import io
import itertools
import logging
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image
from torchvision.transforms import functional as TF

from hyena_vision.data.images import (
    EpochSampler,
    ImageSettings,
    RobustImageFolder,
    TrainAugment,
    extract_tar,
    find_split_dir,
    image_dataset,
    shard_indices,
    subset_indices,
)
from hyena_vision.data.loaders import (
    eval_loader,
    eval_transform,
    micro_batch_size,
    num_classes_of,
    train_stream,
    train_transform,
)
from hyena_vision.data.shards import eval_shard_pipeline, read_meta, train_shard_pipeline, write_shards

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar_folder(cifar_subset) -> Path:
    """A small real CIFAR-10 ImageFolder: 6 train and 3 test JPEGs per class, taken from the shared tar."""
    return cifar_subset(6, 3)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_image_folder_and_tar_of_one(cifar_folder, tmp_path):
    ds = image_dataset("folder", cifar_folder, "train", None)
    assert ds.classes == CLASSES and len(ds) == 60
    image, target = ds[0]
    assert image.size == (32, 32) and target == 0
    tar_path = tmp_path / "c.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(cifar_folder, arcname="cifar10")
    extracted = extract_tar(tar_path, tmp_path / "cache")
    assert extract_tar(tar_path, tmp_path / "cache") == extracted  # extracted once
    assert find_split_dir(extracted, "test") == extracted / "cifar10" / "test"
    from_tar = image_dataset("folder", tar_path, "test", TF.to_tensor, cache_dir=tmp_path / "cache")
    from_dir = image_dataset("folder", cifar_folder, "test", TF.to_tensor)
    assert len(from_tar) == 30 and torch.equal(from_tar[7][0], from_dir[7][0])
    assert num_classes_of("folder", root=str(tar_path), split="test", shards=None, cache_dir=tmp_path / "cache") == 10


def test_extract_tar_when_another_process_finishes_first(cifar_folder, tmp_path, monkeypatch):
    """Two processes extracting one tar at once: the one that renames second keeps the first's folder."""
    tar_path = tmp_path / "c.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(cifar_folder, arcname="cifar10")
    cache = tmp_path / "cache"
    real_open = tarfile.open

    def open_after_the_other_process(*args, **kwargs):  # the other process's copy lands while this one extracts
        monkeypatch.setattr(tarfile, "open", real_open)
        other = real_open(tar_path)
        done = cache / ".other"
        other.extractall(done, filter="data")
        other.close()
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(done, cache / name)
        return real_open(*args, **kwargs)

    name = extract_tar(tar_path, tmp_path / "probe").name  # the folder name the cache uses for this tar
    monkeypatch.setattr(tarfile, "open", open_after_the_other_process)
    extracted = extract_tar(tar_path, cache)
    assert extracted == cache / name
    assert len([f for f in (extracted / "cifar10" / "train").rglob("*") if f.is_file()]) == 60
    assert sorted(p.name for p in cache.iterdir()) == [name]  # the loser's temp folder is gone


def test_data_errors_name_the_problem(cifar_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="split 'val' not found"):
        image_dataset("folder", cifar_folder, "val", None)
    with pytest.raises(FileNotFoundError, match="neither a folder nor"):
        image_dataset("folder", tmp_path / "nope", "train", None)
    with pytest.raises(ValueError, match="kind must be"):
        image_dataset("imagenet", cifar_folder, "train", None)
    with pytest.raises(ValueError, match="divisible by accum_steps"):
        micro_batch_size(10, accum_steps=3, world_size=1)
    with pytest.raises(ValueError, match="data.kind must be one of"):
        eval_loader("tfrecord", root=None, split="x", shards=None, transform=None, batch_size=1, rank=0, world_size=1)


def test_per_image_transforms_follow_the_settings(cifar_folder):
    """The "cifar" policy without padding or flip is the whole-image evaluation transform; "timm" crops to size."""
    photo = Image.open(cifar_folder / "test" / "cat" / "0000.jpg").convert("RGB")
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    image = ImageSettings([3, 32, 32], mean, std)  # lists (as from YAML) are kept as tuples
    assert image.input_size == (3, 32, 32) and hash(image) == hash(ImageSettings((3, 32, 32), mean, std))
    reference = (TF.to_tensor(photo) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    fixed = train_transform("folder", image, TrainAugment("cifar", hflip=0.0, crop_padding=0))(photo)
    torch.testing.assert_close(fixed, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eval_transform("folder", image, crop_pct=1.0)(photo), reference, rtol=1e-5, atol=1e-5)
    small = ImageSettings((3, 24, 24), mean, std, interpolation="bilinear")
    assert train_transform("shards", small, TrainAugment("timm", re_prob=0.5))(photo).shape == (3, 24, 24)


def test_unreadable_image_is_reported_and_replaced(cifar_folder, tmp_path, caplog):
    root = tmp_path / "bad"
    shutil.copytree(cifar_folder / "test", root)
    _truncate(root / "airplane" / "0001.jpg")
    ds = RobustImageFolder(root, transform=TF.to_tensor)
    with caplog.at_level(logging.WARNING):
        image, target = ds[1]  # airplane/0001 is truncated: the next image (airplane/0002) comes instead
    assert ds.num_bad == 1 and "airplane/0001.jpg" in caplog.text
    assert target == 0 and torch.equal(image, ds[2][0])


def test_epoch_sampler_splits_global_batches_and_resumes():
    single = EpochSampler(50, global_batch=8, rank=0, world_size=1, seed=3)
    ranks = [EpochSampler(50, global_batch=8, rank=r, world_size=2, seed=3) for r in range(2)]
    assert single.updates_per_epoch == 6 and len(single) == 48 and len(ranks[0]) == 24
    order = list(single)
    for update in range(6):  # each rank's micro-batch of 4 is half of the single process's batch of 8
        global_batch = order[8 * update : 8 * update + 8]
        union = list(ranks[0])[4 * update : 4 * update + 4] + list(ranks[1])[4 * update : 4 * update + 4]
        assert sorted(union) == sorted(global_batch)
    single.set_epoch(0, start=16)
    assert list(single) == order[16:] and len(single) == 32
    single.set_epoch(1)
    assert list(single) != order and len(set(single)) == 48


def test_eval_split_and_subset_cover_every_index_once():
    parts = [shard_indices(11, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(11))
    sub = subset_indices(100, 10, seed=0)
    assert len(set(sub)) == 10 and sub == subset_indices(100, 10, seed=0) and subset_indices(5, 0, 0) == list(range(5))
    with pytest.raises(ValueError, match="subset size"):
        subset_indices(5, 6, 0)


def _train_stream(kind: str, **kwargs):
    """``train_stream`` on one rank with seed 0, ToTensor images and the epoch length from the data."""
    return train_stream(
        kind, split="train", train_samples=0, transform=TF.to_tensor, rank=0, world_size=1, seed=0, **kwargs
    )


def test_train_stream_folder_resumes_mid_epoch(cifar_folder):
    def stream():
        return _train_stream("folder", root=str(cifar_folder), shards=None, global_batch=12, accum_steps=2)

    full = [y for _, y in stream().epoch_batches(epoch=1, start_update=0)]
    assert len(full) == 10  # 5 updates x 2 micro-batches of 6
    resumed = [y for _, y in stream().epoch_batches(epoch=1, start_update=3)]
    assert len(resumed) == 4 and all(torch.equal(a, b) for a, b in zip(full[6:], resumed, strict=True))


def test_shard_round_trip(cifar_folder, tmp_path):
    meta = write_shards(cifar_folder / "test", tmp_path / "shards", maxcount=7, progress=False)
    assert meta["num_samples"] == 30 and len(meta["shards"]) == 5 and meta["classes"] == CLASSES
    assert read_meta(str(tmp_path / "shards" / "shard-{000000..000004}.tar")) == meta
    urls = str(tmp_path / "shards" / "shard-{000000..000004}.tar")
    images, targets = zip(
        *[
            (x, y)
            for xb, yb in eval_shard_pipeline(urls, transform=TF.to_tensor, batch_size=4)
            for x, y in zip(xb, yb, strict=True)
        ],
        strict=True,
    )
    assert len(images) == 30
    reference = image_dataset("folder", cifar_folder, "test", TF.to_tensor)
    expected = sorted((int(t), reference[i][0].sum().item()) for i, t in enumerate(reference.targets))
    got = sorted((int(t), x.sum().item()) for x, t in zip(images, targets, strict=True))
    assert got == expected  # same images (bytes kept as they were), same labels
    with pytest.raises(FileExistsError):
        write_shards(cifar_folder / "test", tmp_path / "shards", maxcount=7, progress=False)

    # training: an endless stream of full batches; the loader's stream counts updates per epoch from meta.json
    batches = train_shard_pipeline(urls, transform=TF.to_tensor, batch_size=8, seed=0, shuffle_buffer=16)
    first = list(itertools.islice(batches, 6))  # 6 batches of 8 from 30 samples: shards are resampled
    assert len(first) == 6 and all(x.shape == (8, 3, 32, 32) and y.shape == (8,) for x, y in first)
    stream = _train_stream("shards", root=None, shards=urls, global_batch=8, accum_steps=1, shuffle_buffer=16)
    assert stream.updates_per_epoch == 3
    assert len(list(stream.epoch_batches(0, 0))) == 3 and len(list(stream.epoch_batches(1, 1))) == 2


def test_truncated_jpeg_in_a_shard_is_reported_and_skipped(cifar_folder, tmp_path, caplog):
    good = (cifar_folder / "test" / "cat" / "0000.jpg").read_bytes()
    shard = tmp_path / "bad-000000.tar"
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "cat_0000", "jpg": good, "cls": 3})
        sink.write({"__key__": "cat_0001_truncated", "jpg": good[: len(good) // 2], "cls": 3})
        sink.write({"__key__": "cat_0002_nolabel", "jpg": good})
        sink.write({"__key__": "cat_0003", "jpg": good, "cls": 3})
    with caplog.at_level(logging.WARNING):
        batches = list(eval_shard_pipeline(str(shard), transform=TF.to_tensor, batch_size=10))
    assert len(batches) == 1 and batches[0][1].tolist() == [3, 3]
    assert "cat_0001_truncated" in caplog.text and "cat_0002_nolabel" in caplog.text and "2 skipped" in caplog.text
    assert torch.equal(batches[0][0][0], TF.to_tensor(Image.open(io.BytesIO(good)).convert("RGB")))

    # the writer decodes first and leaves unreadable files out, listing them
    src = tmp_path / "src"
    shutil.copytree(cifar_folder / "test", src)
    _truncate(src / "dog" / "0002.jpg")
    meta = write_shards(src, tmp_path / "out", maxcount=100, progress=False)
    assert meta["num_samples"] == 29 and meta["skipped"] == ["dog/0002.jpg"]


def test_make_shards_command(cifar_folder, tmp_path):
    from hyena_vision.engine.make_shards import main

    meta = main(["--src", str(cifar_folder / "train"), "--out", str(tmp_path / "s"), "--maxcount", "25"])
    assert meta["num_samples"] == 60 and meta["shards"] == [f"shard-00000{i}.tar" for i in range(3)]
