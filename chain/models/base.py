"""The model-type protocol, and what classification and evaluation need from a trained model.

A model type is one module with a config section (a ``ModelSection`` subclass, ``model.type`` = its
name) and a ``ModelType`` subclass registered under ``chain.models``. Its ``kind`` says what it
learns from: ``pixel`` (a feature vector per pixel), ``patch`` (patches around each pixel, declared
as ``PatchInput``s), ``segmentation`` (whole windows of images on the grid, labelled by the training
polygons: ``chain.deep.segment``). ``fit``
writes the model's files into a folder and ``load`` gives back a ``Predictor``: class codes and
probabilities for a window of the grid, or for sample points.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from chain.schema import ModelSection

if TYPE_CHECKING:
    from pathlib import Path

    import geopandas as gpd
    from rasterio.windows import Window

    from chain.catalog import Catalog
    from chain.deep.inputs import PatchInput
    from chain.sampling import Samples
    from chain.spec import FeatureSpec

KINDS = ("pixel", "patch", "segmentation")


class TrainingData(Protocol):
    """One run's training pixels (and validation pixels with 64/16/20), and their patches on demand."""

    train: Samples
    validation: Samples | None  # 64/16/20: early stopping and best epoch; never the test polygons
    folder: Path  # the model's folder (patch caches, checkpoints)
    cat: Catalog
    spec: FeatureSpec
    start_from: Any  # an update: last year's model to fine-tune (chain.update.transfer.StartFrom), else None

    def polygons(self, part: str) -> gpd.GeoDataFrame:
        """The run's reference polygons of ``part`` (segmentation models label whole polygons)."""

    def patches(self, part: str, inputs: list[PatchInput]) -> dict[str, np.ndarray]:
        """Patches of the ``part`` ("train" or "validation") pixels, extracted once and cached in ``folder``."""


class Predictor(ABC):
    """A trained model, loaded: ``classes_`` and probabilities per window of the grid or per sample."""

    classes_: np.ndarray
    inputs: list[PatchInput]  # patch models: what predict_proba takes; [] for pixel models (a feature matrix)
    batch: int = 65536  # samples per predict_proba call
    whole_tile: bool = False  # segmentation models: probabilities come from predict_window only

    @abstractmethod
    def predict_proba(self, x: Any) -> np.ndarray:
        """(n, K) probabilities of ``x``: features (n, F) for pixel models, a dict of patches for patch models."""

    @abstractmethod
    def predict_window(self, cat: Catalog, spec: FeatureSpec, window: Window) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(mappable (h, w), probabilities (n mappable, K) in row-major order, per-sensor validity counts)."""


class PixelPredictor(Predictor):
    """A pixel model: the window's features (``chain.features``), the one mappability rule, then the estimator."""

    def __init__(self, estimator: Any):
        self.estimator = estimator
        self.classes_ = np.asarray(estimator.classes_)
        self.inputs = []

    def predict_proba(self, x: Any) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(x))

    def predict_window(self, cat: Catalog, spec: FeatureSpec, window: Window) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        from chain.classify import predict_proba_block
        from chain.features import compute_features

        block = compute_features(cat, spec, window)
        valid = block.mappable()
        proba = predict_proba_block(self.estimator, block.values, valid) if valid.any() else np.empty((0, len(self.classes_)))
        return valid, proba, block.per_sensor


class CalibratedPredictor(Predictor):
    """A model whose probabilities are temperature-scaled (``chain.calibration``): same classes, calibrated confidence."""

    def __init__(self, inner: Predictor, temperature: float):
        self.inner, self.temperature = inner, temperature
        self.classes_, self.inputs = inner.classes_, inner.inputs

    @property
    def whole_tile(self) -> bool:  # type: ignore[override]
        return self.inner.whole_tile

    @property
    def batch(self) -> int:  # the wrapped model's: classify.inference_batch set here reaches the model that batches
        return self.inner.batch

    @batch.setter
    def batch(self, value: int) -> None:
        self.inner.batch = value

    def predict_proba(self, x: Any) -> np.ndarray:
        from chain.calibration import apply

        return apply(np.asarray(self.inner.predict_proba(x)), self.temperature)

    def predict_window(self, cat: Catalog, spec: FeatureSpec, window: Window) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        from chain.calibration import apply

        valid, proba, per_sensor = self.inner.predict_window(cat, spec, window)
        return valid, apply(proba, self.temperature), per_sensor


@dataclass
class FitReport:
    """What training says about itself (logged, and kept in the manifest)."""

    seconds: float
    detail: str = ""
    extra: dict[str, Any] | None = None


class ModelType(ABC):
    name: ClassVar[str]
    kind: ClassVar[str]  # one of KINDS
    config: ClassVar[type[ModelSection]]
    files: ClassVar[tuple[str, ...]]  # what a trained model's folder holds besides manifest.json
    transferable: ClassVar[bool] = False  # a network an update fine-tunes from last year's (else retrained from scratch)

    def inputs(self, cfg: Any, spec: FeatureSpec, cat: Catalog) -> list[PatchInput]:
        """The patches this model reads (patch models); raises ConfigError when the inputs it needs are missing."""
        return []

    def check(self, cfg: Any, spec: FeatureSpec, cat: Catalog) -> None:
        """Cheap checks before any heavy step: inputs present, sizes that fit the network, device."""
        self.inputs(cfg, spec, cat)

    def compatible(self, folder: Path, cfg: Any, spec: FeatureSpec, cat: Catalog) -> dict[str, Any]:
        """The manifest of the model in ``folder``, checked against the features configured now (StepError
        when they differ): by default the same feature names and patch inputs as in training."""
        from chain.models import check

        return check(folder, spec.names, [i.to_dict() for i in self.inputs(cfg, spec, cat)])

    @abstractmethod
    def fit(self, cfg: Any, data: TrainingData, seed: int, manifest: dict[str, Any]) -> FitReport:
        """Train on ``data`` and write the model into ``data.folder`` (``manifest`` last, with
        ``chain.models.save_manifest``); ``manifest`` holds what every model records (type, run, seed,
        features, inputs, classes, parameters)."""

    @abstractmethod
    def load(self, folder: Path, manifest: dict[str, Any], engine: str = "compiled", threads: int | None = 1,
             spec: FeatureSpec | None = None, cat: Catalog | None = None) -> Predictor:
        """The model in ``folder``. ``engine``: how pixel forests are evaluated; ``threads``: the cores of one dask
        worker thread's share (classify), or None when the caller is the only one (every core); ``spec`` and
        ``cat``: the features it will be given, when they may differ from the training ones (another date grid)."""
