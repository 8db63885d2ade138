"""``model.type: rf_patch``: a Random Forest on flattened patches, the single-branch baseline of the patch networks.

Each pixel's vector is the chain's features over a ``patch_px`` x ``patch_px`` window of the grid,
plus optionally a SPOT PAN patch (``pan_patch``) and a pansharpened patch (``pxs_patch``) on the
images' own pixels, raveled and concatenated.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from chain.deep.inputs import PatchInput, check_native
from chain.errors import ConfigError
from chain.models.base import FitReport, ModelType, Predictor, TrainingData
from chain.models.rf import RFModel, build_rf, save_estimator
from chain.schema import ModelSection


class RFPatchModel(RFModel):
    type: Literal["rf_patch"]  # type: ignore[assignment]
    patch_px: int = Field(3, ge=1)  # grid pixels a side (odd)
    pan_patch: int = Field(0, ge=0)  # SPOT PAN pixels a side, flattened too (0: none)
    pxs_patch: int = Field(0, ge=0)  # pansharpened SPOT (4 bands at PAN pixels) a side, flattened too (0: none)

    @model_validator(mode="after")
    def _odd(self) -> RFPatchModel:
        if self.patch_px % 2 == 0:
            raise ValueError(f"patch_px must be odd (centred on the pixel), got {self.patch_px}")
        return self


class RFPatch(ModelType):
    name: ClassVar[str] = "rf_patch"
    kind: ClassVar[str] = "patch"
    config: ClassVar[type[ModelSection]] = RFPatchModel
    files: ClassVar[tuple[str, ...]] = ("model.joblib",)

    def inputs(self, cfg: Any, spec: Any, cat: Any) -> list[PatchInput]:
        inputs = [PatchInput("features", "grid", cfg.patch_px, tuple(range(len(spec.names))))]
        if (cfg.pan_patch or cfg.pxs_patch) and cat.source("spot") is None:
            raise ConfigError("model.type 'rf_patch' with pan_patch or pxs_patch needs a SPOT PAN + MS pair: add inputs.spot")
        return (inputs + ([PatchInput("pan", "pan", cfg.pan_patch, source="spot")] if cfg.pan_patch else [])
                + ([PatchInput("pxs", "pxs", cfg.pxs_patch, source="spot")] if cfg.pxs_patch else []))

    def check(self, cfg: Any, spec: Any, cat: Any) -> None:
        check_native(cat, self.inputs(cfg, spec, cat), "model.type 'rf_patch'")

    def fit(self, cfg: Any, data: TrainingData, seed: int, manifest: dict[str, Any]) -> FitReport:
        from chain.deep.infer import flatten

        xtr = flatten(data.patches("train", [PatchInput.from_dict(d) for d in manifest["inputs"]]))
        rf = build_rf(cfg, seed)
        t0 = time.time()
        rf.fit(xtr, data.train.code)
        seconds = time.time() - t0
        save_estimator(data.folder, rf, manifest, compile_forest=False)
        return FitReport(seconds, f"{len(data.train.code)} patches ({rf.n_features_in_} features)")

    def load(self, folder: Path, manifest: dict[str, Any], engine: str = "compiled", threads: int | None = 1,
             spec: Any = None, cat: Any = None) -> Predictor:
        import joblib

        from chain import forest
        from chain.deep.infer import PatchPredictor, flatten

        # one tile per dask thread: the compiled forest walks it serially (see chain.forest)
        rf = forest.evaluator(joblib.load(folder / "model.joblib"), 1 if threads else None, compiled=engine == "compiled")
        inputs = [PatchInput.from_dict(d) for d in manifest["inputs"]]
        return PatchPredictor(inputs, rf.classes_, int(manifest["params"].get("inference_batch", 4096)),
                              lambda patches: rf.predict_proba(flatten(patches)))
