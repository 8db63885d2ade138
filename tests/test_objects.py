"""Object features, labels and maps (objects step, object models): exact whatever the tiling, one class per object,
the split respected, the object-vs-pixel comparison in the report, and bad input caught before heavy work."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.features import rasterize
from rasterio.windows import Window

from chain import products
from chain.grid import make_tiles
from chain.objects import ObjectTable, grouped_quantiles, load, merge, object_tile, run_samples
from chain.runner import Context, run_pipeline
from tests.test_errors import _assert_clean_error, _run
from tests.test_segmentation import vhr_config


@pytest.fixture(scope="module")
def vhr(tmp_path_factory):
    from chain.demo.vhr import write_vhr_scene

    return write_vhr_scene(tmp_path_factory.mktemp("vhr"), size_px=240, n_fields=80, seed=9)


def test_grouped_percentiles_are_numpys():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 500)).astype(np.float32)
    groups = rng.integers(0, 40, 500)
    groups[groups == 7] = 8  # an empty group
    qs = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    got = grouped_quantiles(values, groups, 40, qs)
    for g in range(40):
        if g == 7:
            assert np.isnan(got[g]).all()
            continue
        np.testing.assert_allclose(got[g], np.percentile(values[:, groups == g], qs * 100, axis=1).T, rtol=1e-6)


def test_object_features_merge_exactly_whatever_the_tiling(vhr, tmp_path):
    cfg = vhr_config(vhr, tmp_path / "w", 64)
    run_pipeline(cfg, to_step="objects")
    ctx = Context(cfg, cfg.workdir)
    cat, spec, polys = products.catalog(ctx), products.spec(ctx), products.reference(ctx)
    table = load(ctx.paths.objects)
    with rasterio.open(ctx.paths.segments) as src:
        seg = src.read(1).astype(np.int64)
    n = int(seg.max())
    stats = list(cfg.segmentation.stats)
    assert table.n == n and table.X.shape == (n, 4 * len(stats) + 3)
    # the same objects, features computed with other tilings: 240 px in one tile, and 48 px tiles
    for size in (240, 48):
        out = tmp_path / f"tiles{size}"
        out.mkdir()
        tiles = make_tiles(cat.grid, size)
        for t in tiles:
            object_tile(t, cat, spec, ctx.paths.segments, polys, stats, out)
        other = merge(tiles, out, n, spec.names, stats, 1.5, polys, cfg.segmentation.min_cover, tmp_path / f"o{size}.npz")
        np.testing.assert_allclose(np.asarray(other.X), np.asarray(table.X), rtol=2e-6, atol=1e-4)
        for k in ("n_px", "n_ok", "poly_id", "code", "pairs_obj", "pairs_poly", "pairs_px"):
            np.testing.assert_array_equal(getattr(other, k), getattr(table, k), err_msg=k)
    # against a whole-scene computation in plain numpy: mean, std, percentiles, area, perimeter
    from chain.features import compute_features

    block = compute_features(cat, spec, Window(0, 0, cat.grid.width, cat.grid.height))
    X = np.asarray(table.X)
    for obj in range(1, n + 1, max(1, n // 12)):
        inside = seg == obj
        for f in range(4):
            v = block.values[f][inside].astype(np.float64)
            want = {"mean": v.mean(), "std": v.std(), **{s: np.percentile(v, int(s[1:])) for s in stats if s.startswith("p")}}
            got = dict(zip(stats, X[obj - 1, f * len(stats):(f + 1) * len(stats)], strict=True))
            for s in stats:
                assert got[s] == pytest.approx(want[s], rel=1e-5, abs=1e-3), (obj, f, s)
        edges = sum((np.pad(inside, 1)[1 + dr:1 + dr + 240, 1 + dc:1 + dc + 240] != inside)[inside].sum()
                    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)))
        assert X[obj - 1, -3] == pytest.approx(inside.sum() * 2.25) and X[obj - 1, -2] == pytest.approx(edges * 1.5)
    # labels: the polygon covering most of the object, when it covers min_cover of it
    ref = rasterize(((g, int(p) + 1) for g, p in zip(polys.geometry, polys["poly_id"], strict=True)), out_shape=seg.shape,
                    transform=cat.grid.affine, dtype="int32") - 1
    for obj in range(1, n + 1):
        ids, counts = np.unique(ref[(seg == obj) & (ref >= 0)], return_counts=True)
        if len(ids) and counts.max() / (seg == obj).sum() >= cfg.segmentation.min_cover:
            assert table.poly_id[obj - 1] == ids[counts.argmax()]
        else:
            assert table.poly_id[obj - 1] == -1 and table.code[obj - 1] == 0


def test_objects_touching_polygons_of_two_parts_are_left_out():
    # objects 1..4; polygons 10 (train) and 11 (validation) in run 0, both train in run 1
    table = ObjectTable(n_px=np.array([10, 10, 10, 10]), n_ok=np.array([10, 10, 10, 0]), row=np.arange(4), col=np.arange(4),
                        poly_id=np.array([10, 11, 10, 10]), code=np.array([1, 2, 1, 1]), cover=np.ones(4, np.float32),
                        pairs_obj=np.array([1, 2, 3, 3, 4]), pairs_poly=np.array([10, 11, 10, 11, 10]), pairs_px=np.array([9, 9, 6, 4, 10]),
                        names=["a", "b"], X=np.arange(8, dtype=np.float32).reshape(4, 2))
    split = pd.DataFrame({"run": [0, 0, 1, 1], "part": ["train", "validation", "train", "train"], "poly_id": [10, 11, 10, 11]})
    samples, mixed, rows = run_samples(table, split, 0)
    assert mixed == 1 and rows.tolist() == [0, 1]  # object 3 touches both parts; object 4 has no features
    np.testing.assert_array_equal(samples.X, table.X[[0, 1]])
    assert samples.code.tolist() == [1, 2] and samples.poly_id.tolist() == [10, 11]
    samples, mixed, rows = run_samples(table, split, 1)
    assert mixed == 0 and rows.tolist() == [0, 1, 2]


def test_fragmentation_counts_regions_across_strips(tmp_path):
    from skimage import measure

    from chain.object_eval import fragmentation

    rng = np.random.default_rng(1)
    cls = np.repeat(np.repeat(rng.integers(0, 4, (12, 12)), 5, axis=0), 5, axis=1).astype(np.uint8)
    path = tmp_path / "m.tif"
    with rasterio.open(path, "w", driver="GTiff", width=60, height=60, count=1, dtype="uint8", crs="EPSG:32631",
                       transform=rasterio.Affine(10, 0, 0, 0, -10, 600), nodata=0) as dst:
        dst.write(cls, 1)
    want = measure.label(cls.astype(int) + 1, background=0, connectivity=1)
    want = len(np.unique(want[cls > 0]))
    for got in [fragmentation(path, strip_rows=s) for s in (1, 7, 13, 60)] + [fragmentation(path, strip_px=60 * 9)]:
        assert got["regions"] == want
        assert got["mean_region_m2"] == pytest.approx((cls > 0).sum() * 100 / want)


def test_object_run_maps_one_class_per_object_and_compares_with_pixels(vhr, tmp_path):
    # finer than the fields: the few reference polygons of this scene give enough training objects
    cfg = vhr_config(vhr, tmp_path / "w", 64, scale=30, min_size_m2=40)
    run_pipeline(cfg)
    final = cfg.workdir / "final"
    with rasterio.open(final / "segments.tif") as s, rasterio.open(final / "Classif_Seed_0.tif") as c, \
            rasterio.open(final / "Confidence_Seed_0.tif") as f:
        seg, cls, conf = s.read(1), c.read(1), f.read(1)
        assert c.colormap(1)
    for obj in np.unique(seg):
        assert len(np.unique(cls[seg == obj])) == 1 and len(np.unique(conf[seg == obj])) == 1
    layer = gpd.read_file(final / "Classif_Seed_0_objects.gpkg")
    assert {"id", "code", "name", "confidence", "area_m2"} <= set(layer.columns)
    row = layer.iloc[len(layer) // 2]
    assert (cls[seg == row["id"]] == row["code"]).all()
    assert (final / "pixels" / "Classif_Seed_0.tif").exists()
    manifest = json.loads((cfg.workdir / "train" / "run_0" / "manifest.json").read_text())
    assert manifest["unit"] == "object" and manifest["feature_names"][-3:] == ["area_m2", "perimeter_m", "compactness"]
    metrics = json.loads((final / "metrics.json").read_text())
    obj, px = metrics["objects"]["summary"]["objects"], metrics["objects"]["summary"]["pixels"]
    assert obj["oa"]["mean"] > 0.7 and 0.6 < obj["object_accuracy"]["mean"] <= 1
    assert obj["regions_per_km2"]["mean"] < px["regions_per_km2"]["mean"]  # objects: less salt and pepper
    assert "Objects vs pixels" in (final / "report.html").read_text()
    assert "Objects vs pixels" in (final / "RESULTS.txt").read_text()
    # a changed object statistic re-runs objects and what follows, not the segmentation
    again = vhr_config(vhr, tmp_path / "w", 64, scale=30, min_size_m2=40, stats=["mean"])
    actions = {r.step: r.action for r in run_pipeline(again)}
    assert actions["segment"] == "skipped" and actions["objects"] == "ran" and actions["train"] == "ran"


@pytest.mark.parametrize("change, needles", [
    ({"segmentation": {"method": "felzenszwalb", "min_size_m2": 10}}, ["segmentation.min_size_m2", "smaller than one pixel"]),
    ({"segmentation": {"method": "felzenszwalb", "source": "spot"}}, ["segmentation.source is spot", "inputs.spot"]),
    ({"segmentation": {"method": "felzenszwalb", "bands": ["NOPE_*"]}}, ["segmentation.bands", "NOPE_*", "no feature"]),
    ({"segmentation": {"method": "slic", "segment_size_m2": 200}}, ["segment_size_m2", "3 x 3 pixels"]),
    ({"segmentation": {"method": "felzenszwalb", "stats": ["mean", "p101"]}}, ["segmentation.stats", "p101"]),
    ({"segmentation": {"method": "felzenszwalb", "scale": -1}}, ["segmentation.scale"]),
    ({"segmentation": {"method": "felzenszwalb"}, "compare_models": [{"type": "rf"}]}, ["compare_models"]),
])
def test_bad_segmentation_settings_are_named_before_any_heavy_work(make_config, change, needles):
    code, out = _run("validate", make_config(**change))
    assert code in (2, 3), out
    _assert_clean_error(code, out, code, *needles)
    assert not (make_config(**change).parent / "work" / "segment").exists()


def test_a_patch_model_cannot_map_objects(make_config):
    code, out = _run("validate", make_config(segmentation={"method": "felzenszwalb"}, model={"type": "multiresolcc"}))
    assert code in (2, 3), out
    _assert_clean_error(code, out, code, "model.type multiresolcc", "pixel model type")
