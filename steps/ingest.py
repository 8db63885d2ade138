"""ingest: discover every input source and the reference polygons, define the grid, record the catalogue; inputs slow
to read tile by tile get tiled copies, which the catalogue names (``chain.tiled_copies``)."""

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
    version = "6"
    Params = IngestParams

    def check(self, ctx: Context) -> None:
        from chain import tiled_copies
        from chain.runner import read_record

        cat, _ = products.preflight(ctx)
        rec = read_record(ctx.workdir, self.name)
        if rec is None or rec.get("status") != "done":  # room for the copies, before anything runs (headers: ~1.5 ms a file)
            tiled_copies.plan(ctx, cat, ctx.cfg.inputs.tiled_copies, ctx.paths.tiled_copies)

    def external_inputs(self, ctx: Context) -> list[str]:
        cat, _ = products.preflight(ctx)
        aoi = [str(ctx.cfg.grid.aoi)] if ctx.cfg.grid.aoi else []
        return [*cat.files(), str(ctx.cfg.inputs.reference.path), *aoi]

    def outputs(self, ctx: Context) -> list[Path]:
        p = ctx.paths
        return [p.catalog, p.reference, p.classes, p.tiled_copies]

    def run(self, ctx: Context) -> None:
        from chain import tiled_copies, vector

        cat, polys = products.preflight(ctx)
        p = ctx.paths
        copies = tiled_copies.make_copies(ctx, cat, ctx.cfg.inputs.tiled_copies, p.tiled_copies)
        doc = cat.to_dict()
        if copies:  # the readers open the copies; the originals stay the inputs (fingerprinted, named in the report)
            doc = {**tiled_copies.redirect(doc, copies), "tiled_copies": {c: o for o, c in copies.items()}}
        write_json(p.catalog, doc)
        with atomic_path(p.reference) as tmp:
            polys.to_file(tmp, driver="GPKG", layer="reference", engine="pyogrio")
        # the reference's names; the config's names and colours are laid over them where they are used
        write_json(p.classes, {str(code): {"name": name} for code, name in vector.class_names(polys).items()})
