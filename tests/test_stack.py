"""The generic feature-stack input: multi-band rasters with named bands, alone or beside the series."""

import datetime as dt
import json

import numpy as np
import pytest
import rasterio

from chain import config
from chain.runner import run_pipeline


def _write_stack(scene, path, dates, bands, descriptions=True, nodata_corner=False):
    arrays, names = [], []
    for d in dates:
        for b in bands:
            f = next((scene / "s2" / d).glob(f"*_{b}.tif"))
            with rasterio.open(f) as src:
                profile = src.profile
                arrays.append(src.read(1).astype(np.float32) / 10000)
            names.append(f"{b}_{d}")
    data = np.stack(arrays)
    if nodata_corner:
        data[:, :5, :5] = -9999
    profile.update(count=len(arrays), dtype="float32", nodata=-9999)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, n in enumerate(names, 1):
                dst.set_band_description(i, n)
    return names


@pytest.fixture
def stack_case(make_config):
    path = make_config("stack")
    scene = path.parent / "scene"
    dates = sorted(p.name for p in (scene / "s2").iterdir())
    (scene / "stack").mkdir()
    n1 = _write_stack(scene, scene / "stack" / "part1.tif", dates[:4], ["B2", "B4", "B8"], nodata_corner=True)
    n2 = _write_stack(scene, scene / "stack" / "part2.tif", dates[4:], ["B2", "B4", "B8"])
    return path, scene, n1, n2


def test_stack_alone_goes_through_the_whole_chain(stack_case):
    path, scene, n1, n2 = stack_case
    cfg = config.load(path, ["inputs.s2=null", "inputs.stack.path=scene/stack"])
    run_pipeline(cfg)
    spec = json.loads((cfg.workdir / "features" / "features.json").read_text())
    assert spec["names"] == [f"part1_{n}" for n in n1] + [f"part2_{n}" for n in n2]
    final = cfg.workdir / "final"
    with rasterio.open(final / "Classif_Seed_0.tif") as src:
        cls = src.read(1)
    assert (cls[:5, :5] == 0).all() and (cls[5:, 5:] > 0).all()  # nodata in the stack -> nodata in the map
    with rasterio.open(final / "PixelsValidity.tif") as src:
        v = src.read(1)
    assert v[0, 0] == 1 and v[20, 20] == 2  # valid stack files per pixel
    assert json.loads((final / "metrics.json").read_text())["summary"]["oa"]["mean"] > 0.5


def test_stack_beside_the_series_appends_its_bands(stack_case):
    path, *_ = stack_case
    cfg = config.load(path, ["inputs.stack.path=scene/stack/part2.tif"])
    run_pipeline(cfg, to_step="features")
    spec = json.loads((cfg.workdir / "features" / "features.json").read_text())
    stack = spec["groups"][-1]
    assert stack["source"] == "stack" and stack["names"] and spec["names"][-len(stack["names"]):] == stack["names"]
    assert len(spec["names"]) > len(stack["names"]) + 10


def test_stack_band_names_from_config_and_errors(stack_case):
    from chain.catalog import build_catalog
    from chain.errors import ConfigError, InputError

    path, scene, n1, _ = stack_case
    names = [f"f{i}" for i in range(len(n1))]
    cfg = config.load(path, ["inputs.s2=null", "inputs.stack.path=scene/stack/part1.tif", f"inputs.stack.bands={names}"])
    assert build_catalog(cfg).source("stack").stack[0].names == tuple(names)
    cfg = config.load(path, ["inputs.s2=null", "inputs.stack.path=scene/stack/part1.tif", "inputs.stack.bands=[a, b]"])
    with pytest.raises(InputError, match="has 12 band"):
        build_catalog(cfg)
    with pytest.raises(ConfigError, match="at least one image input"):
        config.load(path, ["inputs.s2=null"])


def _rewrite(src_path, dst_path, **creation):
    with rasterio.open(src_path) as src:
        profile, data, names = src.profile, src.read(), src.descriptions
    profile.pop("compress", None)  # uncompressed
    profile.update(**creation)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
        for i, n in enumerate(names, 1):
            dst.set_band_description(i, n)


def test_uncompressed_pixel_interleaved_stack_is_read_pixel_major_and_maps_the_same(stack_case, tmp_path):
    from rasterio.windows import Window

    from chain import raster
    from chain.grid import GridSpec

    path, scene, *_ = stack_case
    raw = scene / "raw"
    raw.mkdir()
    for part in ("part1", "part2"):  # same values, the layout of the reference workload (docs/performance.md)
        _rewrite(scene / "stack" / f"{part}.tif", raw / f"{part}.tif", interleave="pixel",
                 tiled=True, blockxsize=32, blockysize=32)
    with rasterio.open(raw / "part1.tif") as src, rasterio.open(scene / "stack" / "part1.tif") as packed:
        assert raster.pixel_interleaved_raw(src) and not raster.pixel_interleaved_raw(packed)
        grid = GridSpec(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height)
        w = Window(7, 5, 40, 33)
        fast = raster.read_on_grid(raw / "part1.tif", grid, w, band=list(range(1, src.count + 1)))
        assert raster.pixel_major(fast) is not None  # (bands, h, w) view of pixel-major memory
        np.testing.assert_array_equal(fast, packed.read(window=w))
    maps = []
    for folder in ("stack", "raw"):
        cfg = config.load(path, ["inputs.s2=null", f"inputs.stack.path=scene/{folder}", f"workdir=work_{folder}"])
        run_pipeline(cfg)
        assert (cfg.workdir / "train" / "run_0" / "forest.npz").exists()  # what classify workers load
        with rasterio.open(cfg.workdir / "final" / "Classif_Seed_0.tif") as src:
            maps.append(src.read(1))
    assert (maps[0][:5, :5] == 0).all()  # the nodata corner, found in either layout
    np.testing.assert_array_equal(maps[0], maps[1])


def _ndvi_stack(scene, path, descriptions=True, cloudy_everywhere=2):
    """An NDVI series as users bring it: one band per date, -9999 on cloudy pixels (from the masks), and
    ``cloudy_everywhere`` dates fully cloudy; band descriptions YYYYMMDD when ``descriptions``."""
    folders = sorted((scene / "s2").iterdir())
    bands, names = [], []
    for i, folder in enumerate(folders):
        read = {}
        for b in ("B4", "B8", "MASK"):
            with rasterio.open(next(folder.glob(f"*_{b}.tif"))) as src:
                read[b], profile = src.read(1).astype(np.float32), src.profile
        ndvi = (read["B8"] - read["B4"]) / np.maximum(read["B8"] + read["B4"], 1)
        ndvi[read["MASK"] != 0] = -9999
        if i < cloudy_everywhere:
            ndvi[:] = -9999
        bands.append(ndvi)
        names.append(folder.name)
    profile.update(count=len(bands), dtype="float32", nodata=-9999)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack(bands))
        if descriptions:
            for i, n in enumerate(names, 1):
                dst.set_band_description(i, n)
    return [dt.date(int(n[:4]), int(n[4:6]), int(n[6:])) for n in names]


def test_a_dated_ndvi_stack_is_gap_filled_like_a_series(make_config):
    """Bands = dates with cloudy no-data: gap-filled onto the gapfill grid and mapped (a plain stack would drop
    every pixel, since two dates are fully cloudy)."""
    from chain.catalog import build_catalog
    from chain.errors import InputError

    path = make_config("ndvi")
    scene = path.parent / "scene"
    dates = _ndvi_stack(scene, scene / "NDVI.tif")
    cfg = config.load(path, ["inputs.s2=null", "inputs.stack.path=scene/NDVI.tif"])
    assert build_catalog(cfg).source("stack").dates == tuple(dates)
    run_pipeline(cfg)
    spec = json.loads((cfg.workdir / "features" / "features.json").read_text())
    grid = json.loads((cfg.workdir / "gapfill" / "dates.json").read_text())["stack"]["STACK"]["output"]
    assert spec["names"] == [f"NDVI_{d.replace('-', '')}" for d in grid] and len(grid) > 3
    with rasterio.open(cfg.workdir / "final" / "Classif_Seed_0.tif") as src:
        assert (src.read(1) > 0).mean() > 0.95  # every pixel with a clear date is mapped
    assert json.loads((cfg.workdir / "final" / "metrics.json").read_text())["summary"]["oa"]["mean"] > 0.4

    # the same file without dates: every pixel has a no-data band; validate says so and how to fix it
    undated = scene / "NDVI_undated.tif"
    _ndvi_stack(scene, undated, descriptions=False)
    cfg = config.load(path, ["inputs.s2=null", f"inputs.stack.path={undated}"])
    with pytest.raises(InputError, match="inputs.stack.dates"):
        build_catalog(cfg)
    # dates given in the config instead
    cfg = config.load(path, ["inputs.s2=null", f"inputs.stack.path={undated}", f"inputs.stack.dates={[d.isoformat() for d in dates]}"])
    assert build_catalog(cfg).source("stack").dates == tuple(dates)
    cfg = config.load(path, ["inputs.s2=null", f"inputs.stack.path={undated}", "inputs.stack.dates=[2021-01-01]"])
    with pytest.raises(InputError, match="one date per band"):
        build_catalog(cfg)
