"""compare_models: more models on the same split, scored with the run's model on the same evaluation pixels.

The run's model and every ``compare_models`` entry are trained on the same split and scored on all
the evaluation pixels (tile by tile, no maps) -> compare_models/comparison.json. This is how a deep
model meets its Random Forest counterparts (pixel RF, RF on flattened patches) on equal terms;
validate puts the table (model x metric, mean +- CI over runs) in the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from chain import models, products
from chain.atomic import write_json
from chain.params import RESOURCE_KEYS, From, StepParams
from chain.runner import Context, Step

log = logging.getLogger(f"chain.{__name__}")


class CompareParams(StepParams):
    compare_models: Annotated[list[dict[str, Any]], From("compare_models", exclude=RESOURCE_KEYS)]
    model: Annotated[dict[str, Any], From("model", exclude=RESOURCE_KEYS)]
    seed: Annotated[int, From("seed")]


class CompareModels(Step):
    name = "compare_models"
    requires = ("train", "sample", "split")
    version = "2"
    Params = CompareParams

    def enabled(self, ctx: Context) -> bool:
        return bool(ctx.cfg.compare_models)

    def check(self, ctx: Context) -> None:
        from chain.training import check_model

        for m in ctx.cfg.compare_models:
            check_model(ctx, m)

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.paths.comparison]

    def run(self, ctx: Context) -> None:
        from chain.evaluation import model_labels, predict_samples
        from chain.metrics import confusion, mean_ci
        from chain.report import run_metrics
        from chain.sampling import select_run
        from chain.split import evaluation_set
        from chain.training import train_in_workdir

        if not ctx.cfg.compare_models:
            write_json(ctx.paths.comparison, {"part": None, "models": []})
            return
        samples, split = products.samples(ctx), products.splits(ctx)
        cat, spec = products.catalog(ctx), products.spec(ctx)
        part = evaluation_set(ctx.cfg.split.scheme)
        labels = sorted(set(split["code"].astype(int)))
        everyone = [ctx.cfg.model, *ctx.cfg.compare_models]
        params = [ctx.cfg.section("model"), *ctx.cfg.section("compare_models")]
        names = model_labels([m.type for m in everyone])
        rows = []
        for i, (name, model, p) in enumerate(zip(names, everyone, params, strict=True)):
            per_run = []
            for run in products.runs(ctx):
                folder = ctx.paths.model(run) if i == 0 else ctx.paths.compared_model(i, run)
                if i > 0:
                    train_in_workdir(ctx, model, p, run, folder, ctx.signatures[self.name])
                ev = select_run(samples, split, run, part, None, ctx.cfg.seed)
                predictor = models.load(folder, "compiled", None)  # this process is the only caller: every core
                pred = predict_samples(predictor, ev, cat, spec, ctx.cfg.grid.tile_size_px)
                m = run_metrics(confusion(ev.code, pred, labels), labels)
                m["f1_mean"] = m["macro_f1"]  # over the classes with evaluation pixels
                per_run.append(m)
                log.info("compare_models: %s, run %d: OA %.3f, kappa %.3f on %d %s pixels", name, run,
                         per_run[-1]["oa"], per_run[-1]["kappa"], len(ev.code), part)
            rows.append({"name": name, "type": model.type, "params": p, "runs": per_run,
                         "summary": {k: dict(zip(("mean", "ci95"), mean_ci([r[k] for r in per_run]), strict=True))
                                     for k in ("oa", "kappa", "f1_mean")}})
        write_json(ctx.paths.comparison, {"part": part, "models": rows})
