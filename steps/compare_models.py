"""compare_models: more models on the same split, scored with the run's model on the same evaluation pixels.

The run's model and every ``compare_models`` entry are trained on the same split and scored on all
the evaluation pixels (tile by tile, no maps) -> compare_models/comparison.json.

This is how a deep model meets its Random Forest counterparts (pixel RF, RF on flattened patches)
on equal terms; validate puts the table (model x metric, mean +- CI over runs) in the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from chain.atomic import write_json
from chain.metrics import confusion, mean_ci
from chain.report import run_metrics
from chain.runner import Context, Step, register
from chain.sampling import Samples, select_run
from chain.split import evaluation_set
from steps import common
from steps.sample import load_samples
from steps.train import check_model, fit_run, model_dir

log = logging.getLogger(f"chain.{__name__}")


def labels_of(models: list[Any]) -> list[str]:
    """Readable, unique names: the type, numbered when a type appears twice."""
    names = [m.type for m in models]
    return [f"{n} #{names[:i].count(n) + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def predict_samples(ctx: Context, folder: Path, ev: Samples) -> np.ndarray:
    """Predicted class of each evaluation pixel: pixel models from the sampled features, patch models tile by tile."""
    from chain.deep.infer import PatchModel, is_patch_model

    if not is_patch_model(folder):
        from chain import forest, models

        model = forest.evaluator(models.load(folder)[0])
        return np.asarray(model.classes_)[np.asarray(model.predict_proba(ev.X)).argmax(1)]
    from chain.deep.inputs import TileBlock, by_tile

    cat, spec = common.catalog(ctx), common.spec(ctx)
    model = PatchModel(folder, threads=ctx.cfg.cluster.threads_per_worker * ctx.cfg.cluster.n_workers)
    out = np.zeros(len(ev.row), np.int64)
    for window, idx in by_tile(cat, ev.row, ev.col, ctx.cfg.grid.tile_size_px):
        block = TileBlock(cat, spec, model.inputs, window)
        for s in range(0, len(idx), model.batch):
            part = idx[s:s + model.batch]
            proba = model.predict_batch(block.gather(ev.row[part], ev.col[part]))
            out[part] = model.classes_[proba.argmax(1)]
    return out


@register
class CompareModels(Step):
    name = "compare_models"
    requires = ("train", "sample", "split")

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"compare_models": ctx.cfg.section("compare_models"), "model": ctx.cfg.section("model"),
                "seed": ctx.cfg.seed, "sample": ctx.cfg.section("sample")}

    def check(self, ctx: Context) -> None:
        for m in ctx.cfg.compare_models:
            check_model(ctx, m)

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.dir(self.name) / "comparison.json"]

    def run(self, ctx: Context) -> None:
        out = ctx.dir(self.name)
        if not ctx.cfg.compare_models:
            write_json(out / "comparison.json", {"part": None, "models": []})
            return
        samples, split = load_samples(ctx), common.splits(ctx)
        part = evaluation_set(ctx.cfg.split.scheme)
        labels = sorted(set(split["code"].astype(int)))
        everyone = [ctx.cfg.model, *ctx.cfg.compare_models]
        params = [ctx.cfg.section("model"), *ctx.cfg.section("compare_models")]
        names = labels_of(everyone)
        rows = []
        for i, (name, model, p) in enumerate(zip(names, everyone, params)):
            per_run = []
            for run in common.runs(ctx):
                folder = model_dir(ctx, run) if i == 0 else out / f"model_{i}" / f"run_{run}"
                if i > 0:
                    fit_run(ctx, model, p, run, folder, ctx.signatures[self.name])
                ev = select_run(samples, split, run, part, None, ctx.cfg.seed)
                pred = predict_samples(ctx, folder, ev)
                m = run_metrics(confusion(ev.code, pred, labels), labels)
                m["f1_mean"] = float(np.nanmean([c["f1"] for c in m["per_class"].values()]))
                per_run.append(m)
                log.info("compare_models: %s, run %d: OA %.3f, kappa %.3f on %d %s pixels", name, run,
                         per_run[-1]["oa"], per_run[-1]["kappa"], len(ev.code), part)
            rows.append({"name": name, "type": model.type, "params": p, "runs": per_run,
                         "summary": {k: dict(zip(("mean", "ci95"), mean_ci([r[k] for r in per_run]))) for k in ("oa", "kappa", "f1_mean")}})
        write_json(out / "comparison.json", {"part": part, "models": rows})
