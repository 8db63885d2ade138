"""Wall-to-wall prediction with patch models (torch networks and flattened-patch RF), tile by tile.

A tile's sources are read once with a halo of the patch radius (``TileBlock``); patches of its valid
pixels are cut in batches from strided views and go through the model batch by batch, so memory
is bounded by the tile and the batch size, whatever the scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.windows import Window

from chain.catalog import Catalog
from chain.deep.inputs import PatchInput, TileBlock
from chain.features import FeatureSpec


def flatten(patches: dict[str, np.ndarray]) -> np.ndarray:
    """The flattened-patch feature vector of rf_patch: inputs in order, each (C, s, s) raveled."""
    return np.concatenate([v.reshape(len(v), -1) for v in patches.values()], axis=1).astype(np.float32)


class PatchModel:
    """What classify needs from a patch model: ``classes_`` and per-window probabilities."""

    def __init__(self, folder: Path, threads: int = 1):
        import json

        self.manifest = json.loads((folder / "manifest.json").read_text())
        self.inputs = [PatchInput.from_dict(d) for d in self.manifest["inputs"]]
        self.classes_ = np.asarray(self.manifest["classes"])
        self.batch = int(self.manifest["params"].get("inference_batch", 4096))
        self.kind = self.manifest["type"]
        if self.kind == "rf_patch":
            import joblib

            from chain import forest

            # one tile per dask thread: the compiled forest walks it serially (see chain.forest)
            self.rf = forest.evaluator(joblib.load(folder / "model.joblib"), 1)
        else:
            import torch

            from chain.deep import trainer

            import multiprocessing

            if multiprocessing.parent_process() is not None and torch.get_num_threads() != max(1, threads):
                # a worker process: its share of the cores. Never from threads of the main process, where
                # changing the pool under another thread's forward pass can deadlock
                torch.set_num_threads(max(1, threads))
            self.net, _, self.norm = trainer.load(folder)
            self.device = trainer.resolve_device(self.manifest["params"].get("device", "auto"))
            self.net.to(self.device)

    def predict_batch(self, patches: dict[str, np.ndarray]) -> np.ndarray:
        if self.kind == "rf_patch":
            return np.asarray(self.rf.predict_proba(flatten(patches)))
        import torch

        with torch.no_grad():
            x = {k: torch.from_numpy(self.norm.apply(k, v)).to(self.device) for k, v in patches.items()}
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                logits = self.net(x)["fused"]
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict_window(self, cat: Catalog, spec: FeatureSpec, window: Window) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(valid (h, w), probabilities (n_valid, K) in row-major order of the valid pixels, validity counts per sensor)."""
        block = TileBlock(cat, spec, self.inputs, window)
        valid = block.valid
        rr, cc = np.nonzero(valid)
        rows, cols = rr + int(window.row_off), cc + int(window.col_off)
        proba = np.empty((len(rr), len(self.classes_)), np.float32)
        for s in range(0, len(rr), self.batch):
            proba[s:s + self.batch] = self.predict_batch(block.gather(rows[s:s + self.batch], cols[s:s + self.batch]))
        return valid, proba, block.per_sensor


def is_patch_model(folder: Path) -> bool:
    import json

    from chain.config import DEEP_TYPES

    return json.loads((folder / "manifest.json").read_text()).get("type") in (*DEEP_TYPES, "rf_patch")

