"""objects: per object of segments.tif, statistics of every feature + shape, and its reference label -> objects/.

Off unless ``segmentation.method`` is set. See ``chain.objects``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.atomic import write_json
from chain.params import From, StepParams
from chain.runner import Context, Step

log = logging.getLogger(f"chain.{__name__}")


class ObjectsParams(StepParams):
    stats: Annotated[list[str], From("segmentation.stats")]
    min_cover: Annotated[float, From("segmentation.min_cover")]


class Objects(Step):
    name = "objects"
    requires = ("segment", "features", "ingest")
    version = "1"
    Params = ObjectsParams
    after = ("carryover",)

    def upstream(self, ctx: Context) -> tuple[str, ...]:
        return self.requires + (("carryover",) if ctx.cfg.update is not None else ())  # an update: the carried reference

    def enabled(self, ctx: Context) -> bool:
        return bool(ctx.cfg.segmentation.enabled)

    def outputs(self, ctx: Context) -> list[Path]:
        if not self.enabled(ctx):
            return []
        from chain.objects import features_path

        p = ctx.paths
        return [p.objects, features_path(p.objects), p.object_summary]

    def run(self, ctx: Context) -> None:
        if not self.enabled(ctx):
            return
        import json

        import numpy as np

        from chain.cluster import map_tiles
        from chain.objects import merge, object_tile

        seg, p = ctx.cfg.segmentation, ctx.paths
        cat, spec, polys = products.catalog(ctx), products.spec(ctx), products.reference(ctx)
        n_objects = int(json.loads(p.segment_summary.read_text())["n_objects"])
        tiles = products.tiles(ctx)
        out = p.object_tiles
        out.mkdir(parents=True, exist_ok=True)
        client = ctx.client()
        polys_f = client.scatter(polys, broadcast=True)
        map_tiles(client, ctx.cfg.cluster, object_tile, tiles, cat, spec, p.segments, polys_f, list(seg.stats), out,
                  is_done=lambda t: (out / f"{t.id}.npz").exists(), key=f"objects-{ctx.signatures[self.name][:12]}",
                  desc="objects: features per tile")
        table = merge(tiles, out, n_objects, spec.names, list(seg.stats), abs(cat.grid.res[0]), polys, seg.min_cover, p.objects)
        labelled = table.poly_id >= 0
        covered = set(table.pairs_poly.tolist())
        labelling = set(table.poly_id[labelled].tolist())
        no_object = sorted(set(polys["poly_id"].astype(int)) - labelling)
        codes, counts = np.unique(table.code[labelled], return_counts=True)
        summary: dict[str, Any] = {
            "n_objects": table.n, "n_features": len(table.names), "mappable": int((table.n_ok > 0).sum()),
            "labelled": int(labelled.sum()), "objects_per_class": {str(c): int(n) for c, n in zip(codes, counts, strict=True)},
            "polygons_labelling_no_object": no_object, "polygons_touching_no_object": sorted(set(polys["poly_id"].astype(int)) - covered),
        }
        write_json(p.object_summary, summary)
        if no_object:
            log.warning("objects: %d of %d reference polygons label no object (none covers %.0f %% of an object; ids %s): "
                        "their land cover is not learnt from; lower segmentation.min_cover or segment finer (scale, "
                        "min_size_m2)", len(no_object), len(polys), 100 * seg.min_cover, no_object[:10])
        log.info("objects: %d objects (%d mappable), %d labelled from %d polygons, %d features each", table.n, summary["mappable"],
                 summary["labelled"], len(labelling), len(table.names))
        for t in tiles:  # merged: the tiles' shares would only double the disk taken
            (out / f"{t.id}.npz").unlink(missing_ok=True)
