"""sample: feature vectors of every reference pixel (tile by tile), with polygon id, class, position."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.atomic import write_json
from chain.params import From, StepParams
from chain.runner import Context, Step

log = logging.getLogger(f"chain.{__name__}")


class SampleParams(StepParams):
    sample: Annotated[dict[str, Any], From("sample")]
    pixels_needed: Annotated[bool, From("segmentation.compare_pixels")]  # with segmentation.method: pixels only to compare
    seed: Annotated[int, From("seed")]  # (not the tile size: the samples are the same whatever the tiling)


class Sample(Step):
    name = "sample"
    version = "4"  # the features left in the tiles' files (read through pixels.npz: chain.sampling.TileRows), not copied
    requires = ("features",)
    after = ("split", "cube", "carryover")
    Params = SampleParams

    def upstream(self, ctx: Context) -> tuple[str, ...]:
        return self.requires + (("carryover",) if ctx.cfg.update is not None else ())  # an update: the carried reference

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.paths.samples, ctx.paths.sample_summary, ctx.paths.sample_tiles]

    def run(self, ctx: Context) -> None:
        import numpy as np

        from chain.cluster import map_tiles
        from chain.sampling import merge_tiles, polygons_in_tile, sample_tile, tile_saved

        cat, spec, polys = products.catalog(ctx), products.spec(ctx), products.reference(ctx)
        tiles = [t for t in products.tiles(ctx) if not polygons_in_tile(polys, cat.grid, t).empty]
        seg = ctx.cfg.segmentation
        if seg.enabled and not seg.compare_pixels:  # object-based, no pixel model to train: the objects are the samples
            tiles = []
        out = ctx.paths.sample_tiles
        out.mkdir(parents=True, exist_ok=True)
        client = ctx.client()
        polys_f = client.scatter(polys, broadcast=True)
        map_tiles(client, ctx.cfg.cluster, sample_tile, tiles, cat, spec, polys_f, ctx.cfg.sample.max_pixels_per_polygon,
                  ctx.cfg.seed, ctx.cfg.sample.min_clear_dates, out, is_done=lambda t: tile_saved(out / f"{t.id}.npz"),
                  key=f"sample-{ctx.signatures[self.name][:12]}", desc="sample: tiles")
        samples = merge_tiles([out / f"{t.id}.npz" for t in tiles], ctx.paths.samples, len(spec.names),
                              ctx.cfg.sample.max_pixels_per_polygon, ctx.cfg.seed)
        codes, counts = np.unique(samples.code, return_counts=True)
        summary: dict[str, Any] = {"n_pixels": int(len(samples.code)), "n_polygons": int(len(np.unique(samples.poly_id))),
                                   "n_features": len(spec.names),
                                   "pixels_per_class": {str(c): int(n) for c, n in zip(codes, counts, strict=True)}}
        missing = sorted(set(polys["poly_id"]) - set(np.unique(samples.poly_id).tolist()))
        if missing and tiles:
            log.warning("sample: %d polygon(s) contain no clear pixel centre and give no sample (ids %s)", len(missing), missing[:10])
        summary["polygons_without_pixels"] = missing
        write_json(ctx.paths.sample_summary, summary)
        log.info("sample: %d pixels from %d polygons, %d features", summary["n_pixels"], summary["n_polygons"], summary["n_features"])
