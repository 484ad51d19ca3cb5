"""``python -m opensora_core.eval`` (see :mod:`opensora_core.eval.cli`)."""

import sys

from opensora_core.eval.cli import main

sys.exit(main())
