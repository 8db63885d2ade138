"""regularize: minimum mapping unit (sieve) and optional majority filter -> Classif_Seed_<n>_regularized.tif."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.params import From, StepParams
from chain.paths import style
from chain.runner import Context, Step


class RegularizeParams(StepParams):
    regularize: Annotated[dict[str, Any], From("regularize")]
    tile_size_px: Annotated[int, From("grid.tile_size_px")]
    classes: Annotated[dict[str, Any], From("classes")]  # the map's legend


def _done(out: Path, tile: Any) -> bool:
    return (out / f"{tile.id}.tif").exists()


class Regularize(Step):
    name = "regularize"
    requires = ("mosaic",)
    version = "2"
    Params = RegularizeParams

    def enabled(self, ctx: Context) -> bool:
        return bool(ctx.cfg.regularize.enabled)

    def outputs(self, ctx: Context) -> list[Path]:
        if not ctx.cfg.regularize.enabled:
            return []
        p = ctx.paths
        return [f for r in products.runs(ctx) for f in (p.regularized_map(r), style(p.regularized_map(r)), p.regularized_tiles(r))]

    def run(self, ctx: Context) -> None:
        if not ctx.cfg.regularize.enabled:
            return
        from chain.classify import CLASS_NODATA
        from chain.cluster import map_tiles
        from chain.grid import make_tiles
        from chain.mosaic import assemble
        from chain.regularize import halo_for, mmu_pixels, regularize_tile
        from chain.styles import write_class_map_companions

        cfg, cat, p = ctx.cfg.regularize, products.catalog(ctx), ctx.paths
        mmu = mmu_pixels(cfg.mmu_px, cfg.mmu_m2, cat.grid.res[0] * cat.grid.res[1])
        tiles = make_tiles(cat.grid, ctx.cfg.grid.tile_size_px, halo_for(mmu, cfg.majority_radius_px))
        classes = products.classes(ctx)
        for r in products.runs(ctx):
            out = p.regularized_tiles(r)
            out.mkdir(parents=True, exist_ok=True)
            map_tiles(ctx.client(), ctx.cfg.cluster, regularize_tile, tiles, cat.grid, p.class_map(r), mmu,
                      cfg.majority_radius_px, out, is_done=partial(_done, out),
                      key=f"regularize-{r}-{ctx.signatures[self.name][:12]}", desc=f"regularize: run {r}")
            assemble(p.regularized_map(r), cat.grid, tiles, {t.id: out / f"{t.id}.tif" for t in tiles}, "uint8", CLASS_NODATA,
                     colormap=products.colormap(ctx), description="class (regularized)", cog=ctx.cfg.mosaic.cog,
                     compress=ctx.cfg.mosaic.compress, overview_resampling="mode")
            write_class_map_companions(p.regularized_map(r), classes)
