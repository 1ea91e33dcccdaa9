"""Write webdataset shards of an ImageFolder: ``python -m train.make_shards --src DIR --out DIR --maxcount N``.

A thin entry point: the command lives in ``hyena_vision.engine.make_shards`` (``--help`` lists its options).
"""

from hyena_vision.engine.make_shards import main

if __name__ == "__main__":
    main()
