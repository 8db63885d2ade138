"""Accuracy metrics as pure numpy functions: confusion matrix, OA, kappa, per-class P/R/F1, CIs."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import stdtrit


def confusion(ref: np.ndarray, pred: np.ndarray, labels: list[int]) -> np.ndarray:
    """Counts with rows = reference, columns = prediction, in ``labels`` order (others ignored)."""
    index = {c: i for i, c in enumerate(labels)}
    lut = np.full(max(max(labels), int(ref.max(initial=0)), int(pred.max(initial=0))) + 1, -1, dtype=np.int64)
    for c, i in index.items():
        lut[c] = i
    r, p = lut[ref], lut[pred]
    ok = (r >= 0) & (p >= 0)
    n = len(labels)
    return np.bincount(r[ok] * n + p[ok], minlength=n * n).reshape(n, n)


def scores(cm: np.ndarray) -> dict[str, Any]:
    cm = cm.astype(np.float64)
    total = cm.sum()
    diag = np.diag(cm)
    oa = diag.sum() / total if total else float("nan")
    pe = (cm.sum(0) * cm.sum(1)).sum() / total**2 if total else float("nan")
    kappa = (oa - pe) / (1 - pe) if total and pe != 1 else float("nan")
    ref, pred = cm.sum(1), cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a class without reference pixels has no recall or F1 (NaN: "n/a", left out of means), not 0;
        # a class present but never predicted has precision 0, as scikit-learn's zero_division=0
        precision = np.where(pred > 0, diag / pred, np.where(ref > 0, 0.0, np.nan))
        recall = np.where(ref > 0, diag / ref, np.nan)
        f1 = np.where(ref > 0, np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0), np.nan)
    return {"oa": float(oa), "kappa": float(kappa), "precision": precision.tolist(), "recall": recall.tolist(),
            "f1": f1.tolist(), "macro_f1": float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan"), "n": int(total)}


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (half-width NaN for one value); NaN values
    (undefined in a run, e.g. a class without validation pixels) are left out."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if len(a) < 2:
        return float(a.mean()) if len(a) else float("nan"), float("nan")
    # the Student-t quantile as scipy.stats.t.ppf computes it (its _ppf is this function), without importing
    # scipy.stats (0.6-0.9 s, for this one number)
    half = stdtrit(len(a) - 1, 0.5 + level / 2) * a.std(ddof=1) / np.sqrt(len(a))
    return float(a.mean()), float(half)


def area_estimates(cm: np.ndarray, map_pixels: np.ndarray, pixel_area: float, z: float = 1.96) -> dict[str, np.ndarray]:
    """Olofsson et al. (2014) stratified area estimates with confidence intervals.

    ``cm`` has rows = reference, columns = map (as everywhere in chain); the map classes are the
    strata, ``map_pixels`` their pixel counts in the map. Returns per reference class the mapped
    area, the error-adjusted area and the half-width of its ``z`` interval (same unit as pixel_area).
    Assumes the reference pixels are a probability sample of each map class; with polygon-based
    reference data they are not, so read the intervals as indicative.
    """
    n = cm.T.astype(np.float64)  # rows = map stratum i, columns = reference j
    n_i = n.sum(axis=1)
    total = float(map_pixels.sum())
    W = map_pixels / total if total else np.zeros_like(map_pixels, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n_i[:, None] > 0, n / n_i[:, None], 0.0)  # n_ij / n_i.
        p = W[:, None] * share
        var = np.where(n_i[:, None] > 1, W[:, None] ** 2 * share * (1 - share) / (n_i[:, None] - 1), 0.0)
    area_total = total * pixel_area
    return {"mapped": map_pixels * pixel_area, "adjusted": p.sum(axis=0) * area_total,
            "ci": z * np.sqrt(var.sum(axis=0)) * area_total}
