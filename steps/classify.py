"""classify: every tile of the scene, for every run, on the dask cluster; class + confidence tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np

from chain import models, products
from chain.params import From, StepParams
from chain.runner import Context, Step


class ClassifyParams(StepParams):
    # both engines give the same classes: switching re-runs nothing
    classify: Annotated[dict[str, Any], From("classify", exclude=("engine", "inference_batch"))]
    tile_size_px: Annotated[int, From("grid.tile_size_px")]


class Classify(Step):
    name = "classify"
    requires = ("train", "features")
    after = ("compare_models",)
    version = "3"
    Params = ClassifyParams

    def check(self, ctx: Context) -> None:
        from chain.features import feature_spec
        from chain.resources import check_tile_memory

        cat = products.preflight(ctx)[0]
        check_tile_memory(ctx.cfg.cluster, ctx.cfg.grid.tile_size_px, cat.grid.width, cat.grid.height,
                          len(feature_spec(ctx.cfg, cat).names))

    def outputs(self, ctx: Context) -> list[Path]:
        out = [ctx.paths.classified_tiles(r) for r in products.runs(ctx)]
        seg = ctx.cfg.segmentation
        if seg.enabled:
            out += [ctx.paths.object_classes(r) for r in products.runs(ctx)]
            if seg.compare_pixels:
                out += [ctx.paths.pixel_classified_tiles(r) for r in products.runs(ctx)]
        return out

    def run(self, ctx: Context) -> None:
        from chain.classify import classify_tile_runs, tile_done
        from chain.cluster import map_tiles

        cat, spec = products.catalog(ctx), products.spec(ctx)
        kind = models.model_type(ctx.cfg.model.type)
        seg = ctx.cfg.segmentation
        jobs = []
        if seg.enabled:
            from chain.objects import load

            object_names = load(ctx.paths.objects).names
        for run in products.runs(ctx):
            folder = ctx.paths.model(run)
            if seg.enabled:  # an object model: trained on the object table's features
                models.check(folder, object_names)
            else:
                kind.compatible(folder, ctx.cfg.model, spec, cat)  # fails early and clearly on a mismatching model
            out = ctx.paths.classified_tiles(run)
            out.mkdir(parents=True, exist_ok=True)
            jobs.append((folder, out, run == 0))  # PixelsValidity does not depend on the run: written once, with run 0
        if seg.enabled and seg.compare_pixels:  # the same type on pixels, mapped in the same pass over each tile
            for run in products.runs(ctx):
                kind.compatible(ctx.paths.pixel_model(run), ctx.cfg.model, spec, cat)
                out = ctx.paths.pixel_classified_tiles(run)
                out.mkdir(parents=True, exist_ok=True)
                jobs.append((ctx.paths.pixel_model(run), out, False))
        proba = ctx.cfg.classify.probabilities

        def is_done(t):  # type: ignore[no-untyped-def]
            return all(tile_done(out, t, proba, validity) for _, out, validity in jobs)

        # one task per tile maps every run: the tile is read and gap-filled once for all of them
        runs = f"{len(jobs)} runs" if len(jobs) > 1 else "run 0"
        map_tiles(ctx.client(), ctx.cfg.cluster, classify_tile_runs, products.tiles(ctx), cat, spec, jobs, proba,
                  ctx.cfg.classify.engine, ctx.cfg.cluster.threads_per_worker, ctx.cfg.classify.inference_batch, is_done=is_done,
                  key=f"classify-{ctx.signatures[self.name][:12]}", desc=f"classify: {runs}")
        if seg.enabled:  # each object's class and confidence, for the objects' vector layer and object-level validation
            from chain.atomic import atomic_path
            from chain.classify import encode

            for run in products.runs(ctx):
                predictor = models.load(ctx.paths.model(run), ctx.cfg.classify.engine, None)
                P = predictor.object_proba()  # type: ignore[attr-defined]
                ok = np.isfinite(P[:, 0])
                cls = np.zeros(len(P), np.uint8)
                conf = np.full(len(P), 255, np.uint8)
                if ok.any():
                    cls[ok], conf[ok], _ = encode(np.asarray(predictor.classes_), P[ok], False)
                with atomic_path(ctx.paths.object_classes(run)) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, code=cls, confidence=conf)
