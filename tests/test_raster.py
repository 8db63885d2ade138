"""Reading onto the grid without GDAL's warper gives exactly what the warper gives."""

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from chain.grid import GridSpec
from chain.raster import lattice_factor, read_on_grid


def _raster(path, arr, transform, nodata):
    prof = {"driver": "GTiff", "dtype": arr.dtype.name, "count": 1, "width": arr.shape[1], "height": arr.shape[0],
            "crs": CRS.from_epsg(32740), "transform": transform, "nodata": nodata}
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr, 1)
    return path


@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.nearest])
@pytest.mark.parametrize("k,shift", [(2, (0, 0)), (2, (4, -6)), (3, (3, 9)), (1, (7, -5))])
def test_lattice_reads_equal_gdal_warps(tmp_path, resampling, k, shift):
    rng = np.random.default_rng(k)
    grid = GridSpec.from_bounds(CRS.from_epsg(32740), (0, 0, 700, 500), 10)  # 70 x 50 px
    arr = rng.integers(1, 5000, (30, 40)).astype(np.int16)
    arr[:4, :6] = -10000  # a no-data corner
    arr[rng.random(arr.shape) < 0.05] = -10000
    # the source covers part of the grid, on the same lattice, shifted by whole grid pixels
    t = Affine(10 * k, 0, shift[0] * 10, 0, -10 * k, 500 + shift[1] * 10)
    path = _raster(tmp_path / "b.tif", arr, t, -10000)
    with rasterio.open(path) as src:
        assert lattice_factor(src, grid) == k
    for win in (Window(0, 0, 70, 50), Window(13, 7, 31, 29), Window(60, 40, 10, 10)):
        mine = read_on_grid(path, grid, win, resampling, nodata=-10000)
        with rasterio.open(path) as src, WarpedVRT(src, crs=grid.crs, transform=grid.affine, width=grid.width,
                                                   height=grid.height, resampling=resampling, nodata=-10000) as vrt:
            ref = vrt.read(1, window=win)
        np.testing.assert_array_equal(mine == -10000, ref == -10000)  # the same no-data pixels
        diff = np.abs(mine.astype(int) - ref.astype(int))
        # same values; with weights that are not binary fractions (k = 3) sums may round 1 unit apart
        assert diff.max() <= (0 if k in (1, 2) else 1), diff.max()
        assert (diff > 0).mean() < 0.01


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("k", [2, 3])
def test_compiled_bilinear_equals_the_numpy_rule(tmp_path, monkeypatch, dtype, k):
    """The numba up-sampling of lattice reads gives the numpy branch's values bit for bit (nodata included)."""
    import chain.raster as raster

    rng = np.random.default_rng(k)
    grid = GridSpec.from_bounds(CRS.from_epsg(32740), (0, 0, 700, 500), 10)
    arr = (rng.random((30, 40)) * 5000).astype(dtype)
    arr[rng.random(arr.shape) < 0.1] = -10000
    path = _raster(tmp_path / "b.tif", arr, Affine(10 * k, 0, 30, 0, -10 * k, 520), -10000)
    wins = (Window(0, 0, 70, 50), Window(13, 7, 31, 29))
    compiled = [read_on_grid(path, grid, w, Resampling.bilinear, nodata=-10000) for w in wins]
    monkeypatch.setattr(raster, "_bilinear_kernel", None)
    for w, mine in zip(wins, compiled, strict=True):
        ref = read_on_grid(path, grid, w, Resampling.bilinear, nodata=-10000)
        assert mine.dtype == ref.dtype and (ref == -10000).any()
        np.testing.assert_array_equal(mine, ref)


def test_sources_off_the_lattice_still_warp(tmp_path):
    grid = GridSpec.from_bounds(CRS.from_epsg(32740), (0, 0, 700, 500), 10)
    path = _raster(tmp_path / "odd.tif", np.ones((20, 20), np.int16), Affine(15, 0, 3, 0, -15, 497), None)
    with rasterio.open(path) as src:
        assert lattice_factor(src, grid) is None
    assert read_on_grid(path, grid, Window(0, 0, 70, 50), Resampling.nearest, nodata=0).shape == (50, 70)


@pytest.mark.parametrize("pixel_major_layout", [False, True])
def test_finite_everywhere_in_either_layout(pixel_major_layout):
    from chain.masks import finite_everywhere

    rng = np.random.default_rng(0)
    values = rng.normal(size=(9, 13, 11)).astype(np.float32)
    if pixel_major_layout:
        values = np.ascontiguousarray(values.transpose(1, 2, 0)).transpose(2, 0, 1)
    values[2, 1, 1], values[8, 2, 2], values[0, 3, 3], values[4, 4, 4] = np.nan, np.inf, -np.inf, -9999
    expected = np.isfinite(values).all(axis=0)
    np.testing.assert_array_equal(finite_everywhere(values), expected)
    np.testing.assert_array_equal(finite_everywhere(values, -9999), expected & (values != -9999).all(axis=0))
    assert finite_everywhere(values).sum() == 13 * 11 - 4 + 1  # -9999 is finite
