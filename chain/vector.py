"""Reference polygons: read, check, repair, reproject to the grid."""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import box

from chain.config import ReferenceInput
from chain.errors import InputError, InputMissingError
from chain.grid import GridSpec

log = logging.getLogger(__name__)


def read_reference(ref: ReferenceInput, grid: GridSpec) -> gpd.GeoDataFrame:
    """Polygons with columns ``poly_id``, ``code``, ``name``, ``geometry`` in the grid's CRS.

    Raises InputMissingError / InputError with the file and the fix in the message.
    """
    path = ref.path
    if not path.exists():
        raise InputMissingError(f"inputs.reference.path: {str(path)!r} does not exist (expected a GPKG, GeoJSON or Shapefile of polygons)")
    try:
        gdf = gpd.read_file(path, layer=ref.layer, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(f"reference polygons {str(path)!r} cannot be read ({exc})") from None
    if len(gdf) == 0:
        raise InputError(f"reference polygons {str(path)!r} contain no features")
    if ref.class_field not in gdf.columns:
        fields = [c for c in gdf.columns if c != "geometry"]
        raise InputError(
            f"reference polygons {str(path)!r} have no field {ref.class_field!r} (inputs.reference.class_field); "
            f"fields found: {fields}"
        )
    if ref.name_field and ref.name_field not in gdf.columns:
        fields = [c for c in gdf.columns if c != "geometry"]
        raise InputError(f"reference polygons {str(path)!r} have no field {ref.name_field!r} (inputs.reference.name_field); fields found: {fields}")
    if gdf.crs is None:
        raise InputError(f"reference polygons {str(path)!r} have no CRS; define it (e.g. in QGIS: Layer > Set CRS) and save again")

    codes = pd.to_numeric(gdf[ref.class_field], errors="coerce")
    bad = codes.isna() | (codes != np.round(codes)) | (codes < 1) | (codes > 254)
    if bad.any():
        examples = gdf.loc[bad, ref.class_field].head(5).tolist()
        raise InputError(
            f"reference polygons {str(path)!r}: field {ref.class_field!r} must hold integer class codes 1..254 "
            f"(0 and 255 are reserved for nodata); {int(bad.sum())} feature(s) do not, e.g. {examples}"
        )

    geoms = gdf.geometry
    kinds = set(geoms[~geoms.is_empty & geoms.notna()].geom_type)
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise InputError(f"reference polygons {str(path)!r} contain {sorted(kinds - {'Polygon', 'MultiPolygon'})} geometries; "
                         "only polygons are accepted")

    out = gpd.GeoDataFrame(
        {
            "poly_id": np.arange(len(gdf), dtype=np.int32),
            "code": codes.astype(np.int32).to_numpy(),
            "name": gdf[ref.name_field].astype(str).to_numpy() if ref.name_field else codes.astype(int).astype(str).to_numpy(),
        },
        geometry=geoms.to_numpy(),
        crs=gdf.crs,
    )
    empty = out.geometry.isna() | out.geometry.is_empty
    if empty.any():
        log.warning("%s: %d feature(s) with an empty geometry ignored (ids %s)", path, int(empty.sum()), out.poly_id[empty].head(10).tolist())
        out = out[~empty]
    invalid = ~out.geometry.is_valid
    if invalid.any():
        log.warning("%s: %d invalid polygon(s) repaired with make_valid (ids %s)", path, int(invalid.sum()), out.poly_id[invalid].head(10).tolist())
        repaired = shapely.make_valid(out.geometry[invalid].to_numpy())
        # make_valid can return collections; keep their polygonal parts only
        out.loc[invalid, "geometry"] = [shapely.union_all(shapely.get_parts(g)[np.isin(shapely.get_type_id(shapely.get_parts(g)), [3, 6])])
                                        for g in repaired]

    out = out.to_crs(grid.crs)
    scene = box(*grid.bounds)
    inside = out.intersects(scene)
    if not inside.any():
        b = out.total_bounds
        raise InputError(
            f"reference polygons {str(path)!r} do not intersect the scene: polygons span {np.round(b, 1).tolist()} "
            f"and the grid spans {np.round(grid.bounds, 1).tolist()} in {grid.crs.to_string()}; check that both cover the same area "
            "and that the polygon file's CRS is declared correctly"
        )
    if not inside.all():
        log.warning("%s: %d polygon(s) outside the scene ignored", path, int((~inside).sum()))
        out = out[inside]
    return out.reset_index(drop=True)


def class_names(gdf: gpd.GeoDataFrame) -> dict[int, str]:
    names: dict[int, str] = {}
    for code, name in zip(gdf["code"], gdf["name"], strict=False):
        names.setdefault(int(code), str(name))
    return dict(sorted(names.items()))


def read_aoi(path: Any, crs: Any) -> shapely.Geometry:
    """The union of the polygons of an area-of-interest file, in ``crs``."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise InputMissingError(f"grid.aoi: {str(path)!r} does not exist (expected a polygon file: GPKG, shapefile, GeoJSON)")
    try:
        gdf = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio raises its own DataSourceError family
        raise InputError(f"grid.aoi: {str(path)!r} cannot be read as vector data ({exc})") from None
    if gdf.crs is None:
        raise InputError(f"grid.aoi: {str(path)!r} has no CRS; save it with one (e.g. EPSG:4326)")
    geoms = gdf.geometry[~gdf.geometry.is_empty & gdf.geometry.notna()]
    geoms = geoms[geoms.geom_type.isin(["Polygon", "MultiPolygon"])]
    if geoms.empty:
        raise InputError(f"grid.aoi: {str(path)!r} holds no polygon")
    geoms = geoms.make_valid() if (~geoms.is_valid).any() else geoms
    return shapely.union_all(geoms.to_crs(crs).to_numpy())
