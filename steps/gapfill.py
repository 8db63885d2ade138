"""gapfill: the regular date grid and PixelsValidity (clear observations per pixel), tile by tile.

The gap-filled values themselves are computed on the fly, per window, by the feature function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chain.atomic import write_json
from chain.catalog import Catalog
from chain.features import output_dates, validity_count
from chain.grid import Tile
from chain.raster import write_tile
from chain.runner import Context, Step, register
from steps import common
from steps.ingest import preflight


def validity_tile(tile: Tile, cat: Catalog, out_dir: Path) -> str:
    write_tile(out_dir / f"{tile.id}.tif", validity_count(cat, tile.window), cat.grid, tile.window, None)
    return tile.id


@register
class Gapfill(Step):
    name = "gapfill"
    requires = ("ingest",)

    def check(self, ctx: Context) -> None:
        output_dates(ctx.cfg, preflight(ctx)[0])

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"gapfill": ctx.cfg.section("gapfill"), "tile_size_px": ctx.cfg.grid.tile_size_px}

    def outputs(self, ctx: Context) -> list[Path]:
        d = ctx.dir(self.name)
        return [d / "dates.json", d / "validity"]

    def run(self, ctx: Context) -> None:
        cat = common.catalog(ctx)
        d = ctx.dir(self.name)
        write_json(d / "dates.json", {"input": [x.isoformat() for x in cat.dates],
                                      "output": [x.isoformat() for x in output_dates(ctx.cfg, cat)]})
        out = d / "validity"
        out.mkdir(parents=True, exist_ok=True)
        from chain.cluster import map_tiles

        map_tiles(ctx.client(), ctx.cfg.cluster, validity_tile, common.tiles(ctx), cat, out,
                  is_done=lambda t: (out / f"{t.id}.tif").exists(), key=f"validity-{ctx.signatures[self.name][:12]}",
                  desc="gapfill: validity")
