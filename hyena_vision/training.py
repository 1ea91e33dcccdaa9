"""Training utilities shared by the command-line trainers (image classification, language modelling).

Configs are OmegaConf structured configs (a dataclass schema), so unknown keys are errors; checkpoints are written
atomically and carry the RNG state so ``--resume`` continues bit-for-bit on the CPU; ``init_distributed`` reads
torchrun's environment; ``MetricsLogger`` writes JSONL, CSV and TensorBoard scalars from rank 0 only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

__all__ = [
    "ConfigError",
    "DistInfo",
    "MetricsLogger",
    "cleanup_distributed",
    "evaluate_classifier",
    "export_safetensors",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "resume_path",
    "rng_state",
    "save_checkpoint",
    "save_config",
    "seed_everything",
    "set_rng_state",
    "unwrap_model",
]


# ----------------------------------------------------------------------------------------------------------------
# Configs


class ConfigError(ValueError):
    """A config file or override that does not fit the schema (unknown key, wrong type, bad syntax)."""


def load_config(schema: type, path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Schema defaults, then the YAML file at ``path``, then dot-list ``overrides`` (``["optim.lr=1e-3"]``).

    Any key the schema does not define, in the file or in an override, raises ``ConfigError`` naming the key and
    where it came from; so does a value of the wrong type. The returned config is resolved, read-only and struct.
    """
    cfg = OmegaConf.structured(schema)
    sources: list[tuple[str, DictConfig]] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found")
        loaded = OmegaConf.load(path)
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
        sources.append((f"config file {str(path)!r}", loaded))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        try:
            sources.append((f"override {item!r}", OmegaConf.from_dotlist([item])))
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot parse override {item!r}: {e}") from e
    for where, source in sources:
        try:
            cfg = OmegaConf.merge(cfg, source)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            msg = str(e).splitlines()[0]
            raise ConfigError(f"{where}: bad key {key!r}: {msg}") from e
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot resolve config: {e}") from e
    # "???" in the file marks a value the user must give; merging it onto a schema default drops the mark
    required = OmegaConf.missing_keys(sources[0][1]) if path is not None else set()
    overridden = [source for where, source in sources if where.startswith("override")]
    given = {k for k in required if any(OmegaConf.select(o, k, default=None) is not None for o in overridden)}
    missing = sorted((required - given) | OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config values required but not given: {', '.join(missing)} (e.g. {missing[0]}=...)")
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def save_config(cfg: DictConfig, out_dir: str | os.PathLike) -> Path:
    """Write the resolved config to ``out_dir/config.yaml`` (atomically) and return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    path = out / "config.yaml"
    _atomic_write(path, lambda f: f.write(text.encode()))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and RNG state


def _atomic_write(path: Path, write) -> None:
    """Write via a temp file in the same folder, fsync, then ``os.replace``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically ``torch.save`` a dict of tensors / state dicts / plain Python values."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (``weights_only``: plain values and tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    return torch.load(path, map_location=map_location, weights_only=True)


def resume_path(out_dir: str | os.PathLike, *, resume: bool, resume_from: str | None) -> Path | None:
    """The checkpoint a run continues from (``resume_from``, else ``out_dir/last.pt`` when ``resume``), or None.

    A fresh run refuses an ``out_dir`` that already holds a run, so nothing is overwritten by mistake.
    """
    out_dir = Path(out_dir)
    if resume_from:
        return Path(resume_from)
    if resume:
        return out_dir / "last.pt"
    if any((out_dir / name).exists() for name in ("last.pt", "metrics.jsonl")):
        raise FileExistsError(f"out_dir {str(out_dir)!r} already holds a run: pass --resume or choose another out_dir")
    return None


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
# Distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); single process when absent.

    Backend nccl on CUDA (one GPU per local rank), gloo on the CPU.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistInfo(rank=0, local_rank=0, world_size=1, device=device, is_main=True)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device, is_main=rank == 0)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP and/or ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# ----------------------------------------------------------------------------------------------------------------
# Logging and export


class MetricsLogger:
    """Scalars per step to ``metrics.jsonl``, ``metrics.csv`` and TensorBoard (``out_dir/tb``).

    Only the process with ``enabled=True`` (rank 0) writes; files are appended to, so a resumed run continues them.
    The CSV header is the union of the keys seen so far, in first-seen order: a row with a new key rewrites the CSV
    (atomically) with the wider header; cells a row lacks stay empty.
    """

    def __init__(self, out_dir: str | os.PathLike, *, enabled: bool):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._csv_path = self.out_dir / "metrics.csv"
        self._fields: list[str] = []
        if self._csv_path.is_file() and self._csv_path.stat().st_size > 0:  # resumed run: keep the existing header
            with open(self._csv_path, newline="") as f:
                self._fields = next(csv.reader(f))
        self._jsonl = open(self.out_dir / "metrics.jsonl", "a")
        self._csv = open(self._csv_path, "a", newline="")
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(log_dir=str(self.out_dir / "tb"))

    def log(self, step: int, **scalars: float) -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        for k, v in scalars.items():
            row[k] = v.item() if isinstance(v, torch.Tensor) else v
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        new_keys = [k for k in row if k not in self._fields]
        if new_keys:
            self._widen_csv(self._fields + new_keys)
        csv.writer(self._csv).writerow([row.get(k, "") for k in self._fields])
        self._csv.flush()
        for k, v in row.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                self._tb.add_scalar(k, v, global_step=int(step))

    def _widen_csv(self, fields: list[str]) -> None:
        self._csv.close()
        with open(self._csv_path, newline="") as f:
            old = list(csv.DictReader(f))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(old)
        _atomic_write(self._csv_path, lambda f: f.write(text.getvalue().encode()))
        self._fields = fields
        self._csv = open(self._csv_path, "a", newline="")

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        self._csv.close()
        self._tb.close()
        self.enabled = False


def export_safetensors(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save the unwrapped model's state dict as safetensors (atomically).

    Pass the EMA model to export EMA weights. The file loads with
    ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``.
    """
    from safetensors.torch import save

    model = unwrap_model(model)
    # clone: safetensors refuses tensors that share storage (tied weights); each key gets its own copy
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    data = save(state)
    _atomic_write(path, lambda f: f.write(data))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate_classifier(
    model: torch.nn.Module,
    loader,
    *,
    num_classes: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    return_predictions: bool = False,
) -> dict:
    """Top-1 / top-5 accuracy (torchmetrics, micro average: the fraction of images), mean cross-entropy, image count
    and throughput over ``loader``; under torch.distributed the metrics are summed over all ranks.

    ``return_predictions``: also ``"predictions"`` and ``"targets"``, the (N,) int64 predicted and true classes in
    loader order (one process only), for paired tests between models evaluated on the same images.
    """
    if return_predictions and dist.is_available() and dist.is_initialized():
        raise ValueError("return_predictions=True needs a single process (each rank sees only its share of images)")
    from torchmetrics.classification import MulticlassAccuracy

    was_training = model.training
    model.eval()
    top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro").to(device)
    top5 = MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), average="micro").to(device)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, images)
    predictions, labels = [], []
    start = time.perf_counter()
    for images, targets in tqdm(loader, desc="eval", unit="batch", disable=not progress, leave=False):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)  # (B, num_classes)
        logits = logits.float()
        totals[0] += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").double()
        totals[1] += targets.numel()
        top1.update(logits, targets)
        top5.update(logits, targets)
        if return_predictions:
            predictions.append(logits.argmax(dim=1).cpu())
            labels.append(targets.cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    model.train(was_training)
    images = int(totals[1].item())
    if images == 0:
        raise ValueError("evaluation loader yielded no images")
    metrics = {
        "top1": 100.0 * top1.compute().item(),
        "top5": 100.0 * top5.compute().item(),
        "loss": totals[0].item() / images,
        "images": images,
        "img_per_s": images / seconds,
    }
    if return_predictions:
        metrics["predictions"], metrics["targets"] = torch.cat(predictions), torch.cat(labels)  # (N,), (N,)
    return metrics
