"""Per-pixel validity over a stack of bands, in one pass without temporaries.

``np.isfinite(values).all(axis=0)`` on a 160-band 512² tile builds a 42-million-entry boolean array
and then reduces it (15–75 ms, page faults of the fresh array included); the loops below stream the
bands once (~8 ms), which matters when classification itself costs well under a second per tile.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency
    njit = None  # type: ignore[assignment]


def finite_everywhere(values: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """(h, w) True where every band of ``values`` (bands, h, w) is finite (and differs from ``nodata``)."""
    nd = np.nan if nodata is None else float(nodata)
    pixels = values.transpose(1, 2, 0)
    if njit is not None and pixels.flags.c_contiguous:  # pixel-major memory (raster.read_window)
        return _finite_pixels(pixels.reshape(-1, values.shape[0]), nd).reshape(values.shape[1:])
    if njit is not None and values.flags.c_contiguous:
        return _finite_everywhere(values.reshape(values.shape[0], -1), nd).reshape(values.shape[1:])
    ok = np.isfinite(values).all(axis=0)
    if nodata is not None:
        ok &= (values != nodata).all(axis=0)
    return ok


if njit is not None:

    @njit(cache=True, nogil=True)
    def _finite_everywhere(flat, nodata):  # type: ignore[no-untyped-def]
        n = flat.shape[1]
        ok = np.ones(n, np.bool_)
        for b in range(flat.shape[0]):
            row = flat[b]
            for j in range(n):
                v = row[j]
                # v - v is 0 for finite v, NaN for inf and NaN; v != nodata is true for any v when nodata is NaN
                ok[j] &= (v - v == 0) & (v != nodata)
        return ok

    @njit(cache=True, nogil=True)
    def _finite_pixels(pixels, nodata):  # type: ignore[no-untyped-def]
        ok = np.empty(pixels.shape[0], np.bool_)
        for j in range(pixels.shape[0]):
            good = True
            for b in range(pixels.shape[1]):
                v = pixels[j, b]
                good &= (v - v == 0) & (v != nodata)
            ok[j] = good
        return ok
