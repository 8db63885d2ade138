"""Training one run's model: its pixels (and patches), the manifest every model records, the type's fit."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.errors import StepError
from chain.sampling import Samples, select_run
from chain.seeds import derive_seed

if TYPE_CHECKING:
    import pandas as pd

    from chain.catalog import Catalog
    from chain.deep.inputs import PatchInput
    from chain.spec import FeatureSpec

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """One run's training pixels (and validation pixels with 64/16/20); patches extracted on demand, cached."""

    train: Samples
    validation: Samples | None
    folder: Path
    cat: Catalog
    spec: FeatureSpec
    tile_size: int
    _patches: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def patches(self, part: str, inputs: list[PatchInput]) -> dict[str, np.ndarray]:
        """Patches of ``part``'s pixels (float16 .npz in the model folder): extracted once, reused on resume."""
        from chain.atomic import atomic_path
        from chain.deep.inputs import extract

        samples = self.train if part == "train" else self.validation
        assert samples is not None
        path = self.folder / f"patches_{part}.npz"
        if part not in self._patches and path.exists():
            try:
                with np.load(path) as z:
                    if np.array_equal(z["row"], samples.row) and np.array_equal(z["col"], samples.col):
                        self._patches[part] = {i.name: z[i.name] for i in inputs}
            except (OSError, ValueError, KeyError):  # a damaged cache is extracted again
                pass
        if part not in self._patches:
            t0 = time.time()
            patches = extract(self.cat, self.spec, inputs, samples.row, samples.col, self.tile_size, desc=f"train: {part} patches")
            log.info("train: %d %s patches extracted in %.1f s (%s)", len(samples.row), part, time.time() - t0,
                     ", ".join(f"{k} {v.shape[1:]}" for k, v in patches.items()))
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, row=samples.row, col=samples.col, **patches)  # type: ignore[arg-type]
            self._patches[part] = patches
        return self._patches[part]


def sample_cap(model: Any, max_pixels_per_class: int | None) -> int | None:
    caps = [c for c in (max_pixels_per_class, getattr(model, "max_samples_per_class", None)) if c]
    return min(caps) if caps else None


def fit_run(model: Any, params: dict[str, Any], run: int, folder: Path, signature: str, *, samples: Samples,
            split: pd.DataFrame, cat: Catalog, spec: FeatureSpec, seed: int, scheme: str, max_pixels_per_class: int | None,
            tile_size: int, extra: dict[str, Any] | None = None) -> None:
    """Train ``model`` (a model section) on run ``run``'s training pixels into ``folder`` (skipped when already there).
    ``extra``: manifest entries over the usual ones (object models: their feature names and where the objects are)."""
    from chain.models import model_type

    kind = model_type(model.type)
    if (folder / "manifest.json").exists() and all((folder / f).exists() for f in kind.files):
        log.info("train: run %d (%s) already trained, resuming", run, model.type)
        return
    (folder / "manifest.json").unlink(missing_ok=True)  # a file of the model is missing (damaged): train it again
    cap = sample_cap(model, max_pixels_per_class)
    train = select_run(samples, split, run, "train", cap, seed)
    if len(train.code) == 0:
        raise StepError(f"train: run {run} has no training pixel; are the training polygons smaller than a pixel?")
    validation = select_run(samples, split, run, "validation", cap, seed) if scheme == "64/16/20" else None
    run_seed = derive_seed(seed, "train", run)
    codes, counts = np.unique(train.code, return_counts=True)
    inputs = kind.inputs(model, spec, cat)
    manifest = {"type": model.type, "run": run, "seed": run_seed, "feature_names": spec.names,
                **({"inputs": [i.to_dict() for i in inputs]} if inputs else {}),
                "classes": [int(c) for c in codes], "train_pixels": {str(c): int(n) for c, n in zip(codes, counts, strict=True)},
                "params": params, "config_hash": signature, **(extra or {})}
    data = RunData(train, validation, folder, cat, spec, tile_size)
    folder.mkdir(parents=True, exist_ok=True)
    log.info("train: run %d: fitting %s on %d pixels of %d classes, %d features (no progress is reported until it ends "
             "for a Random Forest)" if kind.kind == "pixel" else "train: run %d: fitting %s on %d pixels of %d classes, %d features",
             run, model.type, len(train.code), len(codes), len(manifest["feature_names"]))
    report = kind.fit(model, data, run_seed, manifest)
    log.info("train: run %d: %s on %s (%s) in %.1f s", run, model.type, report.detail,
             ", ".join(f"{c}: {n}" for c, n in zip(codes, counts, strict=True)), report.seconds)


def check_model(ctx: Any, model: Any) -> None:
    """The inputs ``model`` (a model section) needs are configured and its sizes fit (before any heavy step)."""
    from chain import products
    from chain.features import feature_spec
    from chain.models import model_type

    cat, _ = products.preflight(ctx)
    model_type(model.type).check(model, feature_spec(ctx.cfg, cat), cat)


def train_in_workdir(ctx: Any, model: Any, params: dict[str, Any], run: int, folder: Path, signature: str,
                     unit: str = "pixel") -> None:
    """``fit_run`` on what the upstream steps left in the work folder (samples, split, catalogue, features); ``unit``
    object: on the run's labelled objects (``chain.objects.run_samples``) instead of the pixels."""
    from chain import products

    cfg = ctx.cfg
    samples, extra = products.samples(ctx), None
    if unit == "object":
        from chain.object_model import manifest_entries
        from chain.objects import load, run_samples

        table = ctx.memo("objects", lambda: load(ctx.paths.objects))
        samples, mixed, _ = run_samples(table, products.splits(ctx), run)
        log.info("train: run %d: %d labelled objects; %d object(s) touching reference polygons of different parts of the "
                 "split are left out of training and evaluation", run, len(samples.code), mixed)
        extra = manifest_entries(folder, ctx.paths.objects, ctx.paths.segments, table.names) | {"objects_mixed": mixed}
    fit_run(model, params, run, folder, signature, samples=samples, split=products.splits(ctx),
            cat=products.catalog(ctx), spec=products.spec(ctx), seed=cfg.seed, scheme=cfg.split.scheme,
            max_pixels_per_class=cfg.sample.max_pixels_per_class, tile_size=cfg.grid.tile_size_px, extra=extra)
