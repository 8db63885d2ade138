"""Shared loaders for steps: what ingest, features and split left in the work folder."""

from __future__ import annotations

import json

import geopandas as gpd
import pandas as pd

from chain.catalog import Catalog
from chain.features import FeatureSpec
from chain.grid import Tile, make_tiles
from chain.runner import Context


def catalog(ctx: Context) -> Catalog:
    return ctx.memo("catalog", lambda: Catalog.from_dict(json.loads((ctx.dir("ingest") / "catalog.json").read_text())))


def reference(ctx: Context) -> gpd.GeoDataFrame:
    return ctx.memo("reference", lambda: gpd.read_file(ctx.dir("ingest") / "reference.gpkg", engine="pyogrio"))


def classes(ctx: Context) -> dict[int, dict]:
    raw = json.loads((ctx.dir("ingest") / "classes.json").read_text())
    return {int(k): v for k, v in raw.items()}


def colormap(ctx: Context) -> dict[int, tuple[int, int, int, int]]:
    """The GDAL colour table of the class maps (0 = nodata, transparent)."""
    from chain.mosaic import colormap_for

    return colormap_for({c: tuple(v["color"]) for c, v in classes(ctx).items()})


def spec(ctx: Context) -> FeatureSpec:
    return ctx.memo("spec", lambda: FeatureSpec.from_dict(json.loads((ctx.dir("features") / "features.json").read_text())))


def splits(ctx: Context) -> pd.DataFrame:
    return ctx.memo("split", lambda: pd.read_csv(ctx.dir("split") / "split.csv"))


def tiles(ctx: Context) -> list[Tile]:
    return make_tiles(catalog(ctx).grid, ctx.cfg.grid.tile_size_px)


def runs(ctx: Context) -> range:
    return range(ctx.cfg.split.runs)
