"""classify: every tile of the scene, for every run, on the dask cluster; class + confidence tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chain import forest, models
from chain.classify import classify_tile, proba_path, tile_paths, validity_path
from chain.runner import Context, Step, register
from steps import common
from steps.train import model_dir


def tiles_dir(ctx: Context, run: int) -> Path:
    return ctx.dir("classify") / f"run_{run}"


@register
class Classify(Step):
    name = "classify"
    requires = ("train", "features")
    version = "2"

    def params(self, ctx: Context) -> dict[str, Any]:
        c = dict(ctx.cfg.section("classify"))
        c.pop("engine", None)  # both engines give the same classes: switching re-runs nothing
        return {"tile_size_px": ctx.cfg.grid.tile_size_px, "classify": c}

    def outputs(self, ctx: Context) -> list[Path]:
        return [tiles_dir(ctx, r) for r in common.runs(ctx)]

    def run(self, ctx: Context) -> None:
        from chain.cluster import map_tiles

        cat, spec = common.catalog(ctx), common.spec(ctx)
        for run in common.runs(ctx):
            mdir = model_dir(ctx, run)
            inputs = None
            if ctx.cfg.model.type != "rf":
                from chain.deep.inputs import model_inputs

                inputs = [i.to_dict() for i in model_inputs(ctx.cfg.model, spec, cat)]
            models.check(mdir, spec.names, inputs)  # fails early and clearly on a mismatching model
            out = tiles_dir(ctx, run)
            out.mkdir(parents=True, exist_ok=True)
            proba = ctx.cfg.classify.probabilities
            validity = run == 0  # PixelsValidity does not depend on the run: written once

            def is_done(t, out=out, proba=proba, validity=validity):  # type: ignore[no-untyped-def]
                extra = ([proba_path(out, t)] if proba else []) + ([validity_path(out, t)] if validity else [])
                return all(p.exists() for p in [*tile_paths(out, t), *extra])

            model = mdir
            if ctx.cfg.model.type == "rf" and ctx.cfg.classify.engine == "compiled":
                model = forest.compiled_file(mdir) or mdir  # workers load it without scikit-learn
            map_tiles(ctx.client(), ctx.cfg.cluster, classify_tile, common.tiles(ctx), cat, spec, model, out, proba,
                      ctx.cfg.classify.engine, ctx.cfg.cluster.threads_per_worker, validity, is_done=is_done,
                      key=f"classify-{run}-{ctx.signatures[self.name][:12]}", desc=f"classify: run {run}")
