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
    requires = ("regularize", "split", "compare_models", "objects")
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
        results: dict[str, list[dict[str, Any]]] = {"raw": [], "regularized": [], "pixels": []}
        seg = ctx.cfg.segmentation
        for r in products.runs(ctx):
            ids = split.loc[(split["run"] == r) & (split["part"] == part), "poly_id"]
            ev = polys[polys["poly_id"].isin(ids)]
            maps = {"raw": p.class_map(r)}
            if ctx.cfg.regularize.enabled:
                maps["regularized"] = p.regularized_map(r)
            if seg.enabled and seg.compare_pixels:  # the pixel map of the same run, scored in the same pass over the tiles
                maps["pixels"] = p.pixel_class_map(r)
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
        context = report_context(ctx)
        calibrated = self._calibration(ctx, part)
        if calibrated:
            context["calibration"] = calibrated
        if ctx.cfg.update is not None:
            context["update_of"] = str(ctx.cfg.update.previous)
        if ctx.cfg.segmentation.enabled:
            context["objects"] = self._objects(ctx, part, results["raw"], results["pixels"])
        html_report.build(p.final, json.loads(p.metrics.read_text()), classes, context)

    def _calibration(self, ctx: Context, part: str) -> list[dict[str, Any]]:
        """Reliability of each calibrated run's probabilities on its evaluation pixels, before and after its temperature
        -> metrics.json ("calibration"), RESULTS.txt and the report."""
        import numpy as np

        from chain import calibration, models
        from chain.atomic import write_json
        from chain.evaluation import proba_of_samples
        from chain.sampling import select_run
        from chain.training import CALIBRATION

        p = ctx.paths
        runs = [r for r in products.runs(ctx) if (p.model(r) / CALIBRATION).exists()]
        if not runs or ctx.cfg.segmentation.enabled:
            return []
        cat, spec, samples, split = products.catalog(ctx), products.spec(ctx), products.samples(ctx), products.splits(ctx)
        bins = ctx.cfg.calibration.bins
        rows = []
        for r in runs:
            fitted = json.loads((p.model(r) / CALIBRATION).read_text())
            raw = models.load(p.model(r), "compiled", None, spec=spec, cat=cat, calibrated=False)
            ev = select_run(samples, split, r, part, 20000, ctx.cfg.seed)  # a seeded draw of up to 20 000 pixels per class
            ev = ev.take(np.flatnonzero(np.isin(ev.code, raw.classes_)))
            proba = proba_of_samples(raw, ev, cat, spec, ctx.cfg.grid.tile_size_px)
            y = np.searchsorted(np.asarray(raw.classes_), ev.code)
            t = float(fitted["temperature"])
            rows.append({"run": r, "temperature": t, "fitted_on": fitted["fitted_on"], "fit_pixels": fitted["pixels"],
                         "before": calibration.reliability(proba, y, bins),
                         "after": calibration.reliability(calibration.apply(proba, t), y, bins)})
            log.info("validate: run %d: ECE on %d %s pixels %.3f before calibration, %.3f after (T = %.2f)", r, len(y), part,
                     rows[-1]["before"]["ece"], rows[-1]["after"]["ece"], t)
        write_json(p.metrics, {**json.loads(p.metrics.read_text()), "calibration": {"part": part, "runs": rows}})
        lines = [f"Calibration (temperature scaling; ECE on the {part} pixels, {bins} bins)",
                 f"{'run':>4s} {'T':>6s} {'ECE before':>11s} {'ECE after':>10s}  fitted on"]
        lines += [f"{x['run']:>4d} {x['temperature']:>6.2f} {x['before']['ece']:>11.3f} {x['after']['ece']:>10.3f}  {x['fitted_on']}"
                  for x in rows]
        write_text(p.results, p.results.read_text() + "\n\n" + "\n".join(lines) + "\n")
        return rows

    def _objects(self, ctx: Context, part: str, object_runs: list[dict[str, Any]], pixel_runs: list[dict[str, Any]]) -> dict[str, Any]:
        """Object map against the pixel map of the same runs: OA, kappa, mean F1, object-level accuracy, fragmentation
        -> metrics.json ("objects") and RESULTS.txt."""
        import numpy as np

        from chain.atomic import write_json
        from chain.metrics import mean_ci
        from chain.object_eval import fragmentation, object_accuracy
        from chain.objects import load

        p, split = ctx.paths, products.splits(ctx)
        table = load(p.objects)
        rows: dict[str, list[dict[str, Any]]] = {"objects": [], "pixels": []}
        for r in products.runs(ctx):
            with np.load(p.object_classes(r)) as z:
                acc = object_accuracy(table, split, r, part, z["code"])
            m = object_runs[r]
            rows["objects"].append({"oa": m["oa"], "kappa": m["kappa"], "f1_mean": m["macro_f1"], "object_accuracy": acc["correct"],
                                    "evaluation_objects": acc["n_objects"], "left_out_mixed": acc["left_out_mixed"],
                                    **fragmentation(p.class_map(r))})
            if pixel_runs:
                pm = pixel_runs[r]
                rows["pixels"].append({"oa": pm["oa"], "kappa": pm["kappa"], "f1_mean": pm["macro_f1"],
                                       **fragmentation(p.pixel_class_map(r))})
            o = rows["objects"][-1]
            log.info("validate: run %d objects: OA %.3f, %d of %d evaluation objects right (%.3f), %.1f regions/km²%s", r, o["oa"],
                     round(o["object_accuracy"] * o["evaluation_objects"]) if o["evaluation_objects"] else 0, o["evaluation_objects"],
                     o["object_accuracy"], o["regions_per_km2"],
                     f"; pixels: OA {rows['pixels'][-1]['oa']:.3f}, {rows['pixels'][-1]['regions_per_km2']:.1f} regions/km²"
                     if rows["pixels"] else "")
        keys = ("oa", "kappa", "f1_mean", "object_accuracy", "regions_per_km2", "mean_region_m2")
        summary = {kind: {k: dict(zip(("mean", "ci95"), mean_ci([x[k] for x in v]), strict=True)) for k in keys if k in v[0]}
                   for kind, v in rows.items() if v}
        out = {"runs": rows, "summary": summary, "part": part,
               "segments": json.loads(p.segment_summary.read_text()), "objects": json.loads(p.object_summary.read_text())}
        metrics = json.loads(p.metrics.read_text())
        write_json(p.metrics, {**metrics, "objects": out})
        lines = ["Objects vs pixels (mean over runs)", f"{'':22s}{'objects':>12s}{'pixels':>12s}"]
        for k in keys:
            ob = summary["objects"].get(k, {}).get("mean", float("nan"))
            px = summary.get("pixels", {}).get(k, {}).get("mean", float("nan"))
            lines.append(f"{k:22s}{ob:12.3f}{px:12.3f}")
        write_text(p.results, p.results.read_text() + "\n\n" + "\n".join(lines) + "\n")
        return out
