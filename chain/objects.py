"""Object features and labels: per object of ``segments.tif``, statistics of every feature of the chain, its
shape, and the reference polygon that covers it.

Tile by tile (``object_tile``, a dask task): sums, sums of squares and pixel counts with
``np.bincount`` (exact to merge: objects that cross tiles are summed, never averaged), percentiles
with a compiled per-object sort, the boundary length, and the pixel counts shared with each
reference polygon. Objects wholly inside a tile are finished there; those that cross tiles keep
their partial sums and raw values, and ``merge`` finishes them one tile row at a time (memory: a
row of tiles' crossing objects). The table is ``objects.npz`` (one row per object id 1..N) and the
features ``objects_X.npy`` (N, F x stats + shape), memory-mapped by training and classification.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from chain.atomic import atomic_path
from chain.grid import Tile

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

    from chain.catalog import Catalog
    from chain.sampling import Samples
    from chain.spec import FeatureSpec

SHAPE_NAMES = ("area_m2", "perimeter_m", "compactness")


def quantiles_of(stats: Sequence[str]) -> np.ndarray:
    """The percentiles asked for (``p10`` -> 0.10), in the order given."""
    return np.array([int(s[1:]) / 100 for s in stats if s.startswith("p")], dtype=np.float64)


def feature_names(names: Sequence[str], stats: Sequence[str]) -> list[str]:
    """The object features: every feature x every statistic (``NDVI_20230105_mean``), then the shape."""
    return [f"{n}_{s}" for n in names for s in stats] + list(SHAPE_NAMES)


@njit(cache=True, nogil=True)
def _grouped_quantiles(values, starts, qs, out):  # type: ignore[no-untyped-def]
    """out[g, f, k] = quantile qs[k] (linear, as np.percentile) of values[f, starts[g]:starts[g + 1]]."""
    n_groups = len(starts) - 1
    for g in range(n_groups):
        a, b = starts[g], starts[g + 1]
        m = b - a
        for f in range(values.shape[0]):
            if m == 0:
                for k in range(len(qs)):
                    out[g, f, k] = np.nan
                continue
            v = np.sort(values[f, a:b])
            for k in range(len(qs)):
                pos = qs[k] * (m - 1)
                lo = int(math.floor(pos))
                hi = min(lo + 1, m - 1)
                out[g, f, k] = v[lo] + (v[hi] - v[lo]) * (pos - lo)


def grouped_quantiles(values: np.ndarray, groups: np.ndarray, n_groups: int, qs: np.ndarray) -> np.ndarray:
    """(n_groups, F, Q) percentiles of the (F, n) ``values`` per group index (0..n_groups-1) in ``groups``."""
    order = np.argsort(groups, kind="stable")
    starts = np.searchsorted(groups[order], np.arange(n_groups + 1)).astype(np.int64)
    out = np.empty((n_groups, values.shape[0], len(qs)), np.float32)
    if len(qs):
        _grouped_quantiles(np.ascontiguousarray(values[:, order]), starts, qs, out)
    return out


def finish(n_ok: np.ndarray, s1: np.ndarray, s2: np.ndarray, q: np.ndarray, stats: Sequence[str]) -> np.ndarray:
    """(n, F x stats) float32 features from the counts, sums (n, F), sums of squares and percentiles (n, F, Q)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n_ok[:, None]
        std = np.sqrt(np.maximum(s2 / n_ok[:, None] - mean**2, 0))
    cols, qi = [], 0
    for s in stats:
        if s == "mean":
            cols.append(mean)
        elif s == "std":
            cols.append(std)
        else:
            cols.append(q[:, :, qi].astype(np.float64))
            qi += 1
    out = np.stack(cols, axis=2).reshape(len(n_ok), s1.shape[1] * len(cols))
    return out.astype(np.float32)


def shape_features(n_px: np.ndarray, edges: np.ndarray, pixel_size_m: float) -> np.ndarray:
    """(n, 3): area (m²), perimeter (m, pixel edges) and compactness (4 pi area / perimeter², 1 for a disk)."""
    area = n_px * pixel_size_m**2
    perimeter = edges * pixel_size_m
    with np.errstate(invalid="ignore", divide="ignore"):
        compact = np.where(perimeter > 0, 4 * np.pi * area / perimeter**2, 0)
    return np.stack([area, perimeter, compact], axis=1).astype(np.float32)


def _read_ids(segments: Path, tile: Tile) -> np.ndarray:
    """The tile's object ids with a one-pixel ring around it (0 outside the grid)."""
    import rasterio
    from rasterio.windows import Window

    w = tile.window
    with rasterio.open(segments) as src:
        return src.read(1, window=Window(w.col_off - 1, w.row_off - 1, w.width + 2, w.height + 2), boundless=True,
                        fill_value=0).astype(np.int64)


def object_tile(tile: Tile, cat: Catalog, spec: FeatureSpec, segments: Path, polys: gpd.GeoDataFrame,
                stats: list[str], out_dir: Path) -> str:
    """One tile's share of every object in it -> ``<out_dir>/<tile>.npz`` (see the module docstring)."""
    from chain.features import compute_features
    from chain.sampling import polygons_in_tile, rasterize_ids

    ring = _read_ids(segments, tile)
    ids = ring[1:-1, 1:-1]
    inside = ids > 0
    uniq = np.unique(ids[inside])
    n = len(uniq)
    local = np.searchsorted(uniq, ids)  # index in uniq of each pixel's object (garbage where ids == 0)
    # boundary length: the object's sides facing another id (or the grid's edge)
    edges = np.zeros(ids.shape, np.int64)
    for nb in (ring[:-2, 1:-1], ring[2:, 1:-1], ring[1:-1, :-2], ring[1:-1, 2:]):
        edges += nb != ids
    cnt = lambda w=None: np.bincount(local[inside], weights=None if w is None else w[inside], minlength=n)  # noqa: E731
    n_px = cnt()
    rr, cc = np.indices(ids.shape)
    rsum = cnt(rr + float(tile.window.row_off))
    csum = cnt(cc + float(tile.window.col_off))
    e = cnt(edges.astype(np.float64))
    # crossing objects: their ids also lie in the ring around the tile (inside the grid)
    border = np.concatenate([ring[0], ring[-1], ring[1:-1, 0], ring[1:-1, -1]])
    crossing = np.isin(uniq, border[border > 0])

    block = compute_features(cat, spec, tile.window)
    ok = inside & block.mappable()
    g = local[ok]
    vals = block.values[:, ok]  # (F, n ok)
    n_ok = np.bincount(g, minlength=n)
    F = vals.shape[0]
    s1 = np.empty((n, F))
    s2 = np.empty((n, F))
    for f in range(F):
        v = vals[f].astype(np.float64)
        s1[:, f] = np.bincount(g, weights=v, minlength=n)
        s2[:, f] = np.bincount(g, weights=v * v, minlength=n)
    qs = quantiles_of(stats)
    whole = ~crossing
    # percentiles of the objects wholly in the tile, here; the crossing objects' values go to the merge
    keep_local = whole[g]
    lidx = np.cumsum(whole) - 1  # index among the whole objects
    q = grouped_quantiles(vals[:, keep_local], lidx[g[keep_local]], int(whole.sum()), qs)
    X_local = finish(n_ok[whole], s1[whole], s2[whole], q, stats)
    cross_px = crossing[g] if len(qs) else np.zeros(len(g), bool)

    pairs_obj, pairs_poly, pairs_px = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    sub = polygons_in_tile(polys, cat.grid, tile)
    if not sub.empty and n:
        pid = rasterize_ids(sub, cat.grid, tile)
        both = inside & (pid > 0)
        base = int(polys["poly_id"].max()) + 2  # rasterized ids are poly_id + 1
        k, c = np.unique(ids[both] * base + pid[both], return_counts=True)
        pairs_obj, pairs_poly, pairs_px = k // base, k % base - 1, c
    with atomic_path(out_dir / f"{tile.id}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, ids=uniq, n_px=n_px, rsum=rsum, csum=csum, edges=e, crossing=crossing, X_local=X_local, n_ok_whole=n_ok[whole],
                 n_ok=n_ok[crossing], s1=s1[crossing], s2=s2[crossing],
                 cross_ids=uniq[g[cross_px]], cross_vals=vals[:, cross_px],
                 pairs_obj=pairs_obj, pairs_poly=pairs_poly, pairs_px=pairs_px)
    return tile.id


@dataclass
class ObjectTable:
    """One row per object id 1..N (row i = id i + 1); ``X`` memory-mapped."""

    n_px: np.ndarray
    n_ok: np.ndarray  # pixels with every feature finite (0: the object cannot be mapped)
    row: np.ndarray  # centroid, grid row/col (rounded)
    col: np.ndarray
    poly_id: np.ndarray  # the reference polygon covering most of it (-1: none covers min_cover of it)
    code: np.ndarray  # its class (0: none)
    cover: np.ndarray  # share of the object that polygon covers
    pairs_obj: np.ndarray  # every (object id, polygon id, shared pixels)
    pairs_poly: np.ndarray
    pairs_px: np.ndarray
    names: list[str]
    X: np.ndarray

    _META = ("n_px", "n_ok", "row", "col", "poly_id", "code", "cover", "pairs_obj", "pairs_poly", "pairs_px")

    @property
    def n(self) -> int:
        return len(self.n_px)


def features_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_X.npy")


def merge(tiles: list[Tile], tile_dir: Path, n_objects: int, spec_names: list[str], stats: list[str],
          pixel_size_m: float, polys: pd.DataFrame, min_cover: float, path: Path) -> ObjectTable:
    """The tiles' shares merged into ``path`` (+ ``features_path(path)``): exact sums for crossing objects, which are
    finished as soon as the last tile holding them is read, tiles in row-major order (memory: the objects crossing
    the seam below the current row of tiles, and those crossing into the current tile)."""
    from numpy.lib.format import open_memmap

    names = feature_names(spec_names, stats)
    n_stat = len(names) - len(SHAPE_NAMES)
    F = len(spec_names)
    n_px = np.zeros(n_objects + 1, np.int64)
    n_ok = np.zeros(n_objects + 1, np.int64)
    rsum, csum, edges = np.zeros(n_objects + 1), np.zeros(n_objects + 1), np.zeros(n_objects + 1)
    order = sorted(tiles, key=lambda t: (t.row, t.col))
    last = np.full(n_objects + 1, -1, np.int64)  # the position in ``order`` of the last tile holding each crossing object
    for k, t in enumerate(order):
        with np.load(tile_dir / f"{t.id}.npz") as z:
            last[z["ids"][z["crossing"]]] = k
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    qs = quantiles_of(stats)
    pending: dict[str, list[np.ndarray]] = {k: [] for k in ("ids", "n_ok", "s1", "s2", "vid", "vals")}
    with atomic_path(features_path(path)) as tmp:
        X = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_objects, len(names)))
        for k, t in enumerate(order):
            with np.load(tile_dir / f"{t.id}.npz") as z:
                ids, cross = z["ids"], z["crossing"]
                n_px[ids] += z["n_px"]
                rsum[ids] += z["rsum"]
                csum[ids] += z["csum"]
                edges[ids] += z["edges"]
                whole = ids[~cross]
                X[whole - 1, :n_stat] = z["X_local"]
                n_ok[whole] += z["n_ok_whole"]
                for key, v in (("ids", ids[cross]), ("n_ok", z["n_ok"]), ("s1", z["s1"]), ("s2", z["s2"]),
                               ("vid", z["cross_ids"]), ("vals", z["cross_vals"])):
                    pending[key].append(v)
                pairs.append((z["pairs_obj"], z["pairs_poly"], z["pairs_px"]))
            _finish_crossing(pending, X, n_ok, last, k, F, qs, stats, n_stat)
        X[:, n_stat:] = shape_features(n_px[1:], edges[1:], pixel_size_m)
        X.flush()
        del X
    po, pp, px = (np.concatenate([p[i] for p in pairs]).astype(np.int64) if pairs else np.empty(0, np.int64) for i in range(3))
    if len(po):  # the same (object, polygon) from several tiles: summed
        base = int(pp.max()) + 1
        k, inv = np.unique(po * base + pp, return_inverse=True)
        px = np.bincount(inv, weights=px).astype(np.int64)
        po, pp = k // base, k % base
    poly_id, code, cover = label_objects(n_objects, n_px, po, pp, px, polys, min_cover)
    has = np.maximum(n_px[1:], 1)
    row = np.where(n_px[1:] > 0, np.rint(rsum[1:] / has), -1).astype(np.int32)
    col = np.where(n_px[1:] > 0, np.rint(csum[1:] / has), -1).astype(np.int32)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, n_px=n_px[1:], n_ok=n_ok[1:], row=row, col=col, poly_id=poly_id, code=code, cover=cover,
                 pairs_obj=po, pairs_poly=pp, pairs_px=px, names=np.array(names))
    return load(path)


def _finish_crossing(pending: dict[str, list[np.ndarray]], X: np.ndarray, n_ok: np.ndarray, last: np.ndarray, k: int,
                     F: int, qs: np.ndarray, stats: list[str], n_stat: int) -> None:
    """Finish the crossing objects whose last tile is the ``k``-th read; the others stay pending."""
    ids = np.concatenate(pending["ids"]).astype(np.int64)
    s1 = np.concatenate(pending["s1"]).reshape(-1, F)
    s2 = np.concatenate(pending["s2"]).reshape(-1, F)
    nk = np.concatenate(pending["n_ok"]).astype(np.int64)
    vid = np.concatenate(pending["vid"]).astype(np.int64)
    vals = np.concatenate([v.reshape(F, -1) for v in pending["vals"]], axis=1)
    done = last[ids] <= k
    uid, inv = np.unique(ids[done], return_inverse=True)
    if len(uid):
        t_ok = np.bincount(inv, weights=nk[done], minlength=len(uid))
        t1 = np.stack([np.bincount(inv, weights=s1[done, f], minlength=len(uid)) for f in range(F)], axis=1)
        t2 = np.stack([np.bincount(inv, weights=s2[done, f], minlength=len(uid)) for f in range(F)], axis=1)
        vsel = np.isin(vid, uid)
        q = grouped_quantiles(vals[:, vsel], np.searchsorted(uid, vid[vsel]), len(uid), qs)
        X[uid - 1, :n_stat] = finish(t_ok, t1, t2, q, stats)
        n_ok[uid] += t_ok.astype(np.int64)
    vkeep = ~np.isin(vid, uid)
    pending["ids"], pending["n_ok"], pending["s1"], pending["s2"] = [ids[~done]], [nk[~done]], [s1[~done]], [s2[~done]]
    pending["vid"], pending["vals"] = [vid[vkeep]], [vals[:, vkeep]]


def label_objects(n_objects: int, n_px: np.ndarray, po: np.ndarray, pp: np.ndarray, px: np.ndarray, polys: pd.DataFrame,
                  min_cover: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per object: the polygon covering most of it when it covers at least ``min_cover`` of it, its class, the share."""
    poly_id = np.full(n_objects, -1, np.int32)
    code = np.zeros(n_objects, np.int32)
    cover = np.zeros(n_objects, np.float32)
    if len(po):
        order = np.lexsort((-px, po))  # per object, the largest overlap first
        first = order[np.r_[True, po[order][1:] != po[order][:-1]]]
        obj, share = po[first], px[first] / np.maximum(n_px[po[first]], 1)
        good = share >= min_cover
        lut = dict(zip(polys["poly_id"].astype(int), polys["code"].astype(int), strict=True))
        poly_id[obj[good] - 1] = pp[first][good]
        code[obj[good] - 1] = [lut[int(p)] for p in pp[first][good]]
        cover[obj - 1] = share
    return poly_id, code, cover


def load(path: Path) -> ObjectTable:
    with np.load(path) as z:
        meta = {k: np.asarray(z[k]) for k in ObjectTable._META}
        names = [str(s) for s in z["names"]]
    return ObjectTable(**meta, names=names, X=np.load(features_path(path), mmap_mode="r"))


def run_samples(table: ObjectTable, split: pd.DataFrame, run: int) -> tuple[Samples, int, np.ndarray]:
    """The labelled objects as samples for run ``run`` (then split by polygon as pixels are), without the objects
    that touch reference polygons of different parts of this run's split; how many those are; the samples' rows
    in the table (object id - 1)."""
    from chain.sampling import Samples

    parts = split.loc[split["run"] == run, ["poly_id", "part"]]
    part_of = dict(zip(parts["poly_id"].astype(int), parts["part"], strict=True))
    labelled = np.flatnonzero((table.poly_id >= 0) & (table.n_ok > 0))
    own = {i + 1: part_of.get(int(table.poly_id[i])) for i in labelled}
    mixed: set[int] = set()
    for o, p in zip(table.pairs_obj.tolist(), table.pairs_poly.tolist(), strict=True):
        mine = own.get(o)
        other = part_of.get(p)
        if mine is not None and other is not None and other != mine:
            mixed.add(o)
    keep = np.array([i for i in labelled if own[i + 1] is not None and (i + 1) not in mixed], dtype=np.int64)
    samples = Samples(np.asarray(table.X[keep]) if len(keep) else np.empty((0, table.X.shape[1]), np.float32),
                      table.poly_id[keep].astype(np.int32), table.code[keep].astype(np.int32), table.row[keep], table.col[keep],
                      np.minimum(table.n_ok[keep], 65535).astype(np.uint16))
    return samples, len(mixed), keep
