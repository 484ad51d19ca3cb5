"""The training step: launchers that run `opensora_core.train` as a PyTorchJob or TrainJob on Kubernetes."""
