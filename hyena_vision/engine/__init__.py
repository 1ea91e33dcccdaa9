"""The training engine: everything between a config file and a trained, evaluated model.

``config`` (schemas' loading by path or shipped name), ``checkpoint`` (atomic checkpoints with every RNG, resume,
safetensors export), ``distributed`` (torchrun, DDP and compile wrapping), ``loop`` (autocast, the optimizer update
over accumulated micro-batches that every trainer calls), ``metrics`` (JSONL/CSV/TensorBoard logging, progress and
throughput), ``evaluation`` (classifier and language-model loops). Commands, each with ``main(argv)``:
``classify`` and ``lm`` (the trainers), ``evaluate``, ``perplexity``, ``sample``, ``compare_cifar10``,
``compare_lm`` and ``make_shards``; ``train/`` and ``eval/`` beside the package and the console scripts call them.

Submodules are imported on demand, so ``import hyena_vision`` never pulls in the training stack.
"""
