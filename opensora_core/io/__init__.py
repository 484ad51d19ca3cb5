"""Input/output adapters: storage URIs (`storage`) and experiment tracking (`tracking`).

This package is the only place in `opensora_core` that talks to minio or mlflow. Importing it is cheap:
submodules are imported explicitly (`from opensora_core.io import storage`) and load their clients lazily.
"""
