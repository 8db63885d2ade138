"""Samples: feature vectors of the pixels inside reference polygons, with polygon id and class.

Features are extracted once for every reference polygon (tile by tile, same feature function as
classification); each run then selects its train/validation pixels by polygon id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from numba import njit
from rasterio.features import rasterize
from shapely.geometry import box

from chain.catalog import Catalog
from chain.features import compute_features
from chain.grid import GridSpec, Tile
from chain.seeds import derive_seed, rng
from chain.spec import FeatureSpec


def polygons_in_tile(polys: gpd.GeoDataFrame, grid: GridSpec, tile: Tile) -> gpd.GeoDataFrame:
    w = tile.window
    t = grid.window_transform(w)
    bounds = box(t.c, t.f + t.e * w.height, t.c + t.a * w.width, t.f)
    return polys.iloc[polys.sindex.query(bounds, predicate="intersects")]


def rasterize_ids(polys: gpd.GeoDataFrame, grid: GridSpec, tile: Tile, column: str = "poly_id") -> np.ndarray:
    """Raster of ``column`` + 1 over the tile (0 = outside every polygon); pixel centres decide."""
    w = tile.window
    shapes = ((g, int(v) + 1) for g, v in zip(polys.geometry, polys[column], strict=False))
    return rasterize(shapes, out_shape=(int(w.height), int(w.width)), transform=grid.window_transform(w),
                     fill=0, dtype="int32")


@dataclass
class Samples:
    X: np.ndarray  # (n, F) float32
    poly_id: np.ndarray  # (n,) int32
    code: np.ndarray  # (n,) int32
    row: np.ndarray  # (n,) int32, grid row
    col: np.ndarray  # (n,) int32
    n_valid: np.ndarray  # (n,) uint16, clear dates of the pixel

    @classmethod
    def concat(cls, parts: list[Samples], n_features: int) -> Samples:
        if not parts:
            empty = np.empty(0, np.int32)
            return cls(np.empty((0, n_features), np.float32), empty, empty, empty, empty, np.empty(0, np.uint16))
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("X", "poly_id", "code", "row", "col", "n_valid")))

    def take(self, idx: np.ndarray) -> Samples:
        return Samples(self.X[idx], self.poly_id[idx], self.code[idx], self.row[idx], self.col[idx], self.n_valid[idx])


def extract_tile(cat: Catalog, spec: FeatureSpec, polys: gpd.GeoDataFrame, tile: Tile,
                 max_pixels_per_polygon: int | None, seed: int, min_clear_dates: int = 1) -> Samples:
    """Samples of the reference pixels in ``tile`` seen clear on at least ``min_clear_dates`` dates."""
    inside = polygons_in_tile(polys, cat.grid, tile)
    if inside.empty:
        return Samples.concat([], len(spec.names))
    ids = rasterize_ids(inside, cat.grid, tile)
    if not ids.any():
        return Samples.concat([], len(spec.names))
    block = compute_features(cat, spec, tile.window)
    # only pixels a model could map (chain.features.mappable), seen clear often enough
    keep = (ids > 0) & block.mappable() & (block.n_valid >= min_clear_dates)
    rr, cc = np.nonzero(keep)
    pid = ids[rr, cc] - 1
    r0, c0 = int(tile.window.row_off), int(tile.window.col_off)
    if max_pixels_per_polygon is not None:
        # the tile's share of each polygon's global pick (see cap_per_polygon): its cap smallest pixel keys
        sel = cap_per_polygon(pid, pixel_keys(rr + r0, cc + c0, seed), max_pixels_per_polygon)
        rr, cc, pid = rr[sel], cc[sel], pid[sel]
    lut = np.zeros(int(polys["poly_id"].max()) + 1, dtype=np.int32)
    lut[polys["poly_id"].to_numpy()] = polys["code"].to_numpy()
    codes = lut[pid]
    X = pixel_rows(block.values, rr, cc)
    return Samples(X, pid.astype(np.int32), codes, (rr + r0).astype(np.int32), (cc + c0).astype(np.int32),
                   block.n_valid[rr, cc])


def pixel_rows(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, F) float32, C-ordered: the features of pixels (rows, cols) of ``values`` (F, h, w), gathered straight into
    the rows (a compiled pass, 128 pixels' rows at a time so that they stay in the core's cache): no (F, n) copy in
    between, which was as large as the result (a 512² tile, 455 features, 190,000 pixels: 346 MB less at the tile's
    peak; 0.19 s, against 0.20-0.69 s for a ``take`` and a transposing copy, whose pages were faulted in anew)."""
    flat = rows.astype(np.intp) * values.shape[2] + cols
    out = np.empty((len(flat), values.shape[0]), np.float32)
    _gather_rows(values.reshape(values.shape[0], -1), flat, out)
    return out


@njit(cache=True, nogil=True)
def _gather_rows(values, flat, out):  # type: ignore[no-untyped-def]
    for s in range(0, flat.shape[0], 128):
        e = min(flat.shape[0], s + 128)
        for f in range(values.shape[0]):
            row = values[f]
            for i in range(s, e):
                out[i, f] = row[flat[i]]


def pixel_keys(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random uint64 per grid pixel (splitmix64 of its position and the seed): the same whatever the
    tiling, so that drawing "the pixels of smallest key" picks the same pixels from any tiles."""
    with np.errstate(over="ignore"):
        z = (rows.astype(np.uint64) << np.uint64(32)) ^ cols.astype(np.uint64) ^ np.uint64(derive_seed(seed, "sample", "pixels"))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def cap_per_polygon(poly_id: np.ndarray, keys: np.ndarray, cap: int) -> np.ndarray:
    """Indices of at most ``cap`` pixels per polygon, those of smallest key, in input order.

    Applied to each tile, then to all tiles' survivors together, it gives exactly what it would give on the
    whole scene at once: a polygon's globally smallest keys are among the smallest of their own tile."""
    order = np.lexsort((keys, poly_id))
    sorted_ids = poly_id[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_ids)) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return np.sort(order[rank < cap])


def grid_order(row: np.ndarray, col: np.ndarray, poly_id: np.ndarray, max_pixels_per_polygon: int | None, seed: int) -> np.ndarray:
    """Indices putting samples in grid order (row, then column), capped per polygon: the same whatever the tiling
    and the workers, so that the seeded draws of each run and the models' fits do not depend on them."""
    idx = np.lexsort((col, row))
    if max_pixels_per_polygon is not None and len(idx):
        idx = idx[cap_per_polygon(poly_id[idx], pixel_keys(row[idx], col[idx], seed), max_pixels_per_polygon)]
    return idx


def in_grid_order(samples: Samples, max_pixels_per_polygon: int | None, seed: int) -> Samples:
    """``samples`` in grid order, capped per polygon (``grid_order``)."""
    return samples.take(grid_order(samples.row, samples.col, samples.poly_id, max_pixels_per_polygon, seed))


_META = ("poly_id", "code", "row", "col", "n_valid")


def tile_features_path(meta: Path) -> Path:
    """A sampled tile's features beside its metadata: ``tiles/<tile>.npz`` -> ``tiles/<tile>_X.npy``."""
    return meta.with_name(f"{meta.stem}_X.npy")


def save_tile(meta: Path, samples: Samples) -> None:
    """One tile's samples: the features as a plain .npy (memory-mapped when read), then the metadata (.npz), which
    marks the tile done."""
    from chain.atomic import atomic_path

    with atomic_path(tile_features_path(meta)) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(samples.X, dtype=np.float32))
    with atomic_path(meta) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: getattr(samples, k) for k in _META})


def tile_saved(meta: Path) -> bool:
    return meta.exists() and tile_features_path(meta).exists()


class TileRows:
    """The features of merged samples, left in the tiles' files: row i is row ``row[i]`` of file ``files[tile[i]]``.

    ``X[idx]`` reads the rows ``idx`` selects (memory-mapped; one fancy index per tile, in the tile's own order),
    so merging every reference pixel never copies the features (GBs on a dense reference) and a run reads only the
    rows it takes. ``np.asarray(X)`` reads them all."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, files: list[Path], tile: np.ndarray, row: np.ndarray, n_features: int):
        self.files, self.tile, self.row = files, tile, row
        self.shape = (len(tile), n_features)
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def _map(self, i: int) -> np.ndarray:
        if i not in self._maps:
            self._maps[i] = np.load(self.files[i], mmap_mode="r")
        return self._maps[i]

    def __getitem__(self, idx: Any) -> np.ndarray:
        which = np.arange(len(self))[idx]  # slices, boolean masks and index arrays alike
        if which.ndim == 0:
            return self[which[None]][0]
        out = np.empty((len(which), self.shape[1]), np.float32)
        if not len(which):
            return out
        t = self.tile[which]
        by_tile = np.argsort(t, kind="stable")  # one sort, not one scan of the selection per tile
        starts = np.r_[0, np.flatnonzero(np.diff(t[by_tile])) + 1, len(t)]
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            sel = by_tile[a:b]
            out[sel] = self._map(int(t[sel[0]]))[self.row[which[sel]]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[:]
        return a if dtype is None else a.astype(dtype)


def merge_tiles(tile_files: list[Path], path: Path, n_features: int, max_pixels_per_polygon: int | None, seed: int) -> Samples:
    """The tiles' samples (``save_tile``) merged in grid order into ``path``: the metadata of every sample and where
    its features lie (tile file, row). The features stay in the tiles' files (``TileRows``): the merge reads only
    the metadata, whatever the size of the reference (3 M pixels x 455 features = 5.5 GB were copied once more
    before). Returns the merged samples."""
    from chain.atomic import atomic_path

    meta: dict[str, list[np.ndarray]] = {k: [] for k in _META}
    tile_of, row_of = [], []
    for i, f in enumerate(tile_files):
        with np.load(f) as z:
            for k in _META:
                meta[k].append(z[k])
            n = len(z["code"])
        tile_of.append(np.full(n, i, np.int32))
        row_of.append(np.arange(n, dtype=np.int64))
    cols = {k: np.concatenate(v) if v else np.empty(0, np.uint16 if k == "n_valid" else np.int32) for k, v in meta.items()}
    order = grid_order(cols["row"], cols["col"], cols["poly_id"], max_pixels_per_polygon, seed)
    tiles = np.concatenate(tile_of) if tile_of else np.empty(0, np.int32)
    rows = np.concatenate(row_of) if row_of else np.empty(0, np.int64)
    names = np.array([os.path.relpath(tile_features_path(f), path.parent) for f in tile_files], dtype=str)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: cols[k][order] for k in _META}, x_tile=tiles[order], x_row=rows[order], x_files=names,
                 n_features=np.int64(n_features))
    return load_samples(path)


def load_samples(path: Path) -> Samples:
    """Merged samples (``merge_tiles``): metadata in memory, the features read from the tiles' files on demand
    (``TileRows``: ``take`` reads the rows it selects)."""
    with np.load(path) as z:
        meta = [np.asarray(z[k]) for k in _META]
        X = TileRows([path.parent / str(f) for f in z["x_files"]], np.asarray(z["x_tile"]), np.asarray(z["x_row"]),
                     int(z["n_features"]))
    return Samples(X, *meta)  # type: ignore[arg-type]


def select_run(samples: Samples, split: pd.DataFrame, run: int, part: str,
               max_pixels_per_class: int | None, seed: int) -> Samples:
    """The samples of one run's part, capped per class with a seeded draw."""
    ids = split.loc[(split["run"] == run) & (split["part"] == part), "poly_id"].to_numpy()
    idx = np.flatnonzero(np.isin(samples.poly_id, ids))
    if max_pixels_per_class is not None:
        kept = []
        for code in np.unique(samples.code[idx]):
            where = idx[samples.code[idx] == code]
            if len(where) > max_pixels_per_class:
                where = np.sort(rng(seed, "sample", run, part, int(code)).choice(where, max_pixels_per_class, replace=False))
            kept.append(where)
        idx = np.concatenate(kept) if kept else idx
    return samples.take(idx)


def sample_tile(tile: Tile, cat: Catalog, spec: FeatureSpec, polys: gpd.GeoDataFrame, cap: int | None, seed: int,
                min_clear: int, out_dir: Any) -> str:
    """The samples of one tile into ``<out_dir>/<tile>.npz`` (a dask task of the sample step)."""
    save_tile(out_dir / f"{tile.id}.npz", extract_tile(cat, spec, polys, tile, cap, seed, min_clear))
    return tile.id
