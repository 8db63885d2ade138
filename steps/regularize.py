"""regularize: minimum mapping unit (sieve) and optional majority filter -> Classif_Seed_<n>_regularized.tif."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from chain.catalog import Catalog
from chain.classify import CLASS_NODATA
from chain.grid import Tile, make_tiles
from chain.mosaic import assemble
from chain.raster import write_tile
from chain.regularize import halo_for, mmu_pixels, regularize
from chain.runner import Context, Step, register
from chain.styles import write_class_map_companions
from steps import common


def regularized_path(ctx: Context, run: int) -> Path:
    return ctx.final / f"Classif_Seed_{run}_regularized.tif"


def regularize_tile(tile: Tile, cat: Catalog, map_path: Path, mmu_px: int, radius: int, out_dir: Path) -> str:
    with rasterio.open(map_path) as src:
        labels = src.read(1, window=tile.read_window(cat.grid))
    rs, cs = tile.core_slices(cat.grid)
    out = regularize(labels, mmu_px, radius, CLASS_NODATA)[rs, cs]
    write_tile(out_dir / f"{tile.id}.tif", np.ascontiguousarray(out), cat.grid, tile.window, CLASS_NODATA)
    return tile.id


@register
class Regularize(Step):
    name = "regularize"
    requires = ("mosaic",)

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"regularize": ctx.cfg.section("regularize"), "tile_size_px": ctx.cfg.grid.tile_size_px}

    def outputs(self, ctx: Context) -> list[Path]:
        if not ctx.cfg.regularize.enabled:
            return []
        return [p for r in common.runs(ctx) for p in (regularized_path(ctx, r), regularized_path(ctx, r).with_suffix(".qml"))]

    def run(self, ctx: Context) -> None:
        if not ctx.cfg.regularize.enabled:
            return
        from chain.cluster import map_tiles

        cfg, cat = ctx.cfg.regularize, common.catalog(ctx)
        mmu = mmu_pixels(cfg.mmu_px, cfg.mmu_m2, cat.grid.res[0] * cat.grid.res[1])
        tiles = make_tiles(cat.grid, ctx.cfg.grid.tile_size_px, halo_for(mmu, cfg.majority_radius_px))
        classes = common.classes(ctx)
        for r in common.runs(ctx):
            out = ctx.dir(self.name) / f"run_{r}"
            out.mkdir(parents=True, exist_ok=True)
            map_tiles(ctx.client(), ctx.cfg.cluster, regularize_tile, tiles, cat, ctx.final / f"Classif_Seed_{r}.tif",
                      mmu, cfg.majority_radius_px, out, is_done=lambda t: (out / f"{t.id}.tif").exists(),
                      key=f"regularize-{r}-{ctx.signatures[self.name][:12]}", desc=f"regularize: run {r}")
            path = regularized_path(ctx, r)
            assemble(path, cat.grid, tiles, {t.id: out / f"{t.id}.tif" for t in tiles}, "uint8", CLASS_NODATA,
                     colormap=common.colormap(ctx),
                     description="class (regularized)", cog=ctx.cfg.mosaic.cog, compress=ctx.cfg.mosaic.compress,
                     overview_resampling="mode")
            write_class_map_companions(path, classes)
