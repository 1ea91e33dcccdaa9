"""The CIFAR-10 pair recipe end to end at toy size: sweep, full runs, report; re-running reuses finished runs."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from test_cifar_memory import write_torchvision_folder

from hyena_vision.engine import cifar_pair, cifar_report, compare_cifar10
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
    cache = tmp_path / "cache"
    write_torchvision_folder(cache, 8, 30, seed=7)
    monkeypatch.setenv("HYENA_VISION_CACHE", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(compare_cifar10, "default_data", lambda: tmp_path / "no_shared" / "cifar10-jpg.tar.gz")
    monkeypatch.setattr(_shipped, "WEIGHTS_DIR", tmp_path / "no_weights")  # a version without the trained pair
    tiny = ["data.train_subset=20", "data.val_subset=30", "train.batch_size=10", "train.epochs=1"]
    compare_cifar10.main(
        ["--budget", "demo", "--models", "hyena_iso", "vit_iso", "--out", str(tmp_path / "out"), *tiny, *TINY]
    )
    assert "getting it through torchvision's download" in capsys.readouterr().out
    table = (tmp_path / "out" / "results.md").read_text()
    assert "30 test images" in table and "| hyena_iso_cifar |" in table and "| vit_iso_cifar |" in table
    assert "No trained CIFAR-10 pair ships with this version yet" in table


def test_shipped_pair_is_evaluated_on_the_runs_test_images(tmp_path, monkeypatch):
    write_torchvision_folder(tmp_path / "data", 2, 30, seed=8)
    run = tmp_path / "run"
    run.mkdir()
    config = f"data:\n  root: {tmp_path / 'data'}\n  cache_dir: null\n  download: false\n  val_subset: 12\n"
    (run / "config.yaml").write_text(config + "train:\n  seed: 3\n  amp: none\n")
    targets = torch.cat([y for _, y in cifar_report_loader(tmp_path / "data")])
    torch.save({"predictions": targets, "targets": targets}, run / "predictions.pt")
    monkeypatch.setattr(_shipped, "WEIGHTS_DIR", tmp_path / "weights")
    assert cifar_report.shipped_results(run) == []  # no weights shipped: no rows
    (tmp_path / "weights").mkdir()
    figures = dict(precision="fp32", images_seen=2_500_000, train_seconds=9.0, train_img_per_s=300.0)
    for arch in cifar_report.PAIR:
        torch.manual_seed(0)
        save_file(timm.create_model(arch).state_dict(), _shipped.weights_file(arch, "c10"))
        _shipped.weights_file(arch, "c10").with_suffix(".json").write_text(json.dumps(figures))
    rows = cifar_report.shipped_results(run)
    assert [r.name for r in rows] == ["hyena_vit_cifar.c10", "vit_iso_cifar.c10"]
    assert all(r.correct.numel() == 12 and r.images_seen == 2_500_000 for r in rows)
    torch.save({"predictions": targets, "targets": targets.flip(0)}, run / "predictions.pt")
    with pytest.raises(ValueError, match="other test images"):
        cifar_report.shipped_results(run)


def cifar_report_loader(root):
    """The seeded 12-image test subset the run's config describes (seed 3), as the trainer would read it."""
    from hyena_vision.data import cifar_memory
    from hyena_vision.data.loaders import eval_loader

    transform = cifar_memory.BatchNormalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    args = dict(root=str(root), split="test", shards=None, transform=transform, batch_size=5, rank=0, world_size=1)
    return eval_loader(cifar_memory.KIND, subset=12, seed=3, **args)


def test_one_model_per_process_trains_only_that_model(tmp_path, monkeypatch):
    """``--model``: that model's sweep and full run only (one process per core); both runs then feed the report."""
    trained = []

    def fake_train(model, run, overrides, recipe):
        trained.append((model, run.name, overrides))
        run.mkdir(parents=True)
        lr = float(next(o for o in overrides if o.startswith("optim.lr=")).split("=")[1])
        (run / "summary.json").write_text(json.dumps({"val_top1": {5e-4: 40.0, 1e-3: 55.0, 2e-3: 50.0}[lr]}))

    monkeypatch.setattr(cifar_pair, "_train", fake_train)
    text = cifar_pair.main(["--model", "vit_iso_cifar", "--data", str(tmp_path), "--out", str(tmp_path / "out")])
    assert {model for model, _, _ in trained} == {"vit_iso_cifar"} and len(trained) == 4  # three lrs, one full run
    assert "chosen lr 0.001" in text
    full = trained[-1]
    assert full[1] == "vit_iso_cifar" and "optim.lr=0.001" in full[2] and "train.epochs=50" in full[2]
    assert "train.eval_every=5" in full[2] and "data.val_split=test" in full[2]
    with pytest.raises(SystemExit):
        cifar_pair.parse_args(["--model", "vit_iso_cifar", "--ship"])  # shipping needs both models
    out = tmp_path / "out"
    assert cifar_pair.report_models(out) == cifar_report.PAIR  # the 2D model is not trained: not in the report
    cifar_pair.main(["--model", "hyena_vit2d_cifar", "--data", str(tmp_path), "--out", str(out)])
    assert cifar_pair.report_models(out) == (*cifar_report.PAIR, "hyena_vit2d_cifar")


def test_pixel_budget_models_and_reuse_resumes_interrupted_runs(tmp_path, monkeypatch):
    """--budget pixel compares the three pixel-level models; --reuse skips finished runs and resumes interrupted
    ones (--resume, the run folder kept) instead of starting them again."""
    assert compare_cifar10.parse_args(["--budget", "pixel"]).models == ["hyena_iso", "s4nd_iso", "hyena_seq"]
    assert compare_cifar10.parse_args(["--budget", "demo"]).models == list(compare_cifar10.MODELS)
    assert "20,000 images seen" in compare_cifar10.BUDGETS["pixel"]["about"]
    out = tmp_path / "out"
    for model, files in (("hyena_iso", ["summary.json"]), ("s4nd_iso", ["last.pt"]), ("hyena_seq", ["stale"])):
        (out / model).mkdir(parents=True)
        for name in files:
            (out / model / name).write_text("{}")
    calls = {}

    def fake_run(command, check):
        model = command[command.index("--config") + 1].split("/")[1]
        calls[model] = "--resume" in command
        assert not (out / model / "stale").exists()  # a run that never checkpointed starts afresh
        raise SystemExit("stop after the launches")

    monkeypatch.setattr(compare_cifar10.subprocess, "run", fake_run)
    monkeypatch.setattr(compare_cifar10, "run_curve", lambda run: [])  # the finished run's curve: not needed here
    args = ["--budget", "pixel", "--reuse", "--out", str(out), "--data", str(tmp_path)]
    with pytest.raises(SystemExit):
        compare_cifar10.main([*args, "--models", "s4nd_iso"])
    with pytest.raises(SystemExit):
        compare_cifar10.main([*args, "--models", "hyena_iso", "hyena_seq"])  # hyena_iso finished: not launched
    assert calls == {"s4nd_iso": True, "hyena_seq": False}
