"""Object-based models: any pixel model type trained on object features, mapped one class per object.

The model's folder is that of its type (e.g. a Random Forest's) with ``unit: object`` in the manifest
and where the object table and ``segments.tif`` lie (relative to the folder). ``load`` wraps the
type's predictor: each worker predicts every object once, then a window's map is a lookup of its
object ids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.models.base import Predictor

if TYPE_CHECKING:
    from rasterio.windows import Window

    from chain.catalog import Catalog
    from chain.spec import FeatureSpec


def manifest_entries(folder: Path, objects: Path, segments: Path, names: list[str]) -> dict[str, Any]:
    """What an object model adds to its manifest (paths relative to ``folder``: the work folder may move)."""
    return {"unit": "object", "feature_names": names, "objects": os.path.relpath(objects, folder),
            "segments": os.path.relpath(segments, folder)}


class ObjectPredictor(Predictor):
    """Probabilities per object (computed once, on first use), painted over the object ids of each window."""

    def __init__(self, inner: Predictor, folder: Path, manifest: dict[str, Any]):
        self.inner = inner
        self.classes_ = inner.classes_
        self.inputs = []
        self.objects = (folder / manifest["objects"]).resolve()
        self.segments = (folder / manifest["segments"]).resolve()
        self._proba: np.ndarray | None = None

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.inner.predict_proba(x)

    def object_proba(self) -> np.ndarray:
        """(N, K) float32: every object's probabilities (NaN rows: objects without features, not mapped)."""
        if self._proba is None:
            from chain.objects import load

            X = load(self.objects).X
            out = np.full((X.shape[0], len(self.classes_)), np.nan, np.float32)
            for s in range(0, X.shape[0], 65536):
                x = np.asarray(X[s:s + 65536])
                ok = np.isfinite(x).all(axis=1)
                if ok.any():
                    out[s:s + 65536][ok] = self.inner.predict_proba(x[ok])
            self._proba = out
        return self._proba

    def predict_window(self, cat: Catalog, spec: FeatureSpec, window: Window) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        import rasterio

        from chain.features import compute_features

        P = self.object_proba()
        with rasterio.open(self.segments) as src:
            ids = src.read(1, window=window).astype(np.int64)
        has = ids > 0
        valid = has.copy()
        valid[has] = np.isfinite(P[ids[has] - 1, 0])
        # the per-sensor observation counts (PixelsValidity) come with the window's features, shared with the pixel
        # model of the same tile when it runs too (features.reused_reads)
        per_sensor = compute_features(cat, spec, window).per_sensor
        return valid, P[ids[valid] - 1].astype(np.float64), per_sensor
