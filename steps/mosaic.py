"""mosaic: tiles -> final/Classif_Seed_<n>.tif, Confidence_Seed_<n>.tif and PixelsValidity.tif."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from chain import models, products
from chain.atomic import write_text
from chain.params import From, StepParams
from chain.paths import style
from chain.runner import Context, Step

log = logging.getLogger(f"chain.{__name__}")


class MosaicParams(StepParams):
    mosaic: Annotated[dict[str, Any], From("mosaic")]
    fusion: Annotated[dict[str, Any], From("fusion")]
    classes: Annotated[dict[str, Any], From("classes")]  # names and colours of the maps' legends


def fusing(ctx: Context) -> bool:
    return ctx.cfg.fusion.enabled and ctx.cfg.split.runs > 1


class Mosaic(Step):
    name = "mosaic"
    requires = ("classify",)
    version = "5"
    Params = MosaicParams

    def check(self, ctx: Context) -> None:
        if ctx.cfg.fusion.enabled and ctx.cfg.split.runs < 2:
            log.warning("fusion.enabled is set but split.runs is %d: a majority vote needs two runs or more (3+ to break ties); "
                        "no fusion map is written; set split.runs: 3 or remove fusion", ctx.cfg.split.runs)

    def outputs(self, ctx: Context) -> list[Path]:
        p = ctx.paths
        maps = [f for r in products.runs(ctx) for f in (p.class_map(r), style(p.class_map(r)), p.confidence_map(r))]
        if ctx.cfg.classify.probabilities:
            maps += [p.probability_map(r) for r in products.runs(ctx)]
        if fusing(ctx):
            maps += [p.fusion_map, style(p.fusion_map), p.agreement_map]
        seg = ctx.cfg.segmentation
        if seg.enabled:
            maps += [p.object_vector_map(r) for r in products.runs(ctx)]
            if seg.compare_pixels:
                maps += [f for r in products.runs(ctx) for f in (p.pixel_class_map(r), p.pixel_confidence_map(r))]
        return maps + [p.validity_map, p.nomenclature]

    def run(self, ctx: Context) -> None:
        from chain.classify import CLASS_NODATA, CONF_NODATA, proba_path, tile_paths, validity_path
        from chain.mosaic import assemble
        from chain.styles import nomenclature_csv, write_class_map_companions

        cat, tiles, m, p = products.catalog(ctx), products.tiles(ctx), ctx.cfg.mosaic, ctx.paths
        classes = products.classes(ctx)
        cmap = products.colormap(ctx)
        for r in products.runs(ctx):
            d = p.classified_tiles(r)
            assemble(p.class_map(r), cat.grid, tiles, {t.id: tile_paths(d, t)[0] for t in tiles},
                     "uint8", CLASS_NODATA, colormap=cmap, description="class", cog=m.cog, compress=m.compress,
                     overview_resampling="mode")
            write_class_map_companions(p.class_map(r), classes)
            if ctx.cfg.classify.probabilities:
                manifest = models.read_manifest(p.model(r))
                names = [f"{c} {classes.get(c, {}).get('name', '')}".strip() for c in manifest["classes"]]
                assemble(p.probability_map(r), cat.grid, tiles, {t.id: proba_path(d, t) for t in tiles},
                         "uint8", CONF_NODATA, description=names, cog=m.cog, compress=m.compress, overview_resampling="average")
            assemble(p.confidence_map(r), cat.grid, tiles, {t.id: tile_paths(d, t)[1] for t in tiles},
                     "uint8", CONF_NODATA, description="confidence (max class probability, %)", cog=m.cog,
                     compress=m.compress, overview_resampling="average")
        if fusing(ctx):
            self._fuse(ctx, cmap, classes)
        if ctx.cfg.segmentation.enabled:
            self._objects(ctx, cmap, classes)
        write_text(p.nomenclature, nomenclature_csv(classes))
        vdir = p.classified_tiles(0)
        # 0 = never observed by that sensor: nodata, transparent in GIS
        assemble(p.validity_map, cat.grid, tiles, {t.id: validity_path(vdir, t) for t in tiles},
                 "uint16", 0, cog=m.cog, compress=m.compress, overview_resampling="average")

    def _objects(self, ctx: Context, cmap: dict[int, tuple[int, int, int, int]], classes: dict[int, dict[str, Any]]) -> None:
        """Object-based runs: each run's objects as polygons with class, name, confidence and area; the pixel maps of the
        same runs (segmentation.compare_pixels) in final/pixels/."""
        import geopandas as gpd
        import numpy as np

        from chain.atomic import atomic_path
        from chain.classify import CLASS_NODATA, CONF_NODATA, tile_paths
        from chain.mosaic import assemble

        cat, tiles, m, p = products.catalog(ctx), products.tiles(ctx), ctx.cfg.mosaic, ctx.paths
        segments = gpd.read_file(p.segments_vector, engine="pyogrio")
        for r in products.runs(ctx):
            with np.load(p.object_classes(r)) as z:
                code, conf = z["code"], z["confidence"]
            ids = segments["id"].to_numpy() - 1
            layer = segments.assign(code=code[ids].astype(int), confidence=conf[ids].astype(int))
            layer = layer[layer["code"] != CLASS_NODATA]
            layer.insert(1, "name", [classes.get(int(c), {}).get("name", str(c)) for c in layer["code"]])
            with atomic_path(p.object_vector_map(r)) as tmp:
                layer.to_file(tmp, driver="GPKG", layer="objects", engine="pyogrio")
            if ctx.cfg.segmentation.compare_pixels:
                d = p.pixel_classified_tiles(r)
                p.pixel_class_map(r).parent.mkdir(parents=True, exist_ok=True)
                assemble(p.pixel_class_map(r), cat.grid, tiles, {t.id: tile_paths(d, t)[0] for t in tiles}, "uint8", CLASS_NODATA,
                         colormap=cmap, description="class (pixel model, for comparison)", cog=m.cog, compress=m.compress,
                         overview_resampling="mode")
                assemble(p.pixel_confidence_map(r), cat.grid, tiles, {t.id: tile_paths(d, t)[1] for t in tiles}, "uint8",
                         CONF_NODATA, description="confidence (max class probability, %)", cog=m.cog, compress=m.compress,
                         overview_resampling="average")

    def _fuse(self, ctx: Context, cmap: dict[int, tuple[int, int, int, int]], classes: dict[int, dict[str, Any]]) -> None:
        from chain.classify import CLASS_NODATA, CONF_NODATA, fuse_tile
        from chain.cluster import map_tiles
        from chain.mosaic import assemble
        from chain.styles import write_class_map_companions

        cat, tiles, m, p = products.catalog(ctx), products.tiles(ctx), ctx.cfg.mosaic, ctx.paths
        out = p.fusion_tiles
        out.mkdir(parents=True, exist_ok=True)
        run_dirs = [p.classified_tiles(r) for r in products.runs(ctx)]
        map_tiles(ctx.client(), ctx.cfg.cluster, fuse_tile, tiles, cat.grid, run_dirs, out,
                  is_done=lambda t: (out / f"{t.id}_class.tif").exists(), key=f"fusion-{ctx.signatures[self.name][:12]}",
                  desc="fusion")
        assemble(p.fusion_map, cat.grid, tiles, {t.id: out / f"{t.id}_class.tif" for t in tiles},
                 "uint8", CLASS_NODATA, colormap=cmap, description="class (majority vote of the runs)", cog=m.cog,
                 compress=m.compress, overview_resampling="mode")
        write_class_map_companions(p.fusion_map, classes)
        assemble(p.agreement_map, cat.grid, tiles, {t.id: out / f"{t.id}_agreement.tif" for t in tiles},
                 "uint8", CONF_NODATA, description="share of the runs voting for the fused class (%)", cog=m.cog,
                 compress=m.compress, overview_resampling="average")
