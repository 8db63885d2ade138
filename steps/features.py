"""features: the named feature stack (gap-filled bands + indices per date); optionally the cube itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chain.atomic import write_json
from chain.catalog import Catalog
from chain.features import FeatureSpec, compute_features, feature_spec
from chain.grid import Tile
from chain.raster import write_tile
from chain.runner import Context, Step, register
from steps import common
from steps.ingest import preflight


def cube_tile(tile: Tile, cat: Catalog, spec: FeatureSpec, out_dir: Path) -> str:
    block = compute_features(cat, spec, tile.window)
    write_tile(out_dir / f"{tile.id}.tif", block.values, cat.grid, tile.window, float("nan"), descriptions=spec.names)
    return tile.id


@register
class Features(Step):
    name = "features"
    requires = ("gapfill",)

    def check(self, ctx: Context) -> None:
        feature_spec(ctx.cfg, preflight(ctx)[0])

    def params(self, ctx: Context) -> dict[str, Any]:
        p: dict[str, Any] = {"features": ctx.cfg.section("features"), "gapfill": ctx.cfg.section("gapfill")}
        if ctx.cfg.features.write_cube:
            p["tile_size_px"] = ctx.cfg.grid.tile_size_px
        return p

    def outputs(self, ctx: Context) -> list[Path]:
        d = ctx.dir(self.name)
        return [d / "features.json"] + ([d / "cube"] if ctx.cfg.features.write_cube else [])

    def run(self, ctx: Context) -> None:
        cat = common.catalog(ctx)
        spec = feature_spec(ctx.cfg, cat)
        d = ctx.dir(self.name)
        if ctx.cfg.features.write_cube:
            out = d / "cube"
            out.mkdir(parents=True, exist_ok=True)
            from chain.cluster import map_tiles

            map_tiles(ctx.client(), ctx.cfg.cluster, cube_tile, common.tiles(ctx), cat, spec, out,
                      is_done=lambda t: (out / f"{t.id}.tif").exists(), key=f"cube-{ctx.signatures[self.name][:12]}",
                      desc="features: cube")
        write_json(d / "features.json", spec.to_dict())
