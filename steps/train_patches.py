"""train, for patch models (rf_patch and the torch networks): patches of the run's pixels, cached, then fit."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from chain import models
from chain.atomic import atomic_path
from chain.deep.inputs import extract, model_inputs
from chain.runner import Context
from chain.sampling import Samples, select_run
from chain.split import evaluation_set
from steps import common

log = logging.getLogger(f"chain.{__name__}")


def cached_patches(ctx: Context, folder: Path, part: str, samples: Samples, inputs: list[Any]) -> dict[str, np.ndarray]:
    """Patches of ``samples`` (float16 .npz in the model folder): extracted once, reused on resume."""
    path = folder / f"patches_{part}.npz"
    if path.exists():
        with np.load(path) as z:
            if np.array_equal(z["row"], samples.row) and np.array_equal(z["col"], samples.col):
                return {i.name: z[i.name] for i in inputs}
    cat, spec = common.catalog(ctx), common.spec(ctx)
    t0 = time.time()
    patches = extract(cat, spec, inputs, samples.row, samples.col, ctx.cfg.grid.tile_size_px, desc=f"train: {part} patches")
    log.info("train: %d %s patches extracted in %.1f s (%s)", len(samples.row), part, time.time() - t0,
             ", ".join(f"{k} {v.shape[1:]}" for k, v in patches.items()))
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, row=samples.row, col=samples.col, **patches)
    return patches


def train_patch_model(ctx: Context, model: Any, params: dict[str, Any], run: int, folder: Path, train: Samples,
                      samples: Samples, split: Any, seed: int, cap: int | None, signature: str) -> None:
    cfg = ctx.cfg
    cat, spec = common.catalog(ctx), common.spec(ctx)
    inputs = model_inputs(model, spec, cat)
    xtr = cached_patches(ctx, folder, "train", train, inputs)
    codes, counts = np.unique(train.code, return_counts=True)
    manifest = {"type": model.type, "run": run, "seed": seed, "feature_names": spec.names,
                "inputs": [i.to_dict() for i in inputs], "classes": [int(c) for c in codes],
                "train_pixels": {str(c): int(n) for c, n in zip(codes, counts)}, "params": params,
                "config_hash": signature}
    t0 = time.time()
    if model.type == "rf_patch":
        from chain.deep.infer import flatten

        rf = models.build_rf(model, seed)
        rf.fit(flatten(xtr), train.code)
        log.info("train: run %d: rf_patch on %d patches (%d features) in %.1f s", run, len(train.code),
                 rf.n_features_in_, time.time() - t0)
        models.save(folder, rf, {**manifest, "classes": [int(c) for c in rf.classes_]})
        return
    from chain.deep import trainer

    xval = yval = None
    if cfg.split.scheme == "64/16/20":  # early stopping / best epoch on the validation polygons, never on the test ones
        val = select_run(samples, split, run, "validation", cap, cfg.seed)
        xval, yval = cached_patches(ctx, folder, "validation", val, inputs), val.code
    assert evaluation_set(cfg.split.scheme) != "validation" or xval is None
    channels = {k: int(v.shape[1]) for k, v in xtr.items()}
    checkpoint = folder / "checkpoint.pt"
    net, norm, history = trainer.train(model, inputs, channels, manifest["classes"], xtr, train.code, xval, yval, seed,
                                       checkpoint=checkpoint)
    log.info("train: run %d: %s on %d patches, %d epochs in %.1f s (%.0f samples/s)", run, model.type, len(train.code),
             len(history), time.time() - t0, np.mean([h["samples_per_s"] for h in history]))
    trainer.save(folder, net, norm, history, {**manifest, "shapes": trainer.shapes_of(inputs, channels),
                                              "device": str(trainer.resolve_device(model.device))})
    checkpoint.unlink(missing_ok=True)  # the model is complete: the training state is no longer needed
