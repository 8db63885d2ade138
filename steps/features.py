"""features: the named feature stack (each source's groups: gap-filled series + indices, SPOT, stack); optionally the cube."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.atomic import write_json
from chain.params import From, StepParams
from chain.runner import Context, Step


class FeaturesParams(StepParams):
    # the cache holds the same values: switching it re-runs the cube step only
    features: Annotated[dict[str, Any], From("features", exclude=("cache",))]
    gapfill_method: Annotated[str, From("gapfill.method")]
    cube_tile_size_px: Annotated[int | None, From("grid.tile_size_px", when=lambda cfg: cfg.features.write_cube)]


class Features(Step):
    name = "features"
    requires = ("gapfill",)
    version = "2"
    Params = FeaturesParams

    def check(self, ctx: Context) -> None:
        from chain.features import feature_spec

        feature_spec(ctx.cfg, products.preflight(ctx)[0])

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.paths.features] + ([ctx.paths.cube] if ctx.cfg.features.write_cube else [])

    def run(self, ctx: Context) -> None:
        from chain.features import cube_tile, feature_spec

        cat = products.catalog(ctx)
        spec = feature_spec(ctx.cfg, cat, products.date_grids(ctx))
        if ctx.cfg.features.write_cube:
            out = ctx.paths.cube
            out.mkdir(parents=True, exist_ok=True)
            from chain.cluster import map_tiles

            map_tiles(ctx.client(), ctx.cfg.cluster, cube_tile, products.tiles(ctx), cat, spec, out,
                      is_done=lambda t: (out / f"{t.id}.tif").exists(), key=f"cube-{ctx.signatures[self.name][:12]}",
                      desc="features: cube")
        write_json(ctx.paths.features, spec.to_dict())
