"""validate: each run's map (raw and regularized) against its evaluation polygons -> RESULTS.txt, metrics.json, PNGs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import json

import numpy as np

from chain import __version__, html_report

from chain.catalog import Catalog
from chain.grid import Tile
from chain.metrics import confusion
from chain.mosaic import read_window_array
from chain.report import mean_ci_text, run_metrics, write_reports
from chain.sampling import polygons_in_tile, rasterize_ids
from chain.split import evaluation_set
from chain.runner import Context, Step, read_record, register, step_names
from steps import common
from steps.regularize import regularized_path

log = logging.getLogger(f"chain.{__name__}")


def confusion_of_maps(map_paths: list[Path], polys: Any, cat: Catalog, tiles: list[Tile], labels: list[int]) -> list[np.ndarray]:
    """Confusion matrix of each map against the pixels (centres) inside ``polys``, tile by tile.

    The reference is rasterized once per tile and compared with every map.
    """
    cms = [np.zeros((len(labels), len(labels)), dtype=np.int64) for _ in map_paths]
    for tile in tiles:
        inside = polygons_in_tile(polys, cat.grid, tile)
        if inside.empty:
            continue
        ref = rasterize_ids(inside, cat.grid, tile, column="code") - 1
        for cm, path in zip(cms, map_paths):
            pred = read_window_array(path, tile).astype(np.int64)
            sel = (ref >= 0) & (pred > 0)  # nodata (never observed) pixels are not predictions: left out
            cm += confusion(ref[sel], pred[sel], labels)
    return cms


@register
class Validate(Step):
    name = "validate"
    requires = ("regularize", "split", "compare_models")
    version = "5"

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"tile_size_px": ctx.cfg.grid.tile_size_px}

    def outputs(self, ctx: Context) -> list[Path]:
        f = ctx.final
        return [f / "RESULTS.txt", f / "metrics.json", f / "report.html"] + [f / f"confusion_Seed_{r}.png" for r in common.runs(ctx)]

    def run(self, ctx: Context) -> None:
        cat, polys, split = common.catalog(ctx), common.reference(ctx), common.splits(ctx)
        part = evaluation_set(ctx.cfg.split.scheme)
        labels = sorted(set(split["code"].astype(int)))
        tiles = common.tiles(ctx)
        results: dict[str, list[dict[str, Any]]] = {"raw": [], "regularized": []}
        for r in common.runs(ctx):
            ids = split.loc[(split["run"] == r) & (split["part"] == part), "poly_id"]
            ev = polys[polys["poly_id"].isin(ids)]
            maps = {"raw": ctx.final / f"Classif_Seed_{r}.tif"}
            if ctx.cfg.regularize.enabled:
                maps["regularized"] = regularized_path(ctx, r)
            for kind, cm in zip(maps, confusion_of_maps(list(maps.values()), ev, cat, tiles, labels)):
                results[kind].append(run_metrics(cm, labels))
                m = results[kind][-1]
                log.info("validate: run %d (%s map): OA %.3f, kappa %.3f on %d pixels", r, kind, m["oa"], m["kappa"], m["n_pixels"])
        names = {c: v["name"] for c, v in common.classes(ctx).items()}
        write_reports(ctx.final, results["raw"], labels, names, part, regularized=results["regularized"] or None)
        comparison = read_comparison(ctx)
        if comparison.get("models"):
            from chain.atomic import write_text

            write_text(ctx.final / "RESULTS.txt", (ctx.final / "RESULTS.txt").read_text() + "\n\n" + comparison_text(comparison))
        html_report.build(ctx.final, json.loads((ctx.final / "metrics.json").read_text()), common.classes(ctx), report_context(ctx))


def read_comparison(ctx: Context) -> dict[str, Any]:
    path = ctx.dir("compare_models") / "comparison.json"
    return json.loads(path.read_text()) if path.exists() else {}


def comparison_text(comparison: dict[str, Any]) -> str:
    lines = [f"Model comparison (same split, all {comparison['part']} pixels; mean +- 95 % CI over runs)", "",
             f"{'model':<22}{'OA':>18}{'kappa':>18}{'mean F1':>18}"]
    for m in comparison["models"]:
        s = m["summary"]
        lines.append(f"{m['name']:<22}{mean_ci_text(s['oa']):>18}{mean_ci_text(s['kappa']):>18}{mean_ci_text(s['f1_mean']):>18}")
    return "\n".join(lines) + "\n"


def report_context(ctx: Context) -> dict[str, Any]:
    cfg, cat, polys = ctx.cfg, common.catalog(ctx), common.reference(ctx)
    g = cat.grid
    durations = {}
    for name in step_names():
        rec = read_record(ctx.workdir, name)
        if rec and rec.get("status") == "done" and "seconds" in rec:
            durations[name] = rec["seconds"]
    model = {k: v for k, v in cfg.section("model").items() if k != "type"}
    return {
        "title": cfg.source.name if cfg.source else str(ctx.workdir),
        "version": __version__,
        "pixel_area_m2": g.res[0] * g.res[1],
        "summary": {
            "config": str(cfg.source or ""),
            "work folder": str(ctx.workdir),
            "time series": (f"{len(cat.dates)} dates ({len(cat.acquisitions)} products), {cat.dates[0]} .. {cat.dates[-1]} ({cfg.inputs.s2.path})"
                            if cfg.inputs.s2 else "none"),
            "bands": " ".join(cat.bands) or "-",
            "Sentinel-1": (f"{len(cat.s1)} files, {len({f.date for f in cat.s1})} dates ({cfg.inputs.s1.path})" if cat.s1 else "none"),
            "SPOT PAN + MS": (f"PAN {cat.spot.pan_res:g} m + MS {cat.spot.ms_res:g} m (ratio {cat.spot.ratio}, bands "
                              f"{' '.join(cat.spot.ms_bands)}), measured MS/PAN shift dx {cat.spot.shift_m[0]:+.2f} m, "
                              f"dy {cat.spot.shift_m[1]:+.2f} m ({cat.spot.ms})" if cat.spot else "none"),
            "area of interest": str(cfg.grid.aoi) if cfg.grid.aoi else "grid extent",
            "feature stack": (f"{len(cat.stack)} file(s), {sum(len(f.names) for f in cat.stack)} band(s)" if cat.stack else "none"),
            "features": f"{len(common.spec(ctx).names)} in all",
            "grid": f"{g.width} x {g.height} px of {g.res[0]:g} m, {g.crs.to_string()}",
            "reference": f"{len(polys)} polygons, {polys['code'].nunique()} classes ({cfg.inputs.reference.path})",
            "split": f"{cfg.split.scheme}, {cfg.split.runs} run(s), seed {cfg.seed}",
            "model": f"{cfg.model.type} ({', '.join(f'{k}={v}' for k, v in model.items())})",
            "regularization": (f"MMU {cfg.regularize.mmu_px or 0} px / {cfg.regularize.mmu_m2 or 0} m², majority radius {cfg.regularize.majority_radius_px} px"
                               if cfg.regularize.enabled else "off"),
        },
        "durations": durations,
        "models": [{"name": cfg.model.type, "params": ", ".join(f"{k}={v}" for k, v in model.items())}],
        "comparison": read_comparison(ctx),
        "training_curves": [str(ctx.dir("train") / f"run_{r}" / "curves.png") for r in common.runs(ctx)],
    }
