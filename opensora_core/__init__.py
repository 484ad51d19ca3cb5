"""opensora_core: the ML library of opensora-platform (models, schedulers, data, trainer, sampler).

Importing this package is cheap and never imports kfp or kubernetes; heavy modules load lazily.
"""

__version__ = "0.1.0"
