"""Vectorization of a class map, tile by tile: polygons with class code, name and area.

Each tile is polygonised on its own (rasterio.features.shapes); the pieces of a patch cut by tile
borders are merged afterwards, so the result is the same as polygonising the whole map at once.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.features import shapes
from shapely.geometry import shape

from chain.atomic import atomic_path
from chain.grid import GridSpec, Tile


def tile_polygons(tile: Tile, grid: GridSpec, map_path: Path, nodata: int, out_dir: Path) -> str:
    with rasterio.open(map_path) as src:
        labels = src.read(1, window=tile.window)
    transform = grid.window_transform(tile.window)
    geoms, codes = [], []
    for geom, value in shapes(labels, mask=labels != nodata, transform=transform, connectivity=4):
        geoms.append(shape(geom))
        codes.append(int(value))
    w = tile.window
    x0, y1 = transform.c, transform.f
    x1, y0 = x0 + transform.a * w.width, y1 + transform.e * w.height
    # tile edges that are not the map's edges: pieces touching them may continue in the next tile
    inner = []
    gx0, gy0, gx1, gy1 = grid.bounds
    for cond, line in ((x0 > gx0, [(x0, y0), (x0, y1)]), (x1 < gx1, [(x1, y0), (x1, y1)]),
                       (y0 > gy0, [(x0, y0), (x1, y0)]), (y1 < gy1, [(x0, y1), (x1, y1)])):
        if cond:
            inner.append(shapely.LineString(line))
    border = shapely.union_all(inner) if inner else None
    gdf = gpd.GeoDataFrame({"code": np.array(codes, dtype=np.int32)}, geometry=geoms, crs=grid.crs)
    gdf["cut"] = gdf.intersects(border) if border is not None else False
    with atomic_path(out_dir / f"{tile.id}.gpkg") as tmp:
        gdf.to_file(tmp, driver="GPKG", layer="polygons", engine="pyogrio")
    return tile.id


def merge_tiles(parts: list[Path], out_path: Path, names: dict[int, str], crs: object) -> int:
    """Write the final GPKG: whole polygons as they are, cut pieces dissolved per class and contiguity."""
    cut = []
    n = 0
    with atomic_path(out_path) as tmp:
        for p in parts:
            gdf = gpd.read_file(p, engine="pyogrio")
            if gdf.empty:
                continue
            cut.append(gdf[gdf["cut"]])
            whole = gdf[~gdf["cut"]]
            if not whole.empty:
                _append(tmp, whole, names, n > 0)
                n += len(whole)
        if cut:
            pieces = pd.concat(cut)
            merged = []
            for code, group in pieces.groupby("code"):
                for g in shapely.get_parts(shapely.union_all(group.geometry.to_numpy())):
                    merged.append((int(code), g))
            if merged:
                gdf = gpd.GeoDataFrame({"code": [c for c, _ in merged]}, geometry=[g for _, g in merged], crs=crs)
                _append(tmp, gdf, names, n > 0)
                n += len(gdf)
        if n == 0:
            _append(tmp, gpd.GeoDataFrame({"code": np.array([], np.int32)}, geometry=[], crs=crs), names, False)
    return n


def _append(path: Path, gdf: gpd.GeoDataFrame, names: dict[int, str], append: bool) -> None:
    out = gpd.GeoDataFrame({"code": gdf["code"].astype(np.int32).to_numpy(),
                            "name": [names.get(int(c), str(c)) for c in gdf["code"]],
                            "area_m2": gdf.geometry.area.to_numpy()}, geometry=gdf.geometry.to_numpy(), crs=gdf.crs)
    out.to_file(path, driver="GPKG", layer="landcover", engine="pyogrio", append=append)
