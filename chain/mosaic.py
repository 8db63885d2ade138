"""Tiles -> one tiled, compressed GeoTIFF (Cloud-Optimized with overviews when asked), window by window."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil

from chain.atomic import atomic_path
from chain.grid import GridSpec, Tile


def assemble(
    out_path: Path,
    grid: GridSpec,
    tiles: Sequence[Tile],
    tile_path: dict[str, Path],
    dtype: str,
    nodata: float | None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    description: str | list[str] | None = None,
    cog: bool = True,
    compress: str = "deflate",
    overview_resampling: str = "nearest",
) -> None:
    """Copy each tile's file into its window of ``out_path``; memory is one tile at a time."""
    with rasterio.open(tile_path[tiles[0].id]) as first:
        count = first.count
        tile_descriptions = [d or "" for d in first.descriptions]
    # no description given: the tiles' own band names (PixelsValidity names one band per sensor)
    descriptions = [description] if isinstance(description, str) else (description or tile_descriptions)
    with atomic_path(out_path) as tmp:
        stage = tmp.with_name(tmp.stem + ".stage.tif") if cog else tmp
        profile = {
            "driver": "GTiff", "dtype": dtype, "count": count, "width": grid.width, "height": grid.height,
            "crs": grid.crs, "transform": grid.affine, "nodata": nodata, "compress": compress,
            "tiled": True, "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER",
        }
        try:
            with rasterio.open(stage, "w", **profile) as dst:
                for t in tiles:
                    with rasterio.open(tile_path[t.id]) as src:
                        dst.write(src.read().astype(dtype, copy=False), window=t.window)
                if colormap:
                    dst.write_colormap(1, colormap)
                for i, d in enumerate(descriptions, start=1):
                    dst.set_band_description(i, d)
                if not cog:
                    factors = [f for f in (2, 4, 8, 16, 32) if min(grid.width, grid.height) // f >= 64]
                    if factors:
                        dst.build_overviews(factors, rasterio.enums.Resampling[overview_resampling])
            if cog:
                rasterio.shutil.copy(
                    stage, tmp, driver="COG", COMPRESS=compress.upper(), BLOCKSIZE=256,
                    OVERVIEW_RESAMPLING=overview_resampling.upper(), BIGTIFF="IF_SAFER",
                    **({"INTERLEAVE": "BAND"} if count > 1 else {}),
                )
        finally:
            if cog and stage.exists():
                stage.unlink()


def colormap_for(colors: dict[int, tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    cmap = {0: (0, 0, 0, 0)}
    cmap.update({int(c): (*rgb, 255) for c, rgb in colors.items()})
    return cmap


def read_window_array(path: Path, tile: Tile) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, window=tile.window)
