"""carryover: (update) last year's reference polygons scored for "same land cover as last year"; the unchanged carried over.

Off unless the config has an ``update:`` section. Reads last year's finished work folder (``update.previous``)
and this year's features; writes the carried reference (what split, sample and validate use in an update),
``final/reference_flagged.gpkg`` (the polygons scored as changed, for a person to review) and the scores.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.params import From, StepParams
from chain.runner import Context, Step

log = logging.getLogger(f"chain.{__name__}")


class CarryoverParams(StepParams):
    update: Annotated[dict[str, Any] | None, From("update", exclude=("previous_config", "finetune", "lr_factor", "train_share",
                                                                    "prune", "min_confidence"))]
    seed: Annotated[int, From("seed")]


class Carryover(Step):
    name = "carryover"
    requires = ("features", "ingest")
    version = "4"  # patches memory-mapped, statistics by chunks, at most max_pairs per epoch
    Params = CarryoverParams

    def enabled(self, ctx: Context) -> bool:
        return ctx.cfg.update is not None

    def check(self, ctx: Context) -> None:
        if not self.enabled(ctx):
            return
        from chain.update.previous import check_lineage, previous_run

        prev = previous_run(ctx)
        cat, polys = products.preflight(ctx)
        check_lineage(prev, ctx.cfg, cat, sorted(int(c) for c in polys["code"].unique()))

    def external_inputs(self, ctx: Context) -> list[str]:
        if not self.enabled(ctx):
            return []
        from chain.runner import config_record

        prev = Path(ctx.cfg.update.previous)  # type: ignore[union-attr, arg-type]
        # last year's features are recomputed from its inputs: its config and catalogue say which
        return [str(config_record(prev)), str(prev / "ingest" / "catalog.json")]

    def outputs(self, ctx: Context) -> list[Path]:
        if not self.enabled(ctx):
            return []
        p = ctx.paths
        return [p.carried_reference, p.flagged_reference, p.carry_scores, p.carry_summary, p.step(self.name) / "scores.png"]

    def run(self, ctx: Context) -> None:
        if not self.enabled(ctx):
            return
        from chain.update.carry import carry_over
        from chain.update.previous import previous_run

        prev = previous_run(ctx)
        carry_over(ctx, prev)
