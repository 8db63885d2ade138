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

import numpy as np

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
    version = "3"
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
        names = model_labels([m.type for m in everyone], params)
        rows = []
        for i, (name, model, p) in enumerate(zip(names, everyone, params, strict=True)):
            per_run, first = [], None
            for run in products.runs(ctx):
                folder = ctx.paths.model(run) if i == 0 else ctx.paths.compared_model(i, run)
                if i > 0:
                    train_in_workdir(ctx, model, p, run, folder, ctx.signatures[self.name])
                ev = select_run(samples, split, run, part, None, ctx.cfg.seed)
                predictor = models.load(folder, "compiled", None)  # this process is the only caller: every core
                first = first or (folder, predictor)  # run 0's: its costs go in the table
                pred = predict_samples(predictor, ev, cat, spec, ctx.cfg.grid.tile_size_px)
                m = run_metrics(confusion(ev.code, pred, labels), labels)
                m["f1_mean"] = m["macro_f1"]  # over the classes with evaluation pixels
                per_run.append(m)
                log.info("compare_models: %s, run %d: OA %.3f, kappa %.3f on %d %s pixels", name, run,
                         per_run[-1]["oa"], per_run[-1]["kappa"], len(ev.code), part)
            summary = {k: dict(zip(("mean", "ci95"), mean_ci([r[k] for r in per_run]), strict=True)) for k in ("oa", "kappa", "f1_mean")}
            summary["f1_per_class"] = {str(c): float(np.nanmean([r["per_class"][str(c)]["f1"] for r in per_run])) for c in labels}
            assert first is not None
            rows.append({"name": name, "type": model.type, "params": p, "runs": per_run, "summary": summary,
                         "cost": model_cost(*first, cat, spec, ctx.cfg.grid.tile_size_px)})
            log.info("compare_models: %s: %s", name, ", ".join(f"{k} {v:,.0f}" if isinstance(v, (int, float)) else f"{k} {v}"
                                                               for k, v in rows[-1]["cost"].items()))
        class_names = {str(c): v["name"] for c, v in products.classes(ctx).items()}
        write_json(ctx.paths.comparison, {"part": part, "models": rows,
                                          "class_names": {str(c): class_names.get(str(c), str(c)) for c in labels}})


def model_cost(folder: Path, predictor: Any, cat: Any, spec: Any, tile_size: int) -> dict[str, Any]:
    """What a model costs: parameters (networks), training seconds (``fit.json``), and mapping speed in px/s measured
    here on one window of the grid's first tile (a whole tile for pixel and segmentation models, 64 x 64 px for patch
    models, whose cost per pixel is a forward pass each), every core of this process."""
    import json
    import time

    from rasterio.windows import Window

    inner = getattr(predictor, "inner", predictor)
    net = getattr(inner, "network", None)
    fit = folder / "fit.json"
    side = 64 if predictor.inputs and not predictor.whole_tile else tile_size
    h, w = min(side, cat.grid.height), min(side, cat.grid.width)
    predictor.predict_window(cat, spec, Window(0, 0, min(w, 16), min(h, 16)))  # warm-up: lazy imports, first allocations
    t0 = time.perf_counter()
    predictor.predict_window(cat, spec, Window(0, 0, w, h))
    seconds = time.perf_counter() - t0
    return {"parameters": int(sum(p.numel() for p in net.parameters())) if net is not None else None,
            "train_seconds": float(json.loads(fit.read_text())["seconds"]) if fit.exists() else None,
            "inference_px_s": h * w / seconds, "inference_window_px": h * w}
