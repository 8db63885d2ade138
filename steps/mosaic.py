"""mosaic: tiles -> final/Classif_Seed_<n>.tif, Confidence_Seed_<n>.tif and PixelsValidity.tif."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chain.atomic import write_text
from chain.classify import CLASS_NODATA, CONF_NODATA, fuse_tile, proba_path, tile_paths, validity_path
from chain.mosaic import assemble
from chain.runner import Context, Step, register
from chain.styles import nomenclature_csv, write_class_map_companions
from steps import common
from steps.classify import tiles_dir


@register
class Mosaic(Step):
    name = "mosaic"
    requires = ("classify",)

    version = "3"

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"mosaic": ctx.cfg.section("mosaic"), "fusion": ctx.cfg.section("fusion")}

    def outputs(self, ctx: Context) -> list[Path]:
        f = ctx.final
        maps = [p for r in common.runs(ctx) for p in (f / f"Classif_Seed_{r}.tif", f / f"Classif_Seed_{r}.qml", f / f"Confidence_Seed_{r}.tif")]
        if ctx.cfg.classify.probabilities:
            maps += [f / f"Probabilities_Seed_{r}.tif" for r in common.runs(ctx)]
        if ctx.cfg.fusion.enabled and ctx.cfg.split.runs > 1:
            maps += [f / "Classif_Fusion.tif", f / "Classif_Fusion.qml", f / "Agreement_Fusion.tif"]
        return maps + [f / "PixelsValidity.tif", f / "nomenclature.csv"]

    def run(self, ctx: Context) -> None:
        cat, tiles, m = common.catalog(ctx), common.tiles(ctx), ctx.cfg.mosaic
        classes = common.classes(ctx)
        cmap = common.colormap(ctx)
        for r in common.runs(ctx):
            d = tiles_dir(ctx, r)
            assemble(ctx.final / f"Classif_Seed_{r}.tif", cat.grid, tiles, {t.id: tile_paths(d, t)[0] for t in tiles},
                     "uint8", CLASS_NODATA, colormap=cmap, description="class", cog=m.cog, compress=m.compress,
                     overview_resampling="mode")
            write_class_map_companions(ctx.final / f"Classif_Seed_{r}.tif", classes)
            if ctx.cfg.classify.probabilities:
                manifest = json.loads((ctx.dir("train") / f"run_{r}" / "manifest.json").read_text())
                names = [f"{c} {classes.get(c, {}).get('name', '')}".strip() for c in manifest["classes"]]
                assemble(ctx.final / f"Probabilities_Seed_{r}.tif", cat.grid, tiles, {t.id: proba_path(d, t) for t in tiles},
                         "uint8", CONF_NODATA, description=names, cog=m.cog, compress=m.compress, overview_resampling="average")
            assemble(ctx.final / f"Confidence_Seed_{r}.tif", cat.grid, tiles, {t.id: tile_paths(d, t)[1] for t in tiles},
                     "uint8", CONF_NODATA, description="confidence (max class probability, %)", cog=m.cog,
                     compress=m.compress, overview_resampling="average")
        if ctx.cfg.fusion.enabled and ctx.cfg.split.runs > 1:
            self._fuse(ctx, cmap, classes)
        write_text(ctx.final / "nomenclature.csv", nomenclature_csv(classes))
        vdir = tiles_dir(ctx, 0)
        assemble(ctx.final / "PixelsValidity.tif", cat.grid, tiles, {t.id: validity_path(vdir, t) for t in tiles},
                 "uint16", None, cog=m.cog, compress=m.compress,
                 overview_resampling="average")

    def _fuse(self, ctx: Context, cmap: dict, classes: dict) -> None:
        from chain.cluster import map_tiles

        cat, tiles, m = common.catalog(ctx), common.tiles(ctx), ctx.cfg.mosaic
        out = ctx.dir(self.name) / "fusion"
        out.mkdir(parents=True, exist_ok=True)
        run_dirs = [tiles_dir(ctx, r) for r in common.runs(ctx)]
        map_tiles(ctx.client(), ctx.cfg.cluster, fuse_tile, tiles, cat.grid, run_dirs, out,
                  is_done=lambda t: (out / f"{t.id}_class.tif").exists(), key=f"fusion-{ctx.signatures[self.name][:12]}",
                  desc="fusion")
        assemble(ctx.final / "Classif_Fusion.tif", cat.grid, tiles, {t.id: out / f"{t.id}_class.tif" for t in tiles},
                 "uint8", CLASS_NODATA, colormap=cmap, description="class (majority vote of the runs)", cog=m.cog,
                 compress=m.compress, overview_resampling="mode")
        write_class_map_companions(ctx.final / "Classif_Fusion.tif", classes)
        assemble(ctx.final / "Agreement_Fusion.tif", cat.grid, tiles, {t.id: out / f"{t.id}_agreement.tif" for t in tiles},
                 "uint8", CONF_NODATA, description="share of the runs voting for the fused class (%)", cog=m.cog,
                 compress=m.compress, overview_resampling="average")
