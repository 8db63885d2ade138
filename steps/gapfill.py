"""gapfill: the regular date grid of every series (Sentinel-2, Landsat, each Sentinel-1 orbit direction).

The gap-filled values themselves are computed on the fly, per window, by the feature function; this
step records the output dates each series is gap-filled onto, which the features step reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.atomic import write_json
from chain.params import From, StepParams
from chain.runner import Context, Step


class GapfillParams(StepParams):
    gapfill: Annotated[dict[str, Any], From("gapfill")]


class Gapfill(Step):
    name = "gapfill"
    requires = ("ingest",)
    version = "3"
    Params = GapfillParams

    def check(self, ctx: Context) -> None:
        from chain.features import date_grids

        date_grids(ctx.cfg, products.preflight(ctx)[0])

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.paths.dates]

    def run(self, ctx: Context) -> None:
        from chain.features import date_grids

        grids = date_grids(ctx.cfg, products.catalog(ctx))
        write_json(ctx.paths.dates, {s: {label: {"output": [d.isoformat() for d in dates]} for label, dates in g.items()}
                                     for s, g in grids.items()})
