"""Model types: one module per type, registered under the ``chain.models`` entry-point group.

``chain.models.base`` holds the protocol (``ModelType``) and what every trained model shares: its
folder holds the type's files and ``manifest.json``, written last by ``save_manifest``, so a folder
with a manifest holds a complete model. This package imports nothing heavy.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chain.atomic import write_json
from chain.errors import StepError

if TYPE_CHECKING:
    from chain.models.base import ModelType, Predictor


def model_type(name: str, where: str = "model.type") -> ModelType:
    """The registered model type ``name`` (an instance of its class)."""
    from chain.plugins import MODELS

    cls = MODELS.get(name, where)
    return cls()


def versions() -> dict[str, str]:
    """Library versions stored with every model (scikit-learn and torch only when the process has them)."""
    import sys

    import numpy as np

    from chain import __version__

    out = {"chain": __version__, "numpy": np.__version__, "python": platform.python_version()}
    for lib, key in (("sklearn", "scikit-learn"), ("torch", "torch")):
        if lib in sys.modules:
            out[key] = sys.modules[lib].__version__
    return out


def save_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """The manifest, written last: a folder with a manifest holds a complete model."""
    write_json(folder / "manifest.json", {**manifest, "versions": versions()})


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.exists():
        raise StepError(f"no trained model in {str(folder)!r} (manifest.json missing); run the train step")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise StepError(f"the manifest of the model in {str(folder)!r} is damaged; re-run training (chain run ... --from train)") from None
    return manifest


def check(folder: Path, feature_names: list[str] | None = None, inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The manifest of the model in ``folder``, checked against the features (and patch inputs) configured now."""
    manifest = read_manifest(folder)
    if feature_names is not None and manifest["feature_names"] != list(feature_names):
        raise StepError(
            f"model in {str(folder)!r} was trained on {len(manifest['feature_names'])} features that differ from the "
            f"{len(feature_names)} features configured now; re-run training (chain run ... --from train)"
        )
    if inputs is not None and manifest.get("inputs", []) != inputs:
        raise StepError(
            f"model in {str(folder)!r} was trained on other patch inputs ({[i['name'] for i in manifest.get('inputs', [])]}, "
            f"sizes {[i['size'] for i in manifest.get('inputs', [])]}) than configured now; re-run training (chain run ... --from train)"
        )
    return manifest


def load(folder: Path, engine: str = "compiled", threads: int | None = 1, spec: Any = None, cat: Any = None,
         calibrated: bool = True) -> Predictor:
    """The trained model of ``folder`` as a ``Predictor``, by the type its manifest names (``spec``, ``cat``: the
    features it will be given, when they may differ from the training ones, e.g. another year's date grid)."""
    manifest = read_manifest(folder)
    predictor = model_type(manifest["type"], f"the model in {folder}").load(folder, manifest, engine=engine, threads=threads,
                                                                             spec=spec, cat=cat)
    if manifest.get("unit") == "object":  # trained on object features: one class per object of segments.tif
        from chain.object_model import ObjectPredictor

        return ObjectPredictor(predictor, folder, manifest)
    if calibrated and (folder / "calibration.json").exists():  # temperature scaling (chain.calibration)
        from chain.models.base import CalibratedPredictor

        return CalibratedPredictor(predictor, float(json.loads((folder / "calibration.json").read_text())["temperature"]))
    return predictor
