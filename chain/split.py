"""Polygon-level, per-class splits: 30/70 train/validation repeated with derived seeds, or 64/16/20."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from chain.errors import StepError
from chain.seeds import rng

log = logging.getLogger(__name__)

SCHEMES: dict[str, tuple[tuple[str, float], ...]] = {
    "30/70": (("train", 0.30), ("validation", 0.70)),
    "64/16/20": (("train", 0.64), ("validation", 0.16), ("test", 0.20)),
}


def evaluation_set(scheme: str) -> str:
    """Which part the maps are validated on: held-out test when there is one."""
    return "test" if scheme == "64/16/20" else "validation"


def small_classes(codes: pd.Series, scheme: str, min_polygons: int) -> dict[int, int]:
    """Classes with too few polygons for ``scheme`` (every part needs one): {code: count}."""
    need = max(min_polygons, len(SCHEMES[scheme]))
    counts = codes.value_counts()
    return {int(c): int(n) for c, n in counts.items() if n < need}


def _part_sizes(n: int, fractions: list[float]) -> list[int]:
    # largest-remainder rounding, then make sure every part gets at least one polygon
    raw = np.array(fractions) * n
    sizes = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[i] += 1
    for i in range(len(sizes)):
        while sizes[i] == 0:
            j = int(np.argmax(sizes))
            if sizes[j] <= 1:
                break
            sizes[j] -= 1
            sizes[i] += 1
    return sizes.tolist()


def split_polygons(poly_ids: np.ndarray, codes: np.ndarray, scheme: str, seed: int, run: int) -> np.ndarray:
    """The part ('train', 'validation', 'test') of each polygon, per class, deterministic in (seed, run)."""
    parts = SCHEMES[scheme]
    names = [p for p, _ in parts]
    fractions = [f for _, f in parts]
    out = np.empty(len(poly_ids), dtype=object)
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        idx = idx[np.argsort(poly_ids[idx], kind="stable")]  # independent of input order
        order = rng(seed, "split", run, int(code)).permutation(len(idx))
        sizes = _part_sizes(len(idx), fractions)
        start = 0
        for name, size in zip(names, sizes, strict=False):
            out[idx[order[start:start + size]]] = name
            start += size
    return out


def check_parts(polys: pd.DataFrame, scheme: str) -> None:
    from chain.errors import InputError

    names = [p for p, _ in SCHEMES[scheme]]
    extra = sorted(set(polys["part"].dropna()) - set(names))
    if extra:
        raise InputError(f"split: the reference's own split has part(s) {extra}, which scheme {scheme} does not use (parts: "
                         f"{', '.join(names)}); set split.scheme: 64/16/20 for train/validation/test")


def given_split(polys: pd.DataFrame, scheme: str, small_class: str) -> pd.DataFrame:
    """The user's own split (the reference's ``part`` column): one run; a class without a polygon in a part
    the scheme needs raises or is dropped (logged), like a small class."""
    names = [p for p, _ in SCHEMES[scheme]]
    polys = polys[polys["part"].notna()]
    check_parts(polys, scheme)
    have = polys.groupby("code")["part"].agg(set)
    lacking = {int(c): sorted(set(names) - s) for c, s in have.items() if set(names) - s}
    if lacking:
        detail = ", ".join(f"class {c}: no {'/'.join(m)} polygon" for c, m in sorted(lacking.items()))
        if small_class == "error":
            raise StepError(f"split: {len(lacking)} class(es) lack a part in the reference's own split ({detail}); give them "
                            "polygons in every part, or set split.small_class: drop to leave them out")
        log.warning("split: dropping class(es) missing from a part of the reference's own split (%s); they will not be mapped", detail)
        polys = polys[~polys["code"].isin(list(lacking))]
    if polys.empty:
        raise StepError("split: no class left to train on")
    return pd.DataFrame({"poly_id": polys["poly_id"].to_numpy(), "code": polys["code"].to_numpy(), "run": 0,
                         "part": polys["part"].to_numpy()})


def make_splits(polys: pd.DataFrame, scheme: str, runs: int, seed: int, min_polygons: int, small_class: str) -> pd.DataFrame:
    """A table poly_id, code, run, part for every run; small classes raise or are dropped (logged). A reference
    with its own ``part`` column gives the split itself (one run)."""
    if "part" in polys.columns:
        return given_split(polys, scheme, small_class)
    small = small_classes(polys["code"], scheme, min_polygons)
    if small:
        detail = ", ".join(f"class {c}: {n} polygon(s)" for c, n in sorted(small.items()))
        need = max(min_polygons, len(SCHEMES[scheme]))
        if small_class == "error":
            raise StepError(
                f"split: {len(small)} class(es) have fewer than {need} polygons, too few for scheme {scheme} ({detail}); "
                "add reference polygons, merge the classes, or set split.small_class: drop to leave them out"
            )
        log.warning("split: dropping class(es) with fewer than %d polygons (%s); they will not be mapped", need, detail)
        polys = polys[~polys["code"].isin(list(small))]
    if polys.empty:
        raise StepError("split: no class left to train on")
    frames = []
    ids = polys["poly_id"].to_numpy()
    codes = polys["code"].to_numpy()
    for run in range(runs):
        frames.append(pd.DataFrame({"poly_id": ids, "code": codes, "run": run,
                                    "part": split_polygons(ids, codes, scheme, seed, run)}))
    return pd.concat(frames, ignore_index=True)
