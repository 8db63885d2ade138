"""The feature cube (``features.cache: zarr``): every tile's features computed once into a Zarr store, read back
by every later step instead of reading and gap-filling the series again.

Written through xarray, so that ``xarray.open_zarr`` (and rioxarray-style readers) can use it as it is:

- the root group: ``n_valid`` (y, x), the observations of each pixel, and ``validity`` (sensor, y, x), the
  PixelsValidity counts;
- one group per feature group, named by its label (``S2``, ``S1_ASC``, ``SPOT``...): ``features`` with the
  dimensions (band, date, y, x) for a series, (band, y, x) otherwise, and the coordinates band (channel names),
  date (datetime64), y and x (pixel centres in the grid's CRS);
- in every group, the ``spatial_ref`` coordinate (``crs_wkt``, ``GeoTransform``) that the variables name as
  their ``grid_mapping`` (the CF convention rioxarray reads).

Chunks are the grid's tiles (all bands and dates of a tile in one chunk), so each tile task writes its own
chunks and a window read touches the tiles it crosses. ``python -c "import xarray as xr;
print(xr.open_zarr('work/features/cube.zarr', group='S2', consolidated=False))"`` shows it (Zarr v3 has no
consolidated metadata in its specification, so none is written).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rasterio.windows import Window

    from chain.catalog import Catalog
    from chain.features import FeatureBlock
    from chain.grid import GridSpec, Tile
    from chain.spec import FeatureSpec


def _coords(grid: GridSpec) -> dict[str, Any]:
    import xarray as xr

    t = grid.affine
    x = t.c + (np.arange(grid.width) + 0.5) * t.a
    y = t.f + (np.arange(grid.height) + 0.5) * t.e
    ref = xr.DataArray(0, attrs={"crs_wkt": grid.crs_wkt, "spatial_ref": grid.crs_wkt,
                                 "GeoTransform": f"{t.c} {t.a} {t.b} {t.f} {t.d} {t.e}"})
    return {"y": ("y", y), "x": ("x", x), "spatial_ref": ref}


def _group_dims(group: Any) -> tuple[str, ...]:
    return ("band", "date", "y", "x") if group.is_series else ("band", "y", "x")


def create(path: Path, cat: Catalog, spec: FeatureSpec, tile_size: int, sensors: list[str]) -> None:
    """The store's layout, coordinates and metadata (no chunk written): each tile task then fills its region."""
    import dask.array as da
    import xarray as xr

    grid = cat.grid
    h, w = grid.height, grid.width
    ts = min(tile_size, h), min(tile_size, w)
    coords = _coords(grid)
    root = xr.Dataset(
        {"n_valid": (("y", "x"), da.zeros((h, w), np.uint16, chunks=ts), {"grid_mapping": "spatial_ref"}),
         "validity": (("sensor", "y", "x"), da.zeros((len(sensors), h, w), np.uint16, chunks=(len(sensors), *ts)),
                      {"grid_mapping": "spatial_ref"})},
        coords={**coords, "sensor": ("sensor", np.array(sensors, dtype=object))},  # variable-length strings: in the v3 spec
        attrs={"feature_names": list(spec.names), "gapfill_method": spec.method, "tile_size_px": tile_size},
    )
    root.to_zarr(path, mode="w", compute=False, consolidated=False)
    for group in spec.groups:
        dims = _group_dims(group)
        shape: tuple[int, ...] = (len(group.channels), len(group.dates)) if group.is_series else (len(group.names),)
        extra = {"band": ("band", np.array(group.channels if group.is_series else group.names, dtype=object))}
        if group.is_series:
            extra["date"] = ("date", np.array(group.dates, dtype="datetime64[ns]"))
        data = da.zeros((*shape, h, w), np.float32, chunks=(*shape, *ts))
        ds = xr.Dataset({"features": (dims, data, {"grid_mapping": "spatial_ref", "_FillValue": np.float32(np.nan)})},
                        coords={**coords, **extra}, attrs={"source": group.source, "label": group.label})
        ds.to_zarr(path, group=group.label, mode="a", compute=False, consolidated=False)


def write_tile(path: Path, tile: Tile, block: FeatureBlock, spec: FeatureSpec) -> None:
    """The tile's features into its chunks (region writes: the tile tasks never touch each other's chunks)."""
    import xarray as xr

    r0, c0, h, w = int(tile.window.row_off), int(tile.window.col_off), int(tile.window.height), int(tile.window.width)
    region = {"y": slice(r0, r0 + h), "x": slice(c0, c0 + w)}
    root = xr.Dataset({"n_valid": (("y", "x"), block.n_valid),
                       "validity": (("sensor", "y", "x"), np.stack(list(block.per_sensor.values())).astype(np.uint16))})
    # every chunk is written, even all-fill ones (a tile with nothing observed): complete_tiles checks they exist
    root.to_zarr(path, region={**region, "sensor": slice(None)}, mode="r+", consolidated=False, write_empty_chunks=True)
    offset = 0
    for group in spec.groups:
        n = len(group.names)
        values = block.values[offset:offset + n]
        offset += n
        if group.is_series:
            values = values.reshape(len(group.channels), len(group.dates), h, w)
        full = {"band": slice(None), **({"date": slice(None)} if group.is_series else {})}
        xr.Dataset({"features": (_group_dims(group), values)}).to_zarr(
            path, group=group.label, region={**full, **region}, mode="r+", consolidated=False, write_empty_chunks=True)


_open = threading.local()


def _datasets(path: str, spec: FeatureSpec) -> dict[str, Any]:
    """The store's groups, opened once per thread (metadata reads are not free)."""
    import xarray as xr

    stamp = (Path(path) / "zarr.json").stat().st_mtime_ns
    cache = getattr(_open, "stores", None)
    if cache is None:
        cache = _open.stores = {}
    key = (path, stamp)
    if key not in cache:
        cache.clear()
        groups = {"": xr.open_zarr(path, consolidated=False, chunks=None)}
        for g in spec.groups:
            groups[g.label] = xr.open_zarr(path, group=g.label, consolidated=False, chunks=None)
        cache[key] = groups
    result: dict[str, Any] = cache[key]
    return result


def read_window(path: str, spec: FeatureSpec, window: Window) -> FeatureBlock:
    """The features of ``window`` as ``compute_features`` gives them, from the cube."""
    from chain.features import FeatureBlock

    r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    sel = {"y": slice(r0, r0 + h), "x": slice(c0, c0 + w)}
    groups = _datasets(path, spec)
    root = groups[""]
    values = np.empty((len(spec.names), h, w), np.float32)
    offset = 0
    for g in spec.groups:
        n = len(g.names)
        arr = groups[g.label]["features"].isel(sel).values
        values[offset:offset + n] = arr.reshape(n, h, w)
        offset += n
    n_valid = root["n_valid"].isel(sel).values
    validity = root["validity"].isel(sel).values
    per_sensor = {str(s): validity[i] for i, s in enumerate(root["sensor"].values)}
    return FeatureBlock(values, n_valid, per_sensor)


def _marker(markers: Path, tile: Tile) -> Path:
    return markers / f"{tile.id}.done"


def fill_tile(tile: Tile, cat: Catalog, spec: FeatureSpec, path: Path, markers: Path) -> str:
    """One tile into the cube (a dask task of the cube step); a marker in ``markers``, written last, says the tile
    is complete."""
    from chain.atomic import atomic_path
    from chain.features import compute_features

    block = compute_features(cat, spec, tile.window)
    write_tile(path, tile, block, spec)
    with atomic_path(_marker(markers, tile)) as tmp:
        tmp.write_text("")
    return str(tile.id)


def sensor_names(cat: Catalog, spec: FeatureSpec, tile: Tile) -> list[str]:
    """The PixelsValidity bands' names, from the features of one pixel."""
    from rasterio.windows import Window

    from chain.features import compute_features

    block = compute_features(cat, spec, Window(int(tile.window.col_off), int(tile.window.row_off), 1, 1))
    return list(block.per_sensor)


def complete_tiles(path: Path, markers: Path, spec: FeatureSpec, tiles: list[Tile], tile_size: int) -> set[str]:
    """The ids of the tiles whose marker and every chunk file exist (a chunk removed as damaged makes its tile
    computed again). The store's metadata is read once for all tiles."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    # (array, leading chunk indices before the tile's row and column)
    arrays: list[tuple[Any, tuple[int, ...]]] = [(root["n_valid"], ()), (root["validity"], (0,))]
    arrays += [(root[f"{g.label}/features"], (0, 0) if g.is_series else (0,)) for g in spec.groups]
    done = set()
    for tile in tiles:
        if not _marker(markers, tile).exists():
            continue
        ij = (int(tile.window.row_off) // tile_size, int(tile.window.col_off) // tile_size)
        if all((path / a.path / a.metadata.encode_chunk_key(lead + ij)).exists() for a, lead in arrays):
            done.add(tile.id)
    return done
