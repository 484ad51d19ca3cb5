"""Which experiment folder (``{outputs}/NNN-{model}``) a run writes to when it asks for ``latest``.

``experiment_folder="latest"`` (set by the pipeline, whose ``outputs`` is already one folder per pipeline run)
keeps every restart of a job in one experiment folder, including restarts before the first checkpoint, which
would otherwise open ``001-...``, ``002-...`` and fork the run's history.
"""

from __future__ import annotations

import re

from opensora_core.io import storage
from opensora_core.train.checkpoint import model_folder_name

_EXPERIMENT = re.compile(r"^(\d{3,})-(.+)$")  # the NNN-model names of checkpoint.next_experiment_dir


def latest_experiment_dir(outputs: str, model_type: str) -> str | None:
    """The highest-numbered ``NNN-{model}`` folder of ``model_type`` directly under ``outputs`` (None: none)."""
    wanted = model_folder_name(model_type)
    best: tuple[int, str] | None = None
    for child in storage.list_uri(outputs, recursive=False):
        if not child.endswith("/"):
            continue
        name = child.rstrip("/").rsplit("/", 1)[-1]
        m = _EXPERIMENT.match(name)
        if m and m.group(2) == wanted and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), name)
    return storage.join(outputs, best[1]) if best else None
