"""Wall-to-wall prediction of one tile: features -> class + confidence (max probability, 0-100)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from chain import models
from chain.catalog import Catalog
from chain.features import FeatureSpec, compute_features
from chain.grid import Tile
from chain.raster import write_tile

CLASS_NODATA = 0
CONF_NODATA = 255
_CHUNK = 65536  # pixels per predict call: bounds the (pixels x classes) probability array

_models: dict[tuple[str, int], Any] = {}


def _cached_model(folder: Path) -> Any:
    # each dask worker loads a model once, not once per tile
    key = (str(folder), (folder / "model.joblib").stat().st_mtime_ns)
    if key not in _models:
        _models.clear()
        model = models.load(folder)[0]
        if hasattr(model, "n_jobs"):
            # parallelism comes from the dask workers; trees on one thread avoid oversubscribing cores
            model.n_jobs = 1
        _models[key] = model
    return _models[key]


def predict_pixels(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class codes (uint8) and confidence (uint8, 0-100) for the rows of ``X``."""
    classes = np.asarray(model.classes_)
    labels = np.empty(len(X), dtype=np.uint8)
    conf = np.empty(len(X), dtype=np.uint8)
    for s in range(0, len(X), _CHUNK):
        proba = model.predict_proba(X[s:s + _CHUNK])
        best = proba.argmax(axis=1)
        labels[s:s + _CHUNK] = classes[best]
        conf[s:s + _CHUNK] = np.rint(proba[np.arange(len(best)), best] * 100).astype(np.uint8)
    return labels, conf


def tile_paths(out_dir: Path, tile: Tile) -> tuple[Path, Path]:
    return out_dir / f"{tile.id}_class.tif", out_dir / f"{tile.id}_confidence.tif"


def classify_tile(tile: Tile, cat: Catalog, spec: FeatureSpec, model_dir: Path, out_dir: Path) -> str:
    model = _cached_model(model_dir)
    block = compute_features(cat, spec, tile.window)
    h, w = block.n_valid.shape
    valid = block.valid & np.isfinite(block.values).all(axis=0)
    labels = np.full((h, w), CLASS_NODATA, dtype=np.uint8)
    conf = np.full((h, w), CONF_NODATA, dtype=np.uint8)
    if valid.any():
        lab, cf = predict_pixels(model, block.values[:, valid].T)
        labels[valid], conf[valid] = lab, cf
    class_path, conf_path = tile_paths(out_dir, tile)
    write_tile(conf_path, conf, cat.grid, tile.window, CONF_NODATA)
    write_tile(class_path, labels, cat.grid, tile.window, CLASS_NODATA)  # written last: marks the tile done
    return tile.id
