"""What reading one grid tile costs from strip-organised GeoTIFFs, and from their tiled copies (``inputs.tiled_copies``).

A series of ``--files`` int16 bands (a smooth field plus noise, DEFLATE, GDAL's default strips as wide as the image)
of ``--rows`` rows and each width of ``--widths`` (10980: a Sentinel-2 tile). Printed per width: milliseconds per file
to read a 512² tile of the grid through ``chain.raster.read_on_grid`` (eight tiles along a row, files kept open as the
chain does, GDAL's block cache the share of a worker's 256 MiB that these files would have in a 396-file series of
36 dates x 11 files), from the strips and from the copies ingest makes, and each file's whole-file read (what the
read floor measures) shared per tile; plus the time to make the copies.

    python bench/tile_reads.py                      # 36 files, 1024 rows, widths 2048 and 10980
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from chain import raster, tiled_copies
from chain.grid import GridSpec
from chain.raster import read_on_grid

TILE = 512
SERIES_FILES = 396  # 36 dates x (10 bands + a mask): the files whose blocks share a worker's cache


def _forget() -> None:
    """Close the files ``read_on_grid`` keeps open: GDAL drops their cached blocks (each pass starts cold)."""
    kept = getattr(raster._open, "datasets", None)
    while kept:
        kept.popitem()[1].close()
        raster._give_back(1)


def make_series(folder: Path, n: int, rows: int, width: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        field = 1500 + 800 * np.sin(xx / (40 + i)) * np.cos(yy / (55 + 2 * i))
        data = (field + rng.normal(0, 60, field.shape)).astype(np.int16)
        path = folder / f"band_{width}_{i:02d}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=width, height=rows, count=1, dtype="int16", crs="EPSG:32631",
                           transform=from_origin(300000, 5000000, 10, 10), nodata=-10000, compress="deflate") as dst:
            dst.write(data, 1)
        paths.append(str(path))
    return paths


def per_tile_ms(paths: list[str], grid: GridSpec, tiles: int) -> float:
    _forget()
    with rasterio.Env(GDAL_CACHEMAX=max(1, 256 * len(paths) // SERIES_FILES) * 2**20):
        start = time.perf_counter()
        for col in range(tiles):
            for p in paths:
                read_on_grid(p, grid, Window(col * TILE, 0, TILE, TILE), Resampling.nearest)
        return (time.perf_counter() - start) / tiles / len(paths) * 1000


def whole_ms_per_tile(paths: list[str], grid: GridSpec) -> float:
    _forget()
    with rasterio.Env(GDAL_CACHEMAX=max(1, 256 * len(paths) // SERIES_FILES) * 2**20):
        start = time.perf_counter()
        for p in paths:
            with rasterio.open(p) as src:
                src.read(1)
        share = grid.width * grid.height / TILE**2
        return (time.perf_counter() - start) / len(paths) / share * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=36)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--widths", type=int, nargs="+", default=[2048, 10980])
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="chain-tile-reads-"))
    try:
        print(f"{'width':>6} {'strips ms/file/tile':>20} {'copies':>7} {'speed-up':>8} {'whole file, per tile':>21} "
              f"{'copying':>8}")
        for width in args.widths:
            paths = make_series(root, args.files, args.rows, width, seed=width)
            with rasterio.open(paths[0]) as src:
                grid = GridSpec(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height)
            start = time.perf_counter()
            copies = []
            for p in paths:
                job = tiled_copies.CopyJob("x", p, str(root / tiled_copies.copy_name(p)))
                tiled_copies.copy_file(job)
                copies.append(job.target)
            copying = time.perf_counter() - start
            tiles = min(8, width // TILE)
            per_tile_ms(paths[:2], grid, 1)  # first calls (numba, GDAL drivers) out of the timing
            strips = min(per_tile_ms(paths, grid, tiles) for _ in range(2))
            tiled = min(per_tile_ms(copies, grid, tiles) for _ in range(2))
            whole = min(whole_ms_per_tile(paths, grid) for _ in range(2))
            print(f"{width:>6} {strips:>20.2f} {tiled:>7.2f} {strips / tiled:>7.1f}x {whole:>21.2f} {copying:>7.1f}s",
                  flush=True)
            for p in paths + copies:
                os.remove(p)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
