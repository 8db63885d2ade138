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
@pytest.mark.parametrize("holes", [0.1, 0.0])
def test_compiled_bilinear_equals_the_numpy_rule(tmp_path, monkeypatch, dtype, k, holes):
    """The numba up-sampling of lattice reads gives the numpy branch's values bit for bit (nodata included; without
    nodata under a window, the kernel's shorter path for every source pixel valid)."""
    import chain.raster as raster

    rng = np.random.default_rng(k)
    grid = GridSpec.from_bounds(CRS.from_epsg(32740), (0, 0, 700, 500), 10)
    arr = (rng.random((30, 40)) * 5000).astype(dtype)
    arr[rng.random(arr.shape) < holes] = -10000
    path = _raster(tmp_path / "b.tif", arr, Affine(10 * k, 0, 30, 0, -10 * k, 520), -10000)
    wins = (Window(0, 0, 70, 50), Window(13, 7, 31, 29))  # the second lies inside the source: all valid without holes
    compiled = [read_on_grid(path, grid, w, Resampling.bilinear, nodata=-10000) for w in wins]
    monkeypatch.setattr(raster, "_bilinear_kernel", None)
    for w, mine in zip(wins, compiled, strict=True):
        ref = read_on_grid(path, grid, w, Resampling.bilinear, nodata=-10000)
        assert mine.dtype == ref.dtype and (ref == -10000).any() == (holes > 0 or w.col_off == 0)
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


def test_read_files_stay_open_per_thread_until_they_change(tmp_path, monkeypatch):
    """``read_on_grid`` keeps a file open for the thread's next read; a rewritten file is opened again (its new
    values read), the least recently used files are closed beyond the bound (for the whole process: a thread
    finding every slot taken keeps nothing open), and a failed read keeps nothing."""
    import os
    import threading

    from chain import raster
    from chain.errors import InputError

    grid = GridSpec(CRS.from_epsg(32631).to_wkt(), (10, 0, 500000, 0, -10, 4000000), 8, 8)
    real_open = rasterio.open

    def write(path, value, mtime=None):
        with real_open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="int16", crs=grid.crs,
                           transform=grid.affine) as dst:
            dst.write(np.full((1, 8, 8), value, np.int16))
        if mtime is not None:
            os.utime(path, ns=(mtime, mtime))

    monkeypatch.setattr(raster, "_open", threading.local())
    monkeypatch.setattr(raster, "_kept", 0)
    monkeypatch.setattr(raster, "OPEN_DATASETS", 2)
    paths = [tmp_path / f"b{i}.tif" for i in range(3)]
    for i, p in enumerate(paths):
        write(p, i + 1)
    opens = []
    monkeypatch.setattr(rasterio, "open", lambda p, *a, **k: opens.append(str(p)) or real_open(p, *a, **k))
    win = Window(0, 0, 8, 8)
    assert read_on_grid(paths[0], grid, win)[0, 0] == 1 and read_on_grid(paths[0], grid, win)[0, 0] == 1
    assert opens == [str(paths[0])]  # opened once
    write(paths[0], 7, mtime=10**18)  # rewritten: other size or time
    assert read_on_grid(paths[0], grid, win)[0, 0] == 7 and len(opens) == 2
    kept = list(raster._open.datasets.values())
    read_on_grid(paths[1], grid, win)
    read_on_grid(paths[2], grid, win)
    assert len(raster._open.datasets) == 2 and kept[-1].closed  # beyond the bound: the oldest closed
    assert raster._kept == 2
    seen = []
    worker = threading.Thread(target=lambda: seen.extend(read_on_grid(paths[1], grid, win)[0, 0] for _ in range(2)))
    n = len(opens)
    worker.start()
    worker.join()
    # another thread opens its own; both slots are the main thread's: it keeps nothing open (opens twice)
    assert seen == [2, 2] and opens[n:] == [str(paths[1])] * 2 and raster._kept == 2
    paths[2].write_bytes(paths[2].read_bytes()[:300])  # truncated: a clear error, and the file is not kept open
    with pytest.raises(InputError, match="b2.tif"):
        read_on_grid(paths[2], grid, win)
    assert all(key[0] != str(paths[2]) or key[1] != 300 for key in raster._open.datasets)
    assert raster._kept == len(raster._open.datasets)
    for src in raster._open.datasets.values():
        src.close()
    raster._open.datasets.clear()  # nothing of this test's left in the process's count
