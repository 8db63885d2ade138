"""Model builders and artifacts (weights + manifest). One place maps a config ``type`` to a model."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np

from chain import __version__
from chain.atomic import atomic_path, write_json
from chain.config import RFModel
from chain.errors import StepError

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestClassifier

# scikit-learn is imported where a model is built or unpickled, not on import: classify workers that
# evaluate a compiled forest (chain.forest) start ~1 s sooner without it


def build_rf(cfg: RFModel, seed: int) -> RandomForestClassifier:
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


BUILDERS = {"rf": build_rf}


def build(cfg: RFModel, seed: int) -> Any:
    try:
        return BUILDERS[cfg.type](cfg, seed)
    except KeyError:
        raise StepError(f"model.type {cfg.type!r} is unknown; choose one of {sorted(BUILDERS)}") from None


def versions() -> dict[str, str]:
    import sklearn

    return {"chain": __version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def save(folder: Path, model: Any, manifest: dict[str, Any]) -> None:
    """Weights first, manifest last: a folder with a manifest holds a complete model."""
    with atomic_path(folder / "model.joblib") as tmp:
        joblib.dump(model, tmp, compress=3)
    write_json(folder / "manifest.json", {**manifest, "versions": versions()})


def load(folder: Path, feature_names: list[str] | None = None) -> tuple[Any, dict[str, Any]]:
    manifest = check(folder, feature_names)
    return joblib.load(folder / "model.joblib"), manifest


def check(folder: Path, feature_names: list[str] | None = None, inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The manifest of the model in ``folder``, checked against the features (and patch inputs) configured now."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise StepError(f"no trained model in {str(folder)!r} (manifest.json missing); run the train step")
    manifest = json.loads(manifest_path.read_text())
    if feature_names is not None and manifest["feature_names"] != list(feature_names):
        raise StepError(
            f"model in {str(folder)!r} was trained on {len(manifest['feature_names'])} features that differ from the "
            f"{len(feature_names)} features configured now; re-run training (chain run ... --from train)"
        )
    if inputs is not None and manifest.get("inputs") != inputs:
        raise StepError(
            f"model in {str(folder)!r} was trained on other patch inputs ({[i['name'] for i in manifest.get('inputs', [])]}, "
            f"sizes {[i['size'] for i in manifest.get('inputs', [])]}) than configured now; re-run training (chain run ... --from train)"
        )
    return manifest
