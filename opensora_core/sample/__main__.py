"""``python -m opensora_core.sample CONFIG [flags]``: see :mod:`opensora_core.sample.cli`."""

from opensora_core.sample.cli import main

raise SystemExit(main())
