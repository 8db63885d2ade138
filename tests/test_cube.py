"""The Zarr feature cube (features.cache: zarr): readable by xarray as documented, the same values as the features
computed on the fly, the same map, read instead of recomputed, resumable per tile, and switching it re-runs no model."""

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from chain import config
from chain.runner import run_pipeline

xr = pytest.importorskip("xarray")


def _map(cfg):
    with rasterio.open(cfg.workdir / "final" / "Classif_Seed_0.tif") as src:
        return src.read(1)


def _actions(reports):
    return {r.step: r.action for r in reports}


def test_cube_gives_the_same_map_reads_no_series_again_and_opens_in_xarray(make_config, monkeypatch):
    from chain import products
    from chain.catalog import Catalog
    from chain.features import compute_features
    from chain.runner import Context
    from chain.sources import optical

    plain = config.load(make_config("plain", split={"runs": 2}))
    run_pipeline(plain)
    cfg = config.load(make_config("cached", split={"runs": 2}, features={"cache": "zarr"}))
    run_pipeline(cfg, to_step="cube")

    # the cube as xarray users see it: named dimensions, dates, channel names, CRS and transform
    store = cfg.workdir / "features" / "cube.zarr"
    s2 = xr.open_zarr(store, group="S2", consolidated=False)
    da = s2["features"]
    assert da.dims == ("band", "date", "y", "x")
    assert list(da["band"].values[:3]) == ["B2", "B3", "B4"] and "NDVI" in list(da["band"].values)
    assert np.issubdtype(da["date"].dtype, np.datetime64)
    assert da.attrs["grid_mapping"] == "spatial_ref" and "PROJCS" in s2["spatial_ref"].attrs["crs_wkt"] or \
        "PROJCRS" in s2["spatial_ref"].attrs["crs_wkt"]
    cat = Catalog.from_dict(__import__("json").loads((cfg.workdir / "ingest" / "catalog.json").read_text()))
    gt = [float(v) for v in s2["spatial_ref"].attrs["GeoTransform"].split()]
    assert gt == [cat.grid.affine.c, cat.grid.affine.a, 0.0, cat.grid.affine.f, 0.0, cat.grid.affine.e]
    assert da.chunks is not None and da.chunks[2][0] == 32  # chunks = the grid's tiles

    # the same values as computed on the fly, across tile borders
    ctx = Context(cfg, cfg.workdir)
    spec = products.spec(ctx)
    win = Window(20, 10, 30, 40)
    fresh = compute_features(cat, spec, win)
    got = da.isel(y=slice(10, 50), x=slice(20, 50)).values.reshape(-1, 40, 30)
    np.testing.assert_array_equal(got, fresh.values[: got.shape[0]])
    root = xr.open_zarr(store, consolidated=False)
    np.testing.assert_array_equal(root["n_valid"].isel(y=slice(10, 50), x=slice(20, 50)).values, fresh.n_valid)

    # the steps after the cube read it: no series read again
    reads = []
    real = optical.OpticalSeries.read

    def counting(self, *a, **k):
        reads.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(optical.OpticalSeries, "read", counting)
    run_pipeline(cfg)
    assert reads == []
    np.testing.assert_array_equal(_map(cfg), _map(plain))


def test_switching_the_cache_reruns_only_the_cube_and_a_damaged_chunk_is_recomputed(make_config):
    path = make_config("switch")
    cfg = config.load(path)
    run_pipeline(cfg)
    before = _map(cfg)
    on = config.load(path, overrides=["features.cache=zarr"])
    acts = _actions(run_pipeline(on))
    assert acts["cube"] == "ran" and {a for s, a in acts.items() if s != "cube"} <= {"skipped", "off"}, acts
    # a chunk file truncated: the next run notices, recomputes that tile of the cube, and nothing else
    store = cfg.workdir / "features" / "cube.zarr"
    chunk = sorted(p for p in (store / "S2" / "features").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    chunk.write_bytes(chunk.read_bytes()[:10])
    acts = _actions(run_pipeline(on))
    assert acts["cube"] == "ran" and chunk.stat().st_size > 10
    np.testing.assert_array_equal(_map(cfg), before)
    s2 = xr.open_zarr(store, group="S2", consolidated=False)
    assert np.isfinite(s2["features"].values).any()
