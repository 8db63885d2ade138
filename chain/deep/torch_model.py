"""What every torch patch model does the same way: fit through the one trainer, save, load for inference.

A torch model type subclasses ``TorchModel`` and provides its config section, ``inputs`` (the patches
it reads) and ``network`` (the ``nn.Module`` for given input shapes); the rest is here.
"""

from __future__ import annotations

import logging
import multiprocessing
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from chain.deep.inputs import PatchInput, check_native
from chain.models.base import FitReport, ModelType, Predictor, TrainingData

log = logging.getLogger(__name__)


class TorchModel(ModelType):
    kind: ClassVar[str] = "patch"
    transferable: ClassVar[bool] = True  # an update can fine-tune last year's network (chain.update.transfer)
    files: ClassVar[tuple[str, ...]] = ("model.pt", "history.json", "curves.png")  # + model.pt2 (chain.deep.export) when exportable

    @abstractmethod
    def network(self, cfg: Any, n_classes: int, shapes: dict[str, dict[str, int]]) -> Any:
        """The ``nn.Module`` (``shapes``: per input, channels / size / steps); ConfigError when sizes do not fit."""

    def check(self, cfg: Any, spec: Any, cat: Any) -> None:
        from chain.deep import trainer

        inputs = self.inputs(cfg, spec, cat)
        check_native(cat, inputs, f"model.type {cfg.type!r}")
        channels = {i.name: i.channels(cat) for i in inputs}
        self.network(cfg, 2, trainer.shapes_of(inputs, channels))  # raises on sizes the network cannot take
        trainer.resolve_device(cfg.device)

    def fit(self, cfg: Any, data: TrainingData, seed: int, manifest: dict[str, Any]) -> FitReport:
        return self._fit(cfg, data, seed, manifest)

    def _fit(self, cfg: Any, data: TrainingData, seed: int, manifest: dict[str, Any], period: dict[str, int] | None = None) -> FitReport:
        """Patches, the trainer (``period``: inputs normalised per band over their dates), the artifact."""
        import time

        from chain.deep import trainer

        inputs = [PatchInput.from_dict(d) for d in manifest["inputs"]]
        xtr = data.patches("train", inputs)
        xval = yval = None
        if data.validation is not None:  # early stopping / best epoch on the validation polygons, never on the test ones
            xval, yval = data.patches("validation", inputs), data.validation.code
        channels = {k: int(v.shape[1]) for k, v in xtr.items()}
        checkpoint = data.folder / "checkpoint.pt"
        t0 = time.time()
        start = data.start_from
        net, norm, history = trainer.train(cfg, lambda n, shapes: self.network(cfg, n, shapes), inputs, channels,
                                           manifest["classes"], xtr, data.train.code, xval, yval, seed, checkpoint=checkpoint,
                                           period=period, start=start)
        if start is not None:
            manifest = {**manifest, "lineage": start.lineage()}
        seconds = time.time() - t0
        trainer.save(data.folder, net, norm, history, {**manifest, "shapes": trainer.shapes_of(inputs, channels),
                                                       "device": str(trainer.resolve_device(cfg.device))})
        checkpoint.unlink(missing_ok=True)  # the model is complete: the training state is no longer needed
        return FitReport(seconds, f"{len(data.train.code)} patches, {len(history)} epochs "
                                  f"({np.mean([h['samples_per_s'] for h in history]):.0f} samples/s)")

    def load(self, folder: Path, manifest: dict[str, Any], engine: str = "compiled", threads: int | None = 1,
             spec: Any = None, cat: Any = None) -> Predictor:
        import torch

        from chain.deep import trainer
        from chain.deep.export import served
        from chain.deep.pipeline import DevicePatchPredictor
        from chain.models import model_type

        if threads and multiprocessing.parent_process() is not None and torch.get_num_threads() != threads:
            # a worker process: its share of the cores. Never from threads of the main process, where
            # changing the pool under another thread's forward pass can deadlock
            torch.set_num_threads(threads)
        cfg = model_type(manifest["type"]).config.model_validate(manifest["params"])
        net, norm = trainer.load(folder, manifest, lambda n, shapes: self.network(cfg, n, shapes))
        device = trainer.resolve_device(manifest["params"].get("device", "auto"))
        net.to(device)

        inputs = [PatchInput.from_dict(d) for d in manifest["inputs"]]
        # the normalisation as the network's fixed first layer: patches are cut and normalised on the device
        model = served(net, norm, manifest["shapes"], [i.name for i in inputs]).to(device)
        predictor = DevicePatchPredictor(inputs, manifest["classes"], int(manifest["params"].get("inference_batch", 2048)),
                                         model, device)
        predictor.network = net  # type: ignore[attr-defined]
        return predictor
