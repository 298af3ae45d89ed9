"""The trainer: config, run directory, checkpoints, recipes, the training loop."""
