"""Train a causal language model (HyenaLM or GPT): ``python -m train.lm --config lm/shakespeare_char_cpu``.

A thin entry point: the command lives in ``hyena_vision.engine.lm`` (``--help`` lists its options).
"""

from hyena_vision.engine.lm import main

if __name__ == "__main__":
    main()
