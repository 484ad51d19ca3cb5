"""Leaf helpers shared by every layer of ``opensora_core``; modules here import nothing from the library."""
