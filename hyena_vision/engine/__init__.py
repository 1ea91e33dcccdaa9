"""Engine: training and evaluation loops, checkpoints, comparisons and their statistics."""
