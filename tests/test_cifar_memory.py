"""In-memory CIFAR-10 (data.kind=memory_cifar10): decoding, caching, sources, batched augmentation, streams."""

from __future__ import annotations

import pathlib
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torchvision.datasets.utils
from hv_testing import load_script
from torchvision import transforms as T

from hyena_vision.data import cifar_memory
from hyena_vision.data.cifar_memory import KIND, BatchAugment, BatchNormalize, load_cifar10
from hyena_vision.data.images import ImageSettings, RobustImageFolder, TrainAugment
from hyena_vision.data.loaders import eval_loader, eval_transform, num_classes_of, train_stream, train_transform

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGE = ImageSettings((3, 32, 32), MEAN, STD)


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    """Each test reads its sources anew (the module keeps decoded splits per process)."""
    monkeypatch.setattr(cifar_memory, "_loaded", {})


def write_torchvision_folder(root, n_train_per_batch: int, n_test: int, seed: int):
    """A fake torchvision-format ``cifar-10-batches-py`` (pickled dicts of channel-major rows); returns the data."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    splits = {"train": ([f"data_batch_{i}" for i in range(1, 6)], n_train_per_batch), "test": (["test_batch"], n_test)}
    for split, (names, n) in splits.items():
        images, labels = [], []
        for name in names:
            data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            targets = rng.integers(0, 10, size=n).tolist()
            with open(folder / name, "wb") as f:
                pickle.dump({b"data": data, b"labels": targets}, f)
            images.append(data.reshape(n, 3, 32, 32))
            labels += targets
        written[split] = (torch.from_numpy(np.concatenate(images)), torch.tensor(labels))
    return written


@pytest.fixture(scope="module")
def small_cifar(cifar_subset):
    """3 training and 2 test images per class of the real CIFAR-10, as an ImageFolder."""
    return cifar_subset(3, 2)


def test_folder_and_tar_match_image_folder_and_cache(small_cifar, tmp_path):
    root = small_cifar
    cache = tmp_path / "cache"
    images, labels = load_cifar10("train", root=root, cache_dir=cache)
    reference = RobustImageFolder(root / "train", transform=T.PILToTensor())
    assert images.shape == (30, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [t for _, t in reference.samples]
    for i in (0, 7, 29):
        assert torch.equal(images[i], reference[i][0])  # same decoder, same uint8 pixels
    assert len(list(cache.glob("cifar10-*-train.pt"))) == 1

    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar10")
    tar_images, tar_labels = load_cifar10("train", root=archive, cache_dir=cache)
    assert torch.equal(tar_images, images) and torch.equal(tar_labels, labels)
    cifar_memory._loaded.clear()  # now from the .pt cache
    cached_images, _ = load_cifar10("train", root=archive, cache_dir=cache)
    assert torch.equal(cached_images, images)
    assert len(list(cache.glob("cifar10-*-train.pt"))) == 2


def test_torchvision_folder_and_download(tmp_path, monkeypatch):
    local = tmp_path / "local"
    written = write_torchvision_folder(local, 4, 6, seed=0)
    for root in (local, local / "cifar-10-batches-py"):
        images, labels = load_cifar10("train", root=root, cache_dir=tmp_path / "unused")
        assert torch.equal(images, written["train"][0]) and torch.equal(labels, written["train"][1])

    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="data.download=true"):
        load_cifar10("test", root=None, cache_dir=cache)
    calls = []

    downloaded = {}

    def fake_download(url, download_root, filename, md5):
        calls.append((url, filename, md5))
        downloaded.update(write_torchvision_folder(pathlib.Path(download_root), 2, 5, seed=1))

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    images, labels = load_cifar10("test", root=None, cache_dir=cache, download=True)
    assert calls == [(torchvision.datasets.CIFAR10.url, "cifar-10-python.tar.gz", torchvision.datasets.CIFAR10.tgz_md5)]
    assert torch.equal(images, downloaded["test"][0]) and torch.equal(labels, downloaded["test"][1])
    load_cifar10("train", root=None, cache_dir=cache, download=True)
    assert len(calls) == 1  # present now: not downloaded again


def test_bad_sources_raise(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_cifar10("val", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10("train", root=tmp_path / "missing")


def test_normalize_matches_torchvision():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = BatchNormalize(MEAN, STD)(images)
    reference = torch.stack([T.Normalize(MEAN, STD)(T.ConvertImageDtype(torch.float64)(x)) for x in images])
    torch.testing.assert_close(out.double(), reference, rtol=1e-6, atol=1e-6)


def test_batch_augment_is_a_padded_crop_and_flip():
    """Every output is one of the (2p+1)^2 crops of the zero-padded image, mirrored or not, and all occur."""
    batch, size, p = 600, 6, 2
    images = torch.randint(
        0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    augment = BatchAugment(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255), padding=p, hflip=0.5, re_prob=0.0)
    out = augment(images, torch.Generator().manual_seed(1)).round().to(torch.int64)  # back to pixel values
    padded = torch.nn.functional.pad(images, (p, p, p, p)).to(torch.int64)
    candidates = [(top, left, flip) for top in range(2 * p + 1) for left in range(2 * p + 1) for flip in (0, 1)]
    seen = set()
    for i in range(batch):
        matches = []
        for top, left, flip in candidates:
            crop = padded[i, :, top : top + size, left : left + size]
            if torch.equal(out[i], crop.flip(-1) if flip else crop):
                matches.append((top, left, flip))
        assert matches, f"output {i} is no padded crop"
        seen.update(matches)
    assert len({(t, l) for t, l, _ in seen}) == (2 * p + 1) ** 2 and {f for *_, f in seen} == {0, 1}


def test_transforms_are_batched_and_validated():
    assert isinstance(train_transform(KIND, IMAGE, TrainAugment("cifar")), BatchAugment)
    assert type(train_transform(KIND, IMAGE, TrainAugment("none"))) is BatchNormalize
    for aug in (
        TrainAugment("timm"),
        TrainAugment("cifar", color_jitter=0.4),
        TrainAugment("cifar", rand_augment="m9"),
    ):
        with pytest.raises(ValueError, match="data.kind=folder"):
            train_transform(KIND, IMAGE, aug)
    with pytest.raises(ValueError, match="input_size"):
        train_transform(KIND, ImageSettings((3, 64, 64), MEAN, STD), TrainAugment("cifar"))
    with pytest.raises(ValueError, match="crop_pct"):
        eval_transform(KIND, IMAGE, crop_pct=0.9)
    with pytest.raises(ValueError, match="augmentation policy"):
        TrainAugment("autoaugment")


def test_shards_are_refused_by_name(tmp_path):
    common = dict(root=str(tmp_path), split="train", shards="s-{0..3}.tar", transform=None, rank=0, world_size=1)
    with pytest.raises(ValueError, match="data.train_shards"):
        train_stream(KIND, train_samples=0, global_batch=8, accum_steps=1, seed=0, **common)
    with pytest.raises(ValueError, match="data.val_shards"):
        eval_loader(KIND, batch_size=8, **common)
    with pytest.raises(ValueError, match="data.train_shards"):
        num_classes_of(KIND, root=None, split="train", shards="s.tar")
    assert num_classes_of(KIND, root=None, split="train", shards=None) == 10


def _stream(root, **kwargs):
    transform = train_transform(KIND, IMAGE, TrainAugment("cifar"))
    args = dict(root=str(root), split="train", shards=None, train_samples=0, transform=transform, global_batch=8)
    args.update(accum_steps=2, rank=0, world_size=1, seed=3, cache_dir=str(root / "cache"))
    return train_stream(KIND, **{**args, **kwargs})


def test_stream_resumes_exactly_and_splits_ranks(tmp_path):
    write_torchvision_folder(tmp_path, 8, 4, seed=2)  # 40 training images
    stream = _stream(tmp_path)
    assert stream.updates_per_epoch == 5 and stream.micro_batch == 4
    full = list(stream.epoch_batches(1, 0))
    assert len(full) == 10
    resumed = list(_stream(tmp_path).epoch_batches(1, 3))
    assert len(resumed) == 4
    for (a, ya), (b, yb) in zip(full[6:], resumed, strict=True):
        torch.testing.assert_close(a, b)
        assert torch.equal(ya, yb)
    assert not torch.equal(full[0][1], list(stream.epoch_batches(2, 0))[0][1])  # a new order every epoch
    ranks = [list(_stream(tmp_path, rank=r, world_size=2).epoch_batches(0, 0)) for r in (0, 1)]
    single = list(_stream(tmp_path, accum_steps=1).epoch_batches(0, 0))  # micro-batch 8 = one global batch
    for u in range(5):
        union = [y for r in (0, 1) for micro in (2 * u, 2 * u + 1) for y in ranks[r][micro][1].tolist()]
        assert sorted(union) == sorted(single[u][1].tolist())


def test_eval_loader_matches_folder_order(small_cifar, tmp_path):
    root = small_cifar
    args = dict(root=str(root), split="test", shards=None, batch_size=7, rank=0, world_size=1, subset=12, seed=5)
    args.update(cache_dir=str(tmp_path))
    memory = eval_loader(KIND, transform=eval_transform(KIND, IMAGE, crop_pct=1.0), **args)
    folder = eval_loader("folder", transform=eval_transform("folder", IMAGE, crop_pct=1.0), **args)
    assert len(memory) == 2
    pairs = list(zip(memory, folder, strict=True))
    for (x, y), (xf, yf) in pairs:
        assert torch.equal(y, yf)
        torch.testing.assert_close(x, xf, rtol=1e-5, atol=1e-5)


def test_trainer_memory_kind_resumes_and_saves_predictions(tmp_path):
    from hyena_vision.engine import classify
    from hyena_vision.engine.checkpoint import load_checkpoint
    from hyena_vision.engine.stats import load_predictions

    written = write_torchvision_folder(tmp_path / "data", 8, 20, seed=4)
    model = ["model.name=vit_iso_cifar", "model.kwargs.embed_dim=16", "model.kwargs.depth=1"]
    data = ["data.kind=memory_cifar10", f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}"]
    train = ["data.val_split=test", "aug.policy=cifar", "train.amp=none", "train.epochs=2", "train.batch_size=8"]
    common = [*model, *data, *train, "train.accum_steps=2", "sched.warmup_epochs=0", "train.log_every=1"]
    summary = classify.main([*common, f"out_dir={tmp_path / 'full'}"])
    classify.main([*common, f"out_dir={tmp_path / 'cut'}", "train.max_steps=3"])  # stops mid-epoch 0
    classify.main(["--resume", *common, f"out_dir={tmp_path / 'cut'}"])
    full, resumed = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("full", "cut"))
    for name, value in full.items():
        assert torch.equal(value, resumed[name]), name
    saved = load_predictions(tmp_path / "full" / "predictions.pt")
    assert torch.equal(saved["targets"], written["test"][1])
    accuracy = 100.0 * (saved["predictions"] == saved["targets"]).double().mean().item()
    assert summary["val_top1"] == pytest.approx(accuracy, abs=1e-4)


def test_train_pieces_are_disjoint_slices_of_the_training_set(tmp_path):
    written = write_torchvision_folder(tmp_path, 8, 4, seed=5)  # 40 training images, all distinct
    rows = {tuple(x.flatten()[:16].tolist()) for x in written["train"][0]}
    a, _ = load_cifar10("train:0:25", root=tmp_path)
    b, _ = load_cifar10("train:25:40", root=tmp_path)
    keys = [{tuple(x.flatten()[:16].tolist()) for x in part} for part in (a, b)]
    assert len(keys[0]) == 25 and len(keys[1]) == 15 and not keys[0] & keys[1] and keys[0] | keys[1] == rows
    for bad in ("train:5", "train:3:2", "train:0:41", "train:a:b"):
        with pytest.raises(ValueError, match="train:<start>:<stop>|start < stop"):
            load_cifar10(bad, root=tmp_path)


def test_bench_cifar_pipeline_runs_both_kinds(cifar_subset, capsys):

    root = cifar_subset(13, 1)  # 130 training images: one batch of the config's 128
    bench = load_script("eval/bench_cifar_pipeline.py")
    runs = ["vit_iso_cifar:folder", "vit_iso_cifar:memory_cifar10"]
    bench.main(["--data", str(root), "--runs", *runs, "--rounds", "1", "--updates", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert "| vit_iso_cifar | folder |" in out and "| vit_iso_cifar | memory_cifar10 |" in out
