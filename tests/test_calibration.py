"""Calibrated confidence (temperature scaling): the temperature is found back, classes never change, the maps'
confidence is scaled, and the report shows the reliability before and after."""

import json

import numpy as np
import pytest
import rasterio

from chain import calibration, config
from chain.runner import run_pipeline


def _overconfident(n=20000, k=5, sharpen=3.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 1.5
    p_true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in p_true])
    z = logits * sharpen
    return np.exp(z) / np.exp(z).sum(1, keepdims=True), y


def test_the_temperature_of_overconfident_probabilities_is_found_and_lowers_the_ece():
    proba, y = _overconfident()
    t = calibration.fit_temperature(proba, y)
    assert t == pytest.approx(3.0, rel=0.1)
    after = calibration.apply(proba, t)
    assert (after.argmax(1) == proba.argmax(1)).all()
    np.testing.assert_allclose(after.sum(1), 1, atol=1e-9)
    before_ece, after_ece = calibration.reliability(proba, y)["ece"], calibration.reliability(after, y)["ece"]
    assert after_ece < before_ece / 3, (before_ece, after_ece)
    # well-calibrated probabilities keep T near 1
    right, y2 = _overconfident(sharpen=1.0, seed=1)
    assert calibration.fit_temperature(right, y2) == pytest.approx(1.0, abs=0.1)
    # no error to learn from: T is not identifiable (the likelihood grows as T shrinks) and is left at 1
    perfect = proba[proba.argmax(1) == y]
    assert calibration.fit_temperature(perfect, perfect.argmax(1)) == 1.0


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def test_a_64_16_20_run_calibrates_its_confidence_maps_without_changing_classes(make_config):
    plain = config.load(make_config("plain", split={"scheme": "64/16/20"}, calibration={"enabled": False}))
    run_pipeline(plain)
    cal = config.load(make_config("cal", split={"scheme": "64/16/20"}))  # auto: on with 64/16/20
    run_pipeline(cal)
    fitted = json.loads((cal.workdir / "train" / "run_0" / "calibration.json").read_text())
    assert fitted["fitted_on"] == "the validation polygons" and fitted["pixels"] > 10 and fitted["temperature"] != 1.0
    assert not (plain.workdir / "train" / "run_0" / "calibration.json").exists()
    a, b = plain.workdir / "final", cal.workdir / "final"
    np.testing.assert_array_equal(_read(a / "Classif_Seed_0.tif"), _read(b / "Classif_Seed_0.tif"))
    ca, cb = _read(a / "Confidence_Seed_0.tif"), _read(b / "Confidence_Seed_0.tif")
    mapped = ca != 255
    assert (ca[mapped] != cb[mapped]).mean() > 0.2  # the confidence is rescaled
    metrics = json.loads((b / "metrics.json").read_text())["calibration"]
    assert metrics["part"] == "test" and metrics["runs"][0]["temperature"] == fitted["temperature"]
    assert "Calibrated confidence" in (b / "report.html").read_text() and "ECE before" in (b / "RESULTS.txt").read_text()
    # switching it off re-runs training without the file: no stale temperature is applied
    off = config.load(make_config("cal", split={"scheme": "64/16/20"}, calibration={"enabled": False}))
    run_pipeline(off)
    assert not (off.workdir / "train" / "run_0" / "calibration.json").exists()
    np.testing.assert_array_equal(_read(a / "Confidence_Seed_0.tif"), _read(off.workdir / "final" / "Confidence_Seed_0.tif"))


def test_a_30_70_run_holds_out_training_polygons_to_calibrate(make_config):
    from chain.training import holdout_polygons

    cfg = config.load(make_config("c", calibration={"enabled": True, "holdout": 0.3}))
    run_pipeline(cfg, to_step="train")
    fitted = json.loads((cfg.workdir / "train" / "run_0" / "calibration.json").read_text())
    assert "held-out training polygons" in fitted["fitted_on"]
    import pandas as pd

    split = pd.read_csv(cfg.workdir / "split" / "split.csv")
    held = holdout_polygons(split, 0, 0.3, cfg.seed)
    train = split[(split["run"] == 0) & (split["part"] == "train")]
    assert 0 < len(held) < len(train)
    for _, g in train.groupby("code"):  # every class keeps a polygon to learn from
        assert not set(g["poly_id"]) <= set(held)
