"""Hyena-ISO, S4ND-ISO, ViT-ISO, Hyena-seq on CIFAR-10: ``python eval/compare_cifar10.py --budget demo``.

A thin entry point: the command lives in ``hyena_vision.engine.compare_cifar10`` (``--help`` lists its options).
"""

from hyena_vision.engine.compare_cifar10 import main

if __name__ == "__main__":
    main()
