import numpy as np
import pandas as pd
import pytest

from chain.errors import StepError
from chain.split import make_splits, split_polygons


def _polys(counts):
    codes = np.concatenate([np.full(n, c) for c, n in counts.items()])
    return pd.DataFrame({"poly_id": np.arange(len(codes)) * 3 + 1, "code": codes})


@pytest.mark.parametrize("scheme,fractions", [("30/70", {"train": 0.3, "validation": 0.7}),
                                              ("64/16/20", {"train": 0.64, "validation": 0.16, "test": 0.2})])
def test_parts_are_disjoint_cover_all_and_follow_ratios_per_class(scheme, fractions):
    polys = _polys({1: 50, 2: 20, 3: 101})
    table = make_splits(polys, scheme, runs=3, seed=1, min_polygons=2, small_class="error")
    for _run, t in table.groupby("run"):
        assert sorted(t["poly_id"]) == sorted(polys["poly_id"])  # every polygon exactly once
        for _code, tc in t.groupby("code"):
            n = len(tc)
            for part, frac in fractions.items():
                assert abs((tc["part"] == part).sum() - frac * n) <= 1


def test_deterministic_for_a_seed_and_different_across_runs_and_seeds():
    polys = _polys({1: 40, 2: 40})
    ids, codes = polys["poly_id"].to_numpy(), polys["code"].to_numpy()
    a = split_polygons(ids, codes, "30/70", seed=5, run=0)
    assert (a == split_polygons(ids, codes, "30/70", seed=5, run=0)).all()
    assert (a != split_polygons(ids, codes, "30/70", seed=5, run=1)).any()
    assert (a != split_polygons(ids, codes, "30/70", seed=6, run=0)).any()
    # the input order of the polygons does not matter
    perm = np.random.default_rng(0).permutation(len(ids))
    b = split_polygons(ids[perm], codes[perm], "30/70", seed=5, run=0)
    assert dict(zip(ids[perm], b, strict=False)) == dict(zip(ids, a, strict=False))


def test_small_classes_raise_or_are_dropped():
    polys = _polys({1: 10, 2: 1})
    with pytest.raises(StepError, match="class 2: 1 polygon"):
        make_splits(polys, "30/70", 1, 0, 2, "error")
    table = make_splits(polys, "30/70", 1, 0, 2, "drop")
    assert set(table["code"]) == {1}


def test_three_way_scheme_needs_three_polygons_and_gives_each_part_one():
    polys = _polys({1: 3, 2: 2})
    with pytest.raises(StepError):
        make_splits(polys, "64/16/20", 1, 0, 2, "error")
    t = make_splits(_polys({1: 3}), "64/16/20", 1, 0, 2, "error")
    assert sorted(t["part"]) == ["test", "train", "validation"]
