"""The training application: run configs, the loop, checkpoints in the run directory, finished runs."""
