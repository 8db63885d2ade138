"""Patches for patch-based models, read once per tile and cut with strided views.

A model declares its inputs (``PatchInput``): patches of the chain's features on the grid (a series,
any feature: ``kind="grid"``), or of a source's images on their own pixels (``kind`` one of the
source's ``native_kinds``, e.g. SPOT's pan, ms, vhr, pxs). A ``TileBlock`` reads, for one tile, each
input once over the tile plus a halo of the patch radius; ``gather`` then cuts the patches of any set
of grid pixels from ``sliding_window_view``s of those arrays (no Python loop over pixels, no
re-read). Patches that run off the scene are padded by replicating the edge, the same way whatever
the tiling, so a tiled map equals an untiled one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window

from chain.errors import ConfigError
from chain.features import compute_features, mappable

if TYPE_CHECKING:
    from chain.catalog import Catalog
    from chain.spec import FeatureSpec


@dataclass(frozen=True)
class PatchInput:
    name: str
    kind: str  # "grid" (chain features) or one of the source's native kinds
    size: int  # patch side, in the source's own pixels
    index: tuple[int, ...] = ()  # grid: feature indices, time-major when steps > 1 (t0d0, t0d1, ..., t1d0, ...)
    steps: int = 1  # grid series: number of dates (channels per date = len(index) / steps)
    source: str = ""  # native kinds: the source whose image it is (e.g. "spot")
    dates: tuple[str, ...] = ()  # grid series: the ISO date of each step (temporal models read their days)

    def channels(self, cat: Catalog) -> int:
        if self.kind == "grid":
            return len(self.index)
        return int(native_source(cat, self).native_channels(self.kind))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["index"], d["dates"] = list(self.index), list(self.dates)
        if not self.dates:
            d.pop("dates")  # the patch models' manifests stay as they were
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchInput:
        return cls(d["name"], d["kind"], int(d["size"]), tuple(d["index"]), int(d["steps"]), d.get("source", ""),
                   tuple(d.get("dates", ())))


def native_source(cat: Catalog, inp: PatchInput) -> Any:
    src = cat.source(inp.source)
    if src is None:
        from chain.sources.base import source_class

        raise ConfigError(f"patch input {inp.name!r} reads the {source_class(inp.source).title} images: add inputs.{inp.source}")
    return src


def check_native(cat: Catalog, inputs: list[PatchInput], why: str) -> None:
    """Native images are read on their own pixels: their CRS must be the grid's (before any heavy step)."""
    for inp in inputs:
        if inp.kind != "grid":
            crs = native_source(cat, inp).native_crs(inp.kind)
            if crs != cat.grid.crs:
                raise ConfigError(f"{why} reads {inp.source} patches on the images' own pixels: set grid.crs to their CRS "
                                  f"({crs.to_string()}; the grid is in {cat.grid.crs.to_string()})")


class TileBlock:
    """The inputs of one tile (plus halo), ready to cut patches from."""

    def __init__(self, cat: Catalog, spec: FeatureSpec, inputs: list[PatchInput], window: Window):
        self.cat, self.inputs, self.window = cat, inputs, window
        grid = cat.grid
        self.arrays: dict[str, np.ndarray] = {}
        self.origin: dict[str, tuple[int, int]] = {}  # (row, col) of arrays[..][:, 0, 0] in the source's pixels
        self.transform: dict[str, Any] = {}  # native input name -> its image's affine transform
        r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        grid_inputs = [i for i in inputs if i.kind == "grid"]
        valid = None
        if grid_inputs:
            g = max(i.size // 2 for i in grid_inputs)
            er0, ec0 = max(r0 - g, 0), max(c0 - g, 0)
            er1, ec1 = min(r0 + h + g, grid.height), min(c0 + w + g, grid.width)
            block = compute_features(cat, spec, Window(ec0, er0, ec1 - ec0, er1 - er0))
            pad = ((0, 0), (er0 - (r0 - g), (r0 + h + g) - er1), (ec0 - (c0 - g), (c0 + w + g) - ec1))
            values = np.pad(block.values, pad, mode="edge")
            core = (slice(r0 - er0, r0 - er0 + h), slice(c0 - ec0, c0 - ec0 + w))
            self.n_valid = block.n_valid[core]
            self.per_sensor = {k: v[core] for k, v in block.per_sensor.items()}
            valid = mappable(block.values[:, core[0], core[1]], self.n_valid)
            for inp in grid_inputs:
                self.arrays[inp.name] = values[list(inp.index)]
                self.origin[inp.name] = (r0 - g, c0 - g)
        for inp in inputs:
            if inp.kind != "grid":
                self._read_native(inp, r0, c0, h, w)
        if valid is None:
            valid = np.ones((h, w), bool)
        for inp in inputs:
            if inp.kind != "grid":
                valid &= self._native_valid(inp, r0, c0, h, w)
        if cat.aoi_wkt is not None and not grid_inputs:
            from chain.features import aoi_mask

            valid &= aoi_mask(cat, window)
        self.valid = valid
        self.n_valid = np.where(self.valid, getattr(self, "n_valid", 1), 0).astype(np.uint16)
        if not grid_inputs:
            self.per_sensor = {native_source(cat, inputs[0]).validity_band: self.valid.astype(np.uint16)}

    def _centres(self, inp: PatchInput, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (row, col) of grid pixel centres in the native image's pixels."""
        t = self.transform[inp.name]
        x, y = self.cat.grid.affine * (cols + 0.5, rows + 0.5)  # type: ignore[operator]
        c, r = ~t * (x, y)
        return np.asarray(r), np.asarray(c)

    def _read_native(self, inp: PatchInput, r0: int, c0: int, h: int, w: int) -> None:
        src = native_source(self.cat, inp)
        check_native(self.cat, [inp], "a patch model")
        self.transform[inp.name] = src.native_transform(inp.kind)
        rr, cc = self._centres(inp, np.array([r0, r0 + h - 1]), np.array([c0, c0 + w - 1]))
        top = int(np.floor(rr.min() - inp.size / 2 + 0.5)) - 1
        left = int(np.floor(cc.min() - inp.size / 2 + 0.5)) - 1
        bottom = int(np.floor(rr.max() - inp.size / 2 + 0.5)) + inp.size + 1
        right = int(np.floor(cc.max() - inp.size / 2 + 0.5)) + inp.size + 1
        self.arrays[inp.name] = src.read_native(inp.kind, top, left, bottom - top, right - left)
        self.origin[inp.name] = (top, left)

    def _native_valid(self, inp: PatchInput, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        nd = native_source(self.cat, inp).native_nodata()
        if nd is None:
            return np.ones((h, w), bool)
        rows, cols = np.mgrid[r0:r0 + h, c0:c0 + w]
        r, c = self._centres(inp, rows.ravel(), cols.ravel())
        orow, ocol = self.origin[inp.name]
        ri = np.clip(np.floor(r).astype(int) - orow, 0, self.arrays[inp.name].shape[1] - 1)
        ci = np.clip(np.floor(c).astype(int) - ocol, 0, self.arrays[inp.name].shape[2] - 1)
        return (self.arrays[inp.name][:, ri, ci] != nd).all(axis=0).reshape(h, w)

    def corners(self, inp: PatchInput, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(top, left) in ``arrays[inp.name]`` of the patches of grid pixels (rows, cols) (global indices)."""
        orow, ocol = self.origin[inp.name]
        if inp.kind == "grid":
            return rows - inp.size // 2 - orow, cols - inp.size // 2 - ocol
        r, c = self._centres(inp, rows, cols)
        return np.floor(r - inp.size / 2 + 0.5).astype(int) - orow, np.floor(c - inp.size / 2 + 0.5).astype(int) - ocol

    def gather(self, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        """Patches (n, C, s, s) float32 of each input, for grid pixels (rows, cols) of this tile (global indices)."""
        out = {}
        for inp in self.inputs:
            arr = self.arrays[inp.name]
            top, left = self.corners(inp, rows, cols)
            view = sliding_window_view(arr, (inp.size, inp.size), axis=(1, 2))  # (C, H', W', s, s), no copy
            out[inp.name] = np.ascontiguousarray(view[:, top, left].transpose(1, 0, 2, 3))
        return out


def by_tile(cat: Catalog, rows: np.ndarray, cols: np.ndarray, tile_size: int) -> list[tuple[Window, np.ndarray]]:
    """The grid pixels (rows, cols) grouped by the tile of ``tile_size`` holding them: (tile window, their indices)."""
    from chain.grid import make_tiles

    tiles = {(int(t.window.row_off), int(t.window.col_off)): t.window for t in make_tiles(cat.grid, tile_size)}
    r0, c0 = rows // tile_size * tile_size, cols // tile_size * tile_size
    key = r0.astype(np.int64) * (cat.grid.width + tile_size) + c0
    order = np.argsort(key, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(key[order])) + 1) if len(order) else []
    return [(tiles[(int(r0[g[0]]), int(c0[g[0]]))], g) for g in groups]


def extract(cat: Catalog, spec: FeatureSpec, inputs: list[PatchInput], rows: np.ndarray, cols: np.ndarray,
            tile_size: int, dtype: Any = np.float16, desc: str = "patches") -> dict[str, np.ndarray]:
    """Patches of grid pixels (rows, cols), in that order: each tile of the grid is read once for all its pixels."""
    from chain.log import Progress

    out: dict[str, np.ndarray] = {}
    groups = by_tile(cat, rows, cols, tile_size)
    with Progress(len(groups), desc) as bar:
        for window, idx in groups:
            for name, arr in TileBlock(cat, spec, inputs, window).gather(rows[idx], cols[idx]).items():
                if name not in out:
                    out[name] = np.empty((len(rows), *arr.shape[1:]), dtype)
                out[name][idx] = arr
            bar.update()
    return out
