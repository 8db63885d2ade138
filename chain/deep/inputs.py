"""Patches for patch-based models, read once per tile and cut with strided views.

A model declares its inputs (``PatchInput``): patches of the chain's features on the grid (an S2
series, S1 series, any feature), or of the SPOT images on their native lattices (PAN, MS, or
"vhr" = PAN + MS repeated to the PAN pixel). A ``TileBlock`` reads, for one tile, each source once
over the tile plus a halo of the patch radius; ``gather`` then cuts the patches of any set of grid
pixels from ``sliding_window_view``s of those arrays (no Python loop over pixels, no re-read).
Patches that run off the scene are padded by replicating the edge, the same way whatever the
tiling, so a tiled map equals an untiled one.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import rasterio
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.enums import Resampling
from rasterio.windows import Window

from chain.catalog import Catalog
from chain.errors import ConfigError
from chain.features import FeatureSpec, compute_features

NATIVE = ("pan", "ms", "vhr", "pxs")


@dataclass(frozen=True)
class PatchInput:
    name: str
    kind: str  # "grid" (chain features) or one of NATIVE
    size: int  # patch side, in the source's own pixels
    index: tuple[int, ...] = ()  # grid: feature indices, time-major when steps > 1 (t0d0, t0d1, ..., t1d0, ...)
    steps: int = 1  # grid series: number of dates (channels per date = len(index) / steps)

    def channels(self, cat: Catalog) -> int:
        if self.kind == "grid":
            return len(self.index)
        n_ms = len(cat.spot.ms_bands)
        return {"pan": 1, "ms": n_ms, "vhr": 1 + n_ms, "pxs": n_ms}[self.kind]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["index"] = list(self.index)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PatchInput":
        return cls(d["name"], d["kind"], int(d["size"]), tuple(d["index"]), int(d["steps"]))


def s2_series_index(spec: FeatureSpec) -> tuple[tuple[int, ...], int]:
    """Indices of the S2 features (bands + indices per date) in time-major order, and the number of dates."""
    T, D = len(spec.dates), len(spec.bands) + len(spec.indices)
    if T == 0:
        raise ConfigError("this model needs the Sentinel-2 series: add inputs.s2")
    return tuple(d * T + t for t in range(T) for d in range(D)), T  # names are band-major: feature d, date t at d*T + t


def s1_series_index(spec: FeatureSpec) -> tuple[tuple[int, ...], int]:
    """Indices of the S1 features, time-major: one channel per orbit group and polarisation.

    Separate orbit directions have their own date grids; the series are aligned by rank and cut to
    the shortest (they differ by at most a date or two over a season).
    """
    if not spec.s1:
        raise ConfigError("this model needs the Sentinel-1 series: add inputs.s1")
    offset = len(spec.names) - len(spec.stack) - len(spec.spot) - len(spec.s1)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(spec.s1):
        groups.setdefault(re.sub(r"_\d{8}$", "", name), []).append(offset + i)
    T = min(len(v) for v in groups.values())
    keys = sorted(groups)
    return tuple(groups[k][t] for t in range(T) for k in keys), T


def halo_px(inputs: list[PatchInput], cat: Catalog) -> int:
    """Grid pixels around a tile that its patches can reach."""
    res = abs(cat.grid.res[0])
    halo = 0
    for inp in inputs:
        if inp.kind == "grid":
            halo = max(halo, inp.size // 2)
        else:
            native = cat.spot.ms_res if inp.kind == "ms" else cat.spot.pan_res
            halo = max(halo, math.ceil((inp.size / 2 + 1) * native / res))
    return halo


def _clip_pad(read, r0: int, c0: int, h: int, w: int, height: int, width: int) -> np.ndarray:
    """``read(window)`` of rows r0..r0+h, cols c0..c0+w of a (height x width) raster, edge-padded outside it."""
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + h, height), min(c0 + w, width)
    if rr1 <= rr0 or cc1 <= cc0:
        raise ConfigError("a tile lies outside the SPOT images: patch models need SPOT over the whole grid (set grid.bounds or grid.aoi inside it)")
    arr = read(Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
    pad = ((0, 0), (rr0 - r0, r0 + h - rr1), (cc0 - c0, c0 + w - cc1))
    return np.pad(arr, pad, mode="edge") if any(p for q in pad for p in q) else arr


class TileBlock:
    """The sources of one tile (plus halo), ready to cut patches from."""

    def __init__(self, cat: Catalog, spec: FeatureSpec, inputs: list[PatchInput], window: Window):
        self.cat, self.inputs, self.window = cat, inputs, window
        grid = cat.grid
        self.arrays: dict[str, np.ndarray] = {}
        self.origin: dict[str, tuple[int, int]] = {}  # (row, col) of arrays[..][:, 0, 0] in the source's pixels
        self.native_transform: dict[str, Any] = {}  # SPOT image path -> its affine transform
        r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        grid_inputs = [i for i in inputs if i.kind == "grid"]
        self.valid = None
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
            self.valid = self.n_valid > 0
            self.valid &= np.isfinite(block.values[:, r0 - er0:r0 - er0 + h, c0 - ec0:c0 - ec0 + w]).all(axis=0)
            for inp in grid_inputs:
                self.arrays[inp.name] = values[list(inp.index)]
                self.origin[inp.name] = (r0 - g, c0 - g)
        for inp in inputs:
            if inp.kind in NATIVE:
                self._read_native(inp, r0, c0, h, w)
        if self.valid is None:
            self.valid = np.ones((h, w), bool)
        for inp in inputs:
            if inp.kind in NATIVE:
                self.valid &= self._native_valid(inp, r0, c0, h, w)
        if cat.aoi_wkt is not None and not grid_inputs:
            from chain.features import aoi_mask

            self.valid &= aoi_mask(cat, window)
        self.n_valid = np.where(self.valid, getattr(self, "n_valid", 1), 0).astype(np.uint16)
        if not grid_inputs:
            self.per_sensor = {"SPOT valid": self.valid.astype(np.uint16)}

    def _centres(self, inp: PatchInput, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (row, col) of grid pixel centres in the native source's pixels."""
        path = self.cat.spot.ms if inp.kind == "ms" else self.cat.spot.pan
        t = self.native_transform[path]
        x, y = self.cat.grid.affine * (cols + 0.5, rows + 0.5)
        c, r = ~t * (x, y)
        return np.asarray(r), np.asarray(c)

    def _read_native(self, inp: PatchInput, r0: int, c0: int, h: int, w: int) -> None:
        spot = self.cat.spot
        path = spot.ms if inp.kind == "ms" else spot.pan
        with rasterio.open(path) as src:
            if src.crs != self.cat.grid.crs:
                raise ConfigError("patch models read SPOT on its own lattice: set grid.crs to the SPOT images' CRS "
                                  f"({src.crs.to_string()})")
            self.native_transform[path] = src.transform
            rr, cc = self._centres(inp, np.array([r0, r0 + h - 1]), np.array([c0, c0 + w - 1]))
            top = int(np.floor(rr.min() - inp.size / 2 + 0.5)) - 1
            left = int(np.floor(cc.min() - inp.size / 2 + 0.5)) - 1
            bottom = int(np.floor(rr.max() - inp.size / 2 + 0.5)) + inp.size + 1
            right = int(np.floor(cc.max() - inp.size / 2 + 0.5)) + inp.size + 1
            arr = _clip_pad(lambda win: src.read(window=win).astype(np.float32), top, left, bottom - top, right - left,
                            src.height, src.width)
            if inp.kind in ("vhr", "pxs"):
                with rasterio.open(spot.ms) as ms:
                    # the MS bands on the PAN pixels of the same window: repeated (vhr: nearest, each MS pixel
                    # ratio x ratio times) or interpolated (pxs: bilinear, then pansharpened)
                    bounds = rasterio.windows.bounds(Window(left, top, right - left, bottom - top), src.transform)
                    mwin = rasterio.windows.from_bounds(*bounds, transform=ms.transform)
                    how = Resampling.nearest if inp.kind == "vhr" else Resampling.bilinear
                    msarr = ms.read(window=mwin, out_shape=(ms.count, arr.shape[1], arr.shape[2]), boundless=True,
                                    fill_value=spot.nodata or 0, resampling=how).astype(np.float32)
                arr = np.concatenate([arr, msarr]) if inp.kind == "vhr" else pansharpen(arr[0], msarr, spot.pan_fit)
        self.arrays[inp.name] = arr
        self.origin[inp.name] = (top, left)

    def _native_valid(self, inp: PatchInput, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        nd = self.cat.spot.nodata
        if nd is None:
            return np.ones((h, w), bool)
        rows, cols = np.mgrid[r0:r0 + h, c0:c0 + w]
        r, c = self._centres(inp, rows.ravel(), cols.ravel())
        orow, ocol = self.origin[inp.name]
        ri = np.clip(np.floor(r).astype(int) - orow, 0, self.arrays[inp.name].shape[1] - 1)
        ci = np.clip(np.floor(c).astype(int) - ocol, 0, self.arrays[inp.name].shape[2] - 1)
        return (self.arrays[inp.name][:, ri, ci] != nd).all(axis=0).reshape(h, w)

    def gather(self, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        """Patches (n, C, s, s) float32 of each input, for grid pixels (rows, cols) of this tile (global indices)."""
        out = {}
        for inp in self.inputs:
            arr = self.arrays[inp.name]
            orow, ocol = self.origin[inp.name]
            if inp.kind == "grid":
                top, left = rows - inp.size // 2 - orow, cols - inp.size // 2 - ocol
            else:
                r, c = self._centres(inp, rows, cols)
                top = np.floor(r - inp.size / 2 + 0.5).astype(int) - orow
                left = np.floor(c - inp.size / 2 + 0.5).astype(int) - ocol
            view = sliding_window_view(arr, (inp.size, inp.size), axis=(1, 2))  # (C, H', W', s, s), no copy
            out[inp.name] = np.ascontiguousarray(view[:, top, left].transpose(1, 0, 2, 3))
        return out


def pansharpen(pan: np.ndarray, ms: np.ndarray, fit: tuple[float, ...]) -> np.ndarray:
    """Component substitution: each MS band (on the PAN pixels) x PAN / synthetic PAN.

    The synthetic PAN is the ingest's least-squares fit of PAN on the MS bands, so the ratio carries
    the PAN's spatial detail and keeps each band's level (a Brovey transform with fitted weights).
    """
    if not fit:
        synth = ms.mean(axis=0)
    else:
        synth = np.tensordot(np.asarray(fit[:-1], np.float32), ms, axes=1) + np.float32(fit[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(synth > 1e-6, pan / synth, 1.0).astype(np.float32)
    return ms * np.clip(gain, 0.0, 4.0)[None]


def model_inputs(model: Any, spec: FeatureSpec, cat: Catalog) -> list[PatchInput]:
    """The patch inputs of a model config (raises ConfigError when the inputs it needs are missing)."""
    kind = model.type
    if kind in ("multiresolcc", "m3fusion") or (kind == "rf_patch" and (model.pan_patch or model.pxs_patch)):
        if cat.spot is None:
            raise ConfigError(f"model.type {kind!r} needs a SPOT PAN + MS pair: add inputs.spot")
        with rasterio.open(cat.spot.pan) as src:
            if src.crs != cat.grid.crs:
                raise ConfigError(f"model.type {kind!r} reads SPOT patches on the images' own pixels: set grid.crs to their CRS "
                                  f"({src.crs.to_string()}; the grid is in {cat.grid.crs.to_string()})")
    if kind == "multiresolcc":
        if model.pan_patch % cat.spot.ratio:
            raise ConfigError(f"model.pan_patch ({model.pan_patch}) must be a multiple of the MS/PAN ratio ({cat.spot.ratio})")
        return [PatchInput("pan", "pan", model.pan_patch), PatchInput("ms", "ms", model.pan_patch // cat.spot.ratio)]
    if kind == "m3fusion":
        index, T = s2_series_index(spec)
        vhr = "pxs" if model.vhr_input == "pansharpened" else "vhr"
        return [PatchInput("s2", "grid", 1, index, T), PatchInput("vhr", vhr, model.vhr_patch)]
    if kind == "twinns":
        i2, t2 = s2_series_index(spec)
        i1, t1 = s1_series_index(spec)
        return [PatchInput("s2", "grid", model.patch, i2, t2), PatchInput("s1", "grid", model.patch, i1, t1)]
    if kind == "rf_patch":
        inputs = [PatchInput("features", "grid", model.patch_px, tuple(range(len(spec.names))))]
        return (inputs + ([PatchInput("pan", "pan", model.pan_patch)] if model.pan_patch else [])
                + ([PatchInput("pxs", "pxs", model.pxs_patch)] if model.pxs_patch else []))
    raise ConfigError(f"model.type {kind!r} has no patch inputs")


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
