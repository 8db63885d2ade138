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
    # objects or pixels (and both, for the comparison): what the models learn from
    segmentation: Annotated[str, From("segmentation.method")]
    compare_pixels: Annotated[bool, From("segmentation.compare_pixels")]
    calibration: Annotated[dict[str, Any], From("calibration")]


class UpdateTrainParams(TrainParams):
    """In an update: also where the networks start from and how (last year's run, fine-tuning, pruning, sample share)."""

    update: Annotated[dict[str, Any], From("update", exclude=("previous_config", "threshold", "max_flagged_share", "siamese",
                                                               "min_confidence"))]


class Train(Step):
    name = "train"
    requires = ("sample", "split", "objects")  # objects: object-based runs train on the object table
    version = "2"
    Params = TrainParams
    more_params = (UpdateTrainParams,)

    def params(self, ctx: Context) -> StepParams:
        return (UpdateTrainParams if ctx.cfg.update is not None else TrainParams).of(ctx.cfg)

    def check(self, ctx: Context) -> None:
        from chain.training import check_model

        check_model(ctx, ctx.cfg.model)

    def outputs(self, ctx: Context) -> list[Path]:
        from chain.training import CALIBRATION, calibration_on

        files = (*model_type(ctx.cfg.model.type).files, "manifest.json")
        return [folder / f for _, folder, unit in self.models(ctx) for f in (*files, *([CALIBRATION] if calibration_on(ctx.cfg, unit) else []))]

    @staticmethod
    def models(ctx: Context) -> list[tuple[int, Path, str]]:
        """(run, folder, unit) of every model to train: one per run, on objects when segmenting (and then the same
        type on pixels too, for the comparison, with ``segmentation.compare_pixels``)."""
        seg = ctx.cfg.segmentation
        out = [(r, ctx.paths.model(r), "object" if seg.enabled else "pixel") for r in products.runs(ctx)]
        if seg.enabled and seg.compare_pixels:
            out += [(r, ctx.paths.pixel_model(r), "pixel") for r in products.runs(ctx)]
        return out

    def run(self, ctx: Context) -> None:
        from chain.training import train_in_workdir

        for run, folder, unit in self.models(ctx):
            train_in_workdir(ctx, ctx.cfg.model, ctx.cfg.section("model"), run, folder, ctx.signatures[self.name], unit)
