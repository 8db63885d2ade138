"""sample: feature vectors of every reference pixel (tile by tile), with polygon id, class, position."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from chain.atomic import atomic_path, write_json
from chain.sampling import Samples, extract_tile, polygons_in_tile
from chain.runner import Context, Step, register
from steps import common

log = logging.getLogger(f"chain.{__name__}")


def _save(path: Path, samples: Samples) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **samples.to_npz())


def sample_tile(tile, cat, spec, polys, cap, seed, min_clear, out_dir: Path) -> str:  # type: ignore[no-untyped-def]
    _save(out_dir / f"{tile.id}.npz", extract_tile(cat, spec, polys, tile, cap, seed, min_clear))
    return tile.id


def load_samples(ctx: Context) -> Samples:
    return ctx.memo("samples", lambda: Samples.from_npz(np.load(ctx.dir("sample") / "pixels.npz")))


@register
class Sample(Step):
    name = "sample"
    requires = ("features",)

    def params(self, ctx: Context) -> dict[str, Any]:
        return {"sample": ctx.cfg.section("sample"), "seed": ctx.cfg.seed, "tile_size_px": ctx.cfg.grid.tile_size_px}

    def outputs(self, ctx: Context) -> list[Path]:
        d = ctx.dir(self.name)
        return [d / "pixels.npz", d / "summary.json"]

    def run(self, ctx: Context) -> None:
        from chain.cluster import map_tiles

        cat, spec, polys = common.catalog(ctx), common.spec(ctx), common.reference(ctx)
        tiles = [t for t in common.tiles(ctx) if not polygons_in_tile(polys, cat.grid, t).empty]
        out = ctx.dir(self.name) / "tiles"
        out.mkdir(parents=True, exist_ok=True)
        client = ctx.client()
        polys_f = client.scatter(polys, broadcast=True)
        map_tiles(client, ctx.cfg.cluster, sample_tile, tiles, cat, spec, polys_f, ctx.cfg.sample.max_pixels_per_polygon,
                  ctx.cfg.seed, ctx.cfg.sample.min_clear_dates, out, is_done=lambda t: (out / f"{t.id}.npz").exists(),
                  key=f"sample-{ctx.signatures[self.name][:12]}", desc="sample: tiles")
        parts = [Samples.from_npz(np.load(out / f"{t.id}.npz")) for t in tiles]
        samples = Samples.concat(parts, len(spec.names))
        _save(ctx.dir(self.name) / "pixels.npz", samples)
        codes, counts = np.unique(samples.code, return_counts=True)
        summary = {"n_pixels": int(len(samples.code)), "n_polygons": int(len(np.unique(samples.poly_id))),
                   "n_features": len(spec.names), "pixels_per_class": {str(c): int(n) for c, n in zip(codes, counts)}}
        missing = sorted(set(polys["poly_id"]) - set(np.unique(samples.poly_id).tolist()))
        if missing:
            log.warning("sample: %d polygon(s) contain no clear pixel centre and give no sample (ids %s)", len(missing), missing[:10])
        summary["polygons_without_pixels"] = missing
        write_json(ctx.dir(self.name) / "summary.json", summary)
        log.info("sample: %d pixels from %d polygons, %d features", summary["n_pixels"], summary["n_polygons"], summary["n_features"])
