"""THEIA L2A products (folders and zips) read through the chain give what the plain layout gives."""

import shutil

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from chain import config
from chain.catalog import build_catalog
from chain.demo import generate
from chain.errors import InputError, InputMissingError
from chain.features import compute_features, feature_spec
from chain.runner import run_pipeline
from tests.conftest import TINY, tiny_config


@pytest.fixture(scope="module")
def theia_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("theia")
    return {layout: generate(root / layout, **TINY, layout=layout) for layout in ("theia", "theia_zip")}


def _config(scene, folder, fmt):
    path = tiny_config(scene, folder, inputs={"s2": {"format": fmt}} if fmt else {})
    return config.load(path)


@pytest.mark.parametrize("layout", ["theia", "theia_zip"])
def test_theia_products_give_the_same_features_as_plain_folders(theia_scenes, tiny_scene, tmp_path, layout):
    plain = _config(tiny_scene, tmp_path / "plain", None)
    theia = _config(theia_scenes[layout], tmp_path / layout, "theia")
    cp, ct = build_catalog(plain), build_catalog(theia)
    assert cp.dates == ct.dates and cp.grid == ct.grid and ct.nodata == -10000
    if layout == "theia_zip":
        assert ct.acquisitions[0].bands["B2"].startswith("/vsizip/")
        assert not any(p.is_dir() for p in (tmp_path / layout / "scene" / "s2").iterdir())  # never unpacked
    w = Window(0, 0, 64, 64)
    a = compute_features(cp, feature_spec(plain, cp), w)
    b = compute_features(ct, feature_spec(theia, ct), w)
    np.testing.assert_array_equal(a.n_valid, b.n_valid)
    np.testing.assert_array_equal(a.values, b.values)


def test_chain_runs_on_zipped_theia_products(theia_scenes, tmp_path):
    cfg = _config(theia_scenes["theia_zip"], tmp_path / "run", "theia")
    run_pipeline(cfg)
    with rasterio.open(cfg.workdir / "final" / "Classif_Seed_0.tif") as src:
        assert (src.read(1) > 0).mean() > 0.9


def test_broken_theia_products_give_clear_errors(theia_scenes, tmp_path):
    cfg = _config(theia_scenes["theia"], tmp_path / "broken", "theia")
    s2 = cfg.inputs.s2.path
    product = sorted(p for p in s2.iterdir() if p.is_dir())[1]
    victim = next(product.glob("*_FRE_B8A.tif"))
    victim.unlink()
    with pytest.raises(InputMissingError, match=rf"{product.name}.*lacks .*_FRE_B8A\.tif"):
        build_catalog(cfg)
    shutil.rmtree(product)
    bad_zip = s2 / f"{product.name}.zip"
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable zip"):
        build_catalog(cfg)
    bad_zip.unlink()
    other = sorted(p for p in s2.iterdir() if p.is_dir())[0]
    twin = s2 / other.name.replace("065412", "071003")
    shutil.copytree(other, twin)
    for f in twin.rglob("*.tif"):
        f.rename(f.with_name(f.name.replace(other.name, twin.name)))
    with pytest.raises(InputError, match="two THEIA products for"):
        build_catalog(cfg)
