"""Large per-tile arrays, reused from one tile to the next instead of faulted in again.

glibc serves every block above 32 MiB (its largest mmap threshold) with fresh pages from the kernel and returns
them when the block is freed, so each tile paid again for the page faults of its largest arrays: a 512² tile's
stack of 455 features is 477 MB, and a tile's features took 0.73-0.87 s with that stack reused against
0.78-1.37 s allocated anew (the time-series bench, one process, 8 tiles: 6.1-6.3 s against 7.4-9.1 s).

``empty`` hands a pooled buffer out again only when nothing refers to it any more: every numpy view keeps the
array owning its memory alive, so the owner's reference count says whether a caller still holds a tile's array
(the classify step's block shared by the runs, a deep model's batch): such a caller simply gets a new buffer
next time. ``release`` drops the pool (the end of each tiled step, on every worker).

Used for the arrays that live through a tile's work anyway (the feature stack, the forests' class sums): pooled, an
array freed early in a tile (the raw series, 189 MB) would stay held while the rest of the tile runs, and raise the
tile's peak.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

MIN_BYTES = 32 * 2**20  # smaller blocks: glibc's own adaptive threshold already reuses them
KEEP = 6  # buffers kept per process: a tile's largest arrays, for each thread of a worker
_pool: list[np.ndarray] = []
_lock = threading.Lock()


def _free(i: int) -> bool:
    # nothing else holds pooled buffer i when its only references are the pool's list and getrefcount's argument
    return sys.getrefcount(_pool[i]) <= 2


def empty(shape: Any, dtype: Any = np.float32) -> np.ndarray:
    """An uninitialised C-ordered array, as ``np.empty(shape, dtype)``, from the pool when it is large."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if n < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        best = -1
        for i in range(len(_pool)):  # the smallest free buffer that fits, and not twice too large
            size = _pool[i].nbytes
            if n <= size <= 2 * n and _free(i) and (best < 0 or size < _pool[best].nbytes):
                best = i
        owner = _pool.pop(best) if best >= 0 else np.empty(n, np.uint8)
        _pool.append(owner)  # most recently used last
        del _pool[:-KEEP]
        return owner[:n].view(dtype).reshape(shape)


def zeros(shape: Any, dtype: Any = np.float32) -> np.ndarray:
    """``empty`` filled with zeros (the pool's pages are already mapped: writing them costs no fault)."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def release() -> None:
    """Forget every pooled buffer (those still in use stay alive with their users)."""
    with _lock:
        _pool.clear()


def pooled() -> int:
    """Bytes the pool holds now."""
    with _lock:
        return sum(b.nbytes for b in _pool)
