"""Turn an ImageFolder (``SRC/<class>/<image>``) into webdataset shards for training or evaluation.

    hyena-make-shards --src /data/imagenet/train --out /data/in1k-shards/train --maxcount 1000
    hyena-make-shards --src /data/imagenet/val --out /data/in1k-shards/val --maxcount 1000 --no-shuffle

Writes OUT/<prefix>-NNNNNN.tar (``.jpg`` = original encoded bytes, ``.cls`` = class index) and OUT/meta.json
(classes, sample count, shard names, skipped files). Every image is decoded first unless --no-verify; unreadable
ones are reported with their path and left out. Point the classification trainer at them with
``data.kind=shards data.train_shards='OUT/shard-{000000..NNNNNN}.tar'`` (the count is in meta.json).
"""

from __future__ import annotations

import argparse
import json
import logging

from ..data.shards import write_shards


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="an ImageFolder split: SRC/<class>/<image>")
    p.add_argument("--out", required=True, help="output folder (must hold no shards yet)")
    p.add_argument("--maxcount", type=int, required=True, help="samples per shard")
    p.add_argument("--maxsize", type=float, default=3e9, help="bytes per shard at most")
    p.add_argument("--prefix", default="shard")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (so every shard mixes classes)")
    p.add_argument("--no-shuffle", action="store_true", help="keep folder order")
    p.add_argument("--no-verify", action="store_true", help="skip decoding each image before writing it")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    meta = write_shards(
        args.src,
        args.out,
        maxcount=args.maxcount,
        maxsize=args.maxsize,
        prefix=args.prefix,
        shuffle_seed=None if args.no_shuffle else args.seed,
        verify=not args.no_verify,
    )
    n = len(meta["shards"])
    print(
        json.dumps(
            {
                "num_samples": meta["num_samples"],
                "shards": n,
                "skipped": len(meta["skipped"]),
                "pattern": f"{args.out}/{args.prefix}-{{000000..{n - 1:06d}}}.tar",
            }
        )
    )
    return meta


if __name__ == "__main__":
    main()
