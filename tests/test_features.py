import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from chain import config
from chain.catalog import build_catalog
from chain.features import compute_features, feature_spec
from chain.raster import read_on_grid


@pytest.fixture
def cat_spec(make_config):
    cfg = config.load(make_config())
    cat = build_catalog(cfg)
    return cfg, cat, feature_spec(cfg, cat)


def test_grid_is_the_10m_band_grid_and_20m_bands_are_warped_onto_it(cat_spec):
    _, cat, _ = cat_spec
    assert cat.grid.res == (10.0, 10.0) and (cat.grid.width, cat.grid.height) == (64, 64)
    b11 = cat.source("s2").acquisitions[0].bands["B11"]
    with rasterio.open(b11) as src:
        assert src.res == (20.0, 20.0)
        native = src.read(1)
    on_grid = read_on_grid(b11, cat.grid, Window(0, 0, 64, 64), Resampling.nearest)
    np.testing.assert_array_equal(on_grid, np.repeat(np.repeat(native, 2, axis=0), 2, axis=1))


def test_features_do_not_depend_on_the_window_they_are_computed_in(cat_spec):
    """Sampling and classification read different windows: a pixel must get the same features."""
    _, cat, spec = cat_spec
    whole = compute_features(cat, spec, Window(0, 0, 64, 64))
    part = compute_features(cat, spec, Window(16, 8, 24, 40))
    np.testing.assert_array_equal(part.values, whole.values[:, 8:48, 16:40])
    np.testing.assert_array_equal(part.n_valid, whole.n_valid[8:48, 16:40])
    assert whole.values.shape[0] == len(spec.names)


def test_indices_are_computed_on_gap_filled_reflectance(cat_spec):
    _, cat, spec = cat_spec
    block = compute_features(cat, spec, Window(0, 0, 64, 64))
    names = spec.names
    d = spec.of_source("s2")[0][1].dates[1].strftime("%Y%m%d")
    b4, b8 = block.values[names.index(f"B4_{d}")], block.values[names.index(f"B8_{d}")]
    ndvi = block.values[names.index(f"NDVI_{d}")]
    ok = block.valid
    np.testing.assert_allclose(ndvi[ok], ((b8 - b4) / (b8 + b4))[ok], rtol=1e-5, atol=1e-6)
    assert 0 < np.nanmax(b8) < 1.6  # reflectance, not raw digital numbers


def test_clouds_and_nodata_are_invalid(cat_spec):
    _, cat, _ = cat_spec
    s2 = cat.source("s2")
    raw, valid = s2.read_series(cat.grid, Window(0, 0, 64, 64))
    for t, acq in enumerate(s2.acquisitions):
        with rasterio.open(acq.mask) as src:
            cloudy = src.read(1) != 0
        assert not valid[t][cloudy].any()
        assert not valid[t][(raw[t] == -10000).any(axis=0)].any()
    assert valid.mean() > 0.3


def test_dates_outside_the_range_are_skipped_with_a_warning(make_config, caplog):
    cfg = config.load(make_config())
    all_dates = build_catalog(cfg).source("s2").dates
    start = all_dates[3]
    cfg = config.load(make_config("range", gapfill={"start": str(start), "interval_days": 1}))
    with caplog.at_level("WARNING"):
        cat = build_catalog(cfg)
    dates = cat.source("s2").dates
    assert dates[0] >= all_dates[2] and len(dates) < len(all_dates)
    assert "outside gapfill.start/end" in caplog.text


@pytest.fixture
def first_tile(cat_spec):
    """The demo scene's catalogue, feature spec, reference polygons and first 64² tile."""
    from chain.grid import make_tiles
    from chain.vector import read_reference

    cfg, cat, spec = cat_spec
    return cat, spec, read_reference(cfg.inputs.reference, cat.grid), make_tiles(cat.grid, 64)[0]


def test_samples_need_enough_clear_dates(first_tile):
    from chain.sampling import extract_tile

    cat, spec, polys, tile = first_tile
    loose = extract_tile(cat, spec, polys, tile, None, 0, 1)
    strict = extract_tile(cat, spec, polys, tile, None, 0, 7)
    assert len(strict.code) < len(loose.code)
    assert strict.n_valid.min() >= 7 and loose.n_valid.min() >= 1


def test_samples_hold_the_features_of_their_pixels(first_tile):
    from chain.sampling import extract_tile, pixel_rows

    cat, spec, polys, tile = first_tile
    s = extract_tile(cat, spec, polys, tile, None, 0, 1)
    values = compute_features(cat, spec, tile.window).values
    r, c = s.row - int(tile.window.row_off), s.col - int(tile.window.col_off)
    assert len(s.code) > 100 and s.X.dtype == np.float32 and s.X.flags.c_contiguous
    np.testing.assert_array_equal(s.X, values[:, r, c].T)
    # a window that is not square, NaN features, every pixel in any order
    rng = np.random.default_rng(3)
    v = rng.normal(size=(5, 7, 11)).astype(np.float32)
    v[2, 3, 4] = np.nan
    rr, cc = rng.integers(0, 7, 40), rng.integers(0, 11, 40)
    np.testing.assert_array_equal(pixel_rows(v, rr, cc), v[:, rr, cc].T)
