"""Wall-to-wall prediction of one tile: class + confidence (max probability, 0-100), whatever the model kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from chain import forest
from chain.catalog import Catalog
from chain.grid import Tile
from chain.raster import pixel_major, write_tile
from chain.spec import FeatureSpec

CLASS_NODATA = 0
CONF_NODATA = 255
_CHUNK = 65536  # pixels per predict call: bounds the (pixels x classes) probability array

_models: dict[tuple[Any, ...], Any] = {}


def cached_model(folder: Path, engine: str = "compiled", threads: int = 1, spec: Any = None, cat: Any = None) -> Any:
    """The trained model of ``folder`` as a ``Predictor`` for the features ``spec``, loaded once per worker process
    (per model version)."""
    from chain import models

    key = (str(folder), (folder / "manifest.json").stat().st_mtime_ns, engine, threads, tuple(spec.names) if spec else ())
    if key not in _models:
        for old in [k for k in _models if k[0] == key[0]]:  # another version of this folder's model: stale
            del _models[old]
        # dask runs one tile per thread: a compiled forest walks each tile serially (threads=1)
        _models[key] = models.load(folder, engine, threads, spec=spec, cat=cat)
    return _models[key]


def encode(classes: np.ndarray, proba: np.ndarray, with_proba: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Class codes (uint8), confidence (uint8, 0-100) and, if asked, per-class probabilities (uint8 %, (n, K))."""
    best = proba.argmax(axis=1)
    labels = classes[best].astype(np.uint8)
    conf = np.rint(proba[np.arange(len(best)), best] * 100).astype(np.uint8)
    return labels, conf, (np.rint(proba * 100).astype(np.uint8) if with_proba else None)


def flat_block(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """A (F, h, w) block as the compiled forest reads it, in its own memory layout (no transposed copy): (h * w, F)
    and True when pixel-major, else (F, h * w) and False."""
    pixels = pixel_major(values)
    return (pixels, True) if pixels is not None else (values.reshape(values.shape[0], -1), False)


def predict_proba_block(model: Any, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Probabilities (n valid, K) of the ``valid`` pixels of a (F, h, w) block."""
    if isinstance(model, forest.FastForest):  # nodata pixels are dropped after the walk
        X, pixels = flat_block(values)
        return (model.predict_proba(X) if pixels else model.predict_proba_features_major(X))[valid.ravel()]
    X = values[:, valid].T
    parts = [np.asarray(model.predict_proba(X[s:s + _CHUNK])) for s in range(0, len(X), _CHUNK)]
    return np.concatenate(parts) if parts else np.empty((0, len(model.classes_)))


def tile_paths(out_dir: Path, tile: Tile) -> tuple[Path, Path]:
    return out_dir / f"{tile.id}_class.tif", out_dir / f"{tile.id}_confidence.tif"


def proba_path(out_dir: Path, tile: Tile) -> Path:
    return out_dir / f"{tile.id}_proba.tif"


def validity_path(out_dir: Path, tile: Tile) -> Path:
    return out_dir / f"{tile.id}_validity.tif"


Prediction = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]  # Predictor.predict_window's (valid, proba, per_sensor)


def classify_tile(tile: Tile, cat: Catalog, spec: FeatureSpec, model_dir: Path, out_dir: Path,
                  probabilities: bool = False, engine: str = "compiled", threads: int = 1,
                  validity: bool = False, inference_batch: int | None = None, prediction: Prediction | None = None) -> str:
    """Class and confidence tiles (+ probabilities, + the observation counts per sensor when ``validity``).

    The validity counts come with the features at no extra read, so PixelsValidity is written here
    (for one run) rather than by a separate pass over every band. ``prediction``: the model's
    ``predict_window`` for the tile, when already computed (``forests_together``).
    """
    model = cached_model(model_dir, engine, threads, spec, cat)
    if inference_batch and model.inputs:  # patch and temporal networks: classify.inference_batch over the model's own
        model.batch = inference_batch
    valid, probs, per_sensor = prediction if prediction is not None else model.predict_window(cat, spec, tile.window)
    h, w = valid.shape
    labels = np.full((h, w), CLASS_NODATA, dtype=np.uint8)
    conf = np.full((h, w), CONF_NODATA, dtype=np.uint8)
    proba = np.full((len(model.classes_), h, w), CONF_NODATA, dtype=np.uint8) if probabilities else None
    if valid.any():
        lab, cf, pr = encode(np.asarray(model.classes_), probs, probabilities)
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


def tile_done(out_dir: Path, tile: Tile, probabilities: bool, validity: bool) -> bool:
    """Every file ``classify_tile`` writes for ``tile`` into ``out_dir`` exists (the class tile, last, marks it done)."""
    extra = ([proba_path(out_dir, tile)] if probabilities else []) + ([validity_path(out_dir, tile)] if validity else [])
    return all(p.exists() for p in [*tile_paths(out_dir, tile), *extra])


def classify_tile_runs(tile: Tile, cat: Catalog, spec: FeatureSpec, runs: list[tuple[Path, Path, bool]],
                       probabilities: bool = False, engine: str = "compiled", threads: int = 1,
                       inference_batch: int | None = None) -> str:
    """``classify_tile`` for every run's (model folder, output folder, write validity) not yet done for ``tile``.

    The tile's features are read and gap-filled once and shared by every run's model
    (``features.reused_reads``): with 5 runs, the reading and gap-filling is paid once, not 5 times.
    A run already done for this tile (a resumed step) is skipped, so per-tile resume stays exact.
    """
    from chain.features import reused_reads

    with reused_reads():
        pending = [job for job in runs if not tile_done(job[1], tile, probabilities, job[2])]
        together = forests_together(tile, cat, spec, [job[0] for job in pending], engine, threads)
        for model_dir, out_dir, validity in pending:
            classify_tile(tile, cat, spec, model_dir, out_dir, probabilities, engine, threads, validity, inference_batch,
                          together.get(model_dir))
    return tile.id


STACK_BYTES = 512 * 2**20  # the probabilities of the forests walked together (float64, pixels x classes each), at most


def _compiled_forest(model: Any) -> tuple[forest.FastForest, float | None] | None:
    """The serial compiled forest inside a loaded model, and its calibration temperature; None for other models."""
    from chain.models.base import CalibratedPredictor, PixelPredictor

    temperature = None
    if isinstance(model, CalibratedPredictor):
        model, temperature = model.inner, model.temperature
    if isinstance(model, PixelPredictor) and isinstance(model.estimator, forest.FastForest) and model.estimator.threads == 1:
        return model.estimator, temperature
    return None


_stacks: dict[tuple[int, ...], tuple[list[Any], forest.ForestStack]] = {}


def _stack_of(forests: list[forest.CompiledForest]) -> forest.ForestStack:
    """``forest.stack(forests)``, built once per worker for a set of (cached) models."""
    key = tuple(id(f) for f in forests)
    if key not in _stacks:
        if len(_stacks) >= 4:  # other models' stacks (a changed run): not needed any more
            _stacks.clear()
        _stacks[key] = (forests, forest.stack(forests))  # the forests held with their stack: their ids stay theirs
    return _stacks[key][1]


def forests_together(tile: Tile, cat: Catalog, spec: FeatureSpec, folders: list[Path], engine: str = "compiled",
                     threads: int = 1) -> dict[Path, Prediction]:
    """``predict_window`` of the compiled-forest models among ``folders`` (every run of an RF config), computed in
    one walk of the tile's features: each block of pixels is made pixel-major once and walked by every run's forest
    (``forest.predict_proba_stacked``; the same probabilities as each model alone, bit for bit). Other models, and a
    forest alone, are left to their own ``predict_window`` (absent from the result)."""
    from chain.calibration import apply
    from chain.features import compute_features

    fast = []
    for folder in folders:
        found = _compiled_forest(cached_model(folder, engine, threads, spec, cat))
        if found is not None:
            fast.append((folder, *found))
    if len(fast) < 2:
        return {}
    block = compute_features(cat, spec, tile.window)
    valid = block.mappable()
    if not valid.any():
        return {}
    X, pixels = flat_block(block.values)
    keep = valid.ravel()
    k_max = max(len(ff.classes_) for _, ff, _ in fast)
    per_group = max(1, STACK_BYTES // (keep.size * k_max * 8))
    out: dict[Path, Prediction] = {}
    for g in range(0, len(fast), per_group):
        group = fast[g:g + per_group]
        if len(group) < 2:
            break  # one forest left: walked alone by its own predict_window
        probs = forest.predict_proba_stacked(_stack_of([ff.forest for _, ff, _ in group]), X, pixels)
        for (folder, _, temperature), p in zip(group, probs, strict=True):
            p = p[keep]
            out[folder] = (valid, p if temperature is None else apply(p, temperature), block.per_sensor)
    return out


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
