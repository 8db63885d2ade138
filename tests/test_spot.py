"""SPOT-6/7 PAN + MS pairs (DIMAP with JP2/TIFF tiles, GeoTIFF pairs) through the chain."""

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window

from chain import config
from chain.catalog import build_catalog
from chain.demo import generate
from chain.errors import InputError
from chain.features import compute_features, feature_spec
from chain.runner import run_pipeline
from tests.conftest import TINY, tiny_config

SPOT_ONLY = {"s2": None, "spot": {"path": "scene/spot"}}


@pytest.fixture(scope="module")
def spot_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("spot")
    return {layout: generate(root / layout, **{**TINY, "n_dates": 3}, spot=layout) for layout in ("dimap_jp2", "geotiff")}


def _cfg(scene, folder, **sections):
    return config.load(tiny_config(scene, folder, inputs=SPOT_ONLY, **sections))


def test_dimap_and_geotiff_pairs_give_the_same_features(spot_scenes, tmp_path):
    cats = {}
    for layout, scene in spot_scenes.items():
        cfg = _cfg(scene, tmp_path / layout)
        cat = build_catalog(cfg)
        assert cat.source("spot").ratio == 4 and cat.source("spot").pan_res == 1.5 and cat.source("spot").ms_res == 6.0
        assert cat.grid.res == (6.0, 6.0)  # SPOT alone: mapped at the MS resolution
        assert max(abs(v) for v in cat.source("spot").shift_m) < 0.6  # the demo pair is co-registered
        assert set(cat.source("spot").stats) == {"pan", "blue", "green", "red", "nir"}
        assert cat.source("spot").stats["nir"]["mean"] > cat.source("spot").stats["red"]["mean"]  # vegetated scene, bands in order
        cats[layout] = (cfg, cat)
    if "dimap_jp2" in cats:
        assert cats["dimap_jp2"][1].source("spot").pan.endswith(".XML")
    w = Window(0, 0, 48, 48)
    blocks = [compute_features(cat, feature_spec(cfg, cat), w) for cfg, cat in cats.values()]
    np.testing.assert_array_equal(blocks[0].values, blocks[1].values)
    assert feature_spec(*cats["geotiff"]).names == ["spot_blue", "spot_green", "spot_red", "spot_nir", "spot_ndvi",
                                                    "pan_mean", "pan_std", "pan_grad"]


def test_pan_texture_separates_classes_that_spectra_confuse(spot_scenes, tmp_path):
    scene = spot_scenes["geotiff"]
    cfg = _cfg(scene, tmp_path / "tex", grid={"resolution_m": 6, "crs": "EPSG:32740"})
    cat = build_catalog(cfg)
    block = compute_features(cat, feature_spec(cfg, cat), Window(0, 0, cat.grid.width, cat.grid.height))
    names = feature_spec(cfg, cat).names
    with rasterio.open(scene / "truth.tif") as src:
        truth = src.read(1, out_shape=(cat.grid.height, cat.grid.width), resampling=rasterio.enums.Resampling.mode)
    std = block.values[names.index("pan_std")]
    per = {c: float(np.nanmedian(std[truth == c])) for c in np.unique(truth) if (truth == c).sum() > 20}
    # roofs and streets, rows and beds, crowns: textured; water and pasture: smooth
    for rough in (set(per) & {1, 3, 4, 5}):
        for smooth in (set(per) & {2, 6}):
            assert per[rough] > 2 * per[smooth], per


def test_chain_runs_on_spot_alone(spot_scenes, tmp_path):
    cfg = _cfg(spot_scenes["dimap_jp2"], tmp_path / "run")
    run_pipeline(cfg)
    final = cfg.workdir / "final"
    with rasterio.open(final / "Classif_Seed_0.tif") as src:
        assert src.res == (6.0, 6.0)
        assert src.read(1).max() > 0
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["summary"]["oa"]["mean"] > 0.5  # one date, 20 trees, ~20 training polygons: chance is ~0.2


def _shift_ms_content(src_path: Path, dst_path: Path, cols: int) -> None:
    with rasterio.open(src_path) as src:
        prof, data = src.profile, src.read()
    with rasterio.open(dst_path, "w", **prof) as dst:
        dst.write(np.roll(data, cols, axis=2))


def _pair_paths(scene):
    return next((scene / "spot").glob("*_PAN.tif")), next((scene / "spot").glob("*_MS.tif"))


def test_shift_between_pan_and_ms_is_measured_and_reported(spot_scenes, tmp_path, caplog):
    pan, ms = _pair_paths(spot_scenes["geotiff"])
    shifted = tmp_path / "ms_shifted.tif"
    _shift_ms_content(ms, shifted, 2)  # content moved 2 MS pixels east, header unchanged
    cfg = config.load(tiny_config(spot_scenes["geotiff"], tmp_path / "s",
                                  inputs={"s2": None, "spot": {"pan": str(pan), "ms": str(shifted)}}))
    cat = build_catalog(cfg)
    assert cat.source("spot").shift_m[0] == pytest.approx(12.0, abs=1.5) and abs(cat.source("spot").shift_m[1]) < 1.5
    assert "check the co-registration" in caplog.text


def _rewrite(src_path: Path, dst_path: Path, **changes) -> None:
    with rasterio.open(src_path) as src:
        prof, data = {**src.profile, **changes}, src.read()
    with rasterio.open(dst_path, "w", **prof) as dst:
        dst.write(data)


def test_bad_pairs_give_clear_errors(spot_scenes, tmp_path):
    scene = spot_scenes["geotiff"]
    pan, ms = _pair_paths(scene)

    def catalog(p, m):
        return build_catalog(config.load(tiny_config(scene, tmp_path / "bad", inputs={"s2": None, "spot": {"pan": str(p), "ms": str(m)}})))

    with rasterio.open(ms) as src:
        t = src.transform
    far = tmp_path / "ms_far.tif"
    _rewrite(ms, far, transform=Affine(t.a, 0, t.c + 50000, 0, t.e, t.f))
    with pytest.raises(InputError, match="do not overlap"):
        catalog(pan, far)
    other_crs = tmp_path / "ms_crs.tif"
    _rewrite(ms, other_crs, crs="EPSG:32739")
    with pytest.raises(InputError, match="different CRS"):
        catalog(pan, other_crs)
    odd = tmp_path / "ms_odd.tif"
    _rewrite(ms, odd, transform=Affine(5.0, 0, t.c, 0, -5.0, t.f))
    with pytest.raises(InputError, match="not an integer multiple"):
        catalog(pan, odd)
    with pytest.raises(InputError, match="has 4 bands"):
        catalog(ms, ms)


def test_unreadable_jp2_tile_is_named(spot_scenes, tmp_path):
    scene = tmp_path / "broken"
    shutil.copytree(spot_scenes["dimap_jp2"], scene)
    tile = sorted(scene.rglob("IMG_SPOT6_MS_*_R1C1.JP2"))[0]
    tile.write_bytes(tile.read_bytes()[:200])  # truncated download
    with pytest.raises(InputError, match="SPOT MS .*cannot be read"):
        build_catalog(config.load(tiny_config(scene, tmp_path / "c", inputs=SPOT_ONLY)))


def test_aoi_sets_the_grid_and_masks_outside(tiny_scene, tmp_path):
    with rasterio.open(tiny_scene / "truth.tif") as src:
        b = src.bounds
    # a triangle over the scene, in WGS84
    tri = shapely.Polygon([(b.left + 20, b.bottom + 20), (b.right - 20, b.bottom + 20), (b.left + 20, b.top - 100)])
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[tri], crs="EPSG:32740").to_crs(4326).to_file(aoi, driver="GeoJSON")
    cfg = config.load(tiny_config(tiny_scene, tmp_path / "a", grid={"aoi": str(aoi), "tile_size_px": 32}))
    cat = build_catalog(cfg)
    left, bo, r, t = cat.grid.bounds
    assert left <= b.left + 20 + 10 and r >= b.right - 30 and t >= b.top - 110 and t < b.top - 50
    block = compute_features(cat, feature_spec(cfg, cat), Window(0, 0, cat.grid.width, cat.grid.height))
    inside = block.n_valid > 0
    # about half of the bounding box is inside the triangle, and the upper right corner is out
    assert 0.35 < inside.mean() < 0.6 and not inside[0, -1] and inside[-3, 3]


def test_product_outside_the_area_is_refused(tiny_scene, tmp_path):
    with rasterio.open(tiny_scene / "truth.tif") as src:
        b = src.bounds
    cfg = config.load(tiny_config(tiny_scene, tmp_path / "o", grid={"crs": "EPSG:32740", "resolution_m": 10,
                                                                   "bounds": [b.right + 1000, b.bottom, b.right + 2000, b.top]}))
    with pytest.raises(InputError, match="lies outside the area mapped"):
        build_catalog(cfg)
