"""Pixel time-series networks (TempCNN, L-TAE): architectures, day handling, another year's date grid, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from chain import config, models
from chain.catalog import build_catalog
from chain.demo import generate
from chain.errors import ConfigError, StepError
from chain.features import feature_spec
from chain.models import model_type
from chain.models.ltae import LTAENet, positional_encoding
from chain.models.tempcnn import TempCNNNet, resampling
from chain.runner import run_pipeline
from tests.conftest import TINY, config_for

TRAIN = {"epochs": 6, "batch_size": 64, "lr": 0.003, "max_samples_per_class": 150}
SMALL = {"tempcnn": {"type": "tempcnn", "filters": 16, "dense": 32, **TRAIN},
         "ltae": {"type": "ltae", "embedding": 16, "d_model": 32, "n_head": 4, "d_k": 4, "mlp": [32, 16], "decoder": [16], **TRAIN}}
SHAPES = {"s2": {"channels": 9 * 13, "size": 1, "steps": 9, "days": list(range(10, 280, 30))},
          "s1": {"channels": 12 * 4, "size": 1, "steps": 12, "days": list(range(5, 365, 30))}}


def test_default_sizes_follow_the_papers():
    t = TempCNNNet(7, {"s2": SHAPES["s2"]})
    convs = [m for m in t.convs if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(64, 5)] * 3 and t.dense[1].out_features == 256
    cfg = config.parse_model({"type": "ltae"})
    assert (cfg.d_model, cfg.n_head, cfg.d_k, cfg.mlp, cfg.decoder, cfg.period_days) == (256, 16, 8, [256, 128], [64, 32], 1000.0)
    net = model_type("ltae").network(cfg, 7, SHAPES)
    x = {k: torch.randn(5, s["channels"], 1, 1) for k, s in SHAPES.items()}
    assert net.eval()(x)["fused"].shape == (5, 7)


def test_tempcnn_resamples_onto_its_training_days():
    w = resampling([0, 10, 30], [0, 5, 20, 40])
    np.testing.assert_allclose(w @ np.array([1.0, 2.0, 4.0]), [1.0, 1.5, 3.0, 4.0])  # linear inside, edges replicated
    net = TempCNNNet(3, {"s2": {"channels": 4 * 2, "size": 1, "steps": 4, "days": [0, 10, 20, 30]}}, filters=4, dense=8).eval()
    x = {"s2": torch.randn(6, 8, 1, 1)}
    same = net(x)["fused"]
    net.set_days({"s2": [0, 10, 20, 30]})
    assert torch.equal(net(x)["fused"], same)
    net.set_days({"s2": [0, 20, 30]})  # 3 dates: the day-10 and day-20 values come from interpolation
    series = x["s2"].reshape(6, 4, 2)[:, [0, 2, 3]].reshape(6, 6, 1, 1)
    assert net({"s2": series})["fused"].shape == (6, 3)


def test_ltae_encodes_days_not_ranks():
    pe = positional_encoding(torch.tensor([0.0, 100.0]), 8, 1000.0)
    assert torch.allclose(pe[0, 0::2], torch.zeros(4)) and torch.allclose(pe[0, 1::2], torch.ones(4))
    shapes = {"s2": {"channels": 3 * 2, "size": 1, "steps": 3, "days": [10, 40, 70]}}
    net = LTAENet(3, shapes, embedding=8, d_model=8, n_head=2, d_k=4, mlp=[8, 8], decoder=[4]).eval()
    x = {"s2": torch.randn(5, 6, 1, 1)}
    a = net(x)["fused"]
    net.set_days({"s2": [10, 40, 250]})  # the same values said to come from another season
    assert not torch.allclose(net(x)["fused"], a)
    net.set_days({"s2": [10, 40, 70, 100]})  # a longer series: as many tokens as dates
    assert net({"s2": torch.randn(5, 8, 1, 1)})["fused"].shape == (5, 3)


@pytest.fixture(scope="module")
def years(tmp_path_factory):
    """One scene, two years: the same fields, other dates (8 acquisitions in 2021, 11 in 2022)."""
    root = tmp_path_factory.mktemp("years")
    return {2021: generate(root / "y2021", **{**TINY, "size_px": 80, "n_dates": 8}, year=2021),
            2022: generate(root / "y2022", **{**TINY, "size_px": 80, "n_dates": 11}, year=2022)}


def _agreement(model, scene, spec, cat):
    valid, proba, _ = model.predict_window(cat, spec, Window(0, 0, cat.grid.width, cat.grid.height))
    pred = np.zeros(valid.shape, np.int64)
    pred[valid] = model.classes_[proba.argmax(1)]
    with rasterio.open(scene / "truth.tif") as t:
        truth = t.read(1)
    return float((pred == truth)[valid].mean())


@pytest.mark.parametrize("kind", ["tempcnn", "ltae"])
def test_a_model_of_one_year_maps_another_years_date_grid(years, tmp_path, kind):
    cfg = config_for(years[2021], tmp_path / "y1", {"s2": {"path": "s2"}}, model=SMALL[kind], gapfill={"interval_days": 30})
    run_pipeline(cfg, to_step="train")
    folder = cfg.workdir / "train" / "run_0"
    nxt = config_for(years[2022], tmp_path / "y2", {"s2": {"path": "s2"}}, model=SMALL[kind], gapfill={"interval_days": 25})
    cat2 = build_catalog(nxt)
    spec2 = feature_spec(nxt, cat2)
    (_, g1), = feature_spec(cfg, build_catalog(cfg)).of_source("s2")
    (_, g2), = spec2.of_source("s2")
    assert g1.dates != g2.dates and len(g1.dates) != len(g2.dates)  # really another grid
    with pytest.raises(StepError, match="features that differ"):
        models.check(folder, spec2.names)  # what a pixel model would say
    manifest = model_type(kind).compatible(folder, nxt.model, spec2, cat2)  # a temporal model accepts it
    cat1 = build_catalog(cfg)
    same = _agreement(models.load(folder, spec=feature_spec(cfg, cat1), cat=cat1), years[2021], feature_spec(cfg, cat1), cat1)
    other = _agreement(models.load(folder, spec=spec2, cat=cat2), years[2022], spec2, cat2)
    assert manifest["type"] == kind and same > 0.6
    assert other > 0.6 and other > same - 0.2  # the other year is mapped about as well


def test_a_season_the_model_never_saw_is_refused(years, tmp_path):
    cfg = config_for(years[2021], tmp_path / "y1", {"s2": {"path": "s2"}}, model=SMALL["tempcnn"], gapfill={"interval_days": 30})
    run_pipeline(cfg, to_step="train")
    summer = config_for(years[2022], tmp_path / "y2", {"s2": {"path": "s2"}}, model=SMALL["tempcnn"],
                        gapfill={"start": "2022-06-01", "end": "2022-09-30", "interval_days": 15})
    cat = build_catalog(summer)
    with pytest.raises(StepError, match="covers .* of the season .* at least 75 % is needed"):
        model_type("tempcnn").compatible(cfg.workdir / "train" / "run_0", summer.model, feature_spec(summer, cat), cat)


def test_bad_input_is_refused_before_any_work(years, tmp_path):
    short = config_for(years[2021], tmp_path / "short", {"s2": {"path": "s2"}}, model=SMALL["tempcnn"],
                       gapfill={"interval_days": 120})
    with pytest.raises(ConfigError, match="fewer than the 5 the network needs"):
        run_pipeline(short)
    assert not (short.workdir / "sample").exists()
    missing = config_for(years[2021], tmp_path / "s1", {"s2": {"path": "s2"}}, model={**SMALL["ltae"], "series": ["s2", "s1"]})
    with pytest.raises(ConfigError, match="model.series names 's1', which is not configured"):
        run_pipeline(missing)
    with pytest.raises(ConfigError, match="unknown source"):
        config.parse_model({"type": "ltae", "series": ["sentinel3"]})
    pixel_set = config_for(years[2021], tmp_path / "ps", {"s2": {"path": "s2"}}, model={**SMALL["ltae"], "input": "pixel_set"})
    with pytest.raises(ConfigError, match="pixel_set .* the chain does not make objects yet"):
        run_pipeline(pixel_set)
    with pytest.raises(ConfigError, match="kernel must be odd"):
        config.parse_model({"type": "tempcnn", "kernel": 4})


def test_s1_and_s2_series_on_their_own_date_grids(full_scene, tmp_path):
    cfg = config_for(full_scene, tmp_path / "s1s2", {"s2": {"path": "s2"}, "s1": {"path": "s1", "interval_days": 20}},
                     model={**SMALL["ltae"], "series": ["s2", "s1"]})
    run_pipeline(cfg)
    manifest = json.loads((cfg.workdir / "train" / "run_0" / "manifest.json").read_text())
    s2, s1 = manifest["shapes"]["s2"], manifest["shapes"]["s1"]
    assert s2["days"] != s1["days"] and s1["channels"] == s1["steps"] * 4  # ASC + DES, VV + VH per date
    assert json.loads((cfg.workdir / "final" / "metrics.json").read_text())["summary"]["oa"]["mean"] > 0.5


def test_a_saved_model_of_two_series_loads_whatever_the_key_order(tmp_path):
    """Manifests are written with sorted keys (s1 before s2): the first series of model.series stays the reference."""
    from chain.deep import trainer

    cfg = config.parse_model({**SMALL["tempcnn"], "series": ["s2", "s1"]})
    net = model_type("tempcnn").network(cfg, 4, SHAPES)
    assert net.target == SHAPES["s2"]["days"]
    manifest = {"type": "tempcnn", "classes": [1, 2, 3, 4], "shapes": dict(sorted(SHAPES.items())), "params": cfg.model_dump(),
                "feature_names": [], "inputs": []}
    trainer.save(tmp_path, net, trainer.Normaliser({}, {}), [], manifest)
    loaded, _ = trainer.load(tmp_path, models.read_manifest(tmp_path), lambda n, shapes: model_type("tempcnn").network(cfg, n, shapes))
    x = {k: torch.randn(3, s["channels"], 1, 1) for k, s in SHAPES.items()}
    assert torch.equal(net.eval()(x)["fused"], loaded(x)["fused"])
