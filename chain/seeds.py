"""Deterministic seeds: one root seed in the config, derived seeds per (step, run, tile, ...)."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(root: int, *keys: object) -> int:
    """A 32-bit seed derived from ``root`` and ``keys`` with a stable hash (never Python's ``hash()``)."""
    text = "/".join([str(int(root)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def rng(root: int, *keys: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(root, *keys))
