"""Input/output adapters: storage URIs (`storage`) and experiment tracking (`tracking`).

With `opensora_core.model_registry` (MLflow registration, the top layer), this package is the only place in
`opensora_core` that talks to minio or mlflow (.importlinter checks it). Importing it is cheap: submodules
are imported explicitly (`from opensora_core.io import storage`) and load their clients lazily.
"""
