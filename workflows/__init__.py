"""Kubeflow pipeline definitions (``workflows.train``), their compiled YAML, and local/remote runners.

- ``train.py``: the pipeline prepare_data -> train -> evaluate -> register and its compiled presets
- ``compile.py``: ``python -m workflows.compile [--check]`` (``make workflows``) writes ``workflows/*.yaml``
- ``demo.py``: ``python -m workflows.demo`` (``make demo``) runs the pipeline locally through ``kfp.local``
- ``submit.py``: ``python -m workflows.submit PIPELINE --experiment E`` (``make submit``) wraps ``kfp.Client``
"""
