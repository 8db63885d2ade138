"""The carryover step's work: both years' patches at the reference polygons, the siamese scores, what is carried."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.errors import StepError

if TYPE_CHECKING:
    from chain.runner import Context
    from chain.update.previous import PreviousRun

log = logging.getLogger(__name__)


def carry_over(ctx: Context, prev: PreviousRun) -> dict[str, Any]:
    """Score every reference polygon, write the carried and flagged polygons, the scores and their plot; stop (after
    writing them, for a review) when more than ``update.max_flagged_share`` of the polygons are flagged."""
    import dataclasses

    import geopandas as gpd
    import pandas as pd
    import torch

    from chain import products
    from chain.atomic import atomic_path, write_json
    from chain.grid import make_tiles
    from chain.update import siamese

    up = ctx.cfg.update
    assert up is not None
    cfg, p = up.siamese, ctx.paths
    cat, spec = products.catalog(ctx), products.spec(ctx)
    pcat, pspec = products.catalog(prev.ctx), products.spec(prev.ctx)
    names, pnames = siamese.summary_names(spec), siamese.summary_names(pspec)
    if names != pnames:
        raise StepError(f"carryover: this year's features summarise to {len(names)} channels and last year's to {len(pnames)} "
                        f"({sorted(set(names) ^ set(pnames))[:4]} differ): the two years need the same sources, bands and indices")
    polys = products.ingested_reference(ctx)
    # the detector's cells (cell_m, S2's 10 m): both years' features are computed on a grid of those cells over the same
    # extent, not on a fine grid (1.5 m for SPOT) of which it would keep one pixel in 50
    cells = siamese.cell_grid(cat.grid, cfg.cell_m)
    cat, pcat = dataclasses.replace(cat, grid=cells), dataclasses.replace(pcat, grid=cells)
    points = siamese.polygon_points(polys, cells.affine, (cells.height, cells.width), cfg.points_per_polygon, ctx.cfg.seed)
    tiles = make_tiles(cells, ctx.cfg.grid.tile_size_px)
    work = p.step("carryover")
    work.mkdir(parents=True, exist_ok=True)
    # memory-mapped: a large reference's patches (points x channels x patch^2) need not fit in memory
    before, ok_b = siamese.extract(pcat, pspec, tiles, points, cfg.patch_px, "carryover: last year's patches", work / "patches_before.npy")
    after, ok_a = siamese.extract(cat, spec, tiles, points, cfg.patch_px, "carryover: this year's patches", work / "patches_after.npy")
    rows = np.flatnonzero(ok_a & ok_b)
    m = siamese.train_and_score(siamese.Pairs(before, after, rows), points[rows, 0], cfg, ctx.cfg.seed)
    del before, after
    for f in ("patches_before.npy", "patches_after.npy"):  # intermediates: the scores are the step's product
        (work / f).unlink(missing_ok=True)

    score = polys["poly_id"].map(m.scores)
    values = score.dropna().to_numpy()
    threshold = siamese.auto_threshold(values) if up.threshold == "auto" else float(up.threshold)
    unscored = score.isna()
    flagged = (score < threshold).fillna(False).to_numpy()
    if unscored.any():
        log.warning("carryover: %d polygon(s) have no pixel usable in both years (clouds all year, outside an image): they "
                    "are carried over unscored (ids %s)", int(unscored.sum()), polys["poly_id"][unscored].head(10).tolist())
    table = pd.DataFrame({"poly_id": polys["poly_id"], "code": polys["code"], "name": polys["name"], "score": score,
                          "flagged": flagged, "fold": polys["poly_id"].map(m.fold)})
    polys = with_input_attributes(polys, ctx.cfg.inputs.reference)
    for c in polys.columns.difference([*table.columns, "geometry", "given_part"]):
        table[c] = polys[c].to_numpy()  # the user's own identifiers, to find the polygons in their database
    with atomic_path(p.carry_scores) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    carried = polys[~flagged].assign(carry_score=score[~flagged].to_numpy())
    flag = polys[flagged].assign(carry_score=score[flagged].to_numpy())
    for frame, path, layer in ((carried, p.carried_reference, "reference"), (flag, p.flagged_reference, "flagged")):
        with atomic_path(path) as tmp:
            gpd.GeoDataFrame(frame, crs=polys.crs).to_file(tmp, driver="GPKG", layer=layer, engine="pyogrio")
    torch.save({"folds": [n.state_dict() for n in m.networks], "mean": m.norm[0], "std": m.norm[1], "channels": names,
                "fold_of": m.fold}, p.step("carryover") / "siamese.pt")
    _plot(values, threshold, p.step("carryover") / "scores.png")
    share = float(flagged.mean()) if len(flagged) else 0.0
    summary = {"polygons": int(len(polys)), "carried": int((~flagged).sum()), "flagged": int(flagged.sum()),
               "unscored": int(unscored.sum()), "flagged_share": share, "threshold": threshold,
               "threshold_rule": f"auto (median - {siamese.AUTO_MADS:g} x 1.4826 x MAD)" if up.threshold == "auto" else "update.threshold",
               "score_quantiles": {q: float(np.quantile(values, float(q))) for q in ("0.05", "0.25", "0.5", "0.75", "0.95")},
               "pixel_pairs": int(len(rows)), "folds": up.siamese.folds, "map_at_5": m.map_at_5,
               "map_at_5_chance": m.chance_at_5, "siamese_seconds": m.seconds, "history": m.history,
               "flagged_per_class": {str(c): int(n) for c, n in pd.Series(polys["code"][flagged]).value_counts().sort_index().items()},
               "previous": str(prev.workdir)}
    write_json(p.carry_summary, summary)
    log.info("carryover: %d of %d polygons carried over, %d flagged as changed (score < %.3f) -> %s", summary["carried"],
             summary["polygons"], summary["flagged"], threshold, p.flagged_reference)
    if share > up.max_flagged_share:
        raise StepError(f"carryover: {summary['flagged']} of {summary['polygons']} polygons ({100 * share:.0f} %) are scored as "
                        f"changed since last year, more than update.max_flagged_share ({100 * up.max_flagged_share:.0f} %): "
                        f"the update stops rather than train on a gutted reference. Review {p.flagged_reference} (scores in "
                        f"{p.carry_scores}), then set update.threshold lower or update.max_flagged_share higher, or give a "
                        "reference of this year")
    return summary


def with_input_attributes(polys: Any, ref: Any) -> Any:
    """``polys`` with the attribute columns of the reference file they were read from (their row = ``poly_id``)."""
    import pyogrio

    table = pyogrio.read_dataframe(ref.path, layer=ref.layer, read_geometry=False)
    extra = [c for c in table.columns if c not in polys.columns and c not in (ref.class_field, ref.name_field)]
    if not extra or polys["poly_id"].max() >= len(table):
        return polys
    return polys.assign(**{c: table[c].to_numpy()[polys["poly_id"].to_numpy()] for c in extra})


def _plot(values: np.ndarray, threshold: float, path: Any) -> None:
    from chain.atomic import atomic_path
    from chain.report import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(values, bins=40, color="#4477aa")
    ax.axvline(threshold, color="#cc3311", lw=2, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("similarity of the polygon across the two years (cosine)")
    ax.set_ylabel("polygons")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
