"""Segmentation of a large scene into objects, tile by tile, stitched so that the result does not depend on the tiling.

The algorithms come from scikit-image (Felzenszwalb's graph-based merging, SLIC superpixels); this
module only feeds them and stitches their tiles:

1. ``band_stats``: each input band's 2nd/98th percentiles from windows spread over the whole grid
   (the same windows whatever the tiling), so every tile is scaled alike.
2. ``segment_tile``: a tile plus a halo is segmented; its core is split into connected components
   (the tile's objects) and saved with the labels of the whole halo window.
3. ``stitch``: along every seam between two tiles' cores, the object left (above) of the seam and
   the one right (below) of it are joined when both tiles' segmentations put the two pixels in one
   segment; joined objects are found as connected components of that graph (scipy), numbered in
   grid order. Far from the seams each tile sees what a whole-scene run sees; near them the halo
   gives it the same context, and the joins remove the cut.
4. ``write_tile_ids``: each tile's objects renumbered to the scene's ids (uint32; 0 = nothing to
   segment), assembled into ``segments.tif``; ``tile_polygons`` + ``merge_polygons`` give the GPKG.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.atomic import atomic_path
from chain.grid import GridSpec, Tile

if TYPE_CHECKING:
    import geopandas as gpd

    from chain.catalog import Catalog
    from chain.spec import FeatureSpec

log = logging.getLogger(__name__)

SEGMENT_NODATA = 0


def input_bands(spec: FeatureSpec, source: str, patterns: list[str]) -> list[int]:
    """Stack indices of the features to segment: ``patterns`` (fnmatch, e.g. ``NDVI_*``) when given, else the SPOT
    cell features (``source: spot``) or every NDVI of the series (``source: features``). Empty: nothing matched."""
    from fnmatch import fnmatchcase

    names = spec.names
    if patterns:
        return [i for i, n in enumerate(names) if any(fnmatchcase(n, p) for p in patterns)]
    if source == "spot":
        return [i for off, g in spec.of_source("spot") for i in range(off, off + len(g.names))]
    return [i for i, n in enumerate(names) if n.upper().startswith("NDVI")]


def stat_windows(grid: GridSpec, size: int = 256, n: int = 4) -> list[Any]:
    """Up to n x n windows of ``size`` spread evenly over the grid (independent of the tiling)."""
    from rasterio.windows import Window

    h, w = min(size, grid.height), min(size, grid.width)
    rows = sorted({int(r) for r in np.linspace(0, grid.height - h, n)})
    cols = sorted({int(c) for c in np.linspace(0, grid.width - w, n)})
    return [Window(c, r, w, h) for r in rows for c in cols]


def band_stats(cat: Catalog, spec: FeatureSpec, bands: list[int]) -> np.ndarray:
    """(B, 2): each band's 2nd and 98th percentiles over windows spread over the scene (finite values only)."""
    from chain.features import compute_features

    samples = []
    for win in stat_windows(cat.grid):
        v = compute_features(cat, spec, win).values[bands].reshape(len(bands), -1)
        samples.append(v[:, np.isfinite(v).all(axis=0)])
    values = np.concatenate(samples, axis=1)
    if values.shape[1] == 0:
        return np.tile(np.array([0.0, 1.0]), (len(bands), 1))
    lo, hi = np.percentile(values, [2, 98], axis=1)
    return np.stack([lo, np.where(hi > lo, hi, lo + 1)], axis=1)


def slic_step(params: dict[str, Any], pixel_area_m2: float) -> int:
    """SLIC's seed spacing in pixels: an odd number (see ``run_algorithm``) near the side of the target object."""
    side = max(3.0, (params["segment_size_m2"] / pixel_area_m2) ** 0.5)
    return int(side) | 1


def run_algorithm(image: np.ndarray, params: dict[str, Any], pixel_area_m2: float, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Labels (h, w) int32 (-1: left out) of a (h, w, B) float image scaled to about [0, 1] whose first pixel is
    ``origin`` (row, col) of the grid (scikit-image)."""
    from skimage.segmentation import felzenszwalb, slic

    min_px = max(1, int(round(params["min_size_m2"] / pixel_area_m2)))
    if params["method"] == "felzenszwalb":
        with warnings.catch_warnings():  # scikit-image asks whether a 3-4 band image is meant as multichannel: it is
            warnings.simplefilter("ignore", RuntimeWarning)
            return felzenszwalb(image, scale=params["scale"], sigma=params["sigma"], min_size=min_px,
                                channel_axis=-1).astype(np.int32)
    # SLIC seeds lie on a regular grid of step s from s // 2 of the image it is given. Anchored on the scene's grid
    # (the image cropped to start on a multiple of s, and as many segments as make the step exactly s, s odd so that
    # the rounding inside scikit-image keeps it), every tile places the seeds where a whole-scene run does.
    s = slic_step(params, pixel_area_m2)
    dr, dc = (-origin[0]) % s, (-origin[1]) % s
    out = np.full(image.shape[:2], -1, np.int32)
    # scikit-image rescales each image to its own [min, max]: clipped to [0, 1], which the 2-98 % scaling reaches in
    # any window of some size, every tile gets the same scale
    sub = np.clip(image[dr:, dc:], 0.0, 1.0)
    if sub.shape[0] < s or sub.shape[1] < s:
        return out
    n_segments = max(1, int(round(sub.shape[0] * sub.shape[1] / s**2)))
    out[dr:, dc:] = slic(sub, n_segments=n_segments, compactness=params["compactness"], sigma=params["sigma"],
                         channel_axis=-1, start_label=0, min_size_factor=min(1.0, min_px / s**2), enforce_connectivity=True,
                         convert2lab=False)
    return out


def segment_tile(tile: Tile, cat: Catalog, spec: FeatureSpec, bands: list[int], stats: np.ndarray,
                 params: dict[str, Any], out_dir: Path) -> str:
    """Segment ``tile`` + its halo into ``<out_dir>/<tile>.npz``: ``seg`` (the algorithm's labels over the read
    window, -1 where nothing can be segmented) and ``core`` (the core's objects: connected components, 1..n)."""
    from chain.features import compute_features

    win = tile.read_window(cat.grid)
    values = compute_features(cat, spec, win).values[bands]
    seg, core = segment_window(values, stats, tile.core_slices(cat.grid), params, abs(cat.grid.res[0] * cat.grid.res[1]),
                               (int(win.row_off), int(win.col_off)))
    with atomic_path(out_dir / f"{tile.id}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, seg=seg, core=core, n=np.int64(core.max(initial=0)))
    return tile.id


def segment_window(values: np.ndarray, stats: np.ndarray, core_window: tuple[slice, slice], params: dict[str, Any],
                   pixel_area_m2: float, origin: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """(labels over the window (-1: nothing to segment), the core's objects 1..n in grid order) of (B, h, w) values."""
    from skimage import measure

    ok = np.isfinite(values).all(axis=0)
    scaled = (values - stats[:, :1, None].astype(np.float32)) / (stats[:, 1:, None] - stats[:, :1, None]).astype(np.float32)
    image = np.where(ok, np.clip(scaled, -0.5, 1.5), 0).transpose(1, 2, 0)
    seg = run_algorithm(np.ascontiguousarray(image, dtype=np.float64), params, pixel_area_m2, origin)
    seg[~ok] = -1
    core_seg = seg[core_window]
    # the core's objects: one per connected piece of a segment (a segment may meet the core in several pieces),
    # numbered in raster order
    core = measure.label(core_seg + 1, background=0, connectivity=2).astype(np.int32)  # 8-connected, as the graph
    return seg, core


def renumber_grid_order(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..n in the order their first pixel comes in the raster (0 stays 0)."""
    flat = labels.ravel()
    values, first = np.unique(flat, return_index=True)
    keep = values > 0
    lut = np.zeros(int(values.max(initial=0)) + 1, np.int32)
    lut[values[keep][np.argsort(first[keep], kind="stable")]] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    return lut[labels]


def _load(out_dir: Path, tile: Tile) -> dict[str, np.ndarray]:
    with np.load(out_dir / f"{tile.id}.npz") as z:
        return {k: z[k] for k in ("seg", "core", "n")}


def stitch(tiles: list[Tile], grid: GridSpec, out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(offsets per tile, scene id per tile object (1..N, 0 for none)) from the saved tiles: two tiles in memory
    at a time. Tile t's local object k (1..n_t) is scene object ``ids[offsets[t] + k]``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    counts = []
    for t in tiles:
        with np.load(out_dir / f"{t.id}.npz") as z:
            counts.append(int(z["n"]))
    offsets = np.concatenate([[0], np.cumsum(counts)])  # tile t's objects are nodes offsets[t] + 1 .. offsets[t] + n_t
    by_pos = {(t.row, t.col): i for i, t in enumerate(tiles)}
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    for i, a in enumerate(tiles):
        A = _load(out_dir, a)
        for di, dj in ((0, 1), (1, 0)):  # the seam with the tile right of a, then below it
            j = by_pos.get((a.row + di, a.col + dj))
            if j is None:
                continue
            b = tiles[j]
            B = _load(out_dir, b)
            p_core, q_core, p_a, q_a, p_b, q_b = _seam(a, b, A, B, grid, vertical=dj == 1)
            same = (p_a == q_a) & (p_a >= 0) & (p_b == q_b) & (p_b >= 0) & (p_core > 0) & (q_core > 0)
            src.append(offsets[i] + p_core[same])
            dst.append(offsets[j] + q_core[same])
    n_nodes = int(offsets[-1]) + 1
    s = np.concatenate(src) if src else np.empty(0, np.int64)
    d = np.concatenate(dst) if dst else np.empty(0, np.int64)
    graph = coo_matrix((np.ones(len(s), np.int8), (s, d)), shape=(n_nodes, n_nodes))
    _, comp = connected_components(graph, directed=False)
    # scene ids in the order of each object's first node (tile order, then grid order inside the tile); node 0 is none
    comp_ids, first = np.unique(comp[1:], return_index=True)
    rank = np.empty(len(comp_ids), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, len(comp_ids) + 1)
    lut = np.zeros(comp.max() + 1, np.int64)
    lut[comp_ids] = rank
    ids = np.concatenate([[0], lut[comp[1:]]]).astype(np.uint32)
    return offsets, ids


def _seam(a: Tile, b: Tile, A: dict[str, np.ndarray], B: dict[str, np.ndarray], grid: GridSpec,
          vertical: bool) -> tuple[np.ndarray, ...]:
    """Along the seam between a and b (b right of a when ``vertical``, else below): for each pixel pair p (last
    core line of a) and q (first core line of b): a's and b's core objects, and both segmentations' labels."""
    wa, wb = a.read_window(grid), b.read_window(grid)
    ra, ca = a.core_slices(grid)
    rb, cb = b.core_slices(grid)
    if vertical:
        rows_a = np.arange(ra.start, ra.stop)  # in a's read window
        p_pos = (rows_a, np.full(len(rows_a), ca.stop - 1))  # a's last core column
        q_pos_a = (rows_a, np.full(len(rows_a), ca.stop))  # b's first core column, in a's halo
        dr, dc = int(wa.row_off - wb.row_off), int(wa.col_off - wb.col_off)
        p_core = A["core"][rows_a - ra.start, -1]
        q_core = B["core"][rows_a + dr - rb.start, 0]
    else:
        cols_a = np.arange(ca.start, ca.stop)
        p_pos = (np.full(len(cols_a), ra.stop - 1), cols_a)
        q_pos_a = (np.full(len(cols_a), ra.stop), cols_a)
        dr, dc = int(wa.row_off - wb.row_off), int(wa.col_off - wb.col_off)
        p_core = A["core"][-1, cols_a - ca.start]
        q_core = B["core"][0, cols_a + dc - cb.start]
    seg_a, seg_b = A["seg"], B["seg"]
    inside_a = q_pos_a[0] < seg_a.shape[0]
    inside_a &= q_pos_a[1] < seg_a.shape[1]  # without a halo, a does not see b's pixels: no join
    p_a = seg_a[p_pos]
    q_a = np.where(inside_a, seg_a[np.minimum(q_pos_a[0], seg_a.shape[0] - 1), np.minimum(q_pos_a[1], seg_a.shape[1] - 1)], -2)
    p_pos_b = (p_pos[0] + dr, p_pos[1] + dc)
    inside_b = (p_pos_b[0] >= 0) & (p_pos_b[1] >= 0)
    p_b = np.where(inside_b, seg_b[np.maximum(p_pos_b[0], 0), np.maximum(p_pos_b[1], 0)], -3)
    q_b = seg_b[q_pos_a[0] + dr, q_pos_a[1] + dc]
    return p_core, q_core, p_a, q_a, p_b, q_b


def write_tile_ids(tile: Tile, grid: GridSpec, in_dir: Path, out_dir: Path, offsets: dict[str, int], ids: np.ndarray) -> str:
    """The tile's core with the scene's object ids, as a uint32 GeoTIFF (``<out_dir>/<tile>.tif``); ``offsets``: each
    tile's first node in ``ids`` (``stitch``)."""
    from chain.raster import write_tile

    offset = offsets[tile.id]
    core = _load(in_dir, tile)["core"]
    lut = ids[offset:offset + int(core.max(initial=0)) + 1].copy()
    lut[0] = SEGMENT_NODATA
    write_tile(out_dir / f"{tile.id}.tif", lut[core].astype(np.uint32), grid, tile.window, SEGMENT_NODATA)
    return tile.id


def tile_polygons(tile: Tile, grid: GridSpec, segments: Path) -> tuple[list[Any], list[int]]:
    """The objects' polygons within the tile (pieces of objects that cross it, merged by ``merge_polygons``)."""
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    with rasterio.open(segments) as src:
        ids = src.read(1, window=tile.window)
    geoms, values = [], []
    for geom, value in shapes(ids.astype(np.int32), mask=ids != SEGMENT_NODATA, transform=grid.window_transform(tile.window),
                              connectivity=4):
        geoms.append(shape(geom))
        values.append(int(value))
    return geoms, values


def merge_polygons(parts: list[tuple[list[Any], list[int]]], crs: Any) -> gpd.GeoDataFrame:
    """One polygon per object id: pieces from several tiles are unioned (only those: the rest are kept as they are)."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    geoms = [g for gs, _ in parts for g in gs]
    ids = np.array([v for _, vs in parts for v in vs], dtype=np.int64)
    df = gpd.GeoDataFrame({"id": ids}, geometry=geoms, crs=crs)
    dup = df["id"].duplicated(keep=False)
    if dup.any():
        merged = df[dup].groupby("id").geometry.apply(lambda s: shapely.union_all(s.to_numpy()))
        merged_df = gpd.GeoDataFrame({"id": merged.index.to_numpy()}, geometry=list(merged.to_numpy()), crs=crs)
        df = gpd.GeoDataFrame(pd.concat([df[~dup], merged_df], ignore_index=True), crs=crs)
    return df.sort_values("id").reset_index(drop=True)


def boundaries(ids: np.ndarray) -> np.ndarray:
    """(h, w) bool: the pixel's id differs from its right or lower neighbour's (object boundaries)."""
    out = np.zeros(ids.shape, bool)
    out[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    out[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return out
