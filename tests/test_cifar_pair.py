"""The CIFAR-10 pair recipe end to end at toy size: sweep, full runs, report; re-running reuses finished runs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_cifar_memory import write_torchvision_folder

from hyena_vision.engine import cifar_pair, cifar_report
from hyena_vision.engine.cifar_pair import Recipe, run_recipe
from hyena_vision.models import _shipped

TINY = ("model.kwargs.embed_dim=8", "model.kwargs.depth=1", "sched.warmup_epochs=0", "train.batch_size=10")


@pytest.mark.slow  # six trainer processes
def test_recipe_at_toy_size_reports_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    write_torchvision_folder(tmp_path / "data", 8, 30, seed=6)  # 40 training, 30 test images
    pieces = dict(sweep_train="train:0:20", sweep_val="train:20:40")
    recipe = Recipe(
        tmp_path / "out", str(tmp_path / "data"), epochs=1, sweep_epochs=1, lrs=(1e-3,), extra=TINY, **pieces
    )
    text = run_recipe(recipe)
    assert "| hyena_vit_cifar |" in text and "reference" in text and "| vit_iso_cifar |" in text
    assert "lr 0.001" in text and (recipe.out / "accuracy.png").stat().st_size > 0
    rows = {m: cifar_report.run_result(recipe.out / "full" / m) for m in cifar_report.PAIR}
    assert all(r.correct.numel() == 30 and r.images_seen == 40 and r.precision == "fp32" for r in rows.values())

    calls = []
    monkeypatch.setattr(cifar_pair.subprocess, "run", lambda *a, **k: calls.append(a))
    assert run_recipe(recipe) == text and calls == []  # every run finished: nothing trains again


def test_ship_copies_weights_and_figures(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    summary = dict(model="vit_iso_cifar", params=5, step=4, train_seconds=2.0, train_img_per_s=20.0)
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text("train:\n  amp: bf16\n  batch_size: 10\n")
    torch.save({"predictions": torch.tensor([1, 2, 3]), "targets": torch.tensor([1, 0, 3])}, run / "predictions.pt")
    save_file({"w": torch.randn(3)}, run / "model.safetensors")
    monkeypatch.setattr(_shipped, "WEIGHTS_DIR", tmp_path / "weights")
    target = cifar_pair.ship("vit_iso_cifar", run)
    assert target == tmp_path / "weights" / "vit_iso_cifar.c10.safetensors"
    assert torch.equal(load_file(target)["w"], load_file(run / "model.safetensors")["w"])
    figures = json.loads(target.with_suffix(".json").read_text())
    assert figures["images_seen"] == 40 and figures["precision"] == "bf16" and figures["test_images"] == 3
    assert figures["test_top1"] == pytest.approx(200 / 3)


@pytest.mark.slow  # two trainer processes
def test_compare_cifar10_without_shared_data_reads_torchvision_cache(tmp_path, monkeypatch, capsys):
    """A clone without ../shared: the comparison takes CIFAR-10 from torchvision's release in the cache folder
    (downloaded there when absent; the download itself is tested in test_cifar_memory with a fake downloader)."""
    import importlib.util

    cache = tmp_path / "cache"
    write_torchvision_folder(cache, 8, 30, seed=7)
    monkeypatch.setenv("HYENA_VISION_CACHE", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = importlib.util.spec_from_file_location("compare_cifar10_script", cifar_pair.REPO / "eval/compare_cifar10.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "DEFAULT_DATA", tmp_path / "no_shared" / "cifar10-jpg.tar.gz")
    tiny = ["data.train_subset=20", "data.val_subset=30", "train.batch_size=10", "train.epochs=1"]
    script.main(["--budget", "demo", "--models", "hyena_iso", "vit_iso", "--out", str(tmp_path / "out"), *tiny, *TINY])
    assert "getting it through torchvision's download" in capsys.readouterr().out
    table = (tmp_path / "out" / "results.md").read_text()
    assert "30 test images" in table and "| hyena_iso_cifar |" in table and "| vit_iso_cifar |" in table
