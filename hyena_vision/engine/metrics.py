"""Metric logging: ``MetricsLogger`` (JSONL, CSV and TensorBoard from rank 0) and ``LogWindow`` (the progress bar,
throughput and training-loss line of a trainer)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .._io import atomic_write
from .distributed import mean_over_ranks

__all__ = ["LogWindow", "MetricsLogger", "read_metrics"]


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
        atomic_write(self._csv_path, lambda f: f.write(text.getvalue().encode()))
        self._fields = fields
        self._csv = open(self._csv_path, "a", newline="")

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        self._csv.close()
        self._tb.close()
        self.enabled = False


class LogWindow:
    """A tqdm bar over updates, and the updates and wall time since the last log line.

    ``log`` averages the loss over ranks, refuses a non-finite one, and logs it with the learning rate and the
    throughput (``rate_name``: items per second over the window); ``reset`` after evaluating or saving, so that
    throughput counts training only.
    """

    def __init__(
        self, logger: MetricsLogger, *, total: int, initial: int, desc: str, rate_name: str, items_per_update: int
    ):
        self.logger, self.rate_name, self.items_per_update = logger, rate_name, items_per_update
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="upd", disable=not logger.enabled, mininterval=2)
        self.reset()

    def reset(self) -> None:
        self.start, self.updates = time.perf_counter(), 0

    def update(self) -> None:
        self.updates += 1
        self.bar.update(1)

    def log(self, step: int, loss_sum: torch.Tensor, lr: float, **extra: float) -> float:
        loss = mean_over_ranks(loss_sum).item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}")
        rate = self.updates * self.items_per_update / (time.perf_counter() - self.start)
        self.logger.log(step, **extra, train_loss=loss, lr=lr, **{self.rate_name: rate})
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", rate=f"{rate:.0f}")
        self.reset()
        return loss

    def close(self) -> None:
        self.bar.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``metrics.jsonl`` that ``MetricsLogger`` wrote."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
