"""Checkpoints: atomic writes that carry every RNG, so ``--resume`` continues bit-for-bit on the CPU; safetensors
export of the final weights.

``save_run`` / ``restore_run`` are the trainers' checkpoint: the state dicts of the given objects (model,
optimizer, scheduler, scaler, EMA), each rank's RNG state (python, numpy, torch, CUDA and the run's own
generators), and plain values (step, seconds, config, ...).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .._io import atomic_write
from .distributed import DistInfo, unwrap_model

__all__ = [
    "export_safetensors",
    "load_checkpoint",
    "restore_run",
    "resume_path",
    "rng_state",
    "save_checkpoint",
    "save_run",
    "seed_everything",
    "set_rng_state",
]


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically ``torch.save`` a dict of tensors / state dicts / plain Python values."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (``weights_only``: plain values and tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    return torch.load(path, map_location=map_location, weights_only=True)


def resume_path(out_dir: str | os.PathLike, *, resume: bool, resume_from: str | None) -> Path | None:
    """The checkpoint a run continues from, or None for a fresh start.

    ``resume_from`` must exist. ``resume`` continues ``out_dir/last.pt``, or starts from scratch (and says so) when
    there is none yet: a job script that always passes ``--resume`` works from its first start. A fresh run refuses
    an ``out_dir`` that already holds a run, so nothing is overwritten by mistake.
    """
    out_dir = Path(out_dir)
    if resume_from:
        if not Path(resume_from).is_file():
            raise FileNotFoundError(f"--resume-from: checkpoint {resume_from!r} not found")
        return Path(resume_from)
    last = out_dir / "last.pt"
    if resume:
        if last.is_file():
            return last
        print(f"--resume: no checkpoint {str(last)!r} yet, starting from scratch")
        return None
    if any((out_dir / name).exists() for name in ("last.pt", "metrics.jsonl")):
        raise FileExistsError(f"out_dir {str(out_dir)!r} already holds a run: pass --resume or choose another out_dir")
    return None


# ----------------------------------------------------------------------------------------------------------------
# RNG state


def rng_state() -> dict:
    """Python ``random``, numpy (when imported), torch CPU and CUDA generator states, in checkpoint-safe types."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if "numpy" in sys.modules:
        np_state = sys.modules["numpy"].random.get_state()  # noqa: NPY002 ; (name, keys uint32[624], pos, has_gauss, gauss)
        state["numpy"] = {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype("int64")),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy (when imported) and torch (CPU and CUDA)."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` captured (CUDA only when present on both sides)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        keys = s["keys"].numpy().astype(np.uint32)
        np.random.set_state((s["name"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# The trainers' checkpoint


def save_run(
    path: str | os.PathLike,
    dist_info: DistInfo,
    objects: dict,
    generators: tuple[torch.Generator, ...] = (),
    **values,
) -> None:
    """Every rank's RNG state is gathered (call on every rank); rank 0 atomically writes ``{name:
    obj.state_dict()}`` for ``objects`` (None stays None), ``rng`` (one entry per rank), ``world_size`` and
    ``values``."""
    mine = {"rng": rng_state(), "generators": [g.get_state() for g in generators]}
    ranks = [mine]
    if dist_info.distributed:
        ranks = [None] * dist_info.world_size
        dist.all_gather_object(ranks, mine)
    if dist_info.is_main:
        states = {k: None if o is None else o.state_dict() for k, o in objects.items()}
        save_checkpoint(path, {**states, "rng": ranks, "world_size": dist_info.world_size, **values})


def restore_run(
    path: str | os.PathLike,
    dist_info: DistInfo,
    objects: dict,
    generators: tuple[torch.Generator, ...] = (),
    *,
    seed: int,
) -> dict:
    """Load what ``save_run`` wrote into ``objects`` and this rank's RNGs; returns the checkpoint (its values).

    Saved with another number of processes, the RNGs cannot be matched to ranks: they are re-seeded from ``seed``,
    the rank and the step instead (the data order, which the samplers derive from the epoch, is kept).
    """
    state = load_checkpoint(path)
    for name, obj in objects.items():
        if obj is not None:
            obj.load_state_dict(state[name])
    if len(state["rng"]) == dist_info.world_size:
        mine = state["rng"][dist_info.rank]
        set_rng_state(mine["rng"])
        for generator, saved in zip(generators, mine["generators"], strict=True):
            generator.set_state(saved)
    else:
        print(f"resuming {len(state['rng'])}-process state on {dist_info.world_size} processes: RNG re-seeded")
        seed_everything(seed + dist_info.rank + 7919 * state["step"])
    return state


def export_safetensors(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save the unwrapped model's state dict as safetensors (atomically).

    Pass the EMA model to export EMA weights. The file loads with
    ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``.
    """
    from safetensors.torch import save

    # clone: safetensors refuses tensors that share storage (tied weights); each key gets its own copy
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in unwrap_model(model).state_dict().items()}
    data = save(state)
    return atomic_write(path, lambda f: f.write(data))
