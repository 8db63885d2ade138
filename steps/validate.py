"""validate: each run's map (raw and regularized) against its evaluation polygons -> RESULTS.txt, metrics.json, PNGs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.atomic import write_text
from chain.params import From, StepParams
from chain.runner import Context, Step

log = logging.getLogger(f"chain.{__name__}")


class ValidateParams(StepParams):
    tile_size_px: Annotated[int, From("grid.tile_size_px")]
    classes: Annotated[dict[str, Any], From("classes")]  # names in the tables, colours in the report


class Validate(Step):
    name = "validate"
    requires = ("regularize", "split", "compare_models")
    after = ("vectorize",)
    version = "6"
    Params = ValidateParams

    def outputs(self, ctx: Context) -> list[Path]:
        p = ctx.paths
        return [p.results, p.metrics, p.report] + [p.confusion_png(r) for r in products.runs(ctx)]

    def run(self, ctx: Context) -> None:
        from chain import html_report
        from chain.evaluation import confusion_of_maps
        from chain.report import comparison_text, run_metrics, write_reports
        from chain.run_summary import read_comparison, report_context
        from chain.split import evaluation_set

        cat, polys, split, p = products.catalog(ctx), products.reference(ctx), products.splits(ctx), ctx.paths
        part = evaluation_set(ctx.cfg.split.scheme)
        labels = sorted(set(split["code"].astype(int)))
        tiles = products.tiles(ctx)
        results: dict[str, list[dict[str, Any]]] = {"raw": [], "regularized": []}
        for r in products.runs(ctx):
            ids = split.loc[(split["run"] == r) & (split["part"] == part), "poly_id"]
            ev = polys[polys["poly_id"].isin(ids)]
            maps = {"raw": p.class_map(r)}
            if ctx.cfg.regularize.enabled:
                maps["regularized"] = p.regularized_map(r)
            for kind, cm in zip(maps, confusion_of_maps(list(maps.values()), ev, cat, tiles, labels), strict=True):
                results[kind].append(run_metrics(cm, labels))
                m = results[kind][-1]
                log.info("validate: run %d (%s map): OA %.3f, kappa %.3f on %d pixels", r, kind, m["oa"], m["kappa"], m["n_pixels"])
        classes = products.classes(ctx)
        names = {c: v["name"] for c, v in classes.items()}
        write_reports(p.final, results["raw"], labels, names, part, regularized=results["regularized"] or None)
        comparison = read_comparison(ctx)
        if comparison.get("models"):
            write_text(p.results, p.results.read_text() + "\n\n" + comparison_text(comparison))
        html_report.build(p.final, json.loads(p.metrics.read_text()), classes, report_context(ctx))
