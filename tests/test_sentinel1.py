"""Sentinel-1 backscatter series: names, dB, orbit directions, alone and beside S2."""

import json

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from chain import config
from chain.catalog import build_catalog
from chain.demo import generate
from chain.features import compute_features, feature_spec
from chain.runner import run_pipeline
from tests.conftest import TINY, tiny_config


@pytest.fixture(scope="module")
def s1_scene(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("s1scene") / "s", **TINY, s1=True)


def _cfg(scene, folder, **s1):
    return config.load(tiny_config(scene, folder, inputs={"s2": None, "s1": {"path": "scene/s1", **s1}}))


def test_s1_features_are_db_on_a_regular_grid_per_orbit(s1_scene, tmp_path):
    cfg = _cfg(s1_scene, tmp_path / "sep", interval_days=6)
    cat = build_catalog(cfg)
    spec = feature_spec(cfg, cat)
    assert {f.group for f in cat.source("s1").files_} == {"ASC", "DES"}
    assert spec.names[0].startswith("S1_ASC_VV_") and any(n.startswith("S1_DES_VH_") for n in spec.names)
    block = compute_features(cat, spec, Window(0, 0, 64, 64))
    first = min((f for f in cat.source("s1").files_ if f.group == "ASC" and f.pol == "vv"), key=lambda f: f.date)
    with rasterio.open(first.path) as src:
        expected = 10 * np.log10(src.read(1))
    got = block.values[spec.names.index(f"S1_ASC_VV_{first.date:%Y%m%d}")]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)  # first date of the grid = an acquisition
    merged = _cfg(s1_scene, tmp_path / "merged", orbits="merged", polarisations=["vh"])
    mspec = feature_spec(merged, build_catalog(merged))
    assert all(n.startswith("S1_VH_") for n in mspec.names)


def test_chain_runs_on_s1_alone_and_with_s2(s1_scene, tmp_path):
    cfg = _cfg(s1_scene, tmp_path / "alone")
    run_pipeline(cfg)
    m = json.loads((cfg.workdir / "final" / "metrics.json").read_text())
    assert m["summary"]["oa"]["mean"] > 0.5
    both = config.load(tiny_config(s1_scene, tmp_path / "both", inputs={"s1": {"path": "scene/s1"}}))
    run_pipeline(both, to_step="features")
    names = json.loads((both.workdir / "features" / "features.json").read_text())["names"]
    assert any(n.startswith("B2_") for n in names) and any(n.startswith("S1_") for n in names)


def test_missing_polarisation_is_a_clear_error(s1_scene, tmp_path):
    from chain.errors import InputMissingError

    cfg = _cfg(s1_scene, tmp_path / "nopol")
    for f in (cfg.inputs.s1.path).glob("*_vh_ASC_*.tif"):
        f.unlink()
    with pytest.raises(InputMissingError, match="ASC series has no VH file"):
        build_catalog(cfg)
