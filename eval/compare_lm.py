"""HyenaLM vs GPT under one config: ``python eval/compare_lm.py --config lm/shakespeare_char_cpu --out DIR``.

A thin entry point: the command lives in ``hyena_vision.engine.compare_lm`` (``--help`` lists its options).
"""

from hyena_vision.engine.compare_lm import main

if __name__ == "__main__":
    main()
