"""Errors shared across layers (bottom layer: imports nothing from the library).

:class:`ConfigError` is raised by the config loader and by component builders (``models.pretrained``) alike;
it lives here so that the component packages, which sit below ``config``, can raise it too.
"""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and every problem with its dotted key."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = str(source)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config {self.source}:\n{lines}")
