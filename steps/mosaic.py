"""mosaic: tiles -> final/Classif_Seed_<n>.tif, Confidence_Seed_<n>.tif and PixelsValidity.tif."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chain.classify import CLASS_NODATA, CONF_NODATA, tile_paths
from chain.mosaic import assemble, colormap_for
from chain.runner import Context, Step, register
from steps import common
from steps.classify import tiles_dir


@register
class Mosaic(Step):
    name = "mosaic"
    requires = ("classify", "gapfill")

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"mosaic": ctx.cfg.section("mosaic")}

    def outputs(self, ctx: Context) -> list[Path]:
        f = ctx.final
        return [p for r in common.runs(ctx) for p in (f / f"Classif_Seed_{r}.tif", f / f"Confidence_Seed_{r}.tif")] + [f / "PixelsValidity.tif"]

    def run(self, ctx: Context) -> None:
        cat, tiles, m = common.catalog(ctx), common.tiles(ctx), ctx.cfg.mosaic
        classes = common.classes(ctx)
        cmap = colormap_for({c: tuple(v["color"]) for c, v in classes.items()})
        for r in common.runs(ctx):
            d = tiles_dir(ctx, r)
            assemble(ctx.final / f"Classif_Seed_{r}.tif", cat.grid, tiles, {t.id: tile_paths(d, t)[0] for t in tiles},
                     "uint8", CLASS_NODATA, colormap=cmap, description="class", cog=m.cog, compress=m.compress,
                     overview_resampling="mode")
            assemble(ctx.final / f"Confidence_Seed_{r}.tif", cat.grid, tiles, {t.id: tile_paths(d, t)[1] for t in tiles},
                     "uint8", CONF_NODATA, description="confidence (max class probability, %)", cog=m.cog,
                     compress=m.compress, overview_resampling="average")
        vdir = ctx.dir("gapfill") / "validity"
        assemble(ctx.final / "PixelsValidity.tif", cat.grid, tiles, {t.id: vdir / f"{t.id}.tif" for t in tiles},
                 "uint16", None, description="clear observations", cog=m.cog, compress=m.compress,
                 overview_resampling="average")
