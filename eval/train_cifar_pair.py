"""Train the shipped CIFAR-10 pair (hyena_vit_cifar, vit_iso_cifar) with one recipe: lr sweep, full runs, report.

    python eval/train_cifar_pair.py                       # sweep + 50-epoch runs on all 50,000 images (hours on a CPU)
    python eval/train_cifar_pair.py --ship                # the same, then copy the weights into hyena_vision/weights
    python eval/train_cifar_pair.py --out out/toy --epochs 1 --sweep-epochs 1 --lrs 1e-3 2e-3 \\
        --sweep-train train:0:500 --sweep-val train:500:700 --train-subset 500 --val-subset 200 \\
        sched.warmup_epochs=0                             # toy size: a few minutes

Re-running continues interrupted runs (--resume) and reuses finished ones.
The recipe: hyena_vision/engine/cifar_pair.py.
"""

from hyena_vision.engine.cifar_pair import main

if __name__ == "__main__":
    main()
