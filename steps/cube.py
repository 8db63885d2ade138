"""cube: every tile's features computed once into a Zarr cube (optional: ``features.cache: zarr``).

Sample, compare_models and classify then read the cube (``chain.cube``) instead of reading and
gap-filling the series again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from chain import products
from chain.params import From, StepParams
from chain.runner import Context, Step


class CubeParams(StepParams):
    cache: Annotated[str, From("features.cache")]
    tile_size_px: Annotated[int, From("grid.tile_size_px")]  # the cube's chunks


class Cube(Step):
    name = "cube"
    requires = ("features",)
    version = "1"
    Params = CubeParams

    def enabled(self, ctx: Context) -> bool:
        return ctx.cfg.features.cache == "zarr"

    def outputs(self, ctx: Context) -> list[Path]:
        if not self.enabled(ctx):
            return []
        return [ctx.paths.feature_cache, ctx.paths.feature_cache_tiles]

    def run(self, ctx: Context) -> None:
        import dataclasses

        from chain import cube
        from chain.cluster import map_tiles

        if not self.enabled(ctx):
            return
        cat = products.catalog(ctx)
        spec = dataclasses.replace(products.spec(ctx), cache=None)  # computed here, not read from the cube being written
        path, tiles = ctx.paths.feature_cache, products.tiles(ctx)
        markers = ctx.paths.feature_cache_tiles
        if not (path / "zarr.json").exists():  # else a resumed step: its complete tiles are kept
            import shutil

            shutil.rmtree(markers, ignore_errors=True)
            sensors = cube.sensor_names(cat, spec, tiles[0])
            cube.create(path, cat, spec, ctx.cfg.grid.tile_size_px, sensors)
        markers.mkdir(parents=True, exist_ok=True)
        done = cube.complete_tiles(path, markers, spec, tiles, ctx.cfg.grid.tile_size_px)
        map_tiles(ctx.client(), ctx.cfg.cluster, cube.fill_tile, tiles, cat, spec, path, markers, is_done=lambda t: t.id in done,
                  key=f"cube-{ctx.signatures[self.name][:12]}", desc="cube: features into the Zarr cube")
