"""Annual updates (chain update): the two-year demo scene, the carry-over's scores and outputs, the checks of last
year's run, fine-tuning and pruning (save / load / predict of a pruned network)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
import yaml
from click.testing import CliRunner

from chain.cli import main
from chain.demo import generate

YEAR = {"size_px": 64, "n_dates": 8, "n_fields": 30, "seed": 5}


@pytest.fixture(scope="module")
def two_years(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Year 1 and year 2 (20 % of the fields changed) of one tiny scene, year 1 run to the end with an RF."""
    root = tmp_path_factory.mktemp("update")
    generate(root / "y1", **YEAR, year=2021)
    generate(root / "y2", **YEAR, year=2022, next_year={"changed_share": 0.2, "phenology_shift_days": 10})
    base = {"seed": 7, "grid": {"tile_size_px": 32}, "gapfill": {"interval_days": 30},
            "split": {"scheme": "30/70", "runs": 1, "small_class": "drop"}, "model": {"n_estimators": 20, "n_jobs": 1},
            "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "memory_limit": "1GiB"}}
    for year in ("y1", "y2"):
        cfg = {"workdir": f"run_{year}", **base,
               "inputs": {"s2": {"path": f"{year}/s2"}, "reference": {"path": f"{year}/reference.gpkg", "name_field": "name"}}}
        (root / f"{year}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = CliRunner().invoke(main, ["run", str(root / "y1.yaml"), "-q"])
    assert res.exit_code == 0, res.output
    return root


def _update(root: Path, *args: str, config: str = "y2.yaml") -> Any:
    return CliRunner().invoke(main, ["update", str(root / config), "--previous", str(root / "run_y1"), "-q",
                                     "--set", "update.siamese.epochs=15", "--set", "update.max_flagged_share=0.6", *args])


def test_next_year_scene(two_years: Path) -> None:
    """The second year keeps the landscape: last year's polygons as reference.gpkg, this year's truth beside them, the
    changed fields listed, and the truth raster differs exactly on them."""
    y1, y2 = two_years / "y1", two_years / "y2"
    ref1, ref2 = gpd.read_file(y1 / "reference.gpkg"), gpd.read_file(y2 / "reference.gpkg")
    assert ref1["code"].tolist() == ref2["code"].tolist() and ref1.geometry.equals(ref2.geometry)
    changes = pd.read_csv(y2 / "changes.csv")
    assert len(changes) >= 3 and changes["field_id"].is_unique
    assert (changes["code_before"] != changes["code_after"]).all()
    truth2 = gpd.read_file(y2 / "reference_truth.gpkg").set_index("field_id")["code"]
    now = ref2.set_index("field_id")["code"]
    differ = set(now.index[now != truth2.reindex(now.index)])
    assert differ == set(changes["field_id"]) & set(now.index)
    with rasterio.open(y1 / "truth.tif") as a, rasterio.open(y2 / "truth.tif") as b:
        assert a.transform == b.transform
        assert 0 < (a.read(1) != b.read(1)).mean() < 0.6


def test_update_carries_over_and_reports(two_years: Path) -> None:
    res = _update(two_years)
    assert res.exit_code == 0, res.output
    work = two_years / "run_y2"
    scores = pd.read_csv(work / "carryover" / "scores.csv")
    summary = json.loads((work / "carryover" / "summary.json").read_text())
    carried = gpd.read_file(work / "carryover" / "reference.gpkg")
    flagged = gpd.read_file(work / "final" / "reference_flagged.gpkg")
    # every polygon is carried or flagged, by its score against the threshold
    assert len(carried) + len(flagged) == len(scores) == summary["polygons"]
    assert (flagged["carry_score"] < summary["threshold"]).all()
    assert (carried["carry_score"].dropna() >= summary["threshold"]).all()
    # the changed fields score lower than the unchanged ones (the detector sees the change)
    changed = set(pd.read_csv(two_years / "y2" / "changes.csv")["field_id"])
    is_changed = scores["field_id"].isin(changed)
    assert is_changed.any() and (~is_changed).any()
    assert scores.loc[is_changed, "score"].median() < scores.loc[~is_changed, "score"].median()
    assert 0 <= summary["map_at_5"] <= 1 and summary["map_at_5_chance"] < 1
    # this year's run learns only from the carried polygons
    split = pd.read_csv(work / "split" / "split.csv")
    assert set(split["poly_id"]) <= set(carried["poly_id"])
    # last year's run is untouched, this year's map is compared with it
    assert (work / "final" / "update.html").exists() and (work / "final" / "change" / "change.tif").exists()
    assert "href='update.html'" in (work / "final" / "report.html").read_text()
    change = json.loads((work / "final" / "change" / "summary.json").read_text())
    assert change["pixels_compared"] > 0 and change["models"][0]["origin"] == "trained from scratch"  # an RF is retrained
    # last year's run brought up to date again (as `update.previous_config` does) leaves this year's up to date
    assert CliRunner().invoke(main, ["run", str(two_years / "y1.yaml"), "-q"]).exit_code == 0
    again = _update(two_years)
    assert again.exit_code == 0 and "carryover       skipped" in again.output and "train           skipped" in again.output


def test_update_stops_when_too_much_is_flagged(two_years: Path) -> None:
    res = _update(two_years, "--set", "update.threshold=0.999", "--set", "workdir=run_flag")
    assert res.exit_code != 0
    assert "more than update.max_flagged_share" in res.output and "Traceback" not in res.output
    assert (two_years / "run_flag" / "final" / "reference_flagged.gpkg").exists()  # written for the review
    assert not (two_years / "run_flag" / "split" / "split.csv").exists()


@pytest.mark.parametrize("change,expected", [
    ({"grid": {"tile_size_px": 32, "resolution_m": 20}}, "the grid differs"),
    ({"model": {"type": "tempcnn", "epochs": 1}}, "fine-tuning needs the same type"),
])
def test_update_refuses_a_previous_run_that_does_not_fit(two_years: Path, change: dict[str, Any], expected: str) -> None:
    cfg = yaml.safe_load((two_years / "y2.yaml").read_text())
    cfg.update(change)
    cfg["workdir"] = "run_bad"
    (two_years / "bad.yaml").write_text(yaml.safe_dump(cfg))
    res = _update(two_years, config="bad.yaml")
    assert res.exit_code != 0 and expected in res.output and "Traceback" not in res.output
    assert not (two_years / "run_bad" / "carryover").exists()  # refused before any step ran


def test_update_refuses_classes_that_differ(two_years: Path) -> None:
    ref = gpd.read_file(two_years / "y2" / "reference.gpkg")
    ref = ref[ref["code"] != ref["code"].iloc[0]]
    (two_years / "y2b").mkdir(exist_ok=True)
    shutil.copytree(two_years / "y2" / "s2", two_years / "y2b" / "s2", dirs_exist_ok=True)
    ref.to_file(two_years / "y2b" / "reference.gpkg")
    cfg = yaml.safe_load((two_years / "y2.yaml").read_text())
    cfg["inputs"]["s2"]["path"], cfg["inputs"]["reference"]["path"], cfg["workdir"] = "y2b/s2", "y2b/reference.gpkg", "run_b"
    (two_years / "b.yaml").write_text(yaml.safe_dump(cfg))
    res = _update(two_years, config="b.yaml")
    assert res.exit_code != 0 and "the classes differ: only last year" in res.output


def test_update_refuses_an_unfinished_previous_run(two_years: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["update", str(two_years / "y2.yaml"), "--previous", str(tmp_path), "-q"])
    assert res.exit_code != 0 and "is not the work folder of a finished chain run" in res.output
    unfinished = tmp_path / "copy"
    shutil.copytree(two_years / "run_y1", unfinished)
    rec = unfinished / ".chain" / "ledger" / "validate.json"
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "status": "started"}))
    res = CliRunner().invoke(main, ["update", str(two_years / "y2.yaml"), "--previous", str(unfinished), "-q"])
    assert res.exit_code != 0 and "is not a finished run: its step 'validate' did not finish" in res.output


# ---- the carry-over's pieces -------------------------------------------------------------------

def test_retrieval_map_at_5() -> None:
    from chain.update.siamese import retrieval

    rng = np.random.default_rng(0)
    d = rng.normal(size=(6, 8))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    poly, held = np.arange(6), np.arange(6)
    assert retrieval(d, d, poly, held) == (1.0, pytest.approx(sum(1 / r for r in range(1, 6)) / 6))
    # swapping two places' descriptors this year puts their own place at rank >= 2
    swapped = d.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    m5, _ = retrieval(d, swapped, poly, held)
    assert m5 < 1.0


def test_auto_threshold_flags_outliers_only() -> None:
    from chain.update.siamese import auto_threshold

    rng = np.random.default_rng(1)
    unchanged, changed = rng.normal(0.9, 0.02, 85), rng.normal(0.2, 0.1, 15)
    t = auto_threshold(np.concatenate([unchanged, changed]))
    assert (changed < t).mean() > 0.9 and (unchanged >= t).mean() > 0.97


def test_polygon_points_lie_inside_their_polygon() -> None:
    import shapely
    from affine import Affine

    from chain.update.siamese import polygon_points

    polys = gpd.GeoDataFrame({"poly_id": [0, 1]}, geometry=[shapely.box(0, -50, 50, 0), shapely.box(100, -13, 103, -10)])
    t = Affine(10, 0, 0, 0, -10, 0)
    pts = polygon_points(polys, t, (20, 20), 8, seed=0)
    a = pts[pts[:, 0] == 0]
    assert len(a) == 8 and len({(r, c) for _, r, c in a}) == 8 and (a[:, 1:] < 5).all()
    b = pts[pts[:, 0] == 1]
    assert len(b) == 1 and tuple(b[0, 1:]) == (1, 10)  # no pixel centre inside: its representative point's pixel
    assert np.array_equal(pts, polygon_points(polys, t, (20, 20), 8, seed=0))


def test_summaries_are_per_channel_statistics() -> None:
    import datetime as dt

    from chain.spec import FeatureGroup, FeatureSpec, series_group
    from chain.update.siamese import summaries, summary_names

    dates = [dt.date(2021, 1, 1) + dt.timedelta(days=30 * i) for i in range(5)]
    spec = FeatureSpec((series_group("s2", "S2", ["B4", "B8"], dates), FeatureGroup("spot", "SPOT", ("pan",))))
    values = np.random.default_rng(2).normal(size=(11, 3, 4)).astype(np.float32)
    s = summaries(values, spec)
    assert summary_names(spec)[:5] == ["S2_B4_mean", "S2_B4_std", "S2_B4_p10", "S2_B4_p50", "S2_B4_p90"]
    assert s.shape == (11, 3, 4)
    np.testing.assert_allclose(s[5], values[5:10].mean(0), rtol=1e-5)  # B8's mean over its dates (band-major)
    np.testing.assert_allclose(s[8], np.median(values[5:10], axis=0), rtol=1e-5)
    np.testing.assert_array_equal(s[10], values[10])


# ---- fine-tuning and pruning ----------------------------------------------------------------------

def _fcn() -> Any:
    from chain.models.fcn import FCNNet

    torch.manual_seed(0)
    return FCNNet(4, 5, (8, 16, 16, 24), 0, "none", 16, "none")


@pytest.mark.parametrize("criterion", ["l1", "activation_entropy"])
def test_pruned_network_saves_loads_and_predicts(tmp_path: Path, criterion: str) -> None:
    from chain.deep import trainer
    from chain.update.transfer import prune

    net = _fcn()
    x = {"spot": torch.randn(2, 5, 64, 64, generator=torch.Generator().manual_seed(1))}
    report = prune(net, x, 0.5, criterion, 4)
    assert report["parameters_after"] < 0.5 * report["parameters_before"]
    assert all(after < before for before, after in report["filters"].values() if before > 4)
    net.eval()
    with torch.no_grad():
        want = net(x)
    norm = trainer.Normaliser({"spot": [0.0] * 5}, {"spot": [1.0] * 5}, {})
    manifest = {"type": "fcn", "classes": [1, 2, 3, 4], "shapes": {"spot": {"channels": 5, "size": 64}},
                "lineage": {"pruned": {"ratio": 0.5, "criterion": criterion}}}
    trainer.save(tmp_path, net, norm, [{"epoch": 1, "train_loss": 1.0}], manifest)
    loaded, _ = trainer.load(tmp_path, json.loads((tmp_path / "manifest.json").read_text()), lambda n, shapes: _fcn())
    assert sum(p.numel() for p in loaded.parameters()) == report["parameters_after"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), want)


def test_start_from_loads_last_years_weights_and_checks_classes(tmp_path: Path) -> None:
    from chain.deep import trainer
    from chain.errors import StepError
    from chain.update.options import PruneConfig
    from chain.update.transfer import StartFrom

    old = _fcn()
    for p in old.parameters():
        p.data.add_(1.0)
    norm = trainer.Normaliser({"spot": [1.0] * 5}, {"spot": [2.0] * 5}, {})
    trainer.save(tmp_path, old, norm, [{"epoch": 1, "train_loss": 1.0}], {"type": "fcn", "run": 0, "classes": [1, 2, 3, 4]})
    start = StartFrom.of(tmp_path, 0.3, None)
    fresh = start.prepare(_fcn(), {"spot": torch.randn(2, 5, 64, 64)})
    for a, b in zip(fresh.state_dict().values(), old.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert start.normaliser().mean == {"spot": [1.0] * 5}
    with pytest.raises(StepError, match="knows the classes"):
        start.check_classes([1, 2, 3])
    pruned = StartFrom.of(tmp_path, 0.3, PruneConfig(ratio=0.25)).prepare(_fcn(), {"spot": torch.randn(2, 5, 64, 64)})
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in old.parameters())


def test_prune_is_refused_for_a_model_that_is_retrained() -> None:
    from chain.errors import ConfigError
    from chain.models import model_type
    from chain.models.rf import RFModel
    from chain.update.transfer import check_prunable

    with pytest.raises(ConfigError, match="retrained from scratch in an update; remove update.prune"):
        check_prunable(model_type("rf"), RFModel(type="rf"), None, None, 0.3)


def test_pairs_normalise_by_chunks_like_the_whole_array(tmp_path: Path) -> None:
    from chain.update.siamese import Pairs

    rng = np.random.default_rng(3)
    before = np.lib.format.open_memmap(tmp_path / "b.npy", "w+", np.float32, (11, 4, 3, 3))
    before[:] = rng.normal(2, 3, before.shape)
    after = rng.normal(-1, 0.5, (11, 4, 3, 3)).astype(np.float32)
    rows = np.array([0, 2, 3, 5, 7, 8, 10])
    pairs = Pairs(before, after, rows, chunk=3)
    both = np.concatenate([before[rows], after[rows]])
    np.testing.assert_allclose(pairs.mean, both.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(pairs.std, both.std(axis=(0, 2, 3)), rtol=1e-4)
    got = pairs.get(1, np.array([1, 4])).numpy()
    np.testing.assert_allclose(got, (after[[2, 7]] - pairs.mean[None, :, None, None]) / pairs.std[None, :, None, None], rtol=1e-6)
