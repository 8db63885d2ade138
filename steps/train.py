"""train: one model per run, on that run's training polygons; saved with its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.models import model_type
from chain.params import RESOURCE_KEYS, From, StepParams
from chain.runner import Context, Step


class TrainParams(StepParams):
    model: Annotated[dict[str, Any], From("model", exclude=RESOURCE_KEYS)]  # parallelism and batching do not change the model
    seed: Annotated[int, From("seed")]
    scheme: Annotated[str, From("split.scheme")]


class Train(Step):
    name = "train"
    requires = ("sample", "split")
    version = "2"
    Params = TrainParams

    def check(self, ctx: Context) -> None:
        from chain.training import check_model

        check_model(ctx, ctx.cfg.model)

    def outputs(self, ctx: Context) -> list[Path]:
        files = (*model_type(ctx.cfg.model.type).files, "manifest.json")
        return [ctx.paths.model(r) / f for r in products.runs(ctx) for f in files]

    def run(self, ctx: Context) -> None:
        from chain.training import train_in_workdir

        for run in products.runs(ctx):
            train_in_workdir(ctx, ctx.cfg.model, ctx.cfg.section("model"), run, ctx.paths.model(run), ctx.signatures[self.name])
