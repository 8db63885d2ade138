"""train: one model per run, on that run's training polygons; saved with its manifest."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from chain import models
from chain.errors import StepError
from chain.sampling import select_run
from chain.seeds import derive_seed
from chain.runner import Context, Step, register
from steps import common
from steps.sample import load_samples

log = logging.getLogger(f"chain.{__name__}")


def model_dir(ctx: Context, run: int) -> Path:
    return ctx.dir("train") / f"run_{run}"


@register
class Train(Step):
    name = "train"
    requires = ("sample", "split")

    def params(self, ctx: Context) -> dict[str, Any]:
        m = dict(ctx.cfg.section("model"))
        for key in ("n_jobs", "num_workers", "inference_batch"):
            m.pop(key, None)  # parallelism and batching do not change the model
        return {"model": m, "seed": ctx.cfg.seed, "split": ctx.cfg.split.scheme}

    def check(self, ctx: Context) -> None:
        if ctx.cfg.model.type == "rf":
            return
        from chain.config import DEEP_TYPES
        from chain.deep.inputs import model_inputs
        from chain.features import feature_spec
        from steps.ingest import preflight

        cat, _ = preflight(ctx)
        inputs = model_inputs(ctx.cfg.model, feature_spec(ctx.cfg, cat), cat)  # the inputs the model needs are there
        if ctx.cfg.model.type in DEEP_TYPES:
            from chain.deep import nets, trainer

            channels = {i.name: i.channels(cat) for i in inputs}
            nets.build(ctx.cfg.model, 2, trainer.shapes_of(inputs, channels))  # sizes fit the network
            trainer.resolve_device(ctx.cfg.model.device)

    @staticmethod
    def _cap(ctx: Context) -> int | None:
        caps = [c for c in (ctx.cfg.sample.max_pixels_per_class, getattr(ctx.cfg.model, "max_samples_per_class", None)) if c]
        return min(caps) if caps else None

    def outputs(self, ctx: Context) -> list[Path]:
        return [model_dir(ctx, r) / "manifest.json" for r in common.runs(ctx)]

    def run(self, ctx: Context) -> None:
        samples, split, spec = load_samples(ctx), common.splits(ctx), common.spec(ctx)
        for run in common.runs(ctx):
            folder = model_dir(ctx, run)
            if (folder / "manifest.json").exists():
                log.info("train: run %d already trained, resuming", run)
                continue
            train = select_run(samples, split, run, "train", self._cap(ctx), ctx.cfg.seed)
            if len(train.code) == 0:
                raise StepError(f"train: run {run} has no training pixel; are the training polygons smaller than a pixel?")
            seed = derive_seed(ctx.cfg.seed, "train", run)
            if ctx.cfg.model.type != "rf":
                from steps.train_patches import train_patch_model

                train_patch_model(ctx, run, folder, train, samples, split, seed, self._cap(ctx), ctx.signatures[self.name])
                continue
            model = models.build(ctx.cfg.model, seed)
            t0 = time.time()
            model.fit(train.X, train.code)
            codes, counts = np.unique(train.code, return_counts=True)
            log.info("train: run %d: %s on %d pixels (%s) in %.1f s", run, ctx.cfg.model.type, len(train.code),
                     ", ".join(f"{c}: {n}" for c, n in zip(codes, counts)), time.time() - t0)
            models.save(folder, model, {
                "type": ctx.cfg.model.type, "run": run, "seed": seed, "feature_names": spec.names,
                "classes": [int(c) for c in model.classes_], "train_pixels": {str(c): int(n) for c, n in zip(codes, counts)},
                "params": ctx.cfg.section("model"), "config_hash": ctx.signatures[self.name],
            })
