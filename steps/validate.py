"""validate: each run's map against its evaluation polygons -> RESULTS.txt, metrics.json, PNGs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from chain.metrics import confusion
from chain.mosaic import read_window_array
from chain.report import run_metrics, write_reports
from chain.sampling import polygons_in_tile, rasterize_ids
from chain.split import evaluation_set
from chain.runner import Context, Step, register
from steps import common

log = logging.getLogger(__name__)


@register
class Validate(Step):
    name = "validate"
    requires = ("mosaic", "split")

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"tile_size_px": ctx.cfg.grid.tile_size_px}

    def outputs(self, ctx: Context) -> list[Path]:
        f = ctx.final
        return [f / "RESULTS.txt", f / "metrics.json"] + [f / f"confusion_Seed_{r}.png" for r in common.runs(ctx)]

    def run(self, ctx: Context) -> None:
        cat, polys, split = common.catalog(ctx), common.reference(ctx), common.splits(ctx)
        part = evaluation_set(ctx.cfg.split.scheme)
        classes = common.classes(ctx)
        labels = sorted(set(split["code"].astype(int)))
        runs = []
        for r in common.runs(ctx):
            ids = split.loc[(split["run"] == r) & (split["part"] == part), "poly_id"]
            ev = polys[polys["poly_id"].isin(ids)]
            cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
            map_path = ctx.final / f"Classif_Seed_{r}.tif"
            for tile in common.tiles(ctx):
                inside = polygons_in_tile(ev, cat.grid, tile)
                if inside.empty:
                    continue
                ref = rasterize_ids(inside, cat.grid, tile, column="code") - 1
                pred = read_window_array(map_path, tile).astype(np.int64)
                # nodata (never observed) pixels are not predictions; they are left out and counted
                sel = (ref >= 0) & (pred > 0)
                cm += confusion(ref[sel], pred[sel], labels)
            runs.append(run_metrics(cm, labels))
            log.info("validate: run %d: OA %.3f, kappa %.3f on %d pixels", r, runs[-1]["oa"], runs[-1]["kappa"], runs[-1]["n_pixels"])
        names = {c: v["name"] for c, v in classes.items()}
        write_reports(ctx.final, runs, labels, names, part)
