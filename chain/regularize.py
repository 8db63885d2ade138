"""Map regularization: minimum mapping unit by sieving (8- then 4-connectivity) and a majority filter."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import sieve
from scipy import ndimage

# sieve works on plain arrays here, which need no georeferencing; catch_warnings is not thread-safe
# (tiles run in threads), so the filter is global but matches only this message
warnings.filterwarnings("ignore", message="Dataset has no geotransform", category=NotGeoreferencedWarning)


def majority(labels: np.ndarray, radius_px: int, nodata: int = 0) -> np.ndarray:
    """Most frequent class in the (2r+1)² window around each pixel; ties keep the pixel's own class."""
    if radius_px <= 0:
        return labels
    size = 2 * radius_px + 1
    valid = labels != nodata
    classes = np.unique(labels[valid])
    counts = {c: ndimage.uniform_filter((labels == c).astype(np.float32), size=size, mode="nearest") for c in classes}
    best = labels.copy()
    best_count = np.zeros(labels.shape, np.float32)
    for c in classes:
        own = labels == c
        best_count[own] = counts[c][own]
    for c in classes:
        better = counts[c] > best_count + 1e-6
        best[better] = c
        best_count[better] = counts[c][better]
    best[~valid] = nodata
    return best


def mmu_pixels(mmu_px: int | None, mmu_m2: float | None, pixel_area_m2: float) -> int:
    px = mmu_px or 0
    if mmu_m2:
        px = max(px, math.ceil(mmu_m2 / pixel_area_m2))
    return px


def regularize(labels: np.ndarray, mmu_px: int, majority_radius_px: int = 0, nodata: int = 0) -> np.ndarray:
    """Majority filter (optional), then patches smaller than ``mmu_px`` merged into their largest neighbour.

    Sieving runs with 8-connectivity, then 4-connectivity, as iota2 does; nodata stays nodata.
    """
    valid = labels != nodata
    out = majority(labels, majority_radius_px, nodata)
    if mmu_px > 1:
        for connectivity in (8, 4):
            out = sieve(out, size=mmu_px, connectivity=connectivity, mask=valid)
    out = out.astype(labels.dtype, copy=False)
    out[~valid] = nodata
    return out


def halo_for(mmu_px: int, majority_radius_px: int) -> int:
    # a patch below the MMU spans fewer than mmu_px pixels in any direction: a halo of that size lets
    # every tile see the whole patch and its neighbours, so tiles agree with a whole-map result
    return min(max(mmu_px, 0) + majority_radius_px + 1, 512)


def regularize_tile(tile: Any, grid: Any, map_path: Any, mmu_px: int, radius: int, out_dir: Any) -> str:
    """One tile of the regularized map (read with the tile's halo, written without it): a dask task."""
    import rasterio

    from chain.raster import write_tile

    with rasterio.open(map_path) as src:
        labels = src.read(1, window=tile.read_window(grid))
    rs, cs = tile.core_slices(grid)
    out = regularize(labels, mmu_px, radius, 0)[rs, cs]
    write_tile(out_dir / f"{tile.id}.tif", np.ascontiguousarray(out), grid, tile.window, 0)
    return str(tile.id)
