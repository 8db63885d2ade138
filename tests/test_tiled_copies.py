"""Tiled copies of inputs slow to read tile by tile: which files, lossless copies, the same maps, resume."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from chain import config, tiled_copies
from chain.grid import GridSpec
from chain.runner import run_pipeline
from tests.conftest import tiny_config

CRS = "EPSG:32740"


def _write(path: Path, shape: tuple[int, int], res: float, count: int = 1, dtype: str = "int16", **layout: object) -> np.ndarray:
    rng = np.random.default_rng(len(path.name))
    data = rng.integers(-50, 3000, (count, *shape)).astype(dtype)
    profile = {"driver": "GTiff", "width": shape[1], "height": shape[0], "count": count, "dtype": dtype, "crs": CRS,
               "transform": from_origin(300000, 7600000, res, res), "nodata": -10000, **layout}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return data


def _vrt_side_by_side(src: Path, dst: Path) -> Path:
    """A VRT mosaic of ``src`` twice, side by side (as a user mosaics neighbouring files)."""
    with rasterio.open(src) as ds:
        w, h, t, wkt = ds.width, ds.height, ds.transform, ds.crs.to_wkt()
    sources = "".join(f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename><SourceBand>1</SourceBand>'
                      f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/><DstRect xOff="{x}" yOff="0" xSize="{w}" ySize="{h}"/>'
                      "</SimpleSource>" for x in (0, w))
    dst.write_text(f'<VRTDataset rasterXSize="{2 * w}" rasterYSize="{h}"><SRS>{wkt}</SRS><GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, '
                   f'{t.e}</GeoTransform><VRTRasterBand dataType="Int16" band="1"><NoDataValue>-10000</NoDataValue>{sources}'
                   "</VRTRasterBand></VRTDataset>")
    return dst


def _grid(res: float, width: int, height: int) -> GridSpec:
    return GridSpec(rasterio.crs.CRS.from_string(CRS).to_wkt(), (res, 0.0, 300000.0, 0.0, -res, 7600000.0), width, height)


def test_files_whose_tile_reads_decode_many_more_pixels_are_the_ones_copied(tmp_path: Path) -> None:
    grid = _grid(10.0, 2048, 64)
    strips = tmp_path / "strips.tif"
    _write(strips, (64, 2048), 10.0, compress="deflate")  # GDAL's default layout: strips as wide as the image
    tiled = tmp_path / "tiled.tif"
    _write(tiled, (64, 2048), 10.0, compress="deflate", tiled=True, blockxsize=256, blockysize=256)
    narrow = tmp_path / "narrow.tif"  # strips no wider than a tile: a tile reads what it needs
    _write(narrow, (64, 500), 10.0, compress="deflate")
    coarse = tmp_path / "coarse20m.tif"  # a 20 m band of 1024 px: a 512 px tile of the 10 m grid reads 256 of them
    _write(coarse, (32, 1024), 20.0, compress="deflate")
    paths = [str(p) for p in (strips, tiled, narrow, coarse)]

    costs = tiled_copies.wanted(paths, grid, "auto")
    assert sorted(costs) == sorted([str(strips), str(coarse)])
    assert costs[str(strips)] == pytest.approx(4.0)
    assert costs[str(coarse)] == pytest.approx(4.0)
    assert tiled_copies.wanted(paths, grid, "never") == {}
    assert sorted(tiled_copies.wanted(paths, grid, "always")) == sorted(paths)
    # a VRT mosaic costs what its dearest source costs; its copy materialises what GDAL reads from it
    vrt_strips, vrt_tiled = _vrt_side_by_side(strips, tmp_path / "m1.vrt"), _vrt_side_by_side(tiled, tmp_path / "m2.vrt")
    assert list(tiled_copies.wanted([str(vrt_strips), str(vrt_tiled)], grid, "auto")) == [str(vrt_strips)]
    job = tiled_copies.CopyJob("v", str(vrt_strips), str(tmp_path / tiled_copies.copy_name(str(vrt_strips))))
    tiled_copies.copy_file(job)
    with rasterio.open(vrt_strips) as a, rasterio.open(job.target) as b:
        np.testing.assert_array_equal(b.read(), a.read())
        assert (b.driver, b.block_shapes[0], b.transform, b.nodata) == ("GTiff", (256, 256), a.transform, a.nodata)
    # the rule itself: a full-width Sentinel-2 strip decodes 10980/512 x a tile; JPEG 2000 tiles of 1024 px 4x
    s2 = tiled_copies.Layout(10980, 10980, (1, 10980), 10.0)
    assert tiled_copies.window_cost(s2, 10.0) == pytest.approx(10980 / 512)
    jp2 = tiled_copies.Layout(10980, 10980, (1024, 1024), 10.0)
    assert tiled_copies.window_cost(jp2, 10.0) == pytest.approx(4.0)
    cog = tiled_copies.Layout(10980, 10980, (512, 512), 10.0)
    s2_20m = tiled_copies.Layout(5490, 5490, (2, 5490), 20.0)  # a 20 m band: the tile is 256 of its pixels
    assert tiled_copies.window_cost(s2_20m, 10.0) == pytest.approx(5490 / 256)
    assert tiled_copies.window_cost(cog, 10.0) == pytest.approx(1.0)


def test_a_copy_holds_the_same_pixels_and_metadata_in_256_px_blocks(tmp_path: Path) -> None:
    src = tmp_path / "band.tif"
    data = _write(src, (300, 700), 10.0, compress="deflate")
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(PRODUCT="demo", DATE="20210105")
        ds.update_tags(1, BAND="B4")
        ds.descriptions = ("red",)
        ds.scales, ds.offsets = (0.0001,), (-0.1,)
    stack = tmp_path / "stack.tif"  # uncompressed and pixel-interleaved (read with direct I/O): stays so
    stack_data = _write(stack, (70, 90), 10.0, count=5, dtype="float32", interleave="pixel")
    for path, expected in ((src, data), (stack, stack_data)):
        job = tiled_copies.CopyJob("00000", str(path), str(tmp_path / tiled_copies.copy_name(str(path))))
        tiled_copies.copy_file(job)
        with rasterio.open(path) as a, rasterio.open(job.target) as b:
            np.testing.assert_array_equal(b.read(), expected)
            assert b.block_shapes[0] == (256, 256)
            assert (b.crs, b.transform, b.nodata, b.dtypes, b.descriptions) == (a.crs, a.transform, a.nodata, a.dtypes, a.descriptions)
            assert (b.scales, b.offsets) == (a.scales, a.offsets)
            assert {k: v for k, v in b.tags().items() if k != "AREA_OR_POINT"} == {k: v for k, v in a.tags().items() if k != "AREA_OR_POINT"}
            assert b.tags(1) == a.tags(1)
            assert b.interleaving == a.interleaving
            assert (b.compression is None) == (a.compression is None)
    assert not list(tmp_path.glob(".*tmp-*")), "no temporary file left behind"
    # another version of the same file gets another name: a changed input is copied again, never mixed up
    first = tiled_copies.copy_name(str(src))
    _write(src, (300, 701), 10.0)
    assert tiled_copies.copy_name(str(src)) != first


def test_a_copy_coarser_than_the_grid_has_small_blocks_and_tiles_read_the_same_from_it(tmp_path: Path) -> None:
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from chain.raster import read_on_grid

    grid = _grid(10.0, 1024, 768)
    coarse = tmp_path / "b11_20m.tif"  # read bilinearly with a halo of one 20 m pixel: small blocks decode less of it
    _write(coarse, (384, 512), 20.0, compress="deflate")
    fine = tmp_path / "b4_10m.tif"
    _write(fine, (768, 1024), 10.0, compress="deflate")
    for path, block in ((coarse, tiled_copies.HALO_BLOCK), (fine, tiled_copies.BLOCK)):
        job = tiled_copies.CopyJob("00000", str(path), str(tmp_path / tiled_copies.copy_name(str(path))), grid)
        tiled_copies.copy_file(job)
        with rasterio.open(job.target) as b:
            assert b.block_shapes[0] == (block, block)
        for window in (Window(0, 0, 512, 512), Window(512, 256, 512, 512), Window(300, 100, 200, 300)):
            for resampling in (Resampling.bilinear, Resampling.nearest):
                np.testing.assert_array_equal(read_on_grid(job.target, grid, window, resampling),
                                              read_on_grid(path, grid, window, resampling))


def _map_hashes(work: Path) -> dict[str, str]:
    out = {}
    for f in sorted((work / "final").glob("*.tif")):
        with rasterio.open(f) as ds:
            out[f.name] = hashlib.sha1(ds.read().tobytes()).hexdigest()
    return out


def test_the_chain_reading_tiled_copies_makes_the_same_maps_and_recopies_a_lost_copy(
        tiny_scene: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    in_place = config.load(tiny_config(tiny_scene, tmp_path / "in_place", inputs={"tiled_copies": "never"}))
    run_pipeline(in_place)
    assert not list((in_place.workdir / "ingest" / "tiled").iterdir())
    assert "tiled_copies" not in json.loads((in_place.workdir / "ingest" / "catalog.json").read_text())

    path = tiny_config(tiny_scene, tmp_path / "copies", inputs={"tiled_copies": "always"})
    copied = config.load(path)
    run_pipeline(copied)
    catalog = json.loads((copied.workdir / "ingest" / "catalog.json").read_text())
    copies = sorted((copied.workdir / "ingest" / "tiled").glob("*.tif"))
    assert len(copies) == len(catalog["tiled_copies"]) > 20  # every band and mask of every date
    text = json.dumps(catalog["sources"])
    assert all(orig not in text for orig in catalog["tiled_copies"].values()), "the readers open the copies only"
    maps = _map_hashes(copied.workdir)
    assert maps and maps == _map_hashes(in_place.workdir)

    lost, kept = copies[0], copies[1]
    kept_mtime = kept.stat().st_mtime_ns
    lost.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        reports = run_pipeline(config.load(path))
    ran = {r.step for r in reports if r.action == "ran"}
    assert "ingest" in ran and "classify" not in ran and "train" not in ran  # the same catalogue: nothing after re-runs
    assert lost.exists() and kept.stat().st_mtime_ns == kept_mtime  # only the lost copy written again
    assert any("1 tiled copies written" in r.getMessage() for r in caplog.records)
    assert _map_hashes(copied.workdir) == maps


def test_no_room_for_the_copies_is_a_clear_error_before_any_is_written(tiny_scene: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from chain.errors import ChainError, ConfigError
    from chain.runner import check

    band = tmp_path / "strips.tif"
    _write(band, (64, 2048), 10.0, compress="deflate")
    cat = SimpleNamespace(files=lambda: [str(band)], grid=_grid(10.0, 2048, 64))
    monkeypatch.setattr(tiled_copies.shutil, "disk_usage", lambda p: SimpleNamespace(free=1000))
    with pytest.raises(ConfigError, match="inputs.tiled_copies: never"):
        tiled_copies.make_copies(None, cat, "auto", tmp_path / "tiled")  # type: ignore[arg-type]
    assert not (tmp_path / "tiled").exists()
    # chain validate says it too, before anything runs
    cfg = config.load(tiny_config(tiny_scene, tmp_path / "validate", inputs={"tiled_copies": "always"}))
    with pytest.raises(ChainError, match="GiB are free there"):
        check(cfg)
    assert not (cfg.workdir / "ingest").exists()
