"""Whole-tile segmentation (model.type fcn): the window lattice, sparse-label tiles, the network's options,
distillation, resumable training, bad inputs, and the demo's small objects. The contract every model keeps
(artifact, round trip, tiled map = whole-scene map) is in test_models_conformance."""

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from chain import config, models, products
from chain.deep import segment_train
from chain.deep.segment import Lattice, labelled_tiles, read_region
from chain.demo import generate
from chain.errors import ConfigError, StepError
from chain.models.fcn import FCNNet, parameters
from chain.runner import Context, run_pipeline
from tests.conftest import TINY, tiny_config

FCN = {"type": "fcn", "widths": [4, 8, 8], "tile_px": 32, "tile_margin_px": 4, "window_px": 32, "overlap_px": 8, "epochs": 2,
       "batch_size": 4, "patience": None}
GRID = {"resolution_m": 1.5, "tile_size_px": 96}
SPLIT = {"scheme": "64/16/20", "small_class": "drop"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("fcn") / "s", **{**TINY, "n_dates": 6}, spot="geotiff", small_objects=60)


def _config(scene, folder, model=None, **extra):
    sections = {"inputs": {"spot": {"path": "scene/spot"}}, "grid": GRID, "split": SPLIT, "model": {**FCN, **(model or {})}, **extra}
    return config.load(tiny_config(scene, folder, **sections))


@pytest.mark.parametrize("size,overlap,n", [(32, 8, 100), (32, 0, 64), (64, 16, 33), (32, 16, 31)])
def test_the_lattice_covers_the_axis_and_its_weights_sum_to_one_inside(size, overlap, n):
    lat = Lattice(size, overlap)
    starts = lat.starts(n)
    assert starts[0] == -(overlap // 2) and starts[-1] + size >= n and starts[-2 if len(starts) > 1 else 0] + size < n + size
    total = np.zeros(n + size + overlap)
    for s in starts:  # every window's ramp, laid on the axis (shifted by overlap so negative starts fit)
        total[s + overlap:s + overlap + size] += lat.ramp()
    axis = total[overlap:overlap + n]
    assert (axis > 0).all()
    inner = axis[overlap:max(overlap, int(starts[-1]) + overlap // 2)] if len(starts) > 1 else axis[:0]
    np.testing.assert_allclose(inner, 1.0, atol=1e-6)  # partition of unity wherever two windows meet
    for a, b in [(0, 7), (10, 40), (n - 5, n)]:
        touching = lat.touching(n, a, b)
        assert all((t < b) and (t + size > a) for t in touching)
        assert set(touching) == {s for s in starts if s < b and s + size > a}


def test_the_networks_options_keep_the_grid_resolution_and_the_paper_size():
    x = {"spot": torch.randn(2, 5, 32, 32), "s2": torch.randn(2, 26, 32, 32)}
    for fusion in ("none", "early", "late"):
        for upsample in ("none", "early", "late"):
            out = FCNNet(7, 5, (4, 8, 16), 26, fusion, 8, upsample)(x)
            assert out["fused"].shape == (2, 7, 32, 32)
            assert out["fine"].shape == ((2, 7, 32, 32) if upsample == "none" else (2, 7, 64, 64))
    assert 1.2e6 < parameters(FCNNet(9, 5)) < 1.6e6  # the prior work's ~1.3 M parameters at the default widths
    from chain.models.patch_cnn import PatchCNNNet

    assert 0.9e5 < parameters(PatchCNNNet(9, 5, 65)) < 1.3e5  # and its sliding-window CNN's ~110 k


def test_training_tiles_label_the_training_polygons_only(scene, tmp_path):
    cfg = _config(scene, tmp_path / "tiles")
    run_pipeline(cfg, to_step="split")
    ctx = Context(cfg, cfg.workdir)
    cat, spec = products.catalog(ctx), products.spec(ctx)
    ref, split = products.reference(ctx), products.splits(ctx)
    train_ids = split.loc[(split["run"] == 0) & (split["part"] == "train"), "poly_id"]
    polys = ref[ref["poly_id"].isin(train_ids)]
    classes = sorted(polys["code"].unique().tolist())[:-1]  # one class left out: its polygons stay unlabelled
    inputs = models.model_type("fcn").inputs(cfg.model, spec, cat)
    tiles = labelled_tiles(cat, spec, inputs, polys, classes, 32, 4)
    assert len(tiles.labels) and tiles.labels.shape[1:] == (40, 40) and tiles.arrays["spot"].shape[1:] == (5, 40, 40)
    from rasterio.features import rasterize

    g = cat.grid
    truth = rasterize(((geom, classes.index(c) + 1) for geom, c in zip(polys.geometry, polys["code"], strict=True) if c in classes),
                      out_shape=(g.height, g.width), transform=g.affine, fill=0, dtype="int16").astype(int) - 1
    other = rasterize((geom for geom in ref[~ref["poly_id"].isin(train_ids)].geometry), out_shape=(g.height, g.width),
                      transform=g.affine, fill=0, dtype="uint8")
    covered = np.zeros((g.height, g.width), bool)
    for (top, left), lab in zip(tiles.origins, tiles.labels, strict=True):
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + 40, g.height), min(left + 40, g.width)
        part = lab[r0 - top:r1 - top, c0 - left:c1 - left]
        np.testing.assert_array_equal(part, truth[r0:r1, c0:c1])  # the class index inside training polygons, -1 elsewhere
        assert not (part[other[r0:r1, c0:c1] == 1] >= 0).any()  # validation / test polygons: never labelled
        covered[r0:r1, c0:c1] |= part >= 0
        assert (lab[:r0 - top] == -1).all() and (lab[:, :c0 - left] == -1).all()  # off the scene
    assert covered.sum() == (truth >= 0).sum()  # every labelled pixel is in some tile
    region = read_region(cat, spec, inputs, -5, -5, 20, 20)  # edge-replicated off the grid, not valid there
    np.testing.assert_array_equal(region.arrays["spot"][:, :5, 5:], np.repeat(region.arrays["spot"][:, 5:6, 5:], 5, axis=1))
    assert not region.valid[:5].any() and region.valid[5:, 5:].mean() > 0.9


def test_distillation_and_the_sparse_loss():
    a = torch.randn(2, 5, 8, 8)
    assert float(segment_train.distill_loss(a, a, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(segment_train.distill_loss(a, torch.randn(2, 5, 8, 8), 2.0)) > 0.01
    labels = np.full((3, 8, 8), -1)
    labels[0, :2] = 0
    labels[1, :6] = 1
    w = segment_train.class_weights(labels, 3)
    assert w[0] == pytest.approx(3 * w[1]) and w[2] == 1.0  # inverse frequency over labelled pixels; absent class: 1


def _tiles(seed=0, n=6):
    from chain.deep.segment import LabelledTiles

    rng = np.random.default_rng(seed)
    y = np.full((n, 40, 40), -1)
    y[:, 10:30, 10:30] = rng.integers(0, 3, (n, 1, 1))
    x = rng.normal(size=(n, 5, 40, 40)) + (y[:, None] + 1) * 0.8
    return LabelledTiles({"spot": x.astype(np.float16)}, y, np.zeros((n, 2), np.int64))


def test_killed_segmentation_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    cfg = config.parse_model({**FCN, "epochs": 3})
    net = lambda: FCNNet(3, 5, (4, 8, 8))  # noqa: E731
    reference, _, hist_ref = segment_train.train(cfg, net, _tiles(), None, 3, 32, 5)

    class Killed(Exception):
        pass

    def die_after_first(epoch):
        if epoch == 1:
            raise Killed

    ckpt = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(segment_train, "_epoch_done", die_after_first)
    with pytest.raises(Killed):
        segment_train.train(cfg, net, _tiles(), None, 3, 32, 5, checkpoint=ckpt)
    monkeypatch.setattr(segment_train, "_epoch_done", lambda epoch: None)
    resumed, _, hist = segment_train.train(cfg, net, _tiles(), None, 3, 32, 5, checkpoint=ckpt)
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in hist_ref]
    for k, v in reference.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_a_distilled_student_with_late_s2_fusion_is_trained_from_its_teacher_and_maps(scene, tmp_path):
    cfg = _config(scene, tmp_path / "distill", {"small_objects": "distill", "teacher_epochs": 1, "fusion": "late", "s2_width": 4,
                                                "tile_px": 64, "window_px": 64, "overlap_px": 16},
                  inputs={"spot": {"path": "scene/spot"}, "s2": {"path": "scene/s2"}})
    run_pipeline(cfg, to_step="train")
    ctx = Context(cfg, cfg.workdir)
    folder = ctx.paths.model(0)
    manifest = models.read_manifest(folder)
    assert manifest["upsample"] == "late" and manifest["teacher"]["epochs"] == 1 and manifest["teacher"]["parameters"] > 0
    assert [i["name"] for i in manifest["inputs"]] == ["spot", "s2"] and manifest["shapes"]["s2"]["channels"] > 13
    assert (folder / "teacher_curves.png").exists() and not (folder / "teacher_checkpoint.pt").exists()
    model = models.load(folder)
    valid, proba, _ = model.predict_window(products.catalog(ctx), products.spec(ctx), Window(0, 0, 50, 40))
    assert valid.shape == (40, 50) and proba.shape == (valid.sum(), len(model.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)


def test_bad_inputs_are_clear_errors_before_training(scene, tmp_path):
    with pytest.raises(ConfigError, match="multiple of the network's stride 4"):
        config.parse_model({**FCN, "tile_px": 30})
    with pytest.raises(ConfigError, match="overlap_px"):
        config.parse_model({**FCN, "overlap_px": 20})
    with pytest.raises(ConfigError, match="add inputs.s2"):  # a fusion mode without S2
        run_pipeline(_config(scene, tmp_path / "nos2", {"fusion": "early"}, inputs={"s2": None, "spot": {"path": "scene/spot"}}),
                     to_step="train")
    with pytest.raises(ConfigError, match="set grid.resolution_m to 1.5"):  # not the PAN lattice
        run_pipeline(_config(scene, tmp_path / "grid", grid={"resolution_m": 3.0}), to_step="train")
    with pytest.raises(ConfigError, match="does not cover the grid"):  # a SPOT image smaller than the S2 grid
        g = generate(tmp_path / "wide", **{**TINY, "n_dates": 3}, spot="none")
        cfg = _config(scene, tmp_path / "cover", inputs={"s2": {"path": str(g / "s2")}, "spot": {"path": "scene/spot"}},
                      grid={"resolution_m": 1.5, "bounds": [337990.0, 7661300.0, 338600.0, 7662000.0]})
        run_pipeline(cfg, to_step="train")


def test_classes_without_a_pixel_in_any_training_tile_are_named(scene, tmp_path, monkeypatch):
    from chain.deep import segment

    real = segment.labelled_tiles

    def drop_last_class(cat, spec, inputs, polys, classes, *a, **k):
        return real(cat, spec, inputs, polys[polys["code"] != max(classes)], classes, *a, **k)

    monkeypatch.setattr(segment, "labelled_tiles", drop_last_class)
    cfg = _config(scene, tmp_path / "missing")
    with pytest.raises(StepError, match=r"class\(es\) \[\d+\] have no labelled pixel in any training tile"):
        run_pipeline(cfg, to_step="train")


def test_the_demo_small_objects_are_squares_inside_contrasting_fields(scene):
    import geopandas as gpd
    import rasterio

    ref = gpd.read_file(scene / "reference.gpkg")
    small = ref[ref["code"].isin([10, 11])]
    assert len(small) > 10 and set(small["name"]) == {"isolated tree", "hut"}
    side = np.sqrt(small.area) / 1.5
    assert ((side >= 2 - 1e-6) & (side <= 4 + 1e-6)).all()  # 2-4 PAN pixels a side
    fields = ref[~ref["code"].isin([10, 11])]
    assert not fields.overlay(small, how="intersection").area.gt(1e-6).any()  # field polygons leave them out
    with rasterio.open(next((scene / "spot").glob("*PAN.tif"))) as pan:
        img = pan.read(1).astype(float)
        inv = ~pan.transform
    for geom, code in zip(small.geometry[:20], small["code"][:20], strict=True):  # darker (trees) or brighter (huts) than around
        c0, r0 = (int(round(v)) for v in inv * (geom.bounds[0], geom.bounds[3]))
        s = int(round(np.sqrt(geom.area) / 1.5))
        inside, ring = img[r0:r0 + s, c0:c0 + s].mean(), img[r0 - 2:r0 + s + 2, c0 - 2:c0 + s + 2]
        around = (ring.sum() - img[r0:r0 + s, c0:c0 + s].sum()) / (ring.size - s * s)
        assert (inside < around) if code == 10 else (inside > around), (code, inside, around)


def test_s2_features_choose_the_fused_channels_and_unknown_ones_are_named(scene, tmp_path):
    cfg = _config(scene, tmp_path / "s2f", {"fusion": "early", "s2_features": ["B4", "NDVI"]},
                  inputs={"spot": {"path": "scene/spot"}, "s2": {"path": "scene/s2"}})
    run_pipeline(cfg, to_step="features")
    ctx = Context(cfg, cfg.workdir)
    cat, spec = products.catalog(ctx), products.spec(ctx)
    s2 = models.model_type("fcn").inputs(cfg.model, spec, cat)[1]
    assert [spec.names[i].split("_")[0] for i in s2.index] == ["B4", "NDVI"] * s2.steps  # time-major: per date, in order
    with pytest.raises(ConfigError, match=r"\['NIR'\] are not S2 features"):
        models.model_type("fcn").inputs(cfg.model.model_copy(update={"s2_features": ["B4", "NIR"]}), spec, cat)


def test_compared_models_of_one_type_are_named_by_what_sets_them_apart():
    from chain.evaluation import model_labels

    base = {"type": "fcn", "fusion": "none", "upsample": "none", "small_objects": "none", "teacher_epochs": None, "widths": [4, 8]}
    entries = [base, {"type": "rf"}, {**base, "fusion": "early", "widths": [8, 8]}, {**base, "upsample": "late"},
               {**base, "small_objects": "distill", "teacher_epochs": 3}, {**base, "upsample": "late"}]
    assert model_labels([e["type"] for e in entries], entries) == [
        "fcn", "rf", "fcn fusion=early", "fcn #3", "fcn small_objects=distill teacher_epochs=3", "fcn #5"]
    assert model_labels(["rf", "rf"]) == ["rf #1", "rf #2"]


def test_a_demo_scene_is_generated_again_when_its_options_change(tmp_path):
    import geopandas as gpd

    from chain.demo import ensure

    ref = tmp_path / "scene" / "reference.gpkg"
    options = {**TINY, "n_dates": 3, "spot": "geotiff"}
    assert ensure(ref, **options) and not ensure(ref, **options)  # generated, then trusted for the same options
    (tmp_path / "scene" / "s2" / "stale.txt").write_text("from another generation")
    assert ensure(ref, **options, small_objects=40)  # other options: generated again, its old files gone
    assert not (tmp_path / "scene" / "s2" / "stale.txt").exists()
    assert gpd.read_file(ref)["code"].isin([10, 11]).any() and not ensure(ref, **options, small_objects=40)
