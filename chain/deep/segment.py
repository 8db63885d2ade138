"""Whole-tile segmentation: inputs read as images on the grid, training tiles with sparse labels, and blended
wall-to-wall inference on a lattice of overlapping windows.

A segmentation model (``kind = "segmentation"``) maps a window of the grid at once. Its inputs are
images on the grid's own pixels: a source's native image when the grid is that image's lattice (SPOT's
PAN + MS at the PAN resolution), and the chain's grid features (the gap-filled Sentinel-2 series).

Inference runs the network on windows of ``window`` px placed on one lattice anchored at the grid's
origin (stride ``window - overlap``), whatever the tiling; each window's class probabilities are
weighted by a ramp that rises over its first ``overlap`` px and falls over its last ones (the weights of
two neighbours sum to one), and a pixel's probabilities are the weighted mean of the windows holding
it. A dask tile runs the windows that touch it, so the map has no seams and is the same for any
tile size, including one tile for the whole scene (tested). Off the scene, inputs are edge-replicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window

from chain.deep.inputs import PatchInput, native_source
from chain.errors import ConfigError

if TYPE_CHECKING:
    import geopandas as gpd
    import torch

    from chain.catalog import Catalog
    from chain.spec import FeatureSpec


def lattice_offset(cat: Catalog, inp: PatchInput, why: str) -> tuple[int, int]:
    """(row, col) of the grid's pixel (0, 0) in the native image of ``inp``, which must be the grid's lattice."""
    src = native_source(cat, inp)
    t, g = src.native_transform(inp.kind), cat.grid.affine
    if src.native_crs(inp.kind) != cat.grid.crs or not (np.isclose(t.a, g.a) and np.isclose(t.e, g.e)):
        raise ConfigError(f"{why} maps on the {inp.source} {inp.kind} pixels: set grid.resolution_m to {abs(t.a):g} "
                          f"(the grid is at {abs(g.a):g} m) and grid.crs to the image's ({src.native_crs(inp.kind).to_string()})")
    col, row = (g.c - t.c) / t.a, (g.f - t.f) / t.e
    if not (np.isclose(col, round(col), atol=1e-3) and np.isclose(row, round(row), atol=1e-3)):
        raise ConfigError(f"{why}: the grid's pixels are not the {inp.source} {inp.kind} pixels (offset of {col:.3f}, {row:.3f} "
                          "pixels): leave grid.bounds unset, or give bounds on the image's pixel edges")
    return int(round(row)), int(round(col))


@dataclass
class Region:
    """The inputs of a region of the grid (any window, also partly off the scene): arrays, validity, per-sensor counts."""

    arrays: dict[str, np.ndarray]  # name -> (C, h, w) float32
    valid: np.ndarray  # (h, w) bool: the pixels the model can map (off the scene: False)
    per_sensor: dict[str, np.ndarray]


def read_region(cat: Catalog, spec: FeatureSpec, inputs: list[PatchInput], top: int, left: int, height: int, width: int) -> Region:
    """``inputs`` over rows [top, top + height) and columns [left, left + width) of the grid, edge-replicated off it."""
    from chain.features import compute_features, mappable

    g = cat.grid
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + height, g.height), min(left + width, g.width)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"region ({top}, {left}, {height}, {width}) does not touch the grid")
    pad = ((r0 - top, top + height - r1), (c0 - left, left + width - c1))
    arrays: dict[str, np.ndarray] = {}
    valid = np.ones((r1 - r0, c1 - c0), bool)
    per_sensor: dict[str, np.ndarray] = {}
    grid_inputs = [i for i in inputs if i.kind == "grid"]
    if grid_inputs:
        block = compute_features(cat, spec, Window(c0, r0, c1 - c0, r1 - r0))
        for inp in grid_inputs:
            values = block.values[list(inp.index)]
            valid &= mappable(values, block.n_valid)
            arrays[inp.name] = values
        per_sensor.update(block.per_sensor)
    for inp in inputs:
        if inp.kind == "grid":
            continue
        src = native_source(cat, inp)
        orow, ocol = lattice_offset(cat, inp, "a segmentation model")
        arr = src.read_native(inp.kind, r0 + orow, c0 + ocol, r1 - r0, c1 - c0)
        nodata = src.native_nodata()
        if nodata is not None:
            ok = (arr != nodata).all(axis=0)
            valid &= ok
            per_sensor[src.validity_band] = ok.astype(np.uint16)
        else:
            per_sensor.setdefault(src.validity_band, np.ones(valid.shape, np.uint16))
        arrays[inp.name] = arr
    if cat.aoi_wkt is not None:
        from chain.features import aoi_mask

        valid &= aoi_mask(cat, Window(c0, r0, c1 - c0, r1 - r0))
    if any(p for pp in pad for p in pp):
        arrays = {k: np.pad(v, ((0, 0), *pad), mode="edge") for k, v in arrays.items()}
        valid = np.pad(valid, pad, constant_values=False)
        per_sensor = {k: np.pad(v, pad, constant_values=0) for k, v in per_sensor.items()}
    return Region(arrays, valid, per_sensor)


@dataclass(frozen=True)
class Lattice:
    """Windows of ``size`` px every ``size - overlap`` px, anchored at the grid's origin, on one axis of ``n`` px."""

    size: int
    overlap: int

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    def starts(self, n: int) -> np.ndarray:
        """Start of every window of the axis: the first at -overlap/2, the last the first to reach the end."""
        last = max(0, int(np.ceil((n + self.overlap // 2 - self.size) / self.stride)))
        return np.arange(last + 1) * self.stride - self.overlap // 2

    def touching(self, n: int, a: int, b: int) -> np.ndarray:
        """The starts of the windows that hold a pixel of [a, b)."""
        s = self.starts(n)
        return s[(s < b) & (s + self.size > a)]

    def ramp(self) -> np.ndarray:
        """(size,) weights: up over the first ``overlap`` px, down over the last, 1 between; neighbours sum to 1."""
        x = np.arange(self.size, dtype=np.float64) + 0.5
        if self.overlap == 0:
            return np.ones(self.size, np.float32)
        return (np.clip(x / self.overlap, 0, 1) * np.clip((self.size - x) / self.overlap, 0, 1)).astype(np.float32)


def predict_blended(model: torch.nn.Module, cat: Catalog, spec: FeatureSpec, inputs: list[PatchInput], window: Window,
                    lattice: Lattice, n_classes: int, device: torch.device, seconds: dict[str, float] | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(mappable (h, w), probabilities (n mappable, K) row-major, per-sensor counts) of ``window``: the blended windows.

    ``model`` takes the inputs as tensors (1, C, s, s) in ``inputs``' order and returns probabilities (1, K, s, s).
    The inputs are read once over the union of the windows touching ``window``; windows run one at a time so
    that a window's output never depends on which others share its batch (the same map for any tiling).
    """
    import time

    import torch

    from chain.deep.pipeline import autocast_dtype, upload

    seconds = seconds if seconds is not None else {}
    g = cat.grid
    r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    rows, cols = lattice.touching(g.height, r0, r0 + h), lattice.touching(g.width, c0, c0 + w)
    top, left = int(rows[0]), int(cols[0])
    t0 = time.perf_counter()
    region = read_region(cat, spec, inputs, top, left, int(rows[-1]) + lattice.size - top, int(cols[-1]) + lattice.size - left)
    seconds["read"] = seconds.get("read", 0.0) + time.perf_counter() - t0
    t0 = time.perf_counter()
    tensors = [upload(region.arrays[i.name], device) for i in inputs]
    ramp = torch.as_tensor(lattice.ramp(), device=device)
    acc = torch.zeros((n_classes, h, w), dtype=torch.float32, device=device)
    total = torch.zeros((h, w), dtype=torch.float32, device=device)
    low = autocast_dtype(device)
    s = lattice.size
    with torch.inference_mode(), torch.autocast(device.type, dtype=low or torch.float32, enabled=low is not None):
        for wr in rows.tolist():
            for wc in cols.tolist():
                a, b = wr - top, wc - left
                proba = model(*(t[None, :, a:a + s, b:b + s].contiguous() for t in tensors))[0].float()
                # the part of the window inside the tile, and where it lands in the tile
                ir0, ir1 = max(wr, r0), min(wr + s, r0 + h)
                ic0, ic1 = max(wc, c0), min(wc + s, c0 + w)
                weight = ramp[ir0 - wr:ir1 - wr, None] * ramp[None, ic0 - wc:ic1 - wc]
                acc[:, ir0 - r0:ir1 - r0, ic0 - c0:ic1 - c0] += proba[:, ir0 - wr:ir1 - wr, ic0 - wc:ic1 - wc] * weight
                total[ir0 - r0:ir1 - r0, ic0 - c0:ic1 - c0] += weight
    out = (acc / total).cpu().numpy()
    seconds["network"] = seconds.get("network", 0.0) + time.perf_counter() - t0
    core = (slice(r0 - top, r0 - top + h), slice(c0 - left, c0 - left + w))
    valid = region.valid[core]
    return valid, out[:, valid].T.copy(), {k: v[core] for k, v in region.per_sensor.items()}


# ---- training tiles ---------------------------------------------------------------------------------------


@dataclass
class LabelledTiles:
    """Training or validation tiles: inputs (n, C, s, s) per input name, labels (n, s, s) int64 (-1 = unlabelled)."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray
    origins: np.ndarray  # (n, 2) grid (row, col) of each tile's pixel (0, 0)


def labelled_tiles(cat: Catalog, spec: FeatureSpec, inputs: list[PatchInput], polys: gpd.GeoDataFrame, classes: list[int],
                   size: int, margin: int, desc: str = "tiles", group_px: int = 512) -> LabelledTiles:
    """Tiles around the polygons ``polys`` (``code``): the cells of a lattice of ``size`` px that hold a labelled pixel,
    each widened by ``margin`` px on every side (room for random crops). A pixel whose centre is in a polygon is
    labelled by its class index in ``classes``; unknown classes, unmappable pixels and everything else: -1 (weight 0
    in the loss). The inputs are read once per block of ``group_px`` px holding cells (computing the S2 features of a
    window has a fixed cost per call, ~1 s at 1.5 m: once per cell would multiply it). Memory: the tiles and one
    block, never a raster of the whole grid."""
    from rasterio.features import rasterize
    from shapely.geometry import box

    from chain.log import Progress

    g = cat.grid
    index = {c: i for i, c in enumerate(classes)}
    polys = polys[polys["code"].isin(classes)]
    inv = ~g.affine
    cells: set[tuple[int, int]] = set()
    for x0, y0, x1, y1 in polys.bounds.itertuples(index=False):  # candidate cells: those the polygons' boxes touch
        (ca, ra), (cb, rb) = inv * (x0, y1), inv * (x1, y0)
        for r in range(max(int(ra) // size, 0), min(int(rb) // size, (g.height - 1) // size) + 1):
            for c in range(max(int(ca) // size, 0), min(int(cb) // size, (g.width - 1) // size) + 1):
                cells.add((r, c))
    span = size + 2 * margin
    arrays: dict[str, list[np.ndarray]] = {}
    labels, origins = [], []
    per = max(1, group_px // size)
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, c in sorted(cells):
        groups.setdefault((r // per, c // per), []).append((r, c))
    with Progress(len(groups), desc) as bar:
        for members in groups.values():
            bar.update()
            kept = []
            for r, c in members:
                top, left = r * size - margin, c * size - margin
                t = g.affine * (left, top)
                near = polys.iloc[polys.sindex.query(box(t[0], t[1] - span * abs(g.affine.e), t[0] + span * g.affine.a, t[1]),
                                                     predicate="intersects")]
                if len(near):
                    lab = rasterize(((geom, index[int(code)] + 1) for geom, code in zip(near.geometry, near["code"], strict=True)),
                                    out_shape=(span, span), transform=g.window_transform(Window(left, top, span, span)), fill=0,
                                    dtype="int16").astype(np.int64) - 1
                    if (lab[margin:margin + size, margin:margin + size] >= 0).any():
                        kept.append((top, left, lab))
            if not kept:
                continue
            gt, gl = min(k[0] for k in kept), min(k[1] for k in kept)
            block = read_region(cat, spec, inputs, gt, gl, max(k[0] for k in kept) + span - gt, max(k[1] for k in kept) + span - gl)
            for top, left, lab in kept:
                cut = (slice(top - gt, top - gt + span), slice(left - gl, left - gl + span))
                lab[~block.valid[cut]] = -1
                if not (lab[margin:margin + size, margin:margin + size] >= 0).any():
                    continue
                for name, arr in block.arrays.items():
                    arrays.setdefault(name, []).append(arr[(slice(None), *cut)].astype(np.float16))
                labels.append(lab)
                origins.append((top, left))
    n = len(labels)
    return LabelledTiles({k: np.stack(v) for k, v in arrays.items()},
                         np.stack(labels) if n else np.empty((0, span, span), np.int64),
                         np.asarray(origins, np.int64).reshape(n, 2))
