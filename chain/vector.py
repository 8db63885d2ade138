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


# what users write in a split field, and the part it means
PART_NAMES = {"train": "train", "training": "train", "learn": "train", "learning": "train", "validation": "validation",
              "valid": "validation", "val": "validation", "validate": "validation", "test": "test", "testing": "test"}


def read_reference(ref: ReferenceInput, grid: GridSpec) -> gpd.GeoDataFrame:
    """Polygons with columns ``poly_id``, ``code``, ``name``, ``geometry`` in the grid's CRS (and ``part``
    when the user gives the split: ``split_field`` or ``validation_path``).

    Raises InputMissingError / InputError with the file and the fix in the message.
    """
    out = _read_polygons(ref, ref.path, "inputs.reference.path", grid)
    if ref.split_field:
        out["part"] = _parts(out.pop("given_part"), ref)
        unused = out["part"].isna()
        if unused.any():
            log.warning("%s: %d polygon(s) have no part in field %r and are not used", ref.path, int(unused.sum()), ref.split_field)
            out = out[~unused]
    elif ref.validation_path is not None:
        val = _read_polygons(ref, ref.validation_path, "inputs.reference.validation_path", grid)
        val["poly_id"] += int(out["poly_id"].max()) + 1
        out = gpd.GeoDataFrame(pd.concat([out.assign(part="train"), val.assign(part="validation")], ignore_index=True), crs=out.crs)
    return resolve_overlaps(out.reset_index(drop=True), str(ref.path), abs(grid.res[0] * grid.res[1]))


def _parts(values: pd.Series, ref: ReferenceInput) -> pd.Series:
    text = values.astype("string").str.strip().str.lower()
    parts = text.map(PART_NAMES)
    bad = text.notna() & (text != "") & parts.isna()
    if bad.any():
        found = text[bad].value_counts().head(5).to_dict()
        raise InputError(f"reference polygons {str(ref.path)!r}: field {ref.split_field!r} (inputs.reference.split_field) must say "
                         f"train, validation or test; {int(bad.sum())} polygon(s) do not: {found}")
    return parts.astype(object).where(parts.notna(), None)


def _read_polygons(ref: ReferenceInput, path: Any, key: str, grid: GridSpec) -> gpd.GeoDataFrame:
    if not path.exists():
        raise InputMissingError(f"{key}: {str(path)!r} does not exist (expected a GPKG, GeoJSON or Shapefile of polygons)")
    try:
        gdf = gpd.read_file(path, layer=ref.layer if path == ref.path else None, engine="pyogrio")
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
    for label, name in (("name_field", ref.name_field), ("split_field", ref.split_field)):
        if name and name not in gdf.columns and not (label == "split_field" and path != ref.path):
            fields = [c for c in gdf.columns if c != "geometry"]
            raise InputError(f"reference polygons {str(path)!r} have no field {name!r} (inputs.reference.{label}); fields found: {fields}")
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
            **({"given_part": gdf[ref.split_field].to_numpy()} if ref.split_field and ref.split_field in gdf.columns else {}),
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


def resolve_overlaps(gdf: gpd.GeoDataFrame, where: str, pixel_area: float) -> gpd.GeoDataFrame:
    """No area in two polygons, with a warning saying what was found and done.

    An area in polygons of different classes has no single truth: it is removed from both (it is left
    out of training and validation). An area in two polygons of one class is kept in the first only:
    the split puts polygons in different sets, and a pixel in both would be trained on and validated.
    Exact duplicates of one class are the extreme case (the later copy is dropped)."""
    geoms = gdf.geometry.to_numpy()
    left, right = gdf.sindex.query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if len(left) == 0:
        return gdf
    shared = shapely.intersection(geoms[left], geoms[right])
    area = shapely.area(shared)
    real = area > 0.01 * pixel_area  # shared edges and rounding slivers are not overlaps
    left, right, shared, area = left[real], right[real], shared[real], area[real]
    if len(left) == 0:
        return gdf
    codes = gdf["code"].to_numpy()
    ids = gdf["poly_id"].to_numpy()
    other = codes[left] != codes[right]
    cut: dict[int, list[Any]] = {}
    for a, b, g, o in zip(left, right, shared, other, strict=True):
        for victim in ((a, b) if o else (b,)):
            cut.setdefault(int(victim), []).append(g)
    new = geoms.copy()
    for i, parts in cut.items():
        new[i] = shapely.difference(geoms[i], shapely.union_all(parts))
    out = gdf.copy()
    out["geometry"] = new
    duplicates = int(np.sum(~other & (np.abs(area - shapely.area(geoms[right])) < 0.01 * pixel_area)))
    if other.any():
        i = int(np.flatnonzero(other)[0])
        log.warning("%s: %d pair(s) of polygons of different classes overlap (%.0f m2 in all, e.g. ids %d (class %d) and %d (class %d)): "
                    "the overlapping areas are left out of training and validation; fix the polygons to use them", where,
                    int(other.sum()), float(area[other].sum()), ids[left[i]], codes[left[i]], ids[right[i]], codes[right[i]])
    if (~other).any():
        i = int(np.flatnonzero(~other)[0])
        log.warning("%s: %d pair(s) of polygons of one class overlap (%d exact duplicate(s); %.0f m2 in all, e.g. ids %d and %d): "
                    "the shared area is kept in the first polygon only, so that no pixel is both trained on and validated",
                    where, int((~other).sum()), duplicates, float(area[~other].sum()), ids[left[i]], ids[right[i]])
    # a polygon too small to hold a pixel centre is dropped by sampling; one left with no area goes now
    empty = shapely.area(out.geometry.to_numpy()) < 0.01 * pixel_area
    if empty.any():
        log.warning("%s: %d polygon(s) have no area left once the overlaps are resolved and are dropped (ids %s)", where, int(empty.sum()),
                    ids[empty][:10].tolist())
        out = out[~empty]
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
