"""ingest: discover the time series and the reference polygons, define the grid, record the catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chain import catalog as cat_mod
from chain import vector
from chain.atomic import atomic_path, write_json
from chain.raster import DEFAULT_PALETTE, parse_color
from chain.runner import Context, Step, register


def preflight(ctx: Context) -> tuple[cat_mod.Catalog, Any]:
    """Catalogue + checked polygons, computed once per run (headers only: cheap)."""
    def make() -> tuple[cat_mod.Catalog, Any]:
        cat = cat_mod.build_catalog(ctx.cfg)
        return cat, vector.read_reference(ctx.cfg.inputs.reference, cat.grid)

    return ctx.memo("preflight", make)


@register
class Ingest(Step):
    name = "ingest"
    version = "4"

    def check(self, ctx: Context) -> None:
        preflight(ctx)

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"inputs": ctx.cfg.section("inputs"), "grid": {k: v for k, v in ctx.cfg.section("grid").items() if k != "tile_size_px"},
                "classes": ctx.cfg.section("classes")}

    def external_inputs(self, ctx: Context) -> list[str]:
        cat, _ = preflight(ctx)
        aoi = [str(ctx.cfg.grid.aoi)] if ctx.cfg.grid.aoi else []
        return [*cat_mod.catalog_files(cat), str(ctx.cfg.inputs.reference.path), *aoi]

    def outputs(self, ctx: Context) -> list[Path]:
        d = ctx.dir(self.name)
        return [d / "catalog.json", d / "reference.gpkg", d / "classes.json"]

    def run(self, ctx: Context) -> None:
        cat, polys = preflight(ctx)
        d = ctx.dir(self.name)
        write_json(d / "catalog.json", cat.to_dict())
        with atomic_path(d / "reference.gpkg") as tmp:
            polys.to_file(tmp, driver="GPKG", layer="reference", engine="pyogrio")
        names = vector.class_names(polys)
        info = {}
        for i, (code, name) in enumerate(names.items()):
            user = ctx.cfg.classes.get(code)
            color = parse_color(user.color) if user and user.color else DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)]
            info[str(code)] = {"name": (user.name if user and user.name else name), "color": list(color)}
        write_json(d / "classes.json", info)
