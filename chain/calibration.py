"""Calibrated confidence: temperature scaling of any model's probabilities, and how to see whether it worked.

A model's probabilities p become softmax(log p / T) (for a network, log p are its logits up to a constant,
so this is Guo et al.'s temperature scaling; for a Random Forest, the same one-parameter map). T is
fitted by minimising the negative log-likelihood of held-out pixels (the validation polygons with
64/16/20, a held-out share of each run's training polygons with 30/70). T > 1 softens over-confident
probabilities; the classes (argmax) never change. The expected calibration error (ECE) is the mean gap
between confidence and accuracy over equal-width confidence bins, weighted by the bins' pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-6


def apply(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row (T = 1: p itself)."""
    if temperature == 1.0:
        return proba
    z = np.log(np.clip(proba, EPS, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(proba.dtype, copy=False)


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The T minimising the mean negative log-likelihood of the true classes (``y``: column index of each row).

    1 when every pixel is classified right: the likelihood then only grows as T shrinks, so T is not
    identifiable (the minimiser would return its lower bound and make every map pixel ~100 % confident).
    """
    from scipy.optimize import minimize_scalar

    if not identifiable(proba, y):
        return 1.0
    logp = np.log(np.clip(proba, EPS, 1.0))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def identifiable(proba: np.ndarray, y: np.ndarray) -> bool:
    """Some held-out pixel is misclassified: without one, no temperature is better supported than a lower one."""
    return bool((proba.argmax(axis=1) != y).any())


def reliability(proba: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """ECE and the reliability diagram's bins: per confidence bin, the pixels, mean confidence and accuracy."""
    conf = proba.max(axis=1)
    right = proba.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=bins) / n
        acc = np.bincount(which, weights=right, minlength=bins) / n
    gaps = np.where(n > 0, np.abs(acc - mean_conf), 0.0)
    return {"ece": float((gaps * n).sum() / max(len(y), 1)), "n": n.tolist(), "confidence": np.nan_to_num(mean_conf).tolist(),
            "accuracy": np.nan_to_num(acc).tolist(), "edges": edges.tolist(), "pixels": int(len(y))}
