"""Evaluate an image classifier: ``python eval/evaluate.py --checkpoint runs/x/last.pt --data DIR``.

A thin entry point: the command lives in ``hyena_vision.engine.evaluate`` (``--help`` lists its options).
"""

from hyena_vision.engine.evaluate import main

if __name__ == "__main__":
    main()
