"""Map products: COGs, styles, regularization, probabilities, fusion, vectors, report, compare."""

import base64
import csv
import json
import re
import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from chain import config
from chain.classify import vote
from chain.cli import main
from chain.regularize import majority, regularize
from chain.runner import run_pipeline


@pytest.fixture(scope="module")
def products(tiny_scene, tmp_path_factory):
    from tests.conftest import tiny_config

    path = tiny_config(tiny_scene, tmp_path_factory.mktemp("products"), split={"runs": 3},
                       classify={"probabilities": True}, fusion={"enabled": True}, vectorize={"enabled": True},
                       regularize={"mmu_px": 6, "majority_radius_px": 1},
                       classes={1: {"name": "cane", "color": "#102030"}})
    cfg = config.load(path)
    run_pipeline(cfg)
    return cfg, cfg.workdir / "final"


def _read(path, band=1):
    with rasterio.open(path) as src:
        return src.read(band)


def test_maps_are_valid_cogs_with_overviews_nodata_and_names(products):
    _, final = products
    for name in ("Classif_Seed_0.tif", "Confidence_Seed_0.tif", "Classif_Seed_0_regularized.tif", "PixelsValidity.tif",
                 "Classif_Fusion.tif", "Probabilities_Seed_0.tif"):
        valid, errors, _ = cog_validate(final / name, quiet=True)
        assert valid, (name, errors)
    with rasterio.open(final / "Classif_Seed_0.tif") as src:
        assert src.nodata == 0 and src.colormap(1)[1][:3] == (16, 32, 48)
    aux = (final / "Classif_Seed_0.tif.aux.xml").read_text()
    assert "<Category>cane</Category>" in aux
    qml = (final / "Classif_Seed_0.qml").read_text()
    assert 'value="1" color="#102030"' in qml and 'label="cane"' in qml
    rows = list(csv.DictReader(open(final / "nomenclature.csv")))
    assert rows[0] == {"code": "1", "name": "cane", "red": "16", "green": "32", "blue": "48", "hex": "#102030"}
    assert len(rows) >= 6


def test_regularized_map_has_no_patch_below_the_mmu(products):
    from scipy import ndimage

    _, final = products
    raw, reg = _read(final / "Classif_Seed_0.tif"), _read(final / "Classif_Seed_0_regularized.tif")
    assert ((raw == 0) == (reg == 0)).all()
    for c in np.unique(reg[reg > 0]):
        lab, n = ndimage.label(reg == c, structure=np.ones((3, 3)))
        sizes = np.bincount(lab.ravel())[1:]
        assert sizes.min() >= 6 or n == 0
    m = json.loads((final / "metrics.json").read_text())
    assert "regularized" in m and len(m["regularized"]["runs"]) == 3
    assert "Classif_Seed_2_regularized.tif" in (final / "RESULTS.txt").read_text()


def test_regularization_by_tiles_equals_whole_map():
    rng = np.random.default_rng(0)
    labels = rng.choice([1, 2, 3], size=(70, 90)).astype(np.uint8)
    labels[:10, :10] = 0
    whole = regularize(labels, 6, 1)
    from rasterio.crs import CRS

    from chain.grid import GridSpec, make_tiles
    from chain.regularize import halo_for

    grid = GridSpec.from_bounds(CRS.from_epsg(32740), (0, 0, 900, 700), 10)
    out = np.zeros_like(labels)
    for t in make_tiles(grid, 32, halo_for(6, 1)):
        rw = t.read_window(grid)
        block = regularize(labels[rw.row_off:rw.row_off + rw.height, rw.col_off:rw.col_off + rw.width], 6, 1)
        rs, cs = t.core_slices(grid)
        w = t.window
        out[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] = block[rs, cs]
    assert (out == whole).mean() > 0.98  # sieving is global; tiles with a halo agree almost everywhere


def test_majority_filter_and_vote():
    a = np.array([[1, 1, 1], [1, 2, 1], [1, 1, 1]], np.uint8)
    assert (majority(a, 1) == 1).all()
    labels = np.array([[[1, 2]], [[1, 3]], [[2, 3]]], np.uint8)  # 3 runs, 1 x 2 pixels
    conf = np.array([[[90, 10]], [[50, 20]], [[99, 30]]])
    fused, agree = vote(labels, conf)
    assert fused.tolist() == [[1, 3]] and agree.tolist() == [[67, 67]]
    fused, _ = vote(np.array([[[1]], [[2]]], np.uint8), np.array([[[10]], [[80]]]))
    assert fused.tolist() == [[2]]  # a tie goes to the more confident class


def test_probabilities_fusion_and_vectors(products):
    _, final = products
    with rasterio.open(final / "Probabilities_Seed_0.tif") as src:
        proba = src.read()
        assert src.descriptions[0].startswith("1 cane")
    cls = _read(final / "Classif_Seed_0.tif")
    ok = cls > 0
    assert (np.abs(proba[:, ok].astype(int).sum(axis=0) - 100) <= src.count).all()  # rounding only
    agree = _read(final / "Agreement_Fusion.tif")
    assert set(np.unique(agree[agree != 255])) <= {33, 67, 100}
    polys = gpd.read_file(final / "Classif_Seed_0.gpkg")
    assert {"code", "name", "area_m2"} <= set(polys.columns)
    reg = _read(final / "Classif_Seed_0_regularized.tif")
    # polygons cover exactly the classified pixels, with merged pieces across tile borders
    assert np.isclose(polys["area_m2"].sum(), (reg > 0).sum() * 100)
    assert polys.geometry.is_valid.all()
    for code, area in polys.groupby("code")["area_m2"].sum().items():
        assert np.isclose(area, (reg == code).sum() * 100)


def test_report_html_is_self_contained(products):
    _, final = products
    page = (final / "report.html").read_text()
    assert page.count("<img") >= 5 and "data:image/png;base64," in page
    assert "src='http" not in page and 'src="http' not in page
    assert "error-adjusted area" in page and "± " in page
    # each run's confusion matrix is the figure validate wrote beside it, embedded as it is (not drawn twice)
    pngs = sorted(final.glob("confusion_Seed_*.png"))
    assert pngs
    for png in pngs:
        assert base64.b64encode(png.read_bytes()).decode() in page, png.name


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (CI installs it)")
def test_report_renders_in_headless_chromium(products, tmp_path):
    _, final = products
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(["chromium", *flags, "--virtual-time-budget=5000", "--dump-dom", (final / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    import re

    title = re.search(r"<title>chain report: (\d+)/(\d+) images</title>", dom.stdout)
    assert title, dom.stdout[:500] + dom.stderr[-500:]
    assert int(title.group(1)) == int(title.group(2)) >= 5  # every embedded image decoded
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *flags, "--window-size=1200,1600", f"--screenshot={shot}", (final / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.std() > 10  # not blank


def test_compare_two_runs(products, tmp_path):
    _, final = products
    result = CliRunner().invoke(main, ["compare", str(final / "Classif_Seed_0.tif"), str(final / "Classif_Seed_1.tif"),
                                       "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    a, b = _read(final / "Classif_Seed_0.tif"), _read(final / "Classif_Seed_1.tif")
    ok = (a > 0) & (b > 0)
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "change_matrix.csv")))
    assert sum(int(r["pixels"]) for r in rows) == ok.sum()
    changed = sum(int(r["pixels"]) for r in rows if r["from_code"] != r["to_code"])
    assert changed == (a != b)[ok].sum()
    assert rows[0]["from_name"]
    change = _read(tmp_path / "cmp" / "change.tif")
    np.testing.assert_array_equal(change[ok], a[ok].astype(int) * 256 + b[ok])
    assert "changed" in (tmp_path / "cmp" / "change.html").read_text()


def test_compare_names_its_folder_by_what_differs_and_warns_on_other_extents(products, tmp_path, caplog):
    import shutil

    _, final = products
    for year in ("2021", "2022"):
        (tmp_path / year / "final").mkdir(parents=True)
        shutil.copy(final / "Classif_Seed_0.tif", tmp_path / year / "final" / "Classif_Seed_0.tif")
    a, b = tmp_path / "2021" / "final" / "Classif_Seed_0.tif", tmp_path / "2022" / "final" / "Classif_Seed_0.tif"
    result = CliRunner().invoke(main, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert (a.parent / "change_2021_2022_Classif_Seed_0" / "change_matrix.csv").exists()
    with rasterio.open(final / "Classif_Seed_0.tif") as src:  # B: the east half of the map only
        profile, half = src.profile, src.read(1)[:, src.width // 2:]
        profile.update(width=half.shape[1], transform=src.transform * src.transform.translation(src.width // 2, 0))
    with rasterio.open(b, "w", **profile) as dst:
        dst.write(half, 1)
    with caplog.at_level("WARNING"):
        assert CliRunner().invoke(main, ["compare", str(a), str(b), "--out", str(tmp_path / "x")]).exit_code == 0
    assert "cover different areas: 50.0 % of A is covered by B" in caplog.text


def test_validity_map_has_a_nodata_tag_and_report_durations_read_well(products):
    _, final = products
    with rasterio.open(final / "PixelsValidity.tif") as src:
        assert src.nodata == 0 and src.descriptions == ("S2 clear dates",)
    html = (final / "report.html").read_text()
    assert "this step (writing this report)" in html and "all steps so far" in html
    assert "minimum mapping unit 6 px (600 m²), majority filter radius 1 px" in html


def test_progress_is_logged_with_rate_and_eta_off_a_terminal(caplog):
    from chain.log import Progress

    with caplog.at_level("INFO"), Progress(8, "classify: run 0") as bar:
        for _ in range(8):
            bar.update()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "classify: run 0: 0/8 tiles, started"
    assert any(re.search(r"2/8 tiles \(25 %\), [\d.,]+/s, ETA \d+:\d\d", m) for m in lines)
    assert re.search(r"8/8 tiles \(100 %\), .*done in \d+:\d\d", lines[-1])
