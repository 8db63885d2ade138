"""Landsat Collection 2 Level-2: the USGS layout (folders and .tar), MTL metadata, scale/offset, QA_PIXEL bits."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from chain.catalog import build_catalog
from chain.errors import InputError, InputMissingError
from chain.features import compute_features, feature_spec
from chain.runner import run_pipeline
from tests.conftest import config_for


@pytest.fixture(scope="module")
def landsat(full_scene):
    return full_scene / "landsat"


def _cat(full_scene, folder, tmp_path, **section):
    cfg = config_for(full_scene, tmp_path / "work", {"landsat": {"path": str(folder), **section}})
    return cfg, build_catalog(cfg)


def test_products_are_found_in_folders_and_tar_archives_with_their_mtl_dates(full_scene, landsat, tmp_path):
    _, cat = _cat(full_scene, landsat, tmp_path)
    ls = cat.source("landsat")
    tars = sorted(landsat.glob("*.tar"))
    folders = sorted(p for p in landsat.iterdir() if p.is_dir())
    assert tars and folders and len(ls.acquisitions) == len(tars) + len(folders)
    assert any(a.mask.startswith("/vsitar/") for a in ls.acquisitions)
    for a in ls.acquisitions:  # the date is the MTL's DATE_ACQUIRED, which the product id repeats
        assert f"_{a.date:%Y%m%d}_" in a.mask
    assert cat.grid.res == (30.0, 30.0) and "WRS path/row 151074" in ls.summary()
    assert set(ls.acquisitions[0].bands) == {"B2", "B3", "B4", "B5", "B6", "B7"}


def test_reflectance_is_dn_times_scale_plus_offset_and_qa_bits_mask_clouds(full_scene, landsat, tmp_path):
    _, cat = _cat(full_scene, landsat, tmp_path)
    ls = cat.source("landsat")
    w = Window(0, 0, cat.grid.width, cat.grid.height)
    raw, valid = ls.read_series(cat.grid, w)
    for t, acq in enumerate(ls.acquisitions):
        with rasterio.open(acq.mask) as q, rasterio.open(acq.bands["B4"]) as b4:
            qa, dn = q.read(1), b4.read(1)
        cloud = (qa & 0b11011) != 0  # fill, dilated cloud, cloud, shadow (+ cirrus, bit 2, on by default)
        assert not valid[t][cloud | ((qa & 0b100) != 0)].any()
        assert valid[t][~cloud & ((qa & 0b100) == 0) & (dn > 0)].all()
        np.testing.assert_array_equal(raw[t, ls.bands.index("B4")], dn)
    assert valid.mean() > 0.3
    spec = feature_spec(config_for(full_scene, tmp_path / "w2", {"landsat": {"path": str(landsat)}}), cat)
    block = compute_features(cat, spec, w)
    g = spec.groups[0]
    assert g.names[0].startswith("LS_B2_") and "LS_NDVI_" + f"{g.dates[0]:%Y%m%d}" in g.names
    # a date of the output grid that is an acquisition, clear there: reflectance = DN x 2.75e-05 - 0.2
    t = next(i for i, a in enumerate(ls.acquisitions) if a.date == g.dates[0])
    ok = valid[t]
    got = block.values[g.names.index(f"LS_B4_{g.dates[0]:%Y%m%d}")][ok]
    np.testing.assert_allclose(got, raw[t, ls.bands.index("B4")][ok].astype(np.float32) * np.float32(2.75e-05) - np.float32(0.2),
                               rtol=1e-6, atol=1e-6)
    assert 0.0 < np.nanmedian(got) < 0.6


def test_snow_and_cirrus_bits_follow_the_config(full_scene, landsat, tmp_path):
    _, strict = _cat(full_scene, landsat, tmp_path / "a", snow_invalid=True, cirrus_invalid=False)
    bits = strict.source("landsat").mask_invalid_bits
    assert bits & (1 << 5) and not bits & (1 << 2) and bits & 1


def test_landsat_alone_and_beside_s2_end_to_end(full_scene, landsat, tmp_path):
    alone = config_for(full_scene, tmp_path / "alone", {"landsat": {"path": str(landsat)}})
    run_pipeline(alone)
    assert json.loads((alone.workdir / "final" / "metrics.json").read_text())["summary"]["oa"]["mean"] > 0.5
    both = config_for(full_scene, tmp_path / "both", {"s2": {"path": str(full_scene / "s2")}, "landsat": {"path": str(landsat)}})
    run_pipeline(both)
    spec = json.loads((both.workdir / "features" / "features.json").read_text())
    assert [g["source"] for g in spec["groups"]] == ["s2", "landsat"]  # S2 first: its grid, its clear-date count
    with rasterio.open(both.workdir / "final" / "PixelsValidity.tif") as src:
        assert src.descriptions == ("S2 clear dates", "Landsat clear dates") and src.res == (10.0, 10.0)
    assert json.loads((both.workdir / "final" / "metrics.json").read_text())["summary"]["oa"]["mean"] > 0.5


def test_incomplete_or_foreign_products_are_refused_by_name(full_scene, landsat, tmp_path):
    one = next(p for p in sorted(landsat.iterdir()) if p.is_dir())
    broken = tmp_path / "broken"
    shutil.copytree(one, broken / one.name)
    next((broken / one.name).glob("*_QA_PIXEL.TIF")).unlink()
    with pytest.raises(InputMissingError, match="QA_PIXEL.TIF.*is the download complete"):
        _cat(full_scene, broken, tmp_path / "b")
    c1 = tmp_path / "c1"
    shutil.copytree(one, c1 / one.name)
    mtl = next((c1 / one.name).glob("*_MTL.txt"))
    mtl.write_text(mtl.read_text().replace("REFLECTANCE_MULT_BAND_2 = 2.75E-05", "REFLECTANCE_MULT_BAND_2 = 2.0E-05"))
    with pytest.raises(InputError, match="only Collection 2 Level-2"):
        _cat(full_scene, c1, tmp_path / "c")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputMissingError, match="no Landsat Collection 2 Level-2 product"):
        _cat(full_scene, empty, tmp_path / "e")


def test_tm_products_are_read_by_common_band_names(full_scene, landsat, tmp_path):
    """A Landsat 5 TM product: its blue is SR_B1, its NIR SR_B4; read under the OLI names beside OLI products."""
    one = next(p for p in sorted(landsat.iterdir()) if p.is_dir())
    pid = one.name
    tm_id = pid.replace("LC08", "LT05").replace("LC09", "LT05")
    folder = tmp_path / "tm" / tm_id
    folder.mkdir(parents=True)
    oli_to_tm = {"B2": "B1", "B3": "B2", "B4": "B3", "B5": "B4", "B6": "B5", "B7": "B7"}
    for oli, tm in oli_to_tm.items():
        shutil.copy(one / f"{pid}_SR_{oli}.TIF", folder / f"{tm_id}_SR_{tm}.TIF")
    shutil.copy(one / f"{pid}_QA_PIXEL.TIF", folder / f"{tm_id}_QA_PIXEL.TIF")
    (folder / f"{tm_id}_MTL.txt").write_text((one / f"{pid}_MTL.txt").read_text().replace(pid, tm_id))
    _, cat = _cat(full_scene, tmp_path / "tm", tmp_path / "w")
    acq = cat.source("landsat").acquisitions[0]
    assert acq.bands["B2"].endswith("_SR_B1.TIF") and acq.bands["B5"].endswith("_SR_B4.TIF")
    with pytest.raises(InputError, match="no B1 \\(coastal\\) band"):
        _cat(full_scene, tmp_path / "tm", tmp_path / "w2", bands=["B1", "B2"])


def test_a_tar_is_read_in_place(full_scene, landsat, tmp_path):
    tar = next(landsat.glob("*.tar"))
    with tarfile.open(tar) as t:
        assert all("/" not in n for n in t.getnames())  # flat, as USGS delivers it
    folder = tmp_path / "only_tar"
    folder.mkdir()
    shutil.copy(tar, folder / tar.name)
    _, cat = _cat(full_scene, folder, tmp_path / "w")
    assert len(cat.source("landsat").acquisitions) == 1 and not any(p.is_dir() for p in folder.iterdir())
