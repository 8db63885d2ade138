"""THEIA L2A products (folders and zips) read through the chain give what the plain layout gives."""

import json
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
    assert cp.source("s2").dates == ct.source("s2").dates and cp.grid == ct.grid and ct.source("s2").nodata == -10000
    if layout == "theia_zip":
        assert ct.source("s2").acquisitions[0].bands["B2"].startswith("/vsizip/")
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


def _split_into_tiles(src_s2, dst_s2, cut=40, overlap=16):
    """Each THEIA product cut into two neighbouring 'tiles' (T40KCB west, T40KCC east) that overlap."""
    for product in sorted(p for p in src_s2.iterdir() if p.is_dir()):
        for tile, (c0, c1) in (("T40KCB", (0, cut)), ("T40KCC", (cut - overlap, 64))):
            name = product.name.replace("T40KCB", tile)
            for f in product.rglob("*.tif"):
                out = dst_s2 / name / str(f.relative_to(product)).replace(product.name, name)
                out.parent.mkdir(parents=True, exist_ok=True)
                with rasterio.open(f) as src:
                    k = 64 // src.width
                    win = Window(c0 // k, 0, (c1 - c0) // k, src.height)
                    prof = {**src.profile, "width": int(win.width), "transform": src.window_transform(win)}
                    data = src.read(window=win)
                with rasterio.open(out, "w", **prof) as dst:
                    dst.write(data)


@pytest.mark.parametrize("explicit_bounds", [True, False])
def test_two_tiles_per_date_are_merged_onto_one_grid(theia_scenes, tmp_path, explicit_bounds):
    # nearest: bilinear warping of the 20 m bands legitimately differs within a pixel of a tile's edge
    single = config.load(tiny_config(theia_scenes["theia"], tmp_path / "single",
                                     inputs={"s2": {"format": "theia", "resampling": "nearest"}}))
    split_scene = tmp_path / "split_scene"
    _split_into_tiles(theia_scenes["theia"] / "s2", split_scene / "s2")
    shutil.copy(theia_scenes["theia"] / "reference.gpkg", split_scene / "reference.gpkg")
    grid = {"crs": "EPSG:32740", "resolution_m": 10, "bounds": list(build_catalog(single).grid.bounds)} if explicit_bounds else {}
    path = tiny_config(split_scene, tmp_path / "multi", inputs={"s2": {"format": "theia", "resampling": "nearest"}}, grid=grid)
    multi = config.load(path)
    cs, cm = build_catalog(single), build_catalog(multi)
    assert len(cm.source("s2").acquisitions) == 2 * len(cs.source("s2").acquisitions)
    assert cm.source("s2").dates == cs.source("s2").dates
    assert cm.grid == cs.grid
    w = Window(0, 0, 64, 64)
    a = compute_features(cs, feature_spec(single, cs), w)
    b = compute_features(cm, feature_spec(multi, cm), w)
    np.testing.assert_array_equal(b.n_valid, a.n_valid)
    np.testing.assert_array_equal(b.values, a.values)


@pytest.fixture(scope="module")
def sen2cor_scene(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("sen2cor") / "s", **TINY, layout="sen2cor_zip")


def test_sen2cor_offsets_and_scl_are_applied(sen2cor_scene, tiny_scene, tmp_path):
    plain = _config(tiny_scene, tmp_path / "plain", None)
    s2c = _config(sen2cor_scene, tmp_path / "s2c", "sen2cor")
    cp, cs = build_catalog(plain), build_catalog(s2c)
    sp, ss = cp.source("s2"), cs.source("s2")
    assert sp.dates == ss.dates and cp.grid == cs.grid and ss.nodata == 0
    offsets = [a.offsets["B4"] for a in ss.acquisitions]
    assert set(np.round(offsets, 6)) == {0.0, -0.1}  # both processing baselines are present
    w = Window(0, 0, 64, 64)
    raw_p, valid_p = sp.read_series(cp.grid, w)
    refl_s, valid_s = ss.read_series(cs.grid, w)  # per-product offsets: read_series gives reflectance
    assert not (valid_s & ~valid_p).any()  # SCL at 20 m masks at least what the 10 m mask does
    assert valid_s.sum() > 0.8 * valid_p.sum()
    refl_p = raw_p * 1e-4
    both = np.broadcast_to((valid_s & valid_p)[:, None], refl_s.shape)
    np.testing.assert_allclose(refl_s[both], refl_p[both], atol=1e-6)


def test_chain_runs_on_zipped_sen2cor_products(sen2cor_scene, tmp_path):
    cfg = _config(sen2cor_scene, tmp_path / "run", "sen2cor")
    run_pipeline(cfg)
    with rasterio.open(cfg.workdir / "final" / "Classif_Seed_0.tif") as src:
        assert (src.read(1) > 0).mean() > 0.9


def test_sen2cor_product_without_metadata_is_refused(sen2cor_scene, tmp_path):
    import zipfile

    cfg = _config(sen2cor_scene, tmp_path / "nomtd", "sen2cor")
    z = sorted(cfg.inputs.s2.path.glob("*.zip"))[0]
    keep = [(i, zipfile.ZipFile(z).read(i)) for i in zipfile.ZipFile(z).infolist() if not i.filename.endswith("MTD_MSIL2A.xml")]
    with zipfile.ZipFile(z, "w") as out:
        for info, data in keep:
            out.writestr(info, data)
    with pytest.raises(InputMissingError, match="no MTD_MSIL2A.xml"):
        build_catalog(cfg)


def _to_other_zone(product_dir, epsg=32739):
    """Reproject every raster of a product folder into another UTM zone, in place (as a neighbouring zone's tile)."""
    from rasterio.shutil import copy as rio_copy
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import calculate_default_transform

    for f in sorted(product_dir.rglob("*.tif")):
        with rasterio.open(f) as src:
            t, w, h = calculate_default_transform(src.crs, f"EPSG:{epsg}", src.width, src.height, *src.bounds,
                                                  resolution=src.res[0])
            with WarpedVRT(src, crs=f"EPSG:{epsg}", transform=t, width=w, height=h, resampling=rasterio.enums.Resampling.nearest) as vrt:
                tmp = f.with_suffix(".tmp.tif")
                rio_copy(vrt, tmp, driver="GTiff")
        tmp.replace(f)


def test_tiles_in_two_utm_zones_are_read_onto_one_grid(theia_scenes, tmp_path):
    single = config.load(tiny_config(theia_scenes["theia"], tmp_path / "single",
                                     inputs={"s2": {"format": "theia", "resampling": "nearest"}}))
    scene = tmp_path / "zones"
    _split_into_tiles(theia_scenes["theia"] / "s2", scene / "s2")
    shutil.copy(theia_scenes["theia"] / "reference.gpkg", scene / "reference.gpkg")
    for product in scene.glob("s2/*T40KCC*"):
        _to_other_zone(product)
    with rasterio.open(next(scene.glob("s2/*T40KCC*/*_FRE_B2.tif"))) as src:
        assert src.crs.to_epsg() == 32739
    auto = config.load(tiny_config(scene, tmp_path / "auto", inputs={"s2": {"format": "theia", "resampling": "nearest"}}))
    cs, ca = build_catalog(single), build_catalog(auto)
    assert ca.grid.crs.to_epsg() == 32740 and ca.source("s2").dates == cs.source("s2").dates
    # the grid covers both tiles (the reprojected one's footprint is a little larger)
    left, b, r, t = ca.grid.bounds
    sl, sb, sr, st = cs.grid.bounds
    assert left <= sl and b <= sb and r >= sr and t >= st and ca.grid.width - cs.grid.width <= 4
    multi = config.load(tiny_config(scene, tmp_path / "multi", inputs={"s2": {"format": "theia", "resampling": "nearest"}},
                                    grid={"crs": "EPSG:32740", "resolution_m": 10, "bounds": list(cs.grid.bounds)}))
    cm = build_catalog(multi)
    w = Window(0, 0, 64, 64)
    a = compute_features(cs, feature_spec(single, cs), w)
    b = compute_features(cm, feature_spec(multi, cm), w)
    west = (slice(None), slice(0, 20))  # only the 32740 tile there: exactly the same values
    np.testing.assert_array_equal(b.n_valid[west], a.n_valid[west])
    np.testing.assert_array_equal(b.values[(slice(None), *west)], a.values[(slice(None), *west)])
    east = (slice(2, 62), slice(44, 62))  # only the other zone's tile there: read through the warper
    assert (b.n_valid[east] > 0).mean() > 0.95
    same = np.isclose(b.values[(slice(None), *east)], a.values[(slice(None), *east)], equal_nan=True).mean()
    assert same > 0.6, same


def test_chain_runs_on_sen2cor_products_of_two_tiles(tmp_path):
    """The generator's two-tile layout (40KCB west, 40KDB east, overlapping) maps like the one-tile scene."""
    one = generate(tmp_path / "one", **TINY, layout="sen2cor")
    two = generate(tmp_path / "two", **TINY, layout="sen2cor", s2_tiles=2)
    tiles = {p.name.split("_")[5] for p in (two / "s2").iterdir()}
    assert tiles == {"T40KCB", "T40KDB"}
    res = {}
    for name, scene in (("one", one), ("two", two)):
        cfg = config.load(tiny_config(scene, tmp_path / f"run_{name}", inputs={"s2": {"format": "sen2cor", "resampling": "nearest"}}))
        cat = build_catalog(cfg)
        res[name] = (cat, compute_features(cat, feature_spec(cfg, cat), Window(0, 0, 64, 64)))
        if name == "two":
            assert len(cat.source("s2").acquisitions) == 2 * len(res["one"][0].source("s2").acquisitions)
            run_pipeline(cfg)
            assert json.loads((cfg.workdir / "final" / "metrics.json").read_text())["summary"]["oa"]["mean"] > 0.6
    assert res["two"][0].grid == res["one"][0].grid
    np.testing.assert_array_equal(res["two"][1].n_valid, res["one"][1].n_valid)
    np.testing.assert_allclose(res["two"][1].values, res["one"][1].values, rtol=0, atol=1e-6)


def test_a_scene_cut_into_two_tiles_maps_like_the_uncut_scene_against_its_truth(tmp_path):
    """The same scene as one Sen2Cor tile and as two overlapping ones, default (bilinear) resampling: the maps
    agree with the truth equally (the merge of overlapping products costs no accuracy), and with each other."""
    maps, agreement = {}, {}
    for tiles in (1, 2):
        scene = generate(tmp_path / f"s{tiles}", **{**TINY, "size_px": 96, "n_fields": 40}, layout="sen2cor", s2_tiles=tiles)
        cfg = config.load(tiny_config(scene, tmp_path / f"run{tiles}", inputs={"s2": {"format": "sen2cor"}}))
        run_pipeline(cfg)
        with rasterio.open(cfg.workdir / "final" / "Classif_Seed_0.tif") as m, rasterio.open(scene / "truth.tif") as t:
            maps[tiles], truth = m.read(1), t.read(1)
        ok = maps[tiles] > 0
        agreement[tiles] = float((maps[tiles] == truth)[ok].mean())
    assert maps[1].shape == maps[2].shape
    assert (maps[1] != maps[2]).mean() < 0.01
    assert abs(agreement[1] - agreement[2]) < 0.01 and agreement[2] > 0.6
