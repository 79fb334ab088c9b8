"""Training suite: data loading, training loops and experiment helpers."""
