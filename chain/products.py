"""Readers of what the steps left in the work folder (memoised per run), and the pre-flight discovery.

Steps read their upstream's outputs through these (the paths come from ``chain.paths``); nothing
here writes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

    from chain.catalog import Catalog
    from chain.grid import Tile
    from chain.runner import Context
    from chain.spec import FeatureSpec


def preflight(ctx: Context) -> tuple[Catalog, gpd.GeoDataFrame]:
    """Catalogue + checked reference polygons from the config and the inputs, once per run (headers only: cheap)."""
    def make() -> tuple[Catalog, Any]:
        from chain import vector
        from chain.catalog import build_catalog

        cat = build_catalog(ctx.cfg)
        return cat, vector.read_reference(ctx.cfg.inputs.reference, cat.grid)

    if "preflight_error" in ctx.cache:  # found once: the other steps' checks do not discover the inputs again
        raise ctx.cache["preflight_error"]
    try:
        result: tuple[Catalog, gpd.GeoDataFrame] = ctx.memo("preflight", make)
    except Exception as exc:
        ctx.cache["preflight_error"] = exc
        raise
    return result


def catalog(ctx: Context) -> Catalog:
    from chain.catalog import Catalog

    result: Catalog = ctx.memo("catalog", lambda: Catalog.from_dict(json.loads(ctx.paths.catalog.read_text())))
    return result


def reference(ctx: Context) -> gpd.GeoDataFrame:
    """The reference polygons the run learns from and is validated on: ingest's, or in an update
    (``update:``) the ones the carryover step carried over from last year."""
    import geopandas as gpd

    path = ctx.paths.carried_reference if ctx.cfg.update is not None else ctx.paths.reference
    result: gpd.GeoDataFrame = ctx.memo("reference", lambda: gpd.read_file(path, engine="pyogrio"))
    return result


def ingested_reference(ctx: Context) -> gpd.GeoDataFrame:
    """The reference polygons as the inputs give them (in an update: last year's, before the carry-over)."""
    import geopandas as gpd

    result: gpd.GeoDataFrame = ctx.memo("ingested_reference", lambda: gpd.read_file(ctx.paths.reference, engine="pyogrio"))
    return result


def classes(ctx: Context) -> dict[int, dict[str, Any]]:
    """Code -> {"name", "color"}: the reference's class names, with the config's ``classes:`` names and colours over them."""
    from chain.raster import DEFAULT_PALETTE

    raw = json.loads(ctx.paths.classes.read_text())
    out = {}
    for i, (code, name) in enumerate(sorted((int(k), v["name"]) for k, v in raw.items())):
        user = ctx.cfg.classes.get(code)
        color = tuple(user.color) if user and user.color else DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)]
        out[code] = {"name": user.name if user and user.name else name, "color": list(color)}
    return out


def colormap(ctx: Context) -> dict[int, tuple[int, int, int, int]]:
    """The GDAL colour table of the class maps (0 = nodata, transparent)."""
    from chain.mosaic import colormap_for

    return colormap_for({c: tuple(v["color"]) for c, v in classes(ctx).items()})


def date_grids(ctx: Context) -> dict[str, dict[str, list[Any]]]:
    import datetime as dt

    raw = json.loads(ctx.paths.dates.read_text())
    return {s: {label: [dt.date.fromisoformat(d) for d in g["output"]] for label, g in groups.items()} for s, groups in raw.items()}


def spec(ctx: Context) -> FeatureSpec:
    """The feature layout; with ``features.cache: zarr`` and the cube complete, it also names the cube, and every
    window's features are then read from it (``chain.features.compute_features``)."""
    import dataclasses

    from chain.spec import FeatureSpec

    result: FeatureSpec = ctx.memo("spec", lambda: FeatureSpec.from_dict(json.loads(ctx.paths.features.read_text())))
    if ctx.cfg.features.cache == "zarr" and cube_ready(ctx):
        result = dataclasses.replace(result, cache=str(ctx.paths.feature_cache))
    return result


def cube_ready(ctx: Context) -> bool:
    """The cube step finished with the signature it has now (so the cube holds the current features)."""
    from chain.runner import read_record

    rec = read_record(ctx.workdir, "cube")
    return (rec is not None and rec.get("status") == "done" and "cube" in ctx.signatures
            and rec.get("signature") == ctx.signatures["cube"] and ctx.paths.feature_cache.is_dir())


def splits(ctx: Context) -> pd.DataFrame:
    import pandas as pd

    result: pd.DataFrame = ctx.memo("split", lambda: pd.read_csv(ctx.paths.split))
    return result


def samples(ctx: Context) -> Any:
    from chain.sampling import load_samples

    return ctx.memo("samples", lambda: load_samples(ctx.paths.samples))


def tiles(ctx: Context) -> list[Tile]:
    from chain.grid import make_tiles

    return make_tiles(catalog(ctx).grid, ctx.cfg.grid.tile_size_px)


def runs(ctx: Context) -> range:
    return range(ctx.cfg.split.runs)
