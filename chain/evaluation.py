"""Scoring: models on sample pixels (model comparison) and maps against reference polygons (validation)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.metrics import confusion

if TYPE_CHECKING:
    from chain.catalog import Catalog
    from chain.grid import Tile
    from chain.models.base import Predictor
    from chain.sampling import Samples
    from chain.spec import FeatureSpec


def predict_samples(model: Predictor, ev: Samples, cat: Catalog, spec: FeatureSpec, tile_size: int) -> np.ndarray:
    """Predicted class of each sample pixel: pixel models from the sampled features, patch models tile by tile."""
    return np.asarray(model.classes_)[proba_of_samples(model, ev, cat, spec, tile_size).argmax(1)]


def proba_of_samples(model: Predictor, ev: Samples, cat: Catalog, spec: FeatureSpec, tile_size: int) -> np.ndarray:
    """(n, K) probabilities of each sample pixel (the model's classes' order)."""
    if not model.inputs:
        return np.asarray(model.predict_proba(ev.X), dtype=np.float64)
    from chain.deep.inputs import TileBlock, by_tile

    out = np.zeros((len(ev.row), len(model.classes_)), np.float64)
    if model.whole_tile:  # segmentation: the tile's map, read at the sample pixels (unmappable ones: uniform)
        for window, idx in by_tile(cat, ev.row, ev.col, tile_size):
            valid, proba, _ = model.predict_window(cat, spec, window)
            full = np.full((*valid.shape, len(model.classes_)), 1.0 / len(model.classes_))
            full[valid] = proba
            out[idx] = full[ev.row[idx] - int(window.row_off), ev.col[idx] - int(window.col_off)]
        return out
    for window, idx in by_tile(cat, ev.row, ev.col, tile_size):
        block = TileBlock(cat, spec, model.inputs, window)
        for s in range(0, len(idx), model.batch):
            part = idx[s:s + model.batch]
            out[part] = model.predict_proba(block.gather(ev.row[part], ev.col[part]))
    return out


def confusion_of_maps(map_paths: list[Path], polys: Any, cat: Catalog, tiles: list[Tile], labels: list[int]) -> list[np.ndarray]:
    """Confusion matrix of each map against the pixels (centres) inside ``polys``, tile by tile.

    The reference is rasterized once per tile and compared with every map.
    """
    from chain.mosaic import read_window_array
    from chain.sampling import polygons_in_tile, rasterize_ids

    cms = [np.zeros((len(labels), len(labels)), dtype=np.int64) for _ in map_paths]
    for tile in tiles:
        inside = polygons_in_tile(polys, cat.grid, tile)
        if inside.empty:
            continue
        ref = rasterize_ids(inside, cat.grid, tile, column="code") - 1
        for cm, path in zip(cms, map_paths, strict=True):
            pred = read_window_array(path, tile).astype(np.int64)
            sel = (ref >= 0) & (pred > 0)  # nodata (never observed) pixels are not predictions: left out
            cm += confusion(ref[sel], pred[sel], labels)
    return cms


def model_labels(types: list[str], params: list[dict[str, Any]] | None = None) -> list[str]:
    """Readable, unique names of compared models: the type; when a type appears twice, its first entry keeps the type's
    name and the others add the (first two) settings where they differ from it (``fcn fusion=early``), or a number
    when that does not tell them apart (or no settings are given)."""
    out = []
    for i, n in enumerate(types):
        first = types.index(n)
        if types.count(n) == 1 or (params is not None and i == first):
            out.append(n)
            continue
        if params is not None:
            base = params[first]
            shown = [k for k in params[i] if k != "type" and params[i][k] != base.get(k) and not isinstance(params[i][k], (list, dict))][:2]
            same = [j for j, t in enumerate(types) if t == n and j != first]
            if shown and sum(1 for j in same if all(params[j].get(k) == params[i][k] for k in shown)) == 1:
                out.append(f"{n} " + " ".join(f"{k}={params[i][k]}" for k in shown))
                continue
        out.append(f"{n} #{types[:i].count(n) + 1}")
    return out
