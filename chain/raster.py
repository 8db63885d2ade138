"""Raster I/O through rasterio: reading any source onto the reference grid, writing GeoTIFFs atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from chain.atomic import atomic_path
from chain.errors import InputError, InputMissingError
from chain.grid import GridSpec


def open_raster(path: Path | str) -> rasterio.DatasetReader:
    """Open with a message that names the file when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise InputMissingError(f"raster {str(path)!r} does not exist")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"raster {str(path)!r} cannot be read by GDAL ({exc}); is it a complete GeoTIFF? Re-download or re-export it") from None


def same_grid(src: rasterio.DatasetReader, grid: GridSpec) -> bool:
    return (
        src.width == grid.width
        and src.height == grid.height
        and src.crs is not None
        and src.crs == grid.crs
        and src.transform.almost_equals(grid.affine, precision=1e-6)
    )


def read_on_grid(
    path: Path | str,
    grid: GridSpec,
    window: Window,
    resampling: Resampling = Resampling.nearest,
    nodata: float | None = None,
    band: int | list[int] = 1,
) -> np.ndarray:
    """Read band(s) of ``path`` over ``window`` of ``grid``, warping on the fly when the grids differ.

    Pixels outside the source get ``nodata`` (the source's nodata when None).
    """
    try:
        with rasterio.open(path) as src:
            if same_grid(src, grid):
                return src.read(band, window=window)
            fill = nodata if nodata is not None else src.nodata
            with WarpedVRT(
                src,
                crs=grid.crs,
                transform=grid.affine,
                width=grid.width,
                height=grid.height,
                resampling=resampling,
                nodata=fill,
            ) as vrt:
                return vrt.read(band, window=window)
    except RasterioIOError as exc:
        raise InputError(f"raster {str(path)!r} could not be read over window {window} ({exc}); the file may be corrupt") from None


def tile_profile(grid: GridSpec, window: Window, dtype: str, nodata: float | None, count: int = 1) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "dtype": dtype,
        "count": count,
        "width": int(window.width),
        "height": int(window.height),
        "crs": grid.crs,
        "transform": grid.window_transform(window),
        "nodata": nodata,
        "compress": "deflate",
        "tiled": window.width >= 16 and window.height >= 16 and window.width % 16 == 0 and window.height % 16 == 0,
    }


def write_tile(path: Path, data: np.ndarray, grid: GridSpec, window: Window, nodata: float | None,
               descriptions: list[str] | None = None) -> None:
    """Write a (bands, h, w) or (h, w) array as a GeoTIFF covering ``window`` of ``grid``, atomically."""
    arr = data[None] if data.ndim == 2 else data
    profile = tile_profile(grid, window, arr.dtype.name, nodata, arr.shape[0])
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            for i, d in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, d)


# A palette for classes without a colour in the config: distinct, and readable on a map.
DEFAULT_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
]


def parse_color(value: Any) -> tuple[int, int, int]:
    if isinstance(value, str):
        v = value.lstrip("#")
        if len(v) != 6:
            raise ValueError(f"colour {value!r} is not #RRGGBB")
        return int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16)
    r, g, b = (int(x) for x in value)
    return r, g, b
