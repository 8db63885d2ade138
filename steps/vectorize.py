"""vectorize: the regularized map (or the raw one) as polygons in final/Classif_Seed_<n>.gpkg (optional)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chain.classify import CLASS_NODATA
from chain.runner import Context, Step, register
from chain.vectorize import merge_tiles, tile_polygons
from steps import common
from steps.regularize import regularized_path


def source_map(ctx: Context, run: int) -> Path:
    return regularized_path(ctx, run) if ctx.cfg.regularize.enabled else ctx.final / f"Classif_Seed_{run}.tif"


@register
class Vectorize(Step):
    name = "vectorize"
    requires = ("regularize",)

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"vectorize": ctx.cfg.section("vectorize"), "tile_size_px": ctx.cfg.grid.tile_size_px}

    def outputs(self, ctx: Context) -> list[Path]:
        if not ctx.cfg.vectorize.enabled:
            return []
        return [ctx.final / f"Classif_Seed_{r}.gpkg" for r in common.runs(ctx)]

    def run(self, ctx: Context) -> None:
        if not ctx.cfg.vectorize.enabled:
            return
        from chain.cluster import map_tiles

        cat, tiles = common.catalog(ctx), common.tiles(ctx)
        names = {c: v["name"] for c, v in common.classes(ctx).items()}
        for r in common.runs(ctx):
            out = ctx.dir(self.name) / f"run_{r}"
            out.mkdir(parents=True, exist_ok=True)
            map_tiles(ctx.client(), ctx.cfg.cluster, tile_polygons, tiles, cat.grid, source_map(ctx, r), CLASS_NODATA, out,
                      is_done=lambda t: (out / f"{t.id}.gpkg").exists(), key=f"vectorize-{r}-{ctx.signatures[self.name][:12]}",
                      desc=f"vectorize: run {r}")
            merge_tiles([out / f"{t.id}.gpkg" for t in tiles], ctx.final / f"Classif_Seed_{r}.gpkg", names, cat.grid.crs)
