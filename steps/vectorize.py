"""vectorize: the regularized map (or the raw one) as polygons in final/Classif_Seed_<n>.gpkg (optional)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.params import From, StepParams
from chain.runner import Context, Step


class VectorizeParams(StepParams):
    vectorize: Annotated[dict[str, Any], From("vectorize")]
    tile_size_px: Annotated[int, From("grid.tile_size_px")]
    classes: Annotated[dict[str, Any], From("classes")]  # the polygons' class names


def _done(out: Path, suffix: str, tile: Any) -> bool:
    return (out / f"{tile.id}{suffix}").exists()


def source_map(ctx: Context, run: int) -> Path:
    return ctx.paths.regularized_map(run) if ctx.cfg.regularize.enabled else ctx.paths.class_map(run)


class Vectorize(Step):
    name = "vectorize"
    requires = ("regularize",)
    version = "2"
    Params = VectorizeParams

    def enabled(self, ctx: Context) -> bool:
        return bool(ctx.cfg.vectorize.enabled)

    def outputs(self, ctx: Context) -> list[Path]:
        if not ctx.cfg.vectorize.enabled:
            return []
        return [f for r in products.runs(ctx) for f in (ctx.paths.vector_map(r), ctx.paths.vector_tiles(r))]

    def run(self, ctx: Context) -> None:
        if not ctx.cfg.vectorize.enabled:
            return
        from chain.classify import CLASS_NODATA
        from chain.cluster import map_tiles
        from chain.vectorize import merge_tiles, tile_polygons

        cat, tiles = products.catalog(ctx), products.tiles(ctx)
        names = {c: v["name"] for c, v in products.classes(ctx).items()}
        for r in products.runs(ctx):
            out = ctx.paths.vector_tiles(r)
            out.mkdir(parents=True, exist_ok=True)
            map_tiles(ctx.client(), ctx.cfg.cluster, tile_polygons, tiles, cat.grid, source_map(ctx, r), CLASS_NODATA, out,
                      is_done=partial(_done, out, ".gpkg"), key=f"vectorize-{r}-{ctx.signatures[self.name][:12]}",
                      desc=f"vectorize: run {r}")
            merge_tiles([out / f"{t.id}.gpkg" for t in tiles], ctx.paths.vector_map(r), names, cat.grid.crs)
