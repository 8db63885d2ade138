"""Patch models: networks, trainer, patch reading, tiled inference, and the chain end to end on CPU."""

import json
import os

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from chain import config, models
from chain.catalog import build_catalog
from chain.deep import trainer
from chain.deep.inputs import PatchInput, TileBlock
from chain.demo import generate
from chain.errors import ConfigError, StepError
from chain.features import compute_features, feature_spec
from chain.models import check, model_type
from chain.models.m3fusion import M3FusionNet
from chain.models.multiresolcc import MultiResoLCCNet
from chain.runner import run_pipeline
from tests.conftest import TINY, tiny_config

SMALL = {
    "multiresolcc": {"type": "multiresolcc", "pan_patch": 28, "pan_channels": [4, 8, 8], "ms_channels": [4, 8, 8]},
    "m3fusion": {"type": "m3fusion", "rnn_units": 8, "vhr_patch": 13, "cnn_channels": [4, 8]},
    "twinns": {"type": "twinns", "patch": 3, "rnn_units": 4, "cnn_channels": [4, 8]},
    "rf_patch": {"type": "rf_patch", "patch_px": 3, "pan_patch": 4, "n_estimators": 10},
}
TRAIN = {"epochs": 2, "batch_size": 32, "lr": 0.003, "max_samples_per_class": 60}
INPUTS = {
    "multiresolcc": {"s2": None, "spot": {"path": "scene/spot"}},
    "m3fusion": {"spot": {"path": "scene/spot"}},
    "twinns": {"s1": {"path": "scene/s1"}},
    "rf_patch": {"spot": {"path": "scene/spot"}},
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("deep") / "s", **{**TINY, "n_dates": 6}, s1=True, spot="geotiff")


def _network(cfg):
    return lambda n, shapes: model_type(cfg.type).network(cfg, n, shapes)


def model_inputs(cfg, spec, cat):
    return model_type(cfg.type).inputs(cfg, spec, cat)


def _model(kind):
    return {**SMALL[kind], **(TRAIN if kind != "rf_patch" else {})}


def _config(scene, folder, kind, **extra):
    extra = {"model": _model(kind), "split": {"scheme": "64/16/20", "small_class": "drop"}, **extra}
    return config.load(tiny_config(scene, folder, inputs=INPUTS[kind], **extra))


def _fake_batch(shapes, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n, s["channels"], s["size"], s["size"], generator=g) for k, s in shapes.items()}


SHAPES = {
    "multiresolcc": {"pan": {"channels": 1, "size": 28, "steps": 1}, "ms": {"channels": 4, "size": 7, "steps": 1}},
    "m3fusion": {"s2": {"channels": 5 * 13, "size": 1, "steps": 5}, "vhr": {"channels": 5, "size": 13, "steps": 1}},
    "twinns": {"s2": {"channels": 5 * 13, "size": 3, "steps": 5}, "s1": {"channels": 4 * 7, "size": 3, "steps": 7}},
}


@pytest.mark.parametrize("kind,n_aux", [("multiresolcc", 0), ("m3fusion", 2), ("twinns", 4)])
def test_networks_give_fused_and_auxiliary_logits(kind, n_aux):
    cfg = config.parse_model(SMALL[kind])
    net = model_type(kind).network(cfg, 7, SHAPES[kind]).eval()
    out = net(_fake_batch(SHAPES[kind]))
    assert out["fused"].shape == (6, 7) and len(out["aux"]) == n_aux
    assert all(a.shape == (6, 7) for a in out["aux"])
    y = torch.arange(6) % 7
    ce = torch.nn.CrossEntropyLoss()
    expected = ce(out["fused"], y) + 0.3 * sum((ce(a, y) for a in out["aux"]), torch.tensor(0.0))
    total, main = trainer._losses(out, y, ce, 0.3)
    assert torch.isclose(total, expected) and torch.isclose(main, ce(out["fused"], y))


def test_default_sizes_follow_the_papers():
    m = MultiResoLCCNet(5, 1, 4, 32, 8)
    assert m.head.in_features == 512 + 1024
    f = M3FusionNet(5, 10, 13, 5, 25)
    assert f.gru.hidden_size == 1024 and f.head.in_features == 1024 + 512
    assert f(_fake_batch({"s2": {"channels": 130, "size": 1}, "vhr": {"channels": 5, "size": 25}}, n=2))["fused"].shape == (2, 5)
    with pytest.raises(ConfigError, match="too small"):
        MultiResoLCCNet(5, 1, 4, 16, 4)


def _train(kind, seed):
    cfg = config.parse_model({**SMALL[kind], **TRAIN})
    shapes = SHAPES[kind]
    rng = np.random.default_rng(0)
    y = np.repeat([1, 2, 3], 20)
    patches = {k: (rng.normal(size=(60, s["channels"], s["size"], s["size"])) + y[:, None, None, None]).astype(np.float16)
               for k, s in shapes.items()}
    inputs = [PatchInput(k, "grid", s["size"], tuple(range(s["channels"])), s["steps"]) for k, s in shapes.items()]
    return trainer.train(cfg, _network(cfg), inputs, {k: s["channels"] for k, s in shapes.items()}, [1, 2, 3], patches, y,
                         None, None, seed)


@pytest.mark.parametrize("kind", ["multiresolcc", "twinns"])
def test_training_is_deterministic_on_cpu(kind):
    a, _, ha = _train(kind, 5)
    b, _, hb = _train(kind, 5)
    c, _, _ = _train(kind, 6)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_save_load_round_trip(tmp_path):
    net, norm, hist = _train("m3fusion", 1)
    cfg = SMALL["m3fusion"] | TRAIN
    manifest = {"type": "m3fusion", "classes": [1, 2, 3], "shapes": SHAPES["m3fusion"], "params": cfg,
                "feature_names": ["a"], "inputs": []}
    trainer.save(tmp_path, net, norm, hist, manifest)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    man = models.read_manifest(tmp_path)
    loaded, norm2 = trainer.load(tmp_path, man, _network(config.parse_model(cfg)))
    x = _fake_batch(SHAPES["m3fusion"])
    assert torch.equal(net(x)["fused"], loaded(x)["fused"])
    assert norm2.mean == norm.mean and man["versions"]["torch"] == torch.__version__
    with pytest.raises(StepError, match="other patch inputs"):
        check(tmp_path, ["a"], [{"name": "vhr", "kind": "vhr", "size": 25, "index": [], "steps": 1}])


def test_patches_are_centred_on_the_pixel(scene, tmp_path):
    cfg = _config(scene, tmp_path / "c", "rf_patch")
    cat = build_catalog(cfg)
    spec = feature_spec(cfg, cat)
    win = Window(8, 8, 24, 24)
    inp = [PatchInput("features", "grid", 3, tuple(range(len(spec.names)))), PatchInput("pan", "pan", 8, source="spot")]
    block = TileBlock(cat, spec, inp, win)
    rows, cols = np.array([8, 20, 31]), np.array([8, 15, 31])
    got = block.gather(rows, cols)
    full = compute_features(cat, spec, Window(0, 0, cat.grid.width, cat.grid.height)).values
    for k, (r, c) in enumerate(zip(rows, cols, strict=False)):
        np.testing.assert_array_equal(got["features"][k], full[:, r - 1:r + 2, c - 1:c + 2])
    # the 8x8 PAN patch of a 10 m cell spans 12 m around the cell centre
    with rasterio.open(cat.source("spot").pan) as src:
        x, y = cat.grid.affine * (cols[1] + 0.5, rows[1] + 0.5)
        pc, pr = ~src.transform * (x, y)
        expect = src.read(1, window=Window(int(np.floor(pc - 4 + 0.5)), int(np.floor(pr - 4 + 0.5)), 8, 8))
    np.testing.assert_array_equal(got["pan"][1, 0], expect)


@pytest.mark.parametrize("kind", ["multiresolcc", "twinns", "rf_patch", "m3fusion"])
def test_chain_runs_each_patch_model_and_tiles_are_seamless(scene, tmp_path, kind):
    cfg = _config(scene, tmp_path / kind, kind)
    run_pipeline(cfg)
    final = cfg.workdir / "final"
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["summary"]["oa"]["mean"] > 0.35  # 2 epochs on ~60 patches per class: far above chance, not tuned
    with rasterio.open(final / "Classif_Seed_0.tif") as src:
        mapped = src.read(1)
    assert (mapped > 0).mean() > 0.9
    sensors = {"multiresolcc": ("SPOT valid",), "twinns": ("S2 clear dates", "S1 valid dates")}.get(kind, ("S2 clear dates", "SPOT valid"))
    with rasterio.open(final / "PixelsValidity.tif") as src:  # one named band per sensor
        assert src.descriptions == sensors
        counts = src.read()
    assert counts[0].max() >= 1 and (counts[-1] <= (6 if sensors[-1] != "SPOT valid" else 1) * 10).all()
    mdir = cfg.workdir / "train" / "run_0"
    manifest = json.loads((mdir / "manifest.json").read_text())
    assert manifest["type"] == kind and manifest["inputs"]
    # tiled inference (the run used 32 px tiles) equals one untiled pass over the scene
    cat = build_catalog(cfg)
    spec = feature_spec(cfg, cat)
    valid, proba, _ = models.load(mdir).predict_window(cat, spec, Window(0, 0, cat.grid.width, cat.grid.height))
    whole = np.zeros(valid.shape, np.uint8)
    whole[valid] = np.asarray(manifest["classes"])[proba.argmax(1)]
    assert (whole == mapped).mean() > 0.999
    if kind != "rf_patch":
        _device_pipeline_equals_host_path(models.load(mdir), manifest["normalisation"], cat, spec)


def _device_pipeline_equals_host_path(model, norm, cat, spec):
    """Patches cut and normalised on the device (the network's first layer) = cut by numpy and normalised by the
    Normaliser, to the bit on CPU; the prefetching loop over tiles = one tile at a time."""
    model = getattr(model, "inner", model)  # calibrated: the network's own probabilities
    windows = [Window(0, 0, 20, 17), Window(20, 0, cat.grid.width - 20, 17), Window(3, 17, 30, cat.grid.height - 17)]
    norm = trainer.Normaliser(norm["mean"], norm["std"], norm.get("period", {}))
    for window, (valid, proba, _) in model.predict_windows(cat, spec, windows):
        block = TileBlock(cat, spec, model.inputs, window)
        rr, cc = np.nonzero(block.valid)
        patches = block.gather(rr + int(window.row_off), cc + int(window.col_off))
        with torch.no_grad():
            logits = model.network({k: torch.from_numpy(norm.apply(k, v)) for k, v in patches.items()})["fused"]
        np.testing.assert_array_equal(valid, block.valid)
        np.testing.assert_array_equal(proba, torch.softmax(logits, 1).numpy())
        np.testing.assert_array_equal(proba, model.predict_window(cat, spec, window)[1])
    stages = model.seconds
    assert set(stages) == {"read", "upload", "cut", "forward"} and all(s > 0 for s in stages.values())


def test_models_check_their_inputs_before_any_work(scene, tmp_path):
    cfg = config.load(tiny_config(scene, tmp_path / "a", inputs={"s2": {"path": "scene/s2"}}, model=_model("multiresolcc")))
    with pytest.raises(ConfigError, match="needs a SPOT"):
        run_pipeline(cfg)
    assert not (cfg.workdir / "sample").exists()
    cfg = config.load(tiny_config(scene, tmp_path / "b", inputs=INPUTS["multiresolcc"], model={**_model("multiresolcc"), "pan_patch": 12}))
    with pytest.raises(ConfigError, match="too small"):
        run_pipeline(cfg)
    cfg = config.load(tiny_config(scene, tmp_path / "crs", inputs=INPUTS["multiresolcc"], model=_model("multiresolcc"),
                                  grid={"crs": "EPSG:32739", "resolution_m": 6, "tile_size_px": 32}))
    with pytest.raises(ConfigError, match="set grid.crs to their CRS"):
        run_pipeline(cfg)
    assert not (cfg.workdir / "sample").exists()
    if not torch.cuda.is_available():
        cfg = config.load(tiny_config(scene, tmp_path / "c", inputs=INPUTS["twinns"], model={**_model("twinns"), "device": "cuda"}))
        with pytest.raises(ConfigError, match="no CUDA"):
            run_pipeline(cfg)


def test_model_inputs_follow_the_feature_names(scene, tmp_path):
    cfg = _config(scene, tmp_path / "t", "twinns")
    cat = build_catalog(cfg)
    spec = feature_spec(cfg, cat)
    s2, s1 = model_inputs(cfg.model, spec, cat)
    names = spec.names
    (_, g2), = spec.of_source("s2")
    T, D = s2.steps, len(g2.channels)
    assert [names[i] for i in s2.index[:D]] == [f"{c}_{g2.dates[0]:%Y%m%d}" for c in g2.channels]
    assert g2.channels == ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12", "NDVI", "NDWI", "BRIGHTNESS")
    assert len(s2.index) == T * D
    assert all(names[i].startswith("S1_") for i in s1.index) and len(s1.index) % s1.steps == 0


def test_compare_models_scores_every_model_on_the_same_pixels(scene, tmp_path):
    cfg = config.load(tiny_config(scene, tmp_path / "cmp", inputs=INPUTS["multiresolcc"], model=_model("multiresolcc"),
                                  split={"scheme": "30/70", "runs": 2, "small_class": "drop"},
                                  compare_models=[{"type": "rf", "n_estimators": 10}, {"type": "rf_patch", "pan_patch": 8,
                                                                                         "n_estimators": 10}]))
    run_pipeline(cfg)
    comparison = json.loads((cfg.workdir / "compare_models" / "comparison.json").read_text())
    assert [m["name"] for m in comparison["models"]] == ["multiresolcc", "rf", "rf_patch"]
    assert all(len(m["runs"]) == 2 for m in comparison["models"])
    n = {m["runs"][0]["n_pixels"] for m in comparison["models"]}
    assert len(n) == 1  # the same evaluation pixels for every model
    # the map's own validation and the comparison agree on the model that made the map
    metrics = json.loads((cfg.workdir / "final" / "metrics.json").read_text())
    assert abs(metrics["runs"][0]["oa"] - comparison["models"][0]["runs"][0]["oa"]) < 0.02
    assert "Model comparison" in (cfg.workdir / "final" / "RESULTS.txt").read_text()
    html = (cfg.workdir / "final" / "report.html").read_text()
    assert "Model comparison" in html and html.count("alt='training curves run") == 2
    for m in comparison["models"][1:]:
        assert (cfg.workdir / "compare_models" / f"model_{comparison['models'].index(m)}" / "run_1" / "manifest.json").exists()


def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    reference, _, hist_ref = _train("twinns", 3)

    class Killed(Exception):
        pass

    def die_after_first(epoch):
        if epoch == 1:
            raise Killed

    ckpt = tmp_path / "checkpoint.pt"
    cfg = config.parse_model({**SMALL["twinns"], **TRAIN})
    shapes = SHAPES["twinns"]
    rng = np.random.default_rng(0)
    y = np.repeat([1, 2, 3], 20)
    patches = {k: (rng.normal(size=(60, s["channels"], s["size"], s["size"])) + y[:, None, None, None]).astype(np.float16)
               for k, s in shapes.items()}
    inputs = [PatchInput(k, "grid", s["size"], tuple(range(s["channels"])), s["steps"]) for k, s in shapes.items()]
    args = (cfg, _network(cfg), inputs, {k: s["channels"] for k, s in shapes.items()}, [1, 2, 3], patches, y, None, None, 3)
    monkeypatch.setattr(trainer, "_epoch_done", die_after_first)
    with pytest.raises(Killed):
        trainer.train(*args, checkpoint=ckpt)
    assert ckpt.exists()
    monkeypatch.setattr(trainer, "_epoch_done", lambda epoch: None)
    resumed, _, hist = trainer.train(*args, checkpoint=ckpt)
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in hist_ref]
    for k, v in reference.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_pansharpened_patches_keep_the_ms_level_and_add_pan_detail(scene, tmp_path):
    cfg = _config(scene, tmp_path / "pxs", "m3fusion", model={**_model("m3fusion"), "vhr_input": "pansharpened"})
    cat = build_catalog(cfg)
    spec = feature_spec(cfg, cat)
    assert len(cat.source("spot").pan_fit) == len(cat.source("spot").ms_bands) + 1
    (s2, vhr) = model_inputs(cfg.model, spec, cat)
    assert vhr.kind == "pxs" and vhr.channels(cat) == 4
    block = TileBlock(cat, spec, [PatchInput("pxs", "pxs", 24, source="spot")], Window(10, 10, 20, 20))
    pxs = block.gather(np.array([20]), np.array([20]))["pxs"][0]  # (4, 24, 24) at 1.5 m
    with rasterio.open(cat.source("spot").pan) as src:
        x, y = cat.grid.affine * (20.5, 20.5)
        pc, pr = ~src.transform * (x, y)
        pan = src.read(1, window=Window(int(np.floor(pc - 12 + 0.5)), int(np.floor(pr - 12 + 0.5)), 24, 24)).astype(float)
    # the PAN's detail is there: each band follows the PAN pixel by pixel
    for b in range(4):
        assert np.corrcoef(pxs[b].ravel(), pan.ravel())[0, 1] > 0.6
    # and the level of each band is the MS one: 4x4 PAN blocks average back to the MS pixels (about)
    with rasterio.open(cat.source("spot").ms) as src:
        ms = src.read(window=Window(int(np.floor(pc / 4 - 3 + 0.5)), int(np.floor(pr / 4 - 3 + 0.5)), 6, 6)).astype(float)
    back = pxs.reshape(4, 6, 4, 6, 4).mean(axis=(2, 4))
    assert np.median(np.abs(back - ms) / ms) < 0.15
    run_pipeline(cfg)  # M3Fusion on the pansharpened patches, end to end
    assert json.loads((cfg.workdir / "train" / "run_0" / "manifest.json").read_text())["shapes"]["vhr"]["channels"] == 4


@pytest.mark.parametrize("kind", ["multiresolcc", "m3fusion", "twinns"])
def test_the_exported_program_gives_the_same_probabilities(tmp_path, kind):
    net, norm, hist = _train(kind, 1)
    shapes = SHAPES[kind]
    inputs = [{"name": k, "kind": "grid", "size": s["size"], "index": list(range(s["channels"])), "steps": s["steps"]}
              for k, s in shapes.items()]
    manifest = {"type": kind, "classes": [1, 2, 3], "shapes": shapes, "params": SMALL[kind] | TRAIN, "feature_names": ["a"],
                "inputs": inputs}
    trainer.save(tmp_path, net, norm, hist, manifest)
    served = torch.export.load(str(tmp_path / "model.pt2")).module()  # what a user elsewhere does, without chain
    rng = np.random.default_rng(3)
    raw = {k: (rng.normal(size=(9, s["channels"], s["size"], s["size"])) * 2 + 1).astype(np.float32) for k, s in shapes.items()}
    first = next(iter(raw))
    raw[first][0, 0, 0, 0] = np.nan  # a missing value: 0 after normalisation, in both
    with torch.no_grad():
        want = torch.softmax(net({k: torch.from_numpy(norm.apply(k, v)) for k, v in raw.items()})["fused"], 1).numpy()
        got = served(*[torch.from_numpy(raw[k]) for k in shapes]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (9, 3) and np.allclose(got.sum(1), 1, atol=1e-5)


def test_normalisation_is_streamed_and_equals_the_whole_set_statistics():
    import tracemalloc

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6000, 12, 9, 9)) * 3 + 5).astype(np.float16)
    x[5, 2, 1, 1] = np.nan
    ref = x.astype(np.float64)
    tracemalloc.start()
    norm = trainer.Normaliser.fit({"a": x}, chunk_bytes=2 * 2**20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(norm.mean["a"], np.nanmean(ref, axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(norm.std["a"], np.nanstd(ref, axis=(0, 2, 3)), rtol=1e-8)
    assert peak < 0.5 * x.nbytes, f"fit held {peak / 2**20:.1f} MiB for a {x.nbytes / 2**20:.1f} MiB float16 set"
    # per band over the dates (a 3-date series of 4 bands): the same as the old whole-array rule
    per = trainer.Normaliser.fit({"a": x}, {"a": 4})
    r = ref.reshape(6000, 3, 4, 9, 9).swapaxes(1, 2).reshape(6000, 4, -1, 1)
    np.testing.assert_allclose(per.mean["a"], np.nanmean(r, axis=(0, 2, 3)), rtol=1e-10)


def test_training_uses_the_configured_threads_and_restores_them():
    before = torch.get_num_threads()
    cfg = config.parse_model({**SMALL["twinns"], **TRAIN, "torch_threads": 1})
    shapes = SHAPES["twinns"]
    y = np.repeat([1, 2], 10)
    patches = {k: np.random.default_rng(0).normal(size=(20, s["channels"], s["size"], s["size"])).astype(np.float16)
               for k, s in shapes.items()}
    inputs = [PatchInput(k, "grid", s["size"], tuple(range(s["channels"])), s["steps"]) for k, s in shapes.items()]
    _, _, history = trainer.train(cfg, _network(cfg), inputs, {k: s["channels"] for k, s in shapes.items()}, [1, 2], patches, y,
                                  None, None, 0)
    assert [h["threads"] for h in history] == [1, 1]
    assert torch.get_num_threads() == before
    # unset: the cores allotted to this process (SLURM / affinity / cgroup), not the machine's count
    from chain.resources import allotted_cores

    monkey = config.parse_model({**SMALL["twinns"], **TRAIN})
    assert trainer.training_threads(monkey) == allotted_cores() <= (os.cpu_count() or 1)


def test_allotted_cores_follow_the_batch_system(monkeypatch):
    from chain.resources import allotted_cores

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert allotted_cores() == 1


def test_fine_tuning_starts_from_last_years_network(tmp_path):
    """An update's patch network starts from last year's weights and normaliser (chain.update.transfer.StartFrom):
    at a vanishing learning rate it stays last year's network, where a training from scratch does not."""
    from chain.update.transfer import StartFrom

    last, norm, _ = _train("multiresolcc", 0)
    trainer.save(tmp_path, last, norm, [{"epoch": 1, "train_loss": 1.0}],
                 {"type": "multiresolcc", "run": 0, "classes": [1, 2, 3], "shapes": SHAPES["multiresolcc"]})
    start = StartFrom.of(tmp_path, 1e-9, None)
    cfg = config.parse_model({**SMALL["multiresolcc"], **TRAIN})
    shapes = SHAPES["multiresolcc"]
    rng = np.random.default_rng(1)
    y = np.repeat([1, 2, 3], 20)
    patches = {k: (rng.normal(size=(60, s["channels"], s["size"], s["size"])) + 2 * y[:, None, None, None]).astype(np.float16)
               for k, s in shapes.items()}
    inputs = [PatchInput(k, "grid", s["size"], tuple(range(s["channels"])), s["steps"]) for k, s in shapes.items()]
    args = (cfg, _network(cfg), inputs, {k: s["channels"] for k, s in shapes.items()}, [1, 2, 3], patches, y, None, None, 5)
    tuned, tuned_norm, _ = trainer.train(*args, start=start)
    assert tuned_norm.mean == norm.mean and tuned_norm.std == norm.std  # last year's inputs scaling, not refitted
    weights = [k for k in last.state_dict() if k.endswith("weight")]
    for k in weights:
        torch.testing.assert_close(tuned.state_dict()[k], last.state_dict()[k], atol=1e-5, rtol=0)
    scratch, _, _ = trainer.train(*args)
    assert any(not torch.allclose(scratch.state_dict()[k], last.state_dict()[k], atol=1e-3) for k in weights)
