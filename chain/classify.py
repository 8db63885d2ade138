"""Wall-to-wall prediction of one tile: features -> class + confidence (max probability, 0-100)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from chain import forest, models
from chain.catalog import Catalog
from chain.features import FeatureSpec, compute_features
from chain.grid import Tile
from chain.masks import finite_everywhere
from chain.raster import pixel_major, write_tile

CLASS_NODATA = 0
CONF_NODATA = 255
_CHUNK = 65536  # pixels per predict call: bounds the (pixels x classes) probability array

_models: dict[tuple[str, int, str, int], Any] = {}


def _cached_model(folder: Path, engine: str = "sklearn", threads: int = 1) -> Any:
    """The model of ``folder`` (pixel RF, or a ``PatchModel``), loaded (and compiled) once per worker process.

    ``folder`` may also be a compiled forest file (``forest.compiled_file``): loaded without scikit-learn.
    """
    stamp = folder if folder.suffix == ".npz" else folder / "manifest.json"
    key = (str(folder), stamp.stat().st_mtime_ns, engine, threads)
    if key not in _models:
        _models.clear()
        from chain.deep.infer import PatchModel, is_patch_model

        # dask runs one tile per thread: a compiled forest walks each tile serially (threads=1)
        if folder.suffix == ".npz":
            _models[key] = forest.FastForest(forest.load(folder), threads=1)
        elif is_patch_model(folder):
            _models[key] = PatchModel(folder, threads)
        else:
            compiled = engine != "sklearn"
            _models[key] = forest.evaluator(models.load(folder)[0], 1 if compiled else threads, compiled=compiled)
    return _models[key]


def _encode(classes: np.ndarray, proba: np.ndarray, with_proba: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    best = proba.argmax(axis=1)
    labels = classes[best].astype(np.uint8)
    conf = np.rint(proba[np.arange(len(best)), best] * 100).astype(np.uint8)
    return labels, conf, (np.rint(proba * 100).astype(np.uint8) if with_proba else None)


def predict_pixels(model: Any, X: np.ndarray, with_proba: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Class codes (uint8), confidence (uint8, 0-100) and, if asked, per-class probabilities (uint8 %, (n, K))."""
    classes = np.asarray(model.classes_)
    parts = [_encode(classes, model.predict_proba(X[s:s + _CHUNK]), with_proba) for s in range(0, len(X), _CHUNK)]
    labels = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.uint8)
    conf = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.uint8)
    probas = np.concatenate([p[2] for p in parts]) if parts and with_proba else None  # type: ignore[misc]
    return labels, conf, probas


def predict_block(model: Any, values: np.ndarray, valid: np.ndarray, with_proba: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``predict_pixels`` for the valid pixels of a (F, h, w) block."""
    if isinstance(model, forest.FastForest):
        # the compiled forest reads the block in its own layout (no transposed copy); nodata pixels are dropped after
        pixels = pixel_major(values)
        if pixels is not None:
            proba = model.predict_proba(pixels)[valid.ravel()]
        else:
            proba = model.predict_proba_features_major(values.reshape(values.shape[0], -1))[valid.ravel()]
        return _encode(np.asarray(model.classes_), proba, with_proba)
    return predict_pixels(model, values[:, valid].T, with_proba)


def tile_paths(out_dir: Path, tile: Tile) -> tuple[Path, Path]:
    return out_dir / f"{tile.id}_class.tif", out_dir / f"{tile.id}_confidence.tif"


def proba_path(out_dir: Path, tile: Tile) -> Path:
    return out_dir / f"{tile.id}_proba.tif"


def validity_path(out_dir: Path, tile: Tile) -> Path:
    return out_dir / f"{tile.id}_validity.tif"


def classify_tile(tile: Tile, cat: Catalog, spec: FeatureSpec, model_dir: Path, out_dir: Path,
                  probabilities: bool = False, engine: str = "compiled", threads: int = 1,
                  validity: bool = False) -> str:
    """Class and confidence tiles (+ probabilities, + the clear-observation count when ``validity``).

    ``model_dir`` is a trained model's folder, or the compiled forest file made from it.

    The validity count comes with the features at no extra read, so PixelsValidity is written here
    (for one run) rather than by a separate pass over every band.
    """
    model = _cached_model(model_dir, engine, threads)
    if hasattr(model, "predict_window"):  # a patch model reads its own sources, with a halo
        valid, probs, per_sensor = model.predict_window(cat, spec, tile.window)
        lab, cf, pr = _encode(np.asarray(model.classes_), probs, probabilities)
    else:
        block = compute_features(cat, spec, tile.window)
        per_sensor = block.per_sensor
        valid = block.valid & finite_everywhere(block.values)
        if valid.any():
            lab, cf, pr = predict_block(model, block.values, valid, probabilities)
    h, w = valid.shape
    labels = np.full((h, w), CLASS_NODATA, dtype=np.uint8)
    conf = np.full((h, w), CONF_NODATA, dtype=np.uint8)
    proba = np.full((len(model.classes_), h, w), CONF_NODATA, dtype=np.uint8) if probabilities else None
    if valid.any():
        labels[valid], conf[valid] = lab, cf
        if proba is not None and pr is not None:
            proba[:, valid] = pr.T
    class_path, conf_path = tile_paths(out_dir, tile)
    if validity:
        # one band per sensor (S2 clear dates, S1 valid dates, SPOT, stack), named
        write_tile(validity_path(out_dir, tile), np.stack(list(per_sensor.values())), cat.grid, tile.window, None,
                   descriptions=list(per_sensor))
    if proba is not None:
        write_tile(proba_path(out_dir, tile), proba, cat.grid, tile.window, CONF_NODATA)
    write_tile(conf_path, conf, cat.grid, tile.window, CONF_NODATA)
    write_tile(class_path, labels, cat.grid, tile.window, CLASS_NODATA)  # written last: marks the tile done
    return tile.id


def vote(labels: np.ndarray, confidence: np.ndarray, nodata: int = CLASS_NODATA) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote over runs: ``labels``/``confidence`` are (runs, h, w); returns (class, agreement %).

    Ties go to the tied class with the largest summed confidence; agreement is the share of the runs
    (with a prediction at that pixel) that voted for the winning class.
    """
    classes = np.unique(labels[labels != nodata])
    h, w = labels.shape[1:]
    fused = np.full((h, w), nodata, dtype=labels.dtype)
    agreement = np.full((h, w), CONF_NODATA, dtype=np.uint8)
    if len(classes) == 0:
        return fused, agreement
    votes = np.stack([(labels == c).sum(axis=0) for c in classes])  # (K, h, w)
    conf_sum = np.stack([np.where(labels == c, confidence, 0).sum(axis=0) for c in classes])
    score = votes * 1_000_000 + conf_sum  # votes first, confidence breaks ties
    best = score.argmax(axis=0)
    n_voters = (labels != nodata).sum(axis=0)
    has = n_voters > 0
    fused[has] = classes[best][has]
    agreement[has] = np.rint(100 * np.take_along_axis(votes, best[None], 0)[0][has] / n_voters[has]).astype(np.uint8)
    return fused, agreement


def fuse_tile(tile: Tile, grid: Any, run_dirs: list[Path], out_dir: Path) -> str:
    import rasterio

    labels, conf = [], []
    for d in run_dirs:
        cp, fp = tile_paths(d, tile)
        with rasterio.open(cp) as a, rasterio.open(fp) as b:
            labels.append(a.read(1))
            conf.append(b.read(1).astype(np.int64))
    fused, agreement = vote(np.stack(labels), np.where(np.stack(conf) == CONF_NODATA, 0, np.stack(conf)))
    write_tile(out_dir / f"{tile.id}_agreement.tif", agreement, grid, tile.window, CONF_NODATA)
    write_tile(out_dir / f"{tile.id}_class.tif", fused, grid, tile.window, CLASS_NODATA)
    return tile.id
