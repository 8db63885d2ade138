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


def _own_split(ref_path):
    """Alternate the polygons of each class between train and validation (as a user's own split would)."""
    import geopandas as gpd

    g = gpd.read_file(ref_path)
    g["set"] = ["Train" if i % 2 == 0 else "validation" for i in g.groupby("code").cumcount()]
    return g


def test_the_references_own_split_field_or_validation_file_is_used(make_config):
    import json

    import geopandas as gpd

    from chain import config
    from chain.errors import ConfigError, InputError
    from chain.runner import run_pipeline

    path = make_config("own", split={"small_class": "drop"})
    scene = path.parent / "scene"
    g = _own_split(scene / "reference.gpkg")
    g.to_file(scene / "with_set.gpkg", driver="GPKG")
    g[g["set"] == "Train"].drop(columns="set").to_file(scene / "train.gpkg", driver="GPKG")
    g[g["set"] != "Train"].drop(columns="set").to_file(scene / "val.gpkg", driver="GPKG")

    by_field = config.load(path, ["inputs.reference.path=scene/with_set.gpkg", "inputs.reference.split_field=set",
                                  "workdir=work_field"])
    run_pipeline(by_field, to_step="validate")
    table = pd.read_csv(by_field.workdir / "split" / "split.csv")
    ref = gpd.read_file(by_field.workdir / "ingest" / "reference.gpkg")
    expected = dict(zip(ref["poly_id"], ref["part"], strict=True))
    assert set(table["run"]) == {0} and len(table) > 10
    assert all(expected[i] == p for i, p in zip(table["poly_id"], table["part"], strict=True))
    assert set(table["part"]) == {"train", "validation"}  # "Train" read as train

    by_file = config.load(path, ["inputs.reference.path=scene/train.gpkg", "inputs.reference.validation_path=scene/val.gpkg",
                                 "workdir=work_file"])
    run_pipeline(by_file, to_step="validate")
    m_field = json.loads((by_field.workdir / "final" / "metrics.json").read_text())
    m_file = json.loads((by_file.workdir / "final" / "metrics.json").read_text())
    # the same polygons in the same parts: the same validation pixels
    assert m_field["runs"][0]["n_pixels"] == m_file["runs"][0]["n_pixels"] > 0

    with pytest.raises(ConfigError, match="set split.runs: 1"):
        run_pipeline(config.load(path, ["inputs.reference.path=scene/with_set.gpkg", "inputs.reference.split_field=set",
                                        "split.runs=3", "workdir=work_bad"]))
    g.loc[0, "set"] = "holdout"
    g.to_file(scene / "bad_set.gpkg", driver="GPKG")
    with pytest.raises(InputError, match="'holdout': 1"):
        run_pipeline(config.load(path, ["inputs.reference.path=scene/bad_set.gpkg", "inputs.reference.split_field=set",
                                        "workdir=work_bad2"]))
