"""The catalogue of user mistakes: every bad input ends with one clear message (or a named warning), the
right exit code, no traceback, and the products of the previous run intact.

Each case starts from a copy of one finished tiny run, breaks one thing (the config, the polygons, a raster,
the environment) and runs ``chain validate`` and then ``chain run`` on it, as a user would. Cases marked
``warn`` are legal but suspicious: they pass with a warning naming what was found and what the chain does.
The second half damages each step's outputs in turn: the next run recomputes them and the map comes back
identical.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner
from conftest import tiny_config

from chain import config
from chain.cli import main
from chain.runner import run_pipeline

# the reference-without-CRS case writes such a file on purpose
pytestmark = pytest.mark.filterwarnings("ignore:'crs' was not provided")

Mutation = Callable[[Path, dict[str, Any]], list[str]]  # (case folder, config dict) -> extra CLI arguments


@dataclass
class Case:
    id: str
    mutate: Mutation
    exit: int  # 0: a warning case
    needles: tuple[str, ...]
    validate: bool = True  # chain validate can know it (else: only chain run does)
    run: bool = True  # also try chain run and check the previous products are intact
    extra: dict[str, Any] = field(default_factory=dict)


# ---- helpers that break one thing -------------------------------------------------------------------

def cfg_set(**values: Any) -> Mutation:
    """Config keys as dotted paths (``model__n_jobs`` -> model.n_jobs) written into the YAML file."""
    def mutate(folder: Path, data: dict[str, Any]) -> list[str]:
        for dotted, value in values.items():
            keys = dotted.split("__")
            node = data
            for k in keys[:-1]:
                node = node.setdefault(int(k) if k.isdigit() else k, {})
            node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
        return []
    return mutate


def cfg_drop(*dotted: str) -> Mutation:
    def mutate(folder: Path, data: dict[str, Any]) -> list[str]:
        for d in dotted:
            keys = d.split(".")
            node = data
            for k in keys[:-1]:
                node = node[k]
            node.pop(keys[-1])
        return []
    return mutate


def cli_args(*args: str) -> Mutation:
    return lambda folder, data: list(args)


def s2_files(folder: Path, pattern: str) -> list[Path]:
    return sorted((folder / "scene" / "s2").glob(pattern))


def rewrite(path: Path, data: np.ndarray | None = None, **profile: Any) -> None:
    with rasterio.open(path) as src:
        arr, prof = src.read(), src.profile
    prof.update(profile)
    if data is not None:
        arr = data
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr.astype(prof["dtype"]))


def polygons(edit: Callable[[gpd.GeoDataFrame], gpd.GeoDataFrame], driver: str = "GPKG") -> Mutation:
    def mutate(folder: Path, data: dict[str, Any]) -> list[str]:
        ref = folder / "scene" / "reference.gpkg"
        gdf = edit(gpd.read_file(ref))
        ref.unlink()
        gdf.to_file(ref, driver=driver)
        return []
    return mutate


def raw(fn: Callable[[Path], Any]) -> Mutation:
    def mutate(folder: Path, data: dict[str, Any]) -> list[str]:
        fn(folder)
        return []
    return mutate


def both(*muts: Mutation) -> Mutation:
    return lambda folder, data: [a for m in muts for a in m(folder, data)]


def _float_date(folder: Path) -> None:
    for f in s2_files(folder, "*/*_B*.tif")[:10]:  # the first date's bands, as float reflectance
        with rasterio.open(f) as src:
            arr = src.read().astype("float32") / 10000
        rewrite(f, arr, dtype="float32")


def _already_scaled(folder: Path) -> None:
    for f in s2_files(folder, "*/*_B*.tif"):
        with rasterio.open(f) as src:
            arr = src.read().astype("float32")
        arr[arr != -10000] /= 10000
        rewrite(f, arr, dtype="float32")


def _small_mask(folder: Path) -> None:
    m = s2_files(folder, "*/*_MASK.tif")[2]
    with rasterio.open(m) as src:
        arr = src.read()[:, :40, :40]
    rewrite(m, arr, width=40, height=40)


def _no_nodata_tag(folder: Path) -> None:
    for f in s2_files(folder, "*/*_B*.tif")[:10]:
        with rasterio.open(f, "r+") as dst:
            dst.nodata = None


def _crs(folder: Path, epsg: int, index: int = 0) -> None:
    for f in s2_files(folder, f"{sorted(p.name for p in (folder / 'scene' / 's2').iterdir())[index]}/*.tif"):
        with rasterio.open(f, "r+") as dst:
            dst.crs = rasterio.crs.CRS.from_epsg(epsg)


def _no_crs(folder: Path) -> None:
    f = s2_files(folder, "*/*_B4.tif")[0]
    with rasterio.open(f) as src:
        arr, prof = src.read(), src.profile
    prof.pop("crs")
    with rasterio.open(f, "w", **prof) as dst:
        dst.write(arr)


def _truncate(pattern: str, keep: int) -> Callable[[Path], None]:
    def fn(folder: Path) -> None:
        f = s2_files(folder, pattern)[1]
        f.write_bytes(f.read_bytes()[:keep])
    return fn


def _rename_date_folder(new: str) -> Callable[[Path], None]:
    def fn(folder: Path) -> None:
        first = sorted((folder / "scene" / "s2").iterdir())[0]
        first.rename(first.parent / new)
    return fn


def _duplicate_date(folder: Path) -> None:
    first = sorted((folder / "scene" / "s2").iterdir())[0]
    shutil.copytree(first, first.parent / f"copy_{first.name}")


def _extra_band_file(folder: Path) -> None:
    f = s2_files(folder, "*/*_B4.tif")[0]
    shutil.copy(f, f.parent / f"OTHER_{f.name}")


def _empty_s2(folder: Path) -> None:
    for d in (folder / "scene" / "s2").iterdir():
        shutil.rmtree(d)


def _stack_file(folder: Path) -> None:
    src = s2_files(folder, "*/*_B4.tif")[0]
    with rasterio.open(src) as s:
        arr, prof = s.read().astype("float32"), s.profile
    prof.update(count=3, dtype="float32")
    with rasterio.open(folder / "scene" / "stack.tif", "w", **prof) as dst:
        dst.write(np.concatenate([arr, arr, arr]))


def _aoi(shift: float) -> Callable[[Path], None]:
    def fn(folder: Path) -> None:
        ref = gpd.read_file(folder / "scene" / "reference.gpkg")
        gpd.GeoDataFrame(geometry=[ref.union_all().envelope], crs=ref.crs).translate(xoff=shift).to_file(folder / "aoi.gpkg")
    return fn


def _garbage(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(content)


def _first_two_codes_swapped(g: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    other = g.iloc[[0]].copy()
    other["code"] = int(g["code"].iloc[1]) if g["code"].iloc[1] != g["code"].iloc[0] else int(g["code"].iloc[0]) % 7 + 1
    import pandas as pd

    return gpd.GeoDataFrame(pd.concat([g, other], ignore_index=True), crs=g.crs)


def _duplicated(g: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    import pandas as pd

    return gpd.GeoDataFrame(pd.concat([g, g.iloc[[0, 1]]], ignore_index=True), crs=g.crs)


def _bowtie(g: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    from shapely.geometry import Polygon

    x0, y0, x1, y1 = g.geometry.iloc[0].bounds
    g = g.copy()
    g.loc[0, "geometry"] = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])
    return g


def _points(g: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    g = g.copy()
    g.loc[0, "geometry"] = g.geometry.iloc[0].centroid
    return g


def _partly_outside(g: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    import pandas as pd

    far = g.iloc[[0]].copy()
    far["geometry"] = far.translate(xoff=100_000)
    return gpd.GeoDataFrame(pd.concat([g, far], ignore_index=True), crs=g.crs)


def _code(value: Any) -> Callable[[gpd.GeoDataFrame], gpd.GeoDataFrame]:
    def edit(g: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        g = g.copy()
        g["code"] = g["code"].astype(object)
        g.loc[0, "code"] = value
        return g
    return edit


def _no_crs_polygons(folder: Path) -> None:
    ref = folder / "scene" / "reference.gpkg"
    g = gpd.read_file(ref)
    ref.unlink()
    g.set_crs(None, allow_override=True).to_file(ref, driver="GPKG")


def _hold_lock(folder: Path) -> None:
    lock = folder / "work" / ".chain" / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, b"4242", 0)
    HELD.append(fd)


HELD: list[int] = []

C = Case
CASES = [
    # ---- the config file and --set ---------------------------------------------------------------
    C("unknown-top-key", cfg_set(modle={"n_estimators": 5}), 2, ("unknown key 'modle'", "did you mean 'model'")),
    C("unknown-nested-key", cfg_set(model__n_estimatorz=5), 2, ("model.n_estimatorz", "did you mean 'n_estimators'")),
    C("unknown-model-type", cfg_set(model__type="xgboost"), 2, ("xgboost", "rf")),
    C("n-estimators-zero", cfg_set(model__n_estimators=0), 2, ("model.n_estimators", "greater than or equal to 1")),
    C("n-estimators-text", cfg_set(model__n_estimators="many"), 2, ("model.n_estimators", "'many'")),
    C("max-features-negative", cfg_set(model__max_features=-1), 2, ("model.max_features", "(0, 1]")),
    C("n-jobs-zero", cfg_set(model__n_jobs=0), 2, ("model.n_jobs", "-1 (every core)")),
    C("memory-limit-garbage", cfg_set(cluster__memory_limit="garbage"), 2, ("cluster.memory_limit", "not a memory size")),
    C("memory-limit-tiny", cfg_set(cluster__memory_limit="10MiB"), 2, ("cluster.memory_limit", "1GiB or more")),
    C("n-workers-zero", cfg_set(cluster__n_workers=0), 2, ("cluster.n_workers",)),
    C("cluster-type", cfg_set(cluster__type="kubernetes"), 2, ("cluster.type", "'local'")),
    C("tile-size-tiny", cfg_set(grid__tile_size_px=8), 2, ("grid.tile_size_px", "16")),
    C("resolution-negative", cfg_set(grid__resolution_m=-10), 2, ("grid.resolution_m",)),
    C("bounds-reversed", cfg_set(grid__bounds=[10, 10, 0, 0]), 2, ("grid", "left < right")),
    C("bounds-and-aoi", cfg_set(grid__bounds=[0, 0, 10, 10], grid__aoi="aoi.gpkg"), 2, ("'bounds' or 'aoi', not both",)),
    C("gapfill-start-after-end", cfg_set(gapfill__start="2021-12-01", gapfill__end="2021-01-01"), 2, ("is after end",)),
    C("gapfill-interval-zero", cfg_set(gapfill__interval_days=0), 2, ("gapfill.interval_days",)),
    C("gapfill-method", cfg_set(gapfill__method="cubic"), 2, ("gapfill.method", "'linear'")),
    C("gapfill-date-text", cfg_set(gapfill__start="yesterday"), 2, ("gapfill.start",)),
    C("split-scheme", cfg_set(split__scheme="50/50"), 2, ("split.scheme", "30/70")),
    C("split-runs-zero", cfg_set(split__runs=0), 2, ("split.runs",)),
    C("small-class-policy", cfg_set(split__small_class="ignore"), 2, ("split.small_class", "'drop'")),
    C("max-pixels-zero", cfg_set(sample__max_pixels_per_class=0), 2, ("sample.max_pixels_per_class",)),
    C("colour-unknown-name", cfg_set(classes__1={"color": "notacolour"}), 2, ("classes.1.color", "notacolour")),
    C("colour-out-of-range", cfg_set(classes__1={"color": [300, 0, 0]}), 2, ("classes.1.color", "0..255")),
    C("class-code-text", cfg_set(classes__cane={"name": "x"}), 2, ("classes.cane",)),
    C("classify-engine", cfg_set(classify__engine="fast"), 2, ("classify.engine", "'compiled'")),
    C("unknown-index", cfg_set(features__indices=["evi"]), 2, ("features.indices", "'ndvi'")),
    C("mmu-zero", cfg_set(regularize__mmu_px=0), 2, ("regularize.mmu_px",)),
    C("no-image-input", cfg_set(inputs={"reference": {"path": "scene/reference.gpkg"}}), 2, ("at least one image input",)),
    C("unknown-input", cfg_set(inputs__sentinel3={"path": "x"}), 2, ("sentinel3", "s2")),
    C("s2-format", cfg_set(inputs__s2__format="safe"), 2, ("inputs.s2.format", "theia")),
    C("s2-date-regex", cfg_set(inputs__s2__date_regex="(unclosed"), 2, ("inputs.s2.date_regex", "regular expression")),
    C("s2-scale-zero", cfg_set(inputs__s2__scale=0), 2, ("inputs.s2.scale",)),
    C("no-workdir", cfg_drop("workdir"), 2, ("missing required key 'workdir'",)),
    C("seed-text", cfg_set(seed="abc"), 2, ("seed",)),
    C("compare-unknown-type", cfg_set(compare_models=[{"type": "svm"}]), 2, ("compare_models", "svm")),
    C("set-bad-yaml", cli_args("--set", "a=[1,"), 2, ("--set 'a=[1,'", "not valid YAML")),
    C("set-yaml-alias", cli_args("--set", "model.n_estimators=*x"), 2, ("not valid YAML", "alias")),
    C("set-without-equals", cli_args("--set", "model.n_estimators"), 2, ("--set 'model.n_estimators'", "key.path=value")),
    C("set-unknown-key", cli_args("--set", "model.depth=3"), 2, ("model.depth", "max_depth")),
    C("config-not-yaml", raw(lambda f: (f / "config.yaml").write_text("workdir: [unclosed\n  seed: 1")), 2, ("config.yaml", "YAML")),
    C("config-a-list", raw(lambda f: (f / "config.yaml").write_text("- a\n- b\n")), 2, ("config.yaml", "mapping")),
    C("config-missing", raw(lambda f: (f / "config.yaml").unlink()), 2, ("config.yaml", "not found")),
    # ---- the reference polygons --------------------------------------------------------------------
    C("reference-missing", cfg_set(inputs__reference__path="scene/nowhere.gpkg"), 3, ("inputs.reference.path", "does not exist")),
    C("reference-class-field", cfg_set(inputs__reference__class_field="landcover"), 3, ("'landcover'", "fields found")),
    C("reference-name-field", cfg_set(inputs__reference__name_field="label"), 3, ("'label'", "inputs.reference.name_field")),
    C("reference-text-code", polygons(_code("cane")), 3, ("integer class codes", "'cane'")),
    C("reference-code-zero", polygons(_code(0)), 3, ("integer class codes 1..254",)),
    C("reference-code-fraction", polygons(_code(2.5)), 3, ("integer class codes",)),
    C("reference-no-crs", raw(_no_crs_polygons), 3, ("have no CRS", "Set CRS")),
    C("reference-outside", polygons(lambda g: g.set_geometry(g.translate(xoff=200_000))), 3, ("do not intersect the scene",)),
    C("reference-empty", polygons(lambda g: g.iloc[:0]), 3, ("contain no features",)),
    C("reference-points", polygons(_points), 3, ("Point", "only polygons")),
    C("reference-garbage", both(raw(_garbage("scene/bad.gpkg", b"not a geopackage")),
                                cfg_set(inputs__reference__path="scene/bad.gpkg")), 3, ("cannot be read", "bad.gpkg")),
    C("split-field-missing", cfg_set(inputs__reference__split_field="set"), 3, ("no field 'set'", "inputs.reference.split_field")),
    C("split-field-and-file", cfg_set(inputs__reference__split_field="set", inputs__reference__validation_path="v.gpkg"), 2,
      ("split_field or validation_path, not both",)),
    C("split-field-values", both(polygons(lambda g: g.assign(set="holdout")), cfg_set(inputs__reference__split_field="set")), 3,
      ("must say train, validation or test", "'holdout'")),
    C("validation-file-missing", cfg_set(inputs__reference__validation_path="nowhere.gpkg"), 3,
      ("inputs.reference.validation_path", "does not exist")),
    C("small-class-error", cfg_set(split__small_class="error"), 1, ("fewer than", "small_class")),
    # ---- the rasters ---------------------------------------------------------------------------------
    C("s2-path-missing", cfg_set(inputs__s2__path="scene/nowhere"), 3, ("inputs.s2.path", "does not exist")),
    C("s2-no-date-folder", raw(_empty_s2), 3, ("no date folder", "e.g. 20210105")),
    C("band-missing", raw(lambda f: s2_files(f, "*/*_B11.tif")[2].unlink()), 3, ("B11", "lack files")),
    C("mask-missing", raw(lambda f: s2_files(f, "*/*_MASK.tif")[0].unlink()), 3, ("mask 'MASK'", "inputs.s2.mask_name")),
    C("band-header-truncated", raw(_truncate("*/*_B8.tif", 200)), 3, ("_B8.tif", "corrupt or truncated")),
    C("band-body-truncated", raw(_truncate("*/*_B8.tif", 2000)), 3, ("_B8.tif",), validate=False),
    C("band-no-crs", raw(_no_crs), 3, ("no CRS", "gdal_edit.py")),
    C("band-crs-mislabelled", raw(lambda f: _crs(f, 32640)), 3, ("EPSG:32640", "CRS")),
    C("float-among-int", raw(_float_date), 3, ("floating point", "integers")),
    C("mask-other-size", raw(_small_mask), 3, ("do not cover the area of their bands", "40 x 40")),
    C("two-files-one-band", raw(_extra_band_file), 3, ("several files match", "B4")),
    C("date-twice", raw(_duplicate_date), 3, ("appears twice",)),
    C("impossible-date", raw(_rename_date_folder("20211341")), 3, ("20211341", "not a date")),
    C("dates-out-of-range", cfg_set(gapfill__start="2030-01-01", gapfill__end="2030-12-31"), 2, ("gapfill",)),
    C("aoi-missing", cfg_set(grid__aoi="nowhere.gpkg"), 3, ("grid.aoi", "does not exist")),
    C("aoi-elsewhere", both(raw(_aoi(500_000)), cfg_set(grid__aoi="aoi.gpkg")), 3, ("aoi",)),
    C("stack-missing", cfg_set(inputs__stack={"path": "scene/nowhere.tif"}), 3, ("inputs.stack.path", "does not exist")),
    C("stack-band-names", both(raw(_stack_file), cfg_set(inputs__stack={"path": "scene/stack.tif", "bands": ["a"]})), 3,
      ("has 3 band(s)", "inputs.stack.bands")),
    C("stack-dates-count", both(raw(_stack_file), cfg_set(inputs__stack={"path": "scene/stack.tif", "dates": ["2021-01-01"]})), 3,
      ("one date per band",)),
    # ---- the environment and resources -----------------------------------------------------------------
    C("workdir-is-a-file", both(raw(_garbage("afile", b"x")), cfg_set(workdir="afile")), 2, ("is a file, not a folder",)),
    C("workdir-under-a-file", both(raw(_garbage("afile", b"x")), cfg_set(workdir="afile/work")), 2, ("cannot be created", "afile")),
    C("lock-is-a-folder", raw(lambda f: ((f / "work" / ".chain" / "lock").unlink(), (f / "work" / ".chain" / "lock").mkdir())), 4,
      ("lock", "rm -r")),
    C("lock-held", raw(_hold_lock), 4, ("in use by another chain run", "4242"), validate=False),
    C("memory-below-one-tile", cfg_set(cluster__processes=True, cluster__memory_limit="256MiB"), 2,
      ("too small for one tile", "raise cluster.memory_limit")),
    C("from-unknown-step", cli_args("--from", "trian"), 4, ("'trian' is not a step",), validate=False),
    C("from-after-to", cli_args("--from", "mosaic", "--to", "train"), 4, ("comes after",), validate=False),
    # ---- legal but suspicious: a warning with counts, and the run goes on -----------------------------------
    C("warn-undated-folder", raw(lambda f: shutil.copytree(sorted((f / "scene" / "s2").iterdir())[0], f / "scene" / "s2" / "extra")), 0,
      ("have no date in their name and are skipped", "extra")),
    C("warn-no-nodata-tag", raw(_no_nodata_tag), 0, ("10 of 80 band file(s) have no no-data tag", "inputs.s2.nodata")),
    C("warn-already-scaled", raw(_already_scaled), 0, ("look like reflectances", "inputs.s2.scale: 1")),
    C("warn-overlap-classes", polygons(_first_two_codes_swapped), 0, ("polygons of different classes overlap", "left out of training")),
    C("warn-duplicates", polygons(_duplicated), 0, ("2 exact duplicate(s)", "first polygon only")),
    C("warn-invalid-polygon", polygons(_bowtie), 0, ("invalid polygon(s) repaired",)),
    C("warn-polygon-outside", polygons(_partly_outside), 0, ("1 polygon(s) outside the scene ignored",)),
    C("warn-fusion-one-run", cfg_set(fusion__enabled=True), 0, ("fusion.enabled", "split.runs is 1")),
]


@pytest.fixture(scope="module")
def finished(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run on the tiny scene (config, scene copy and work folder), copied by every case."""
    folder = tmp_path_factory.mktemp("finished")
    path = tiny_config(tiny_scene, folder)
    run_pipeline(config.load(path))
    return folder


def _pixels(path: Path) -> str:
    with rasterio.open(path) as src:
        return hashlib.sha256(src.read().tobytes()).hexdigest()


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _check(case: Case, code: int, out: str, command: str) -> None:
    where = f"{case.id} ({command}): {out}"
    assert code == case.exit, where
    assert "Traceback" not in out, where
    if case.exit:
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, where  # one message (several problems are listed under it)
    for needle in case.needles:
        assert needle in out, f"{needle!r} missing from {where}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_user_mistake_gives_one_clear_message(case: Case, finished: Path, tmp_path: Path) -> None:
    folder = tmp_path / "case"
    shutil.copytree(finished, folder, symlinks=True)
    (folder / "work" / ".chain" / "lock").touch()
    before = {p.name: _pixels(p) for p in (folder / "work" / "final").glob("Classif_Seed_0*.tif")}
    data = yaml.safe_load((folder / "config.yaml").read_text())
    args = case.mutate(folder, data)
    if (folder / "config.yaml").exists() and case.id not in ("config-not-yaml", "config-a-list"):
        (folder / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    cfg_path = str(folder / "config.yaml")
    try:
        if case.validate:
            code, out = _invoke("validate", cfg_path, *args)
            _check(case, code, out, "validate")
        if case.run and case.exit:
            code, out = _invoke("run", cfg_path, "-q", *args)
            _check(case, code, out, "run")
            after = {p.name: _pixels(p) for p in (folder / "work" / "final").glob("Classif_Seed_0*.tif")}
            assert after == before, f"{case.id}: the previous maps changed"
    finally:
        while HELD:
            os.close(HELD.pop())


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 70 and len({c.id for c in CASES}) == len(CASES)
    assert sum(c.exit == 0 for c in CASES) >= 8  # the warning cases


# ---- damaged intermediate outputs, step by step ------------------------------------------------------

STEPS = ["ingest", "gapfill", "features", "split", "sample", "train", "classify", "mosaic", "regularize", "validate"]


def _damage(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if len(data) > 1 else b"")


@pytest.fixture(scope="module")
def repaired(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run that every damage test breaks and repairs in turn (in place: a copy elsewhere would
    re-run from ingest, the input paths being part of the parameters)."""
    folder = tmp_path_factory.mktemp("repaired")
    run_pipeline(config.load(tiny_config(tiny_scene, folder)))
    return folder


@pytest.mark.parametrize("step", STEPS)
def test_a_damaged_output_of_each_step_is_recomputed(step: str, repaired: Path) -> None:
    """Truncate one file a step wrote: `chain verify` names it, `chain run --from <next>` refuses with the fix,
    and `chain run` recomputes it (and what depends on it); the map is the same as before."""
    folder = repaired
    work = folder / "work"
    ledger = json.loads((work / ".chain" / "ledger" / f"{step}.json").read_text())
    victim = work / sorted(ledger["outputs"])[0]
    before = _pixels(work / "final" / "Classif_Seed_0.tif")
    _damage(victim)
    code, out = _invoke("verify", str(folder / "config.yaml"))
    assert code == 1 and victim.name in out, out
    later = STEPS[STEPS.index(step) + 1] if step != STEPS[-1] else None
    if later is not None:
        code, out = _invoke("run", str(folder / "config.yaml"), "-q", "--from", later)
        assert code == 4 and "Traceback" not in out and step in out, out
    code, out = _invoke("run", str(folder / "config.yaml"), "-q")
    assert code == 0 and "Traceback" not in out, out
    assert victim.exists() and victim.stat().st_size > 0
    assert _pixels(work / "final" / "Classif_Seed_0.tif") == before
    assert _invoke("verify", str(folder / "config.yaml"))[0] == 0
