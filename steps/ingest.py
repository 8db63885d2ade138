"""ingest: discover every input source and the reference polygons, define the grid, record the catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.atomic import atomic_path, write_json
from chain.params import From, StepParams
from chain.runner import Context, Step


class IngestParams(StepParams):
    inputs: Annotated[dict[str, Any], From("inputs")]
    grid: Annotated[dict[str, Any], From("grid", exclude=("tile_size_px",))]


class Ingest(Step):
    name = "ingest"
    version = "5"
    Params = IngestParams

    def check(self, ctx: Context) -> None:
        products.preflight(ctx)

    def external_inputs(self, ctx: Context) -> list[str]:
        cat, _ = products.preflight(ctx)
        aoi = [str(ctx.cfg.grid.aoi)] if ctx.cfg.grid.aoi else []
        return [*cat.files(), str(ctx.cfg.inputs.reference.path), *aoi]

    def outputs(self, ctx: Context) -> list[Path]:
        p = ctx.paths
        return [p.catalog, p.reference, p.classes]

    def run(self, ctx: Context) -> None:
        from chain import vector

        cat, polys = products.preflight(ctx)
        p = ctx.paths
        write_json(p.catalog, cat.to_dict())
        with atomic_path(p.reference) as tmp:
            polys.to_file(tmp, driver="GPKG", layer="reference", engine="pyogrio")
        # the reference's names; the config's names and colours are laid over them where they are used
        write_json(p.classes, {str(code): {"name": name} for code, name in vector.class_names(polys).items()})
