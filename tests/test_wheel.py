"""The package as a user installs it: a wheel built from the sources (configs inside) and installed where the source
tree is not importable; from an unrelated folder every console script answers ``--help`` and ``hyena-train`` trains
one epoch on a CIFAR-10 subset by a shipped config name."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def run(command: list, cwd: Path, env: dict, timeout: int = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict, Path, list[str]]:
    """(folder of the console scripts, environment that imports the installed wheel only, an unrelated folder, the
    wheel's console scripts)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "hyena_vision", source / "hyena_vision", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", source], root, env)
    (wheel,) = (root / "dist").glob("hyena_vision-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        entry_points = configparser.ConfigParser()
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry_points.read_string(archive.read(name).decode())
    site = root / "site"
    run([*pip, "install", "--no-deps", "--no-index", "--target", site, wheel], root, env)
    # PYTHONPATH comes before site-packages, so the wheel's copy wins over any editable install of a checkout
    env["PYTHONPATH"] = str(site)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return site / "bin", env, elsewhere, sorted(entry_points["console_scripts"])


SHIPPED = """
import sys, timm, hyena_vision.engine.config as c
from hyena_vision.models import _shipped
print(c.__file__, len(c.shipped_configs()))
print(*sorted(p.name for p in _shipped.WEIGHTS_DIR.iterdir()))
tags = timm.list_pretrained("*.c10")
print(*tags)
for name in tags:  # loads from the installed file, with no network
    assert timm.create_model(name, pretrained=True).pretrained_cfg["file"].startswith(sys.argv[1]), name
"""


def test_the_wheel_is_imported_and_ships_the_configs_and_weights(installed):
    bin_dir, env, elsewhere, _ = installed
    site = bin_dir.parent
    configs, weights, tags = run([sys.executable, "-c", SHIPPED, str(site)], elsewhere, env).splitlines()
    where, count = configs.split()
    shipped_in_source = len(list((REPO / "hyena_vision" / "configs").glob("*/*.yaml")))
    assert Path(where).is_relative_to(site) and int(count) == shipped_in_source > 10
    weights_in_source = sorted(p.name for p in (REPO / "hyena_vision" / "weights").iterdir())
    assert weights.split() == weights_in_source  # every shipped weight file and its figures, and the README
    assert sorted(tags.split()) == [
        p.removesuffix(".safetensors") for p in weights_in_source if p.endswith(".safetensors")
    ]


# Each console script's --help, in one process: every script would otherwise spend its seconds importing torch and
# timm again. The wrapper scripts themselves run in test_hyena_train_one_epoch_by_config_name.
HELP_ALL = """
import contextlib, io, sys
from importlib.metadata import distribution
for ep in distribution("hyena-vision").entry_points.select(group="console_scripts"):
    out, sys.argv = io.StringIO(), [ep.name, "--help"]
    with contextlib.redirect_stdout(out):
        try:
            ep.load()()
        except SystemExit as done:
            assert done.code in (0, None), (ep.name, done.code)
    assert "usage:" in out.getvalue(), ep.name
    print(ep.name)
"""


def test_every_console_script_answers_help(installed):
    bin_dir, env, elsewhere, scripts = installed
    assert {"hyena-train", "hyena-train-lm", "hyena-evaluate", "hyena-compare-cifar10"} <= set(scripts)
    assert all((bin_dir / s).is_file() for s in scripts)
    assert sorted(run([sys.executable, "-c", HELP_ALL], elsewhere, env).split()) == scripts


def test_hyena_train_one_epoch_by_config_name(installed, shared_data):
    bin_dir, env, elsewhere, _ = installed
    tiny = (
        "data.train_subset=200 data.val_subset=100 train.epochs=1 train.batch_size=50 sched.warmup_epochs=0 "
        "train.amp=none data.num_workers=0 model.kwargs.embed_dim=32 model.kwargs.depth=1 train.log_every=2"
    ).split()
    data = f"data.root={shared_data / 'cifar10-jpg.tar.gz'}"
    env = {**env, "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}
    run([bin_dir / "hyena-train", "--config", "cifar10/vit_iso", data, *tiny, "out_dir=run"], elsewhere, env, 600)
    assert (elsewhere / "run" / "model.safetensors").stat().st_size > 0
    assert (elsewhere / "run" / "summary.json").is_file()
