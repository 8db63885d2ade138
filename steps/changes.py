"""changes: (update) this year's map against last year's: change matrix and map on confident pixels, the update's report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from chain.params import From, StepParams
from chain.runner import Context, Step


class ChangesParams(StepParams):
    min_confidence: Annotated[int | None, From("update.min_confidence")]


class Changes(Step):
    name = "changes"
    requires = ("mosaic", "carryover", "train")
    after = ("validate",)
    version = "1"
    Params = ChangesParams

    def enabled(self, ctx: Context) -> bool:
        return ctx.cfg.update is not None

    def outputs(self, ctx: Context) -> list[Path]:
        if not self.enabled(ctx):
            return []
        p = ctx.paths
        return [p.change_dir / "change_matrix.csv", p.change_dir / "change.tif", p.change_dir / "change.html",
                p.change_dir / "summary.json", p.update_report]

    def run(self, ctx: Context) -> None:
        if not self.enabled(ctx):
            return
        from chain.update.changes import changes_and_report
        from chain.update.previous import previous_run

        changes_and_report(ctx, previous_run(ctx))
