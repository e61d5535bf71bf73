"""The training loop, checkpoints, LR schedules, progress display and the run workflow."""
