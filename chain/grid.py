"""The reference grid and its tiles: small frozen values and pure functions, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from affine import Affine
from rasterio import windows
from rasterio.crs import CRS
from rasterio.windows import Window


@dataclass(frozen=True)
class GridSpec:
    """A raster grid: CRS + affine transform + shape (rows = height, cols = width)."""

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f
    width: int
    height: int

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def res(self) -> tuple[float, float]:
        a, _, _, _, e, _ = self.transform
        return abs(a), abs(e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform
        return (c, f + e * self.height, c + a * self.width, f)

    def window_transform(self, window: Window) -> Affine:
        return windows.transform(window, self.affine)

    def to_dict(self) -> dict[str, Any]:
        return {"crs_wkt": self.crs_wkt, "transform": list(self.transform), "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridSpec:
        return cls(d["crs_wkt"], tuple(d["transform"]), int(d["width"]), int(d["height"]))

    @classmethod
    def from_bounds(cls, crs: CRS, bounds: tuple[float, float, float, float], res: float) -> GridSpec:
        """A north-up grid covering ``bounds``, origin snapped to multiples of ``res``."""
        left, bottom, right, top = bounds
        left = math.floor(left / res) * res
        top = math.ceil(top / res) * res
        width = max(1, math.ceil((right - left) / res - 1e-9))
        height = max(1, math.ceil((top - bottom) / res - 1e-9))
        return cls(crs.to_wkt(), (res, 0.0, left, 0.0, -res, top), width, height)


@dataclass(frozen=True)
class Tile:
    """A tile of the grid: its core window plus a halo (extra pixels read around it, cropped after)."""

    row: int
    col: int
    window: Window
    halo_px: int = 0

    @property
    def id(self) -> str:
        return f"r{self.row:03d}c{self.col:03d}"

    def read_window(self, grid: GridSpec) -> Window:
        """The window to read: core + halo, clipped to the grid."""
        w = self.window
        r0 = max(0, int(w.row_off) - self.halo_px)
        c0 = max(0, int(w.col_off) - self.halo_px)
        r1 = min(grid.height, int(w.row_off + w.height) + self.halo_px)
        c1 = min(grid.width, int(w.col_off + w.width) + self.halo_px)
        return Window(c0, r0, c1 - c0, r1 - r0)

    def core_slices(self, grid: GridSpec) -> tuple[slice, slice]:
        """Slices that crop an array read with ``read_window`` back to the core window."""
        rw = self.read_window(grid)
        r = int(self.window.row_off - rw.row_off)
        c = int(self.window.col_off - rw.col_off)
        return slice(r, r + int(self.window.height)), slice(c, c + int(self.window.width))


def make_tiles(grid: GridSpec, tile_size_px: int, halo_px: int = 0) -> list[Tile]:
    """Cover the grid with tiles of ``tile_size_px`` (the last row/column may be smaller), row-major."""
    if tile_size_px < 1:
        raise ValueError(f"tile_size_px must be >= 1, got {tile_size_px}")
    tiles = []
    for i, r0 in enumerate(range(0, grid.height, tile_size_px)):
        for j, c0 in enumerate(range(0, grid.width, tile_size_px)):
            h = min(tile_size_px, grid.height - r0)
            w = min(tile_size_px, grid.width - c0)
            tiles.append(Tile(i, j, Window(c0, r0, w, h), halo_px))
    return tiles
