"""Test scaffolding that ships with the library, kept apart from model and training code.

- :mod:`opensora_core.testing.tokenizers`: the fixed caption corpus and the tokenizers trained on it in code
  (a unigram sentencepiece model for ``debug/tiny-t5``, a byte-level BPE for ``debug/tiny-clip``);
- :mod:`opensora_core.testing.faults`: faults the training loop injects when asked through environment
  variables (a NaN loss at given steps, a pause after a step so a test can SIGKILL the run).

Nothing here is needed to train on or sample from real models. Modules import nothing from ``opensora_core``.
"""
