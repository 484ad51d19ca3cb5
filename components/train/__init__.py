"""The training step: the KFP component `train`, a thin wrapper around `launchers.train.run_training`."""
