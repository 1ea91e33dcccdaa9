"""Training throughput of CIFAR-10 models with the JPEG folder pipeline and with the in-memory one.

    OMP_NUM_THREADS=1 python eval/bench_cifar_pipeline.py --data ../shared/data/cifar10-jpg.tar.gz

Runs the trainer's own pieces (its config, data functions, model, loss, AdamW and scheduler) for ``--updates``
optimizer updates per (model, data.kind), after ``--warmup`` updates, alternating in rounds within one process with
``data.num_workers=0``. Reports wall-clock img/s and images per CPU-second of this process (``process_time``): the
second is what an idle core would give and is robust to other load on a shared machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from hyena_vision.data.loaders import train_stream, train_transform
from hyena_vision.engine import classify  # the trainer's building blocks
from hyena_vision.engine.compare_cifar10 import default_data
from hyena_vision.engine.loop import AMP_DTYPES

CONFIGS = {"vit_iso_cifar": "cifar10/vit_iso", "hyena_vit_cifar": "cifar10/hyena_vit"}  # shipped config names


def build(model_name: str, kind: str, data: str, amp: str):
    overrides = [f"data.kind={kind}", f"data.root={data}", "data.num_workers=0", f"train.amp={amp}"]
    cfg = classify.load_config(classify.ClassifyConfig, CONFIGS[model_name], overrides)
    torch.manual_seed(0)
    model = classify.create_model(cfg, 10)
    image, _ = classify.data_settings(cfg, model)
    transform = train_transform(kind, image, classify.train_augment(cfg))
    d = cfg.data
    stream = train_stream(
        kind,
        root=d.root,
        split=d.train_split,
        shards=None,
        train_samples=0,
        transform=transform,
        global_batch=cfg.train.batch_size,
        accum_steps=1,
        rank=0,
        world_size=1,
        seed=0,
        cache_dir=d.cache_dir,
    )
    optimizer, scheduler = classify.create_optimizer_and_scheduler(cfg, model, stream.updates_per_epoch)
    _, criterion = classify.create_loss(cfg, 10)
    batches = stream.epoch_batches(0, 0)
    amp_dtype = AMP_DTYPES[amp]

    def update() -> int:
        images, targets = next(batches)
        with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = criterion(model(images).float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return targets.numel()

    return update


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(default_data()))
    p.add_argument(
        "--runs",
        nargs="+",
        default=[
            "vit_iso_cifar:folder",
            "vit_iso_cifar:memory_cifar10",
            "hyena_vit_cifar:memory_cifar10",
            "hyena_vit_cifar:folder",
        ],
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--amp", default="none")
    args = p.parse_args(argv)
    steps = {run: build(*run.split(":"), args.data, args.amp) for run in args.runs}
    figures: dict[str, list[tuple[float, float]]] = {run: [] for run in args.runs}
    for r in range(args.rounds):
        for run, update in steps.items():
            for _ in range(args.warmup):
                update()
            wall, cpu, images = time.perf_counter(), time.process_time(), 0
            for _ in range(args.updates):
                images += update()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            figures[run].append((images / wall, images / cpu))
            print(
                f"round {r}: {run}: {images / wall:.1f} img/s wall, {images / cpu:.1f} img per CPU-second", flush=True
            )
    print(
        f"\n{args.updates} updates x {args.rounds} rounds, {torch.get_num_threads()} torch thread(s), amp {args.amp}\n"
    )
    print("| model | data.kind | img/s wall (median) | img per CPU-second (median) |")
    print("|---|---|---:|---:|")
    for run, values in figures.items():
        wall = sorted(v[0] for v in values)[len(values) // 2]
        cpu = sorted(v[1] for v in values)[len(values) // 2]
        print(f"| {run.split(':')[0]} | {run.split(':')[1]} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
