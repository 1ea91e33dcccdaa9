"""Loss and perplexity of a language model over a whole split: ``python eval/perplexity.py RUN``.

A thin entry point: the command lives in ``hyena_vision.engine.perplexity`` (``--help`` lists its options).
"""

from hyena_vision.engine.perplexity import main

if __name__ == "__main__":
    main()
