"""Wall-to-wall prediction with patch models (torch networks and flattened-patch RF), tile by tile.

A tile's inputs are read once with a halo of the patch radius (``TileBlock``); patches of its
mappable pixels are cut in batches from strided views and go through the model batch by batch, so
memory is bounded by the tile and the batch size, whatever the scene.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.deep.inputs import PatchInput, TileBlock
from chain.models.base import Predictor

if TYPE_CHECKING:
    from rasterio.windows import Window

    from chain.catalog import Catalog
    from chain.spec import FeatureSpec


def flatten(patches: dict[str, np.ndarray]) -> np.ndarray:
    """The flattened-patch feature vector of rf_patch: inputs in order, each (C, s, s) raveled."""
    return np.concatenate([v.reshape(len(v), -1) for v in patches.values()], axis=1).astype(np.float32)


class PatchPredictor(Predictor):
    """A patch model, loaded: ``proba`` maps a dict of patches (n, C, s, s) to probabilities (n, K)."""

    def __init__(self, inputs: list[PatchInput], classes: Any, batch: int, proba: Callable[[dict[str, np.ndarray]], np.ndarray]):
        self.inputs = inputs
        self.classes_ = np.asarray(classes)
        self.batch = batch
        self._proba = proba

    def predict_proba(self, x: Any) -> np.ndarray:
        return self._proba(x)

    def predict_window(self, cat: Catalog, spec: FeatureSpec, window: Window) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        block = TileBlock(cat, spec, self.inputs, window)
        valid = block.valid
        rr, cc = np.nonzero(valid)
        rows, cols = rr + int(window.row_off), cc + int(window.col_off)
        proba = np.empty((len(rr), len(self.classes_)), np.float32)
        for s in range(0, len(rr), self.batch):
            proba[s:s + self.batch] = self._proba(block.gather(rows[s:s + self.batch], cols[s:s + self.batch]))
        return valid, proba, block.per_sensor
