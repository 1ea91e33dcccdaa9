"""Engine: configs, training and evaluation loops, checkpoints, logging, comparisons."""
