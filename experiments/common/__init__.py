"""Importable pieces of the experiments: data, augmentation, models, optimizer chains, steps,
loop, checkpoints, metrics, plots and config glue."""
