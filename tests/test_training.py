"""Training utilities and the classification trainer: configs refuse what they do not know, the schedule counts
epochs, checkpoints and resume are exact, 2-process DDP matches one process, and a short run on real CIFAR-10
images learns (hyena_iso_cifar, made tiny through model.kwargs)."""

from __future__ import annotations

import json
import math
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf

import hyena_vision.models  # noqa: F401  (registers our models with timm)
from hyena_vision.engine import classify
from hyena_vision.engine.checkpoint import (
    export_safetensors,
    load_checkpoint,
    resume_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from hyena_vision.engine.config import CONFIG_DIR, ConfigError, config_file, load_config, save_config, shipped_configs
from hyena_vision.engine.distributed import init_distributed
from hyena_vision.engine.evaluate import main as evaluate_main
from hyena_vision.engine.loop import amp_dtype, grad_scaler, train_update
from hyena_vision.engine.metrics import MetricsLogger

REPO = Path(__file__).resolve().parents[1]
TINY_HYENA_ISO = [
    "model.name=hyena_iso_cifar",
    "model.kwargs.embed_dim=8",
    "model.kwargs.depth=1",
    "model.kwargs.filter_cfg.filter_order=8",
]


@pytest.fixture(scope="module")
def cifar_folder(cifar_subset) -> Path:
    """Real CIFAR-10 JPEGs from the shared tar: the first 300 train and 50 test images of every class."""
    return cifar_subset(300, 50)


def _run_args(cifar_folder: Path, out_dir: Path, *extra: str) -> list[str]:
    return [
        *TINY_HYENA_ISO,
        f"data.root={cifar_folder}",
        "data.val_split=test",
        "data.num_workers=0",
        "train.amp=none",
        f"out_dir={out_dir}",
        *extra,
    ]


# ----------------------------------------------------------------------------------------------------------------
# Configs


def test_every_config_loads_and_names_a_registered_model(tmp_path):
    configs = sorted(CONFIG_DIR.glob("imagenet/*.yaml")) + sorted(CONFIG_DIR.glob("cifar10/*.yaml"))
    assert {p.stem for p in configs} == {
        "hyena_vit_t",
        "hyena_vit_s",
        "hyena_vit_b",
        "vit_s",
        "hyena_iso",
        "s4nd_iso",
        "vit_iso",
        "hyena_seq",
        "hyena_vit",
        "hyena_vit2d",
    }
    for path in configs:
        with pytest.raises(ValueError, match="data.root must be given"):  # the data location must be given
            classify.main(["--config", str(path), f"out_dir={tmp_path / path.stem}"])
        cfg = load_config(classify.ClassifyConfig, path, ["data.root=/data", "optim.lr=1e-3"])
        assert cfg.optim.lr == 1e-3 and timm.is_model(cfg.model.name), path
    imagenet = load_config(classify.ClassifyConfig, "imagenet/hyena_vit_s", ["data.root=/x"])
    assert (imagenet.optim.lr, imagenet.optim.weight_decay, imagenet.train.batch_size) == (2e-4, 0.01, 1024)
    assert (imagenet.sched.warmup_epochs, imagenet.train.epochs, imagenet.aug.rand_augment) == (
        10,
        300,
        "rand-m9-mstd0.5",
    )
    assert (imagenet.aug.mixup, imagenet.aug.cutmix, imagenet.aug.re_prob, imagenet.data.crop_pct) == (
        0.8,
        1,
        0.25,
        0.9,
    )


def test_config_errors_name_the_key(tmp_path):
    schema = classify.ClassifyConfig
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_config(schema, None, ["model.name=x", "optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(schema, None, ["model.name=x", "train.epochs=ten"])
    with pytest.raises(ConfigError, match="must look like"):
        load_config(schema, None, ["model.name"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: x\naug:\n  mixupp: 0.8\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*aug\.mixupp"):
        load_config(schema, bad, [])
    with pytest.raises(ConfigError, match="not found.*shipped: cifar10/hyena_iso"):
        load_config(schema, tmp_path / "missing.yaml", [])
    required = tmp_path / "required.yaml"
    required.write_text("model:\n  name: ???\n")
    with pytest.raises(ConfigError, match=r"required but not given: model\.name"):
        load_config(schema, required, [])
    assert load_config(schema, required, ["model.name=x"]).model.name == "x"
    cfg = load_config(schema, None, ["model.name=x", "model.kwargs.depth=2"])
    with pytest.raises(Exception, match="read-only"):
        cfg.optim.lr = 1.0
    save_config(cfg, tmp_path / "run")
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").model.kwargs.depth == 2


def test_unknown_model_kwarg_raises_type_error():
    cfg = load_config(classify.ClassifyConfig, None, [*TINY_HYENA_ISO, "model.kwargs.embed_dimm=8"])
    with pytest.raises(TypeError, match="embed_dimm"):
        classify.create_model(cfg, num_classes=10)


# ----------------------------------------------------------------------------------------------------------------
# Optimizer and schedule


def test_schedule_counts_epochs_and_filter_groups_keep_their_lr():
    cfg = load_config(
        classify.ClassifyConfig,
        None,
        [
            *TINY_HYENA_ISO,
            "optim.lr=2e-4",
            "optim.weight_decay=0.05",
            "train.epochs=10",
            "sched.warmup_epochs=2",
            "sched.min_lr=1e-6",
            "sched.warmup_lr=1e-7",
        ],
    )
    model = classify.create_model(cfg, num_classes=10)
    upe = 7
    optimizer, scheduler = classify.create_optimizer_and_scheduler(cfg, model, updates_per_epoch=upe)
    bases = [g["initial_lr"] for g in optimizer.param_groups]
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:  # the filter networks' own lr / weight-decay hints survive
        group_names = {names[id(p)] for p in group["params"]}
        if any("filter.ffn" in n for n in group_names):
            assert (group["initial_lr"], group["weight_decay"]) == (1e-3, 0.0)
            assert all("filter.ffn" in n for n in group_names)
        elif any("pos_emb" in n for n in group_names):
            assert (group["initial_lr"], group["weight_decay"]) == (1e-5, 0.0)
        else:
            assert group["initial_lr"] == 2e-4 and group["weight_decay"] in (0.0, 0.05)
    assert sorted(set(bases)) == [1e-5, 2e-4, 1e-3]

    def lrs(step):
        scheduler.step_update(num_updates=step)
        return [g["lr"] for g in optimizer.param_groups]

    assert all(lr < 1e-6 for lr in lrs(0))  # warmup starts near warmup_lr
    assert lrs(2 * upe) == pytest.approx(bases, rel=1e-9)  # end of warmup: the base lr of every group
    total = (10 - 2) * upe
    for step in (3 * upe, 5 * upe + 3, 9 * upe):
        frac = (step - 2 * upe) / total
        expected = [1e-6 + 0.5 * (b - 1e-6) * (1 + math.cos(math.pi * frac)) for b in bases]
        assert lrs(step) == pytest.approx(expected, rel=1e-9)
    assert lrs(10 * upe - 1)[0] < 1e-5  # the floor is reached at the last epoch, not after a few steps


# ----------------------------------------------------------------------------------------------------------------
# The shared update


@pytest.mark.parametrize("accum_steps,clip", [(1, 0.1), (2, 0.1), (4, 0.1), (4, 0.0)])
def test_train_update_over_micro_batches_is_one_step_on_the_whole_batch(accum_steps, clip):
    cpu = torch.device("cpu")
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    torch.manual_seed(1)
    model = torch.nn.Linear(5, 3)
    reference = torch.nn.Linear(5, 3)
    reference.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    size = 8 // accum_steps
    micro = iter([(x[i : i + size], y[i : i + size]) for i in range(0, 8, size)])
    loss = train_update(
        model,
        micro,
        torch.nn.functional.cross_entropy,
        accum_steps=accum_steps,
        optimizer=optimizer,
        scaler=grad_scaler(cpu, None),
        clip_grad=clip,
        device=cpu,
        amp=None,
    )
    assert next(micro, None) is None  # every micro-batch drawn, none more
    expected = torch.nn.functional.cross_entropy(reference(x), y)  # by hand: one batch, (clipped,) one SGD step
    expected.backward()
    grads = [p.grad for p in reference.parameters()]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert norm > 0.1  # the clip, when given, is active
    scale = 0.1 / norm if clip else 1.0
    with torch.no_grad():
        for p, g in zip(reference.parameters(), grads, strict=True):
            p -= 0.5 * g * scale
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-6, atol=0)
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert a.grad is None  # gradients cleared for the next update


def test_amp_names():
    assert (amp_dtype("bf16"), amp_dtype("fp16"), amp_dtype("none")) == (torch.bfloat16, torch.float16, None)
    with pytest.raises(ValueError, match=r"train\.amp must be one of \['bf16', 'fp16', 'none'\], got 'fp8'"):
        amp_dtype("fp8")


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints, RNG, logging, export


def test_checkpoint_is_atomic_and_rng_state_round_trips(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"x": torch.arange(3), "rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(2))  # noqa: NPY002
    set_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(2), expected[2])  # noqa: NPY002
    save_checkpoint(path, {"x": torch.arange(4)})
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(4))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp files left behind

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"x": Boom()})  # a failed write leaves the previous checkpoint intact
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(4))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_metrics_logger_widens_its_csv_and_only_rank0_writes(tmp_path):
    log = MetricsLogger(tmp_path, enabled=True)
    log.log(1, train_loss=2.0)
    log.log(2, train_loss=1.5, val_top1=torch.tensor(30.0))
    log.close()
    log = MetricsLogger(tmp_path, enabled=True)  # a resumed run appends
    log.log(3, val_top1=40.0)
    log.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "step,train_loss,val_top1",
        "1,2.0,",
        "2,1.5,30.0",
        "3,,40.0",
    ]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[1] == {"step": 2, "train_loss": 1.5, "val_top1": 30.0} and any((tmp_path / "tb").iterdir())
    MetricsLogger(tmp_path / "rank1", enabled=False).log(1, loss=1.0)
    assert not (tmp_path / "rank1").exists()


def test_export_safetensors_loads_with_timm_pretrained(tmp_path):
    kwargs = dict(embed_dim=8, depth=1, filter_cfg=dict(filter_order=8))
    model = timm.create_model("hyena_iso_cifar", **kwargs)
    path = export_safetensors(model, tmp_path / "model.safetensors")
    loaded = timm.create_model(
        "hyena_iso_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
    )
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_init_distributed_without_torchrun_is_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)


# ----------------------------------------------------------------------------------------------------------------
# The trainer: exact resume, DDP, end to end


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def test_resume_after_interruption_reproduces_the_uninterrupted_run(cifar_folder, tmp_path):
    # augmentation (random crop + flip), dropout and mixup all draw random numbers: resume must restore them all
    common = [
        "data.train_subset=40",
        "data.val_subset=20",
        "train.epochs=3",
        "train.batch_size=8",
        "train.accum_steps=2",
        "sched.warmup_epochs=1",
        "aug.policy=cifar",
        "aug.mixup=0.5",
        "model.kwargs.proj_drop_rate=0.2",
        "train.ema=true",
        "train.log_every=1",
    ]
    classify.main(_run_args(cifar_folder, tmp_path / "full", *common))

    # the same run in a subprocess, checkpointing every update, killed (SIGKILL) once it has saved step 3 or later
    ckpt = tmp_path / "cut" / "last.pt"
    command = [
        sys.executable,
        "-m",
        "train.classify",
        *_run_args(cifar_folder, tmp_path / "cut", *common),
        "train.ckpt_every=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "cut.log"
    with open(log, "w") as log_file:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while not (ckpt.is_file() and load_checkpoint(ckpt)["step"] >= 3):  # atomic writes: never a partial file
            assert proc.poll() is None, f"the run ended before it was killed: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.02)
        proc.kill()
        proc.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert 3 <= killed_at < 15 and not (tmp_path / "cut" / "model.safetensors").exists()

    classify.main(["--resume", *_run_args(cifar_folder, tmp_path / "cut", *common)])
    full, resumed = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(ckpt)
    assert resumed["step"] == full["step"] == 15
    for key in ("model", "ema"):
        for name, value in full[key].items():
            assert torch.equal(value, resumed[key][name]), f"{key}.{name}"
    ema_model, saved_cfg = classify.load_classifier(ckpt, ema=True)  # what evaluate --checkpoint --ema loads
    assert saved_cfg["train"]["ema"] and not ema_model.training
    for name, value in ema_model.state_dict().items():
        assert torch.equal(value, full["ema"][f"module.{name}"]), name

    def losses(run):  # step -> loss; a step logged just before the kill but not checkpointed is logged again
        rows = map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
        return {r["step"]: r["train_loss"] for r in rows if "train_loss" in r}

    assert losses("full") == losses("cut") and len(losses("full")) == 15


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(cifar_folder, tmp_path):
    common = [
        "data.train_subset=32",
        "data.val_subset=10",
        "train.epochs=1",
        "train.batch_size=8",
        "train.max_steps=3",
        "aug.policy=none",
        "train.log_every=1",
        "optim.lr=3e-3",
    ]
    classify.main(_run_args(cifar_folder, tmp_path / "single", *common))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        f"--master_port={_free_port()}",
        "-m",
        "train.classify",
        *_run_args(cifar_folder, tmp_path / "ddp", *common),
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    def losses(run):
        rows = map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
        return [r["train_loss"] for r in rows if "train_loss" in r]

    assert len(losses("ddp")) == 3 and losses("ddp") == pytest.approx(losses("single"), rel=1e-4)
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["world_size"] == 2
    single, ddp = _weights(tmp_path / "single" / "last.pt"), _weights(tmp_path / "ddp" / "last.pt")
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_end_to_end_train_then_evaluate_beats_chance(cifar_folder, tmp_path):
    # 3,000 real training images, 2 epochs; a gated 16-wide single block on 16x16 inputs keeps it short on a CPU
    settings = [
        "model.kwargs.embed_dim=16",
        "model.kwargs.gated=true",
        "model.kwargs.img_size=16",
        "model.kwargs.filter_cfg.lr=1e-2",
        "model.kwargs.proj_drop_rate=0.0",
        "data.input_size=[3,16,16]",
        "data.val_subset=100",
        "train.epochs=2",
        "train.batch_size=100",
        "optim.lr=1e-2",
        "optim.weight_decay=0.0",
        "sched.warmup_epochs=0",
        "aug.policy=none",
        "train.log_every=25",
    ]
    summary = classify.main(_run_args(cifar_folder, tmp_path / "run", *settings))
    args = [
        "--checkpoint",
        str(tmp_path / "run" / "last.pt"),
        "--data",
        str(cifar_folder),
        "--split",
        "test",
        "--num-workers",
        "0",
        "--batch-size",
        "100",
    ]
    result = evaluate_main(args)
    assert result["images"] == 500 and result["params"] == summary["params"]
    assert result["input_size"] == [3, 16, 16] and result["flops_per_image"] > 0
    # chance is 10%; this run reaches 23.6% here (500 test images: one standard error is about 2 points)
    assert result["top1"] >= 20.0, result
    assert result["top5"] >= result["top1"]


def test_console_script_runs_the_trainer(monkeypatch, capsys):
    from hyena_vision import _cli

    monkeypatch.setattr(sys, "argv", ["hyena-train", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        _cli.train()
    assert exit_info.value.code == 0 and "--resume" in capsys.readouterr().out


def test_config_by_shipped_name_or_path(tmp_path):
    names = shipped_configs()
    assert {"cifar10/vit_iso", "imagenet/hyena_vit_s", "lm/shakespeare_char_cpu"} <= set(names)
    assert len(names) == len(list(CONFIG_DIR.glob("*/*.yaml")))  # every shipped file, by name
    assert config_file("cifar10/vit_iso") == CONFIG_DIR / "cifar10" / "vit_iso.yaml"
    assert config_file("configs/cifar10/vit_iso.yaml") == CONFIG_DIR / "cifar10" / "vit_iso.yaml"  # old paths
    own = tmp_path / "cifar10" / "vit_iso.yaml"  # a file that exists wins over a shipped name
    own.parent.mkdir()
    own.write_text("model:\n  name: vit_iso_cifar\ntrain:\n  epochs: 7\n")
    assert load_config(classify.ClassifyConfig, own, []).train.epochs == 7
    assert load_config(classify.ClassifyConfig, "cifar10/vit_iso", []).train.epochs == 100
    with pytest.raises(ConfigError, match="'cifar10/vit_isoo' not found"):
        config_file("cifar10/vit_isoo")


def test_resume_path_never_overwrites_a_run(tmp_path, capsys):
    assert resume_path(tmp_path, resume=False, resume_from=None) is None  # fresh run, empty folder
    # --resume before any checkpoint exists (a job script that always passes it): start from scratch, and say so
    assert resume_path(tmp_path, resume=True, resume_from=None) is None
    out = capsys.readouterr().out
    assert "no checkpoint" in out and "starting from scratch" in out
    with pytest.raises(FileNotFoundError, match="--resume-from: checkpoint 'x/ckpt.pt' not found"):
        resume_path(tmp_path, resume=False, resume_from="x/ckpt.pt")
    save_checkpoint(tmp_path / "other.pt", {"step": 1})
    assert resume_path(tmp_path, resume=False, resume_from=str(tmp_path / "other.pt")) == tmp_path / "other.pt"
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError, match="already holds a run: pass --resume"):
        resume_path(tmp_path, resume=False, resume_from=None)
    save_checkpoint(tmp_path / "last.pt", {"step": 1})
    assert resume_path(tmp_path, resume=True, resume_from=None) == tmp_path / "last.pt"


def test_resume_without_a_checkpoint_trains_from_scratch(cifar_folder, tmp_path, capsys):
    common = ["data.train_subset=20", "data.val_subset=10", "train.epochs=1", "train.batch_size=10"]
    summary = classify.main(["--resume", *_run_args(cifar_folder, tmp_path / "run", *common)])
    assert "starting from scratch" in capsys.readouterr().out
    assert summary["step"] == 2 and (tmp_path / "run" / "model.safetensors").is_file()
    with pytest.raises(FileNotFoundError, match="--resume-from"):
        classify.main(["--resume-from", str(tmp_path / "nothing.pt"), *_run_args(cifar_folder, tmp_path / "b")])
