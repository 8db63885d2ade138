"""gapfill: the regular date grid the series is gap-filled onto.

The gap-filled values are computed on the fly, per window, by the feature function; the count of
clear observations per pixel (PixelsValidity) comes out of the classification pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chain.atomic import write_json
from chain.features import output_dates
from chain.runner import Context, Step, register
from steps import common
from steps.ingest import preflight


@register
class Gapfill(Step):
    name = "gapfill"
    requires = ("ingest",)
    version = "2"

    def check(self, ctx: Context) -> None:
        output_dates(ctx.cfg, preflight(ctx)[0])

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"gapfill": ctx.cfg.section("gapfill")}

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.dir(self.name) / "dates.json"]

    def run(self, ctx: Context) -> None:
        cat = common.catalog(ctx)
        write_json(ctx.dir(self.name) / "dates.json", {"input": [x.isoformat() for x in cat.dates],
                                                      "output": [x.isoformat() for x in output_dates(ctx.cfg, cat)]})
