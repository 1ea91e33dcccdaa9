"""Smoke tests of the resolution scripts: eval/bench_resolution.py (--quick) and eval/resolution_transfer.py."""

import json
from types import SimpleNamespace

import pytest
import timm
import torch
from hv_testing import load_script
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_resolution_quick(tmp_path):
    bench = load_script("eval/bench_resolution.py")
    rows = bench.main(["--quick", "--device", "cpu", "--out", str(tmp_path)])
    assert [(r["img_size"], r["tokens"]) for r in rows] == [(32, 4), (64, 16)]
    for row in rows:
        for model in bench.MODELS:
            assert row[model]["fwd"]["img_s"] > 0 and row[model]["fwd"]["low"] <= row[model]["fwd"]["high"]
            assert row[model]["fwd_bwd"]["mib"] >= 0
    table = (tmp_path / "bench.md").read_text()
    assert "Crossover (px from which Hyena-ViT-S 2D stays faster" in table and "| 64 | 16 | 1 |" in table
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][1]["img_size"] == 64


def test_bench_resolution_crossover():
    bench = load_script("eval/bench_resolution.py")

    def row(px, hyena, attention):
        cells = {m: {"fwd": {"img_s": hyena}, "fwd_bwd": "OOM"} for m in bench.HYENAS}
        return {"img_size": px, **cells, bench.ATTENTION: {"fwd": {"img_s": attention}, "fwd_bwd": "OOM"}}

    rows = [row(224, 1.0, 2.0), row(384, 3.0, 2.0), row(512, 1.0, 2.0), row(768, 3.0, 1.0)]
    assert bench.crossover(rows, "hyena_vit_s", "fwd") == 768  # faster at 384, but not from there on
    assert bench.crossover(rows, "hyena_vit_s", "fwd_bwd") == 224  # attention out of memory everywhere


def test_peak_memory_sees_a_large_temporary():
    bench = load_script("eval/bench_resolution.py")
    mib = bench.peak_memory_mib(lambda: torch.ones(16, 2**20).sum(), torch.device("cpu"))  # 64 MiB of float32
    assert mib is None or 60 < mib < 200  # a 64 MiB temporary (None where /proc cannot be used)


def test_resolution_transfer_tiny(cifar_subset, tmp_path):
    root = cifar_subset(4, 2)  # 40 training, 20 test images
    transfer = load_script("eval/resolution_transfer.py")
    args = ["--models", "hyena_vit2d_cifar", "vit_iso_cifar:depth=1", "--data", str(root), "--out", str(tmp_path)]
    args += ["--tiny", "--train-subset", "40", "--test-subset", "20", "--batch-size", "20"]
    rows = transfer.main(args)
    assert [r["model"] for r in rows] == ["hyena_vit2d_cifar", "vit_iso_cifar:depth=1"]
    hyena, vit = rows
    assert {"32", "48 as is", "48 stretch", "48 fine-tuned"} <= hyena.keys() and "48 stretch" not in vit
    for cell in (hyena["48 as is"], hyena["48 stretch"], vit["48 fine-tuned"]):
        assert cell["images"] == 20 and cell["low"] <= cell["top1"] <= cell["high"]
    assert "| hyena_vit2d_cifar |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    with pytest.raises(ValueError, match="unknown model 'hyena_vit9d'"):
        transfer.main(["--models", "hyena_vit9d", "--data", str(root)])


def test_resolution_transfer_from_recipe_runs(cifar_subset, tmp_path):
    """--from-runs: the 32 px weights of a trainer run are evaluated as they are, not trained again."""
    root = cifar_subset(2, 2)  # 20 training, 20 test images
    transfer = load_script("eval/resolution_transfer.py")
    run = tmp_path / "runs" / "full" / "vit_iso_cifar"
    run.mkdir(parents=True)
    torch.manual_seed(3)
    save_file(timm.create_model("vit_iso_cifar").state_dict(), run / "model.safetensors")
    (run / "summary.json").write_text('{"train_seconds": 12.5}')
    args = ["--data", str(root), "--out", str(tmp_path / "out"), "--tiny", "--train-subset", "20", "--test-subset"]
    args += ["20", "--batch-size", "20", "--from-runs", str(tmp_path / "runs")]
    with pytest.raises(ValueError, match="needs a finished run"):
        transfer.main([*args, "--models", "vit_iso_cifar:depth=1"])  # keyword arguments: another model
    with pytest.raises(ValueError, match="needs a finished run"):
        transfer.main([*args, "--models", "hyena_vit_cifar"])  # no run of that model
    calls = []
    transfer.train = lambda model, data, **k: calls.append(k["desc"]) or 0.0  # only the fine-tune may train
    (row,) = transfer.main([*args, "--models", "vit_iso_cifar", "--sizes", "48"])
    assert row["train_s"] == 12.5 and calls == ["vit_iso_cifar @48px"]
    model = timm.create_model("vit_iso_cifar", num_classes=10, dynamic_img_size=True)
    model.load_state_dict(load_file(run / "model.safetensors"))
    options = SimpleNamespace(data=str(root), test_subset=20, seed=0, batch_size=20)
    assert row["32"] == transfer.evaluate(model, transfer.loader(options, "test", 32, False))  # the run's weights
    # --include: an earlier run's rows lead the table; a run with other settings cannot share it
    earlier = tmp_path / "out" / "results.json"
    (earlier_row,) = json.loads(earlier.read_text())["rows"]
    with pytest.raises(ValueError, match=r"other settings: sizes=\[48\] \(here \[64\]\)"):
        transfer.main([*args, "--models", "vit_iso_cifar", "--sizes", "64", "--include", str(earlier)])
    rows = transfer.main([*args, "--models", "vit_iso_cifar", "--sizes", "48", "--include", str(earlier)])
    assert rows[0] == earlier_row and len(rows) == 2
    assert (tmp_path / "out" / "results.md").read_text().count("| vit_iso_cifar |") == 2


def test_parse_model():
    transfer = load_script("eval/resolution_transfer.py")
    assert transfer.parse_model("hyena_vit2d_cifar:mixer=hyena1d,depth=2") == (
        "hyena_vit2d_cifar",
        {"mixer": "hyena1d", "depth": 2},
    )
