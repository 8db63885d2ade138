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
        check_model(ctx, ctx.cfg.model)

    def outputs(self, ctx: Context) -> list[Path]:
        return [model_dir(ctx, r) / "manifest.json" for r in common.runs(ctx)]

    def run(self, ctx: Context) -> None:
        for run in common.runs(ctx):
            fit_run(ctx, ctx.cfg.model, ctx.cfg.section("model"), run, model_dir(ctx, run), ctx.signatures[self.name])


def check_model(ctx: Context, model: Any) -> None:
    """The inputs a model needs are configured and its sizes fit its network (before any heavy step)."""
    if model.type == "rf":
        return
    from chain.config import DEEP_TYPES
    from chain.deep.inputs import model_inputs
    from chain.features import feature_spec
    from steps.ingest import preflight

    cat, _ = preflight(ctx)
    inputs = model_inputs(model, feature_spec(ctx.cfg, cat), cat)
    if model.type in DEEP_TYPES:
        from chain.deep import nets, trainer

        channels = {i.name: i.channels(cat) for i in inputs}
        nets.build(model, 2, trainer.shapes_of(inputs, channels))
        trainer.resolve_device(model.device)


def sample_cap(ctx: Context, model: Any) -> int | None:
    caps = [c for c in (ctx.cfg.sample.max_pixels_per_class, getattr(model, "max_samples_per_class", None)) if c]
    return min(caps) if caps else None


def fit_run(ctx: Context, model: Any, params: dict[str, Any], run: int, folder: Path, signature: str) -> None:
    """Train ``model`` on run ``run``'s training pixels into ``folder`` (skipped when already there)."""
    if (folder / "manifest.json").exists():
        log.info("train: run %d (%s) already trained, resuming", run, model.type)
        return
    samples, split, spec = load_samples(ctx), common.splits(ctx), common.spec(ctx)
    cap = sample_cap(ctx, model)
    train = select_run(samples, split, run, "train", cap, ctx.cfg.seed)
    if len(train.code) == 0:
        raise StepError(f"train: run {run} has no training pixel; are the training polygons smaller than a pixel?")
    seed = derive_seed(ctx.cfg.seed, "train", run)
    if model.type != "rf":
        from steps.train_patches import train_patch_model

        train_patch_model(ctx, model, params, run, folder, train, samples, split, seed, cap, signature)
        return
    rf = models.build(model, seed)
    t0 = time.time()
    rf.fit(train.X, train.code)
    codes, counts = np.unique(train.code, return_counts=True)
    log.info("train: run %d: %s on %d pixels (%s) in %.1f s", run, model.type, len(train.code),
             ", ".join(f"{c}: {n}" for c, n in zip(codes, counts)), time.time() - t0)
    models.save(folder, rf, {
        "type": model.type, "run": run, "seed": seed, "feature_names": spec.names,
        "classes": [int(c) for c in rf.classes_], "train_pixels": {str(c): int(n) for c, n in zip(codes, counts)},
        "params": params, "config_hash": signature,
    })
