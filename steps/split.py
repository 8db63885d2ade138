"""split: reference polygons into train/validation(/test) per class, for every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chain.atomic import atomic_path
from chain.split import make_splits, small_classes
from chain.runner import Context, Step, register
from steps import common
from steps.ingest import preflight


@register
class Split(Step):
    name = "split"
    requires = ("ingest",)

    def check(self, ctx: Context) -> None:
        # fail before any heavy work when a class cannot be split
        s = ctx.cfg.split
        if s.small_class == "error":
            _, polys = preflight(ctx)
            if small_classes(polys["code"], s.scheme, s.min_polygons_per_class):
                make_splits(polys, s.scheme, 1, ctx.cfg.seed, s.min_polygons_per_class, s.small_class)

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"split": ctx.cfg.section("split"), "seed": ctx.cfg.seed}

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.dir(self.name) / "split.csv"]

    def run(self, ctx: Context) -> None:
        s = ctx.cfg.split
        table = make_splits(common.reference(ctx), s.scheme, s.runs, ctx.cfg.seed, s.min_polygons_per_class, s.small_class)
        with atomic_path(self.outputs(ctx)[0]) as tmp:
            table.to_csv(tmp, index=False)
