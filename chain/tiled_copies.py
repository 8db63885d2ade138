"""Tiled copies of the inputs that are slow to read window by window (``inputs.tiled_copies``).

The chain reads its inputs one grid tile at a time (sampling, classify, the feature cube, model comparison), so
what a read costs is set by the file's internal blocks: GDAL decodes every block a window touches, whole. A
GeoTIFF written without ``TILED=YES`` (GDAL's default, and common for prepared series) is organised in strips
as wide as the image: a 512 x 512 window of a 10980-px-wide Sentinel-2 band decodes 512 full rows, 21x the
pixels wanted, and the next tile of the row decodes them again (the block cache cannot hold a tile row of a
year's series). JPEG 2000 tiles of 1024 px cost 4x. Ingest therefore writes such files once as 256 x 256-tiled
GeoTIFFs (64 x 64 for files coarser than the grid, read with a halo: ``copy_block``) in ``work/ingest/tiled`` and
the catalogue points at the copies: the same values (a lossless copy: same data type, no-data, georeferencing,
tags), read at the cost of the pixels wanted.

Measured (docs/performance.md): a 512² tile of a DEFLATE strip file 10980 px wide reads in 29.5 ms, from its copy in
1.2 ms (``bench/tile_reads.py``); on the time-series bench (2048², 396 files, 2 workers) sample 76 -> 49 s and classify
1 run 52-72 -> 38-47 s, for 12-13 s of copying in ingest.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from chain.catalog import Catalog
    from chain.grid import GridSpec

log = logging.getLogger(__name__)

WINDOW_PX = 512  # the default tile (grid.tile_size_px): the decision does not depend on the tile size chosen
MAX_COST = 4.0  # copied when a window decodes this many times the pixels it needs, or more
BLOCK = 256  # the copies' blocks: a 512² tile of a 10 m grid reads 4 of them
HALO_BLOCK = 64  # the blocks of a copy coarser than the grid (a 20 m band of a 10 m grid; see copy_block)


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    block: tuple[int, int]  # (rows, cols)
    pixel_size: float  # in grid units


def window_cost(layout: Layout, grid_res: float) -> float:
    """Pixels decoded per pixel wanted when a grid-aligned ``WINDOW_PX`` tile of the grid reads this file (the window
    in the file's pixels; each axis covers whole blocks; a window wider than the file reads the file's width)."""
    if not layout.pixel_size > 0:
        return 1.0
    side = max(1, round(WINDOW_PX * grid_res / layout.pixel_size))

    def along(n: int, block: int) -> float:
        wanted = min(side, n)
        covered = min(n, math.ceil(wanted / block) * block) if block < n else n
        return covered / wanted

    return along(layout.height, layout.block[0]) * along(layout.width, layout.block[1])


IMAGE_DRIVERS = ("GTiff", "JP2OpenJPEG")  # single georeferenced images; a DIMAP product is read in place


def _usable(src: Any) -> bool:
    """Georeferenced by its transform (RPCs or GCPs need their product's metadata: read in place)."""
    return src.crs is not None and not src.gcps[0] and src.rpcs is None


def _inspect(path: str, grid: GridSpec | None) -> tuple[Layout | None, list[str] | None]:
    """One open: an image's layout (size, blocks, pixel size in the grid's units), or the files a VRT mosaic reads;
    (None, None) for anything else (DIMAP, RPCs or GCPs, unreadable): read in place."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            if not _usable(src):
                return None, None
            if src.driver == "VRT":
                return None, [f for f in src.files if os.path.abspath(f) != os.path.abspath(path)]
            if src.driver not in IMAGE_DRIVERS or grid is None:
                return None, None
            size = abs(src.transform.a)
            if grid.crs is not None and src.crs != grid.crs:
                from rasterio.warp import transform_bounds

                left, _, right, _ = transform_bounds(src.crs, grid.crs, *src.bounds)
                size = (right - left) / src.width
            return Layout(src.width, src.height, tuple(src.block_shapes[0]), size), None
    except (RasterioIOError, ValueError):
        return None, None


def _cost(path: str, grid: GridSpec) -> tuple[float | None, list[str]]:
    """``window_cost`` of an image; of a VRT mosaic, the dearest of its sources' (a tile reads from them), and the
    sources (a VRT's copy materialises what GDAL reads from it)."""
    layout, sources = _inspect(path, grid)
    if layout is not None:
        return window_cost(layout, grid.res[0]), []
    if not sources:
        return None, []
    costs = [c for c in (_cost(s, grid)[0] for s in sources if s.lower().endswith((".tif", ".tiff", ".jp2"))) if c is not None]
    return (max(costs) if costs else None), sources


def survey(paths: list[str], grid: GridSpec, mode: str) -> dict[str, tuple[float, list[str]]]:
    """The files to copy (``mode``: auto, always or never), each with its window cost and (a VRT) its sources."""
    if mode == "never":
        return {}
    out = {}
    for p in dict.fromkeys(paths):
        cost, sources = _cost(p, grid)
        if cost is not None and (mode == "always" or cost >= MAX_COST):
            out[p] = (cost, sources)
    return out


def wanted(paths: list[str], grid: GridSpec, mode: str) -> dict[str, float]:
    """The files to copy (``mode``: auto, always or never), each with its window cost."""
    return {p: cost for p, (cost, _) in survey(paths, grid, mode).items()}


def copy_name(path: str, sources: list[str] | None = None) -> str:
    """A name for the copy of ``path``: its stem and a digest of where it is and which version (size, mtime; of a
    VRT's sources too: given, or found by opening it)."""
    key = ""
    if sources is None:
        sources = _inspect(path, None)[1] or []
    for p in [path, *sources]:
        try:
            st = os.stat(p)
            key += f"{os.path.realpath(p)}|{st.st_size}|{st.st_mtime_ns};"
        except OSError:  # a GDAL path (/vsizip/...): its text
            key += p + ";"
    stem = Path(path.split("!")[-1]).stem or "file"
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.tif"


@dataclass(frozen=True)
class CopyJob:
    """One file to copy; ``id`` names its dask task (map_tiles)."""

    id: str
    source: str
    target: str
    grid: GridSpec | None = None  # the catalogue's grid: the copy's blocks suit how tiles of it read the file


def copy_block(src: Any, grid: GridSpec | None) -> int:
    """The side of a copy's blocks. A file whose pixels are k x k blocks of the grid's (k >= 2: a 20 m band of a 10 m
    grid) is up-sampled bilinearly onto each tile with one source pixel of halo on each side (``raster._read_on_lattice``):
    a 512² tile reads a 258² window of a 20 m band, which touches 3 x 3 blocks of 256 (9x the pixels wanted, whenever
    GDAL's block cache no longer holds the neighbours) and 6 x 6 of 64 (2.2x). On the time-series bench (2048², 36
    dates, 216 files of 20 m bands), computing the 16 tiles' features in one process with the workers' 256 MiB cache:
    16.6-19.2 s with 256² blocks, 12.5-15.5 s with 64² (alternated, five times each); the copies are 3 % larger."""
    from chain.raster import lattice_factor

    k = lattice_factor(src, grid) if grid is not None else None
    return HALO_BLOCK if k is not None and k >= 2 else BLOCK


def copy_profile(src: Any, block: int = BLOCK) -> dict[str, Any]:
    """``src``'s profile as a tiled GeoTIFF (``block`` px blocks): uncompressed stays uncompressed (and pixel-interleaved, so the
    direct-I/O read of feature stacks still applies), else ZSTD with the predictor that suits the data type."""
    from rasterio.enums import Interleaving

    profile = {
        "driver": "GTiff", "width": src.width, "height": src.height, "count": src.count, "dtype": src.dtypes[0],
        "crs": src.crs, "transform": src.transform, "nodata": src.nodata, "tiled": True,
        "blockxsize": block, "blockysize": block, "BIGTIFF": "IF_SAFER",
        "interleave": "pixel" if src.interleaving == Interleaving.pixel else "band",
    }
    if src.compression is not None or src.driver != "GTiff":
        kind = np.dtype(src.dtypes[0]).kind
        profile.update(compress="zstd", zstd_level=1, predictor=3 if kind == "f" else 2 if kind in "iu" else 1)
    return profile


def copy_file(job: CopyJob) -> None:
    """Write the tiled copy of ``job.source`` atomically, a band of block rows at a time (memory: 256 full rows)."""
    import rasterio
    from rasterio.windows import Window

    from chain.atomic import atomic_path

    with rasterio.open(job.source) as src, atomic_path(Path(job.target)) as tmp:
        with rasterio.open(tmp, "w", **copy_profile(src, copy_block(src, job.grid))) as dst:
            dst.update_tags(**src.tags())
            for b in range(1, src.count + 1):
                if src.tags(b):
                    dst.update_tags(b, **src.tags(b))
            dst.descriptions = src.descriptions
            dst.scales, dst.offsets, dst.units = src.scales, src.offsets, src.units
            for r in range(0, src.height, BLOCK):
                win = Window(0, r, src.width, min(BLOCK, src.height - r))
                dst.write(src.read(window=win), window=win)


def plan(ctx: Any, cat: Catalog, mode: str, folder: Path) -> tuple[dict[str, float], list[CopyJob], list[CopyJob], int]:
    """The files to copy with their window costs, every copy job, those not done yet and the bytes they need; a clear
    error, before anything is written, when the disk holding ``folder`` lacks the room (``chain validate`` too). The
    files' survey (one open each) is made once per run (``ctx``: ingest's check, then its run)."""
    from chain.errors import ConfigError

    def make() -> dict[str, tuple[float, list[str]]]:
        return survey(cat.files(), cat.grid, mode)

    chosen = ctx.memo(f"tiled_copies:{mode}", make) if ctx is not None else make()
    costs = {p: cost for p, (cost, _) in chosen.items()}
    jobs = [CopyJob(f"{i:05d}", p, str(folder / copy_name(p, sources)), cat.grid) for i, (p, (_, sources)) in enumerate(chosen.items())]
    todo = [j for j in jobs if not Path(j.target).exists()]
    need = sum(_size(j.source) for j in todo)
    if todo:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        if need * 1.25 > free:  # ZSTD copies of DEFLATE files are about the same size; raw copies the same
            raise ConfigError(
                f"inputs.tiled_copies: {len(todo)} input file(s) are slow to read by tiles and would be copied as tiled "
                f"GeoTIFFs into {folder} (about {need / 2**30:.1f} GiB), but only {free / 2**30:.1f} GiB are free there; free "
                "some space, move the workdir, or set inputs.tiled_copies: never to read them in place (slower)")
    return costs, jobs, todo, need


def make_copies(ctx: Any, cat: Catalog, mode: str, folder: Path) -> dict[str, str]:
    """Copy the catalogue's files that ``mode`` selects into ``folder`` (the cluster's workers in parallel, resuming:
    a copy already there is complete, being written atomically); {original: copy}."""
    import time

    from chain.cluster import map_tiles

    costs, jobs, todo, need = plan(ctx, cat, mode, folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not costs:
        return {}
    slow = [c for c in costs.values() if c >= MAX_COST]
    why = (f"{len(slow)} would decode up to {max(slow):.0f}x the pixels of each {WINDOW_PX}² tile read (strips or large "
           "blocks)" if slow else "inputs.tiled_copies: always")
    log.info("ingest: tiled copies of %d input file(s) (%s) into %s, %.1f GiB to write; inputs.tiled_copies: never reads "
             "them in place", len(costs), why, folder, need / 2**30)
    start = time.perf_counter()
    map_tiles(ctx.client(), ctx.cfg.cluster, copy_file, jobs, is_done=lambda j: Path(j.target).exists(),
              key=f"tiled-copy-{ctx.signatures.get('ingest', '')[:12]}", desc="ingest: tiled copies", unit="file")
    if todo:
        log.info("ingest: %d tiled copies written in %.1f s", len(todo), time.perf_counter() - start)
    return {j.source: j.target for j in jobs}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def redirect(doc: Any, copies: dict[str, str]) -> Any:
    """``doc`` (a catalogue as JSON values) with every string that names a copied file replaced by its copy."""
    if isinstance(doc, str):
        return copies.get(doc, doc)
    if isinstance(doc, dict):
        return {k: redirect(v, copies) for k, v in doc.items()}
    if isinstance(doc, list):
        return [redirect(v, copies) for v in doc]
    return doc
