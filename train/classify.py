"""Train an image classifier (one process or torchrun): ``python -m train.classify --config cifar10/hyena_iso
data.root=../shared/data/cifar10-jpg.tar.gz``.

A thin entry point: the command lives in ``hyena_vision.engine.classify`` (``--help`` lists its options).
"""

from hyena_vision.engine.classify import main

if __name__ == "__main__":
    main()
