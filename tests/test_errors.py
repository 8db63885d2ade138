"""User mistakes end with one clear message naming the file/key, a non-zero exit and no traceback."""

import geopandas as gpd
import numpy as np
import rasterio
import yaml
from click.testing import CliRunner

from chain.cli import main


def _run(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    return result.exit_code, result.output


def _assert_clean_error(code, out, exit_code, *needles):
    assert code == exit_code, out
    assert "Traceback" not in out
    assert out.strip().splitlines()[-1].startswith("error:") or "error:" in out
    for n in needles:
        assert n in out, out


def test_unknown_key_exit_2_with_hint(make_config):
    path = make_config()
    data = yaml.safe_load(path.read_text())
    data["model"]["n_estimatorz"] = 5
    path.write_text(yaml.safe_dump(data))
    _assert_clean_error(*_run("run", path), 2, "model.n_estimatorz", "did you mean 'n_estimators'", str(path))


def test_missing_input_folder(make_config):
    path = make_config(inputs={"s2": {"path": "nowhere/s2"}})
    _assert_clean_error(*_run("validate", path), 3, "inputs.s2.path", "nowhere/s2", "does not exist")


def test_missing_band_file(make_config):
    path = make_config()
    victim = sorted((path.parent / "scene" / "s2").glob("*/*_B11.tif"))[2]
    victim.unlink()
    _assert_clean_error(*_run("run", path), 3, victim.parent.name, "B11")
    assert not (path.parent / "work" / "ingest").exists()  # nothing heavy started


def test_polygons_without_class_field(make_config):
    path = make_config(inputs={"reference": {"class_field": "landcover"}})
    _assert_clean_error(*_run("run", path), 3, "'landcover'", "fields found", "code")


def test_raster_without_crs(make_config):
    path = make_config()
    victim = sorted((path.parent / "scene" / "s2").glob("*/*_B4.tif"))[0]
    with rasterio.open(victim) as src:
        data, profile = src.read(), src.profile
    profile.pop("crs")
    with rasterio.open(victim, "w", **profile) as dst:
        dst.write(data)
    _assert_clean_error(*_run("run", path), 3, str(victim), "no CRS")


def test_corrupt_raster(make_config):
    path = make_config()
    victim = sorted((path.parent / "scene" / "s2").glob("*/*_B8.tif"))[1]
    victim.write_bytes(victim.read_bytes()[:200])
    _assert_clean_error(*_run("run", path), 3, str(victim))


def test_polygons_outside_the_scene(make_config):
    path = make_config()
    ref = path.parent / "scene" / "reference.gpkg"
    gdf = gpd.read_file(ref)
    gdf.geometry = gdf.translate(xoff=200_000)
    gdf.to_file(ref, driver="GPKG")
    _assert_clean_error(*_run("run", path), 3, "do not intersect the scene", str(ref))


def test_polygons_with_non_integer_codes(make_config):
    path = make_config()
    ref = path.parent / "scene" / "reference.gpkg"
    gdf = gpd.read_file(ref)
    gdf["code"] = gdf["code"].astype(str)
    gdf.loc[0, "code"] = "forest"
    gdf.to_file(ref, driver="GPKG")
    _assert_clean_error(*_run("run", path), 3, "integer class codes", "forest")


def test_dates_out_of_range(make_config):
    path = make_config(gapfill={"start": "2030-01-01", "end": "2030-12-31"})
    _assert_clean_error(*_run("run", path), 2, "2030-01-01", "no Sentinel-2 acquisition between gapfill.start")


def test_small_class_error_before_any_heavy_work(make_config):
    path = make_config(split={"small_class": "error", "min_polygons_per_class": 50})
    _assert_clean_error(*_run("run", path), 1, "too few for scheme 30/70", "small_class: drop")
    assert not (path.parent / "work" / "gapfill").exists()


def test_invalid_polygons_are_repaired_with_a_warning(make_config, caplog):
    from shapely.geometry import Polygon

    from chain import config
    from chain.products import preflight
    from chain.runner import check

    path = make_config()
    ref = path.parent / "scene" / "reference.gpkg"
    gdf = gpd.read_file(ref)
    x0, y0, x1, y1 = gdf.geometry[0].bounds
    gdf.loc[0, "geometry"] = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])  # a bow-tie
    gdf.to_file(ref, driver="GPKG")
    with caplog.at_level("WARNING"):
        _, polys = preflight(check(config.load(path)))
    assert polys.geometry.is_valid.all()
    assert "invalid polygon(s) repaired" in caplog.text


def test_validate_reports_what_it_found(make_config):
    code, out = _run("validate", make_config())
    assert code == 0, out
    assert "config OK" in out and "64 x 64 px" in out and "8 dates" in out


def test_from_a_step_that_never_ran_is_refused(make_config):
    _assert_clean_error(*_run("run", make_config(), "--from", "train"), 4, "not up to date")
    _assert_clean_error(*_run("run", make_config("b"), "--to", "nosuchstep"), 4, "not a step")


def test_steps_listing():
    code, out = _run("steps")
    assert code == 0
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert names == ["ingest", "gapfill", "features", "carryover", "cube", "segment", "objects", "split", "sample", "train",
                     "compare_models", "classify", "mosaic", "regularize", "vectorize", "validate", "changes"]


def test_demo_command_writes_a_real_scene(tmp_path):
    code, out = _run("demo", tmp_path / "d", "--size", "40", "--dates", "4", "--fields", "12")
    assert code == 0, out
    gdf = gpd.read_file(tmp_path / "d" / "reference.gpkg")
    assert {"code", "name"} <= set(gdf.columns) and gdf.crs.to_epsg() == 32740
    dates = sorted(p.name for p in (tmp_path / "d" / "s2").iterdir())
    assert len(dates) == 4
    with rasterio.open(next((tmp_path / "d" / "s2" / dates[0]).glob("*_B11.tif"))) as src:
        assert src.res == (20.0, 20.0) and src.nodata == -10000
    with rasterio.open(tmp_path / "d" / "truth.tif") as src:
        assert set(np.unique(src.read(1))) <= set(range(1, 8))


def test_spot_and_model_input_errors_are_clean(make_config):
    path = make_config("spot", inputs={"spot": {"path": "nowhere/spot"}})
    _assert_clean_error(*_run("validate", path), 3, "inputs.spot", "nowhere/spot", "does not exist")
    path = make_config("cnn", model={"type": "multiresolcc", "epochs": 1})
    _assert_clean_error(*_run("run", path), 2, "multiresolcc", "needs a SPOT PAN + MS pair", "inputs.spot")


def test_validate_lists_every_missing_input_at_once(tmp_path):
    """configs/example.yaml copied somewhere without data: every input it names is reported in one call."""
    import shutil

    shutil.copy("configs/example.yaml", tmp_path / "example.yaml")
    code, out = _run("validate", tmp_path / "example.yaml")
    _assert_clean_error(code, out, 3, "2 problems", "inputs.s2.path", "inputs.reference.path")
    data = yaml.safe_load((tmp_path / "example.yaml").read_text())
    data["inputs"].update({k: {"path": f"nowhere/{k}"} for k in ("s1", "spot", "stack", "landsat")})
    (tmp_path / "all.yaml").write_text(yaml.safe_dump(data))
    code, out = _run("validate", tmp_path / "all.yaml")
    _assert_clean_error(code, out, 3, "6 problems", *(f"inputs.{k}" for k in ("s2", "s1", "spot", "stack", "landsat", "reference")))


def test_every_incomplete_date_folder_is_named(make_config):
    path = make_config()
    folders = sorted(p for p in (path.parent / "scene" / "s2").iterdir())
    next(folders[1].glob("*_B11.tif")).unlink()
    next(folders[4].glob("*_MASK.tif")).unlink()
    _assert_clean_error(*_run("validate", path), 3, "2 date folder(s) lack files", f"{folders[1].name}: B11",
                        f"{folders[4].name}: mask 'MASK'", "inputs.s2.mask_name")


def test_plan_prints_its_table_once(make_config):
    path = make_config()
    code, out = _run("plan", path)
    assert code == 0, out
    assert out.count("ingest") == 1 and "would run" in out and "compare_models  off" in out


def test_an_input_error_in_a_worker_process_reaches_the_user_intact(make_config):
    """A band truncated after its header fails inside a dask worker process (a real LocalCluster); the error
    must cross the process boundary as itself (rasterio's chained CPLE errors cannot be unpickled)."""
    path = make_config(cluster={"n_workers": 1, "threads_per_worker": 1, "processes": True})
    victim = sorted((path.parent / "scene" / "s2").glob("*/*_B8.tif"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    code, out = _run("run", path)
    _assert_clean_error(code, out, 3, str(victim), "truncated or corrupt", "bytes, expected")
    assert "Compute Failed" not in out and out.count("error:") == 1


def test_a_product_with_a_mislabelled_crs_is_named_before_the_grid_explodes(make_config):
    path = make_config()
    folder = sorted((path.parent / "scene" / "s2").iterdir())[2]
    for f in folder.glob("*.tif"):  # EPSG:32640 (north) for 32740 (south): 10,000 km away
        with rasterio.open(f, "r+") as dst:
            dst.crs = rasterio.crs.CRS.from_epsg(32640)
    _assert_clean_error(*_run("validate", path), 3, "far from the others", folder.name, "EPSG:32640", "mislabelled")


def test_an_absurd_grid_is_refused_with_its_size(make_config):
    path = make_config(grid={"crs": "EPSG:32740", "resolution_m": 10, "bounds": [0, 0, 1e7, 1e7], "tile_size_px": 32})
    _assert_clean_error(*_run("validate", path), 2, "1,000,000 x 1,000,000 px", "grid.bounds")
