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
    from collections.abc import Callable

    import geopandas as gpd
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
    # the run's polygons of each part (segmentation models label whole polygons): the reference's rows, when given
    reference: Callable[[], gpd.GeoDataFrame] | None = None
    poly_ids: dict[str, np.ndarray] = field(default_factory=dict)
    start_from: Any = None  # an update: last year's network to fine-tune (chain.update.transfer.StartFrom)
    _patches: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def polygons(self, part: str) -> gpd.GeoDataFrame:
        """The reference polygons of ``part`` ("train" or "validation") of this run (held-out calibration ones excluded)."""
        if self.reference is None or part not in self.poly_ids:
            raise StepError(f"train: the run's {part} polygons are not available to this model (no reference given)")
        ref = self.reference()
        return ref[ref["poly_id"].isin(self.poly_ids[part])]

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
            tile_size: int, extra: dict[str, Any] | None = None, calibration: Any = None,
            reference: Callable[[], gpd.GeoDataFrame] | None = None, start_from: Any = None, train_share: float = 1.0) -> None:
    """Train ``model`` (a model section) on run ``run``'s training pixels into ``folder`` (skipped when already there).
    ``extra``: manifest entries over the usual ones (object models: their feature names and where the objects are).
    ``calibration`` (the config section, when on): the temperature of its probabilities fitted on the validation
    pixels (64/16/20) or on a held-out share of the training polygons (30/70) -> ``calibration.json``.
    ``start_from``: last year's network to fine-tune (an update); ``train_share``: the share of each class's training
    polygons used (at least one; seeded), e.g. to measure what fine-tuning brings with few samples."""
    from chain.models import model_type

    kind = model_type(model.type)
    if calibration is None:
        (folder / CALIBRATION).unlink(missing_ok=True)  # from an earlier config: never applied to this one's model
    cap = sample_cap(model, max_pixels_per_class)
    held = holdout_polygons(split, run, calibration.holdout, seed) if calibration is not None and scheme == "30/70" else None
    if (folder / "manifest.json").exists() and all((folder / f).exists() for f in kind.files):
        log.info("train: run %d (%s) already trained, resuming", run, model.type)
        if calibration is not None and not (folder / CALIBRATION).exists():
            calibrate(folder, run, samples, split, held, cap, seed, scheme, cat, spec, tile_size, calibration)
        return
    (folder / "manifest.json").unlink(missing_ok=True)  # a file of the model is missing (damaged): train it again
    (folder / CALIBRATION).unlink(missing_ok=True)  # the old model's
    train = select_run(samples, split, run, "train", cap, seed)
    if held is not None:
        train = train.take(np.flatnonzero(~np.isin(train.poly_id, held)))
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
    ids = {part: split.loc[(split["run"] == run) & (split["part"] == part), "poly_id"].to_numpy()
           for part in ("train", "validation")}
    if held is not None:
        ids["train"] = ids["train"][~np.isin(ids["train"], held)]
    if train_share < 1.0:
        ids["train"] = share_of_polygons(split, ids["train"], train_share, seed, run)
        train = train.take(np.flatnonzero(np.isin(train.poly_id, ids["train"])))
        log.info("train: run %d: %d training polygons (%.0f %% of each class's), %d pixels", run, len(ids["train"]),
                 100 * train_share, len(train.code))
        codes, counts = np.unique(train.code, return_counts=True)
        manifest["train_pixels"] = {str(c): int(n) for c, n in zip(codes, counts, strict=True)}
    if start_from is not None:  # before any patch is read: last year's class head must be this year's
        start_from.check_classes(manifest["classes"])
    data = RunData(train, validation, folder, cat, spec, tile_size, reference, ids, start_from=start_from)
    folder.mkdir(parents=True, exist_ok=True)
    log.info("train: run %d: fitting %s on %d pixels of %d classes, %d features (no progress is reported until it ends "
             "for a Random Forest)" if kind.kind == "pixel" else "train: run %d: fitting %s on %d pixels of %d classes, %d features",
             run, model.type, len(train.code), len(codes), len(manifest["feature_names"]))
    report = kind.fit(model, data, run_seed, manifest)
    from chain.atomic import write_json

    write_json(folder / "fit.json", {"seconds": report.seconds, "detail": report.detail})  # the report's training time
    log.info("train: run %d: %s on %s (%s) in %.1f s", run, model.type, report.detail,
             ", ".join(f"{c}: {n}" for c, n in zip(codes, counts, strict=True)), report.seconds)
    if calibration is not None:
        calibrate(folder, run, samples, split, held, cap, seed, scheme, cat, spec, tile_size, calibration)


CALIBRATION = "calibration.json"


def _draw_per_class(rows: pd.DataFrame, share: float, seed: int, key: str, run: int, never_all: bool) -> list[np.ndarray]:
    """``share`` of each class's polygons of ``rows`` (at least one; with ``never_all``, never every one), drawn with a
    seed derived from ``key``, the run and the class."""
    from chain.seeds import rng

    out = []
    for code, group in rows.groupby("code"):
        ids = np.sort(group["poly_id"].to_numpy())
        k = max(1, int(round(share * len(ids))))
        k = min(len(ids) - 1, k) if never_all else k
        if k > 0:
            out.append(rng(seed, key, run, int(code)).choice(ids, k, replace=False))
    return out


def share_of_polygons(split: pd.DataFrame, ids: np.ndarray, share: float, seed: int, run: int) -> np.ndarray:
    """``share`` of each class's polygons among ``ids`` (at least one per class), drawn with a derived seed."""
    rows = split[(split["run"] == run) & split["poly_id"].isin(ids)].drop_duplicates("poly_id")
    out = _draw_per_class(rows, share, seed, "train-share", run, never_all=False)
    return np.sort(np.concatenate(out)) if out else ids[:0]


def holdout_polygons(split: pd.DataFrame, run: int, share: float, seed: int) -> np.ndarray:
    """``share`` of each class's training polygons of ``run`` (at least one, never all), drawn with a derived seed:
    held out of the fit to calibrate the model's probabilities (30/70)."""
    rows = split[(split["run"] == run) & (split["part"] == "train")]
    out = _draw_per_class(rows, share, seed, "calibration", run, never_all=True)
    return np.concatenate(out) if out else np.empty(0, np.int64)


def calibrate(folder: Path, run: int, samples: Samples, split: pd.DataFrame, held: np.ndarray | None, cap: int | None, seed: int,
              scheme: str, cat: Catalog, spec: FeatureSpec, tile_size: int, section: Any) -> None:
    """Fit the temperature of the model in ``folder`` on its calibration pixels -> ``calibration.json``."""
    from chain import calibration, models
    from chain.atomic import write_json
    from chain.evaluation import proba_of_samples

    if held is not None:
        part = select_run(samples, split, run, "train", cap, seed)
        part = part.take(np.flatnonzero(np.isin(part.poly_id, held)))
        where = f"{len(held)} held-out training polygons"
    else:
        part = select_run(samples, split, run, "validation", cap, seed)
        where = "the validation polygons"
    predictor = models.load(folder, "compiled", None, spec=spec, cat=cat, calibrated=False)
    classes = np.asarray(predictor.classes_)
    keep = np.isin(part.code, classes)
    if keep.sum() < 10:
        log.warning("train: run %d: %d calibration pixel(s) in %s: probabilities left uncalibrated", run, int(keep.sum()), where)
        write_json(folder / CALIBRATION, {"temperature": 1.0, "fitted_on": where, "pixels": int(keep.sum()), "before": None, "after": None})
        return
    part = part.take(np.flatnonzero(keep))
    proba = proba_of_samples(predictor, part, cat, spec, tile_size)
    y = np.searchsorted(classes, part.code)
    t = calibration.fit_temperature(proba, y)  # 1 when every pixel is right (not identifiable): said in the log
    if t == 1.0 and not calibration.identifiable(proba, y):
        log.info("train: run %d: all %d calibration pixels of %s are classified right: the temperature cannot be fitted "
                 "(it would make every pixel ~100 %% confident) and stays 1", run, len(y), where)
    before, after = calibration.reliability(proba, y, section.bins), calibration.reliability(calibration.apply(proba, t), y, section.bins)
    write_json(folder / CALIBRATION, {"temperature": t, "fitted_on": where, "pixels": int(len(y)), "before": before, "after": after})
    log.info("train: run %d: temperature %.2f fitted on %d pixels of %s (ECE %.3f -> %.3f)", run, t, len(y), where,
             before["ece"], after["ece"])


def calibration_on(cfg: Any, unit: str = "pixel") -> bool:
    """``calibration.enabled``, auto = with the 64/16/20 split; object models are not calibrated (yet)."""
    on = cfg.calibration.enabled if cfg.calibration.enabled is not None else cfg.split.scheme == "64/16/20"
    return bool(on) and unit == "pixel"


def check_model(ctx: Any, model: Any) -> None:
    """The inputs ``model`` (a model section) needs are configured and its sizes fit (before any heavy step)."""
    from chain import products
    from chain.features import feature_spec
    from chain.models import model_type

    cat, _ = products.preflight(ctx)
    spec = feature_spec(ctx.cfg, cat)
    model_type(model.type).check(model, spec, cat)
    up = ctx.cfg.update
    if up is not None and up.prune is not None and model is ctx.cfg.model:
        from chain.update.transfer import check_prunable

        check_prunable(model_type(model.type), model, spec, cat, up.prune.ratio)


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
            max_pixels_per_class=cfg.sample.max_pixels_per_class, tile_size=cfg.grid.tile_size_px, extra=extra,
            calibration=cfg.calibration if calibration_on(cfg, unit) else None, reference=lambda: products.reference(ctx),
            start_from=start_from(ctx, model, run, folder), train_share=cfg.update.train_share if cfg.update else 1.0)


def start_from(ctx: Any, model: Any, run: int, folder: Path) -> Any:
    """An update that fine-tunes (``update.finetune``): last year's model of ``run`` for this year's model of ``run``
    when it is a network (chain.update.transfer.StartFrom); None otherwise: Random Forests, the compared models and
    the pixel models of an object-based run are trained from scratch (last year's model is not theirs)."""
    from chain.models import model_type

    up = ctx.cfg.update
    if up is None or not up.finetune or folder != ctx.paths.model(run) or not model_type(model.type).transferable:
        return None
    from chain.update.previous import previous_run
    from chain.update.transfer import StartFrom

    prev = previous_run(ctx)
    return StartFrom.of(prev.model(run), up.lr_factor, up.prune)
