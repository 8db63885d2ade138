"""segment: the scene cut into objects, tile by tile with a halo, stitched -> final/segments.tif + segments.gpkg.

Off unless ``segmentation.method`` is set. See ``chain.segmentation`` for the stitching.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.atomic import write_json
from chain.errors import ConfigError
from chain.params import From, StepParams
from chain.runner import Context, Step

log = logging.getLogger(f"chain.{__name__}")

# what the objects step uses, not the segmentation
_OBJECT_KEYS = ("stats", "min_cover", "compare_pixels")


class SegmentParams(StepParams):
    segmentation: Annotated[dict[str, Any], From("segmentation", exclude=_OBJECT_KEYS)]
    tile_size_px: Annotated[int, From("grid.tile_size_px")]
    cog: Annotated[bool, From("mosaic.cog")]


def segment_source(ctx: Context, cat: Any) -> str:
    """``segmentation.source`` with auto resolved: spot when SPOT is an input, else the features."""
    s = ctx.cfg.segmentation.source
    if s == "auto":
        return "spot" if any(src.name == "spot" for src in cat.sources) else "features"
    return str(s)


class Segment(Step):
    name = "segment"
    requires = ("features",)
    version = "1"
    Params = SegmentParams

    def enabled(self, ctx: Context) -> bool:
        return bool(ctx.cfg.segmentation.enabled)

    def check(self, ctx: Context) -> None:
        if not self.enabled(ctx):
            return
        from chain.features import feature_spec
        from chain.models import model_type
        from chain.segmentation import input_bands

        seg = ctx.cfg.segmentation
        cat, polys = products.preflight(ctx)
        spec = feature_spec(ctx.cfg, cat)
        source = segment_source(ctx, cat)
        if source == "spot" and not spec.of_source("spot"):
            raise ConfigError("segmentation.source is spot but inputs.spot is not configured; add the SPOT delivery under "
                              "inputs.spot, or set segmentation.source: features (with segmentation.bands, e.g. ['NDVI_*'])")
        if not input_bands(spec, source, seg.bands):
            what = f"segmentation.bands {seg.bands} match" if seg.bands else "there is"
            raise ConfigError(f"{what} no feature to segment (source {source}): name features of the stack, e.g. "
                              f"{', '.join(spec.names[:3])} or patterns such as 'NDVI_*'")
        kind = model_type(ctx.cfg.model.type)
        if kind.kind != "pixel":
            raise ConfigError(f"model.type {ctx.cfg.model.type} learns from {kind.kind}es, not from a feature vector: "
                              "object-based mapping (segmentation.method) trains a pixel model type (e.g. rf) on object features")
        if ctx.cfg.compare_models:
            raise ConfigError("compare_models is not available with segmentation.method yet (the run compares objects "
                              "with pixels itself: segmentation.compare_pixels); remove compare_models")
        px_area = abs(cat.grid.res[0] * cat.grid.res[1])
        if seg.min_size_m2 < px_area:
            raise ConfigError(f"segmentation.min_size_m2 is {seg.min_size_m2:g} m², smaller than one pixel of the grid "
                              f"({px_area:g} m²); objects are made of pixels: set at least {px_area:g}")
        if seg.method == "slic" and seg.segment_size_m2 < 9 * px_area:
            raise ConfigError(f"segmentation.segment_size_m2 is {seg.segment_size_m2:g} m², under 3 x 3 pixels of the grid "
                              f"({9 * px_area:g} m²); set it larger")
        small = int((polys.geometry.area < seg.min_size_m2).sum())
        if small:
            log.warning("segment: %d of %d reference polygons are smaller than segmentation.min_size_m2 (%g m²): objects "
                        "will rarely fall inside them, and they may label no object", small, len(polys), seg.min_size_m2)

    def outputs(self, ctx: Context) -> list[Path]:
        if not self.enabled(ctx):
            return []
        p = ctx.paths
        return [p.segments, p.segments_vector, p.segment_summary]

    def run(self, ctx: Context) -> None:
        if not self.enabled(ctx):
            return
        import numpy as np

        from chain import segmentation as S
        from chain.atomic import atomic_path
        from chain.cluster import map_tiles
        from chain.grid import make_tiles
        from chain.mosaic import assemble

        seg, p = ctx.cfg.segmentation, ctx.paths
        cat, spec = products.catalog(ctx), products.spec(ctx)
        bands = S.input_bands(spec, segment_source(ctx, cat), seg.bands)
        stats = S.band_stats(cat, spec, bands)
        tiles = make_tiles(cat.grid, ctx.cfg.grid.tile_size_px, seg.halo_px)
        params = seg.model_dump(mode="json")
        out = p.segment_tiles
        out.mkdir(parents=True, exist_ok=True)
        log.info("segment: %s on %d feature(s) (%s%s), %d tiles with a %d px halo", seg.method, len(bands),
                 ", ".join(spec.names[i] for i in bands[:4]), ", ..." if len(bands) > 4 else "", len(tiles), seg.halo_px)
        client = ctx.client()
        map_tiles(client, ctx.cfg.cluster, S.segment_tile, tiles, cat, spec, bands, stats, params, out,
                  is_done=lambda t: (out / f"{t.id}.npz").exists(), key=f"segment-{ctx.signatures[self.name][:12]}",
                  desc="segment: tiles")
        offsets, ids = S.stitch(tiles, cat.grid, out)
        n = int(ids.max(initial=0))
        id_dir = p.segment_id_tiles
        id_dir.mkdir(parents=True, exist_ok=True)
        first = {t.id: int(offsets[i]) for i, t in enumerate(tiles)}
        map_tiles(client, ctx.cfg.cluster, S.write_tile_ids, tiles, cat.grid, out, id_dir, first, client.scatter(ids, broadcast=True),
                  is_done=lambda t: False, key=f"segment-ids-{ctx.signatures[self.name][:12]}-{n}", desc="segment: object ids")
        assemble(p.segments, cat.grid, tiles, {t.id: id_dir / f"{t.id}.tif" for t in tiles}, "uint32", S.SEGMENT_NODATA,
                 description="object id", cog=ctx.cfg.mosaic.cog, compress=ctx.cfg.mosaic.compress, overview_resampling="nearest")
        futures = client.map(S.tile_polygons, tiles, grid=cat.grid, segments=p.segments, pure=False)
        gdf = S.merge_polygons(client.gather(futures), cat.grid.crs)
        px_area = abs(cat.grid.res[0] * cat.grid.res[1])
        gdf["area_m2"] = gdf.geometry.area
        with atomic_path(p.segments_vector) as tmp:
            gdf.to_file(tmp, driver="GPKG", layer="segments", engine="pyogrio")
        areas = gdf["area_m2"].to_numpy() if len(gdf) else np.zeros(1)
        summary = {"method": seg.method, "n_objects": n, "bands": [spec.names[i] for i in bands],
                   "mean_area_m2": float(areas.mean()), "median_area_m2": float(np.median(areas)),
                   "objects_per_km2": n / (cat.grid.width * cat.grid.height * px_area / 1e6), "tiles": len(tiles)}
        write_json(p.segment_summary, summary)
        log.info("segment: %d objects, mean %.0f m² (median %.0f m²)", n, summary["mean_area_m2"], summary["median_area_m2"])
