"""``model.type: rf``: a Random Forest on each pixel's feature vector (scikit-learn), evaluated compiled.

Training writes ``model.joblib`` (the scikit-learn estimator) and ``forest.npz`` (the same forest
compiled by ``chain.forest``, stamped with the size and mtime of ``model.joblib``). Classification
loads the compiled file, so workers never import scikit-learn; ``classify.engine: sklearn`` uses
the estimator's own ``predict_proba`` instead (same classes).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from chain.models.base import FitReport, ModelType, PixelPredictor, Predictor, TrainingData
from chain.schema import ModelSection

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestClassifier

log = logging.getLogger(__name__)


class RFModel(ModelSection):
    type: Literal["rf"] = "rf"
    n_estimators: int = Field(100, ge=1)
    max_depth: int | None = Field(25, ge=1)
    min_samples_split: int = Field(2, ge=2)
    min_samples_leaf: int = Field(1, ge=1)
    max_features: Literal["sqrt", "log2"] | float = "sqrt"  # or the fraction of the features tried per split
    class_weight: Literal["balanced", "balanced_subsample"] | None = None
    n_jobs: int = -1  # -1: every core; else a number of cores

    @field_validator("max_features", mode="before")
    @classmethod
    def _max_features(cls, value: Any) -> Any:
        if isinstance(value, str) and value in ("sqrt", "log2"):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
            return float(value)
        raise ValueError("give 'sqrt', 'log2' or a fraction of the features in (0, 1], e.g. 0.3")

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("give -1 (every core) or a number of cores >= 1")
        return value


def build_rf(cfg: Any, seed: int) -> RandomForestClassifier:
    # imported here: classify workers evaluating a compiled forest start ~1 s sooner without scikit-learn
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=cfg.n_estimators,
        max_depth=cfg.max_depth,
        min_samples_split=cfg.min_samples_split,
        min_samples_leaf=cfg.min_samples_leaf,
        max_features=cfg.max_features,
        class_weight=cfg.class_weight,
        n_jobs=cfg.n_jobs,
        random_state=seed,
    )


def save_estimator(folder: Path, estimator: Any, manifest: dict[str, Any], compile_forest: bool = True) -> None:
    """``model.joblib`` (+ ``forest.npz``, its compiled form), then the manifest."""
    import joblib

    from chain import forest
    from chain.atomic import atomic_path
    from chain.models import save_manifest

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.joblib") as tmp:
        joblib.dump(estimator, tmp, compress=3)
    if compile_forest:
        forest.compile_file(folder, estimator)
    save_manifest(folder, {**manifest, "classes": [int(c) for c in estimator.classes_]})


class RandomForest(ModelType):
    name: ClassVar[str] = "rf"
    kind: ClassVar[str] = "pixel"
    config: ClassVar[type[ModelSection]] = RFModel
    files: ClassVar[tuple[str, ...]] = ("model.joblib", "forest.npz")

    def fit(self, cfg: Any, data: TrainingData, seed: int, manifest: dict[str, Any]) -> FitReport:
        rf = build_rf(cfg, seed)
        t0 = time.time()
        rf.fit(data.train.X, data.train.code)
        seconds = time.time() - t0
        save_estimator(data.folder, rf, manifest)
        return FitReport(seconds, f"{len(data.train.code)} pixels")

    def load(self, folder: Path, manifest: dict[str, Any], engine: str = "compiled", threads: int | None = 1,
             spec: Any = None, cat: Any = None) -> Predictor:
        from chain import forest

        if engine == "compiled" and forest.available():
            compiled = forest.compiled_file(folder, write=False)
            if compiled is not None:  # workers load it without scikit-learn
                # threads None: the only caller, walk in parallel; else one of the dask threads, each walking its tile serially
                return PixelPredictor(forest.FastForest(forest.load(compiled), threads=None if threads is None else 1))
        import joblib

        use_compiled = engine == "compiled"
        estimator = joblib.load(folder / "model.joblib")
        return PixelPredictor(forest.evaluator(estimator, 1 if use_compiled and threads else threads, compiled=use_compiled))
