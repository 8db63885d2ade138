"""The contract every registered model type keeps, parametrized over the model registry.

Each case trains the type, at a tiny size, through the chain's own steps on the tiny scene (real
files), then checks the artifact, the loaded predictor and tiling. A type registered without a case
here fails ``test_every_registered_model_type_has_a_case``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from chain import config, models, products
from chain.errors import ConfigError
from chain.evaluation import predict_samples
from chain.grid import make_tiles
from chain.models.base import KINDS
from chain.plugins import MODELS
from chain.runner import Context, run_pipeline
from tests.conftest import config_for

TORCH = {"epochs": 2, "batch_size": 32, "lr": 0.003, "max_samples_per_class": 60}
# model type -> (its section at a tiny size, the inputs it needs)
CASES = {
    "rf": ({"type": "rf", "n_estimators": 15, "n_jobs": 1}, ("s2",)),
    "rf_patch": ({"type": "rf_patch", "patch_px": 3, "pan_patch": 4, "n_estimators": 10, "n_jobs": 1}, ("s2", "spot")),
    "multiresolcc": ({"type": "multiresolcc", "pan_patch": 28, "pan_channels": [4, 8, 8], "ms_channels": [4, 8, 8], **TORCH}, ("spot",)),
    "m3fusion": ({"type": "m3fusion", "rnn_units": 8, "vhr_patch": 13, "cnn_channels": [4, 8], **TORCH}, ("s2", "spot")),
    "twinns": ({"type": "twinns", "patch": 3, "rnn_units": 4, "cnn_channels": [4, 8], **TORCH}, ("s2", "s1")),
    "tempcnn": ({"type": "tempcnn", "filters": 8, "dense": 16, **TORCH}, ("s2",)),
    "ltae": ({"type": "ltae", "embedding": 8, "d_model": 16, "n_head": 2, "d_k": 4, "mlp": [16, 8], "decoder": [8], "series": ["s2", "s1"],
              **TORCH}, ("s2", "s1")),
    "patch_cnn": ({"type": "patch_cnn", "patch_px": 45, "channels": [8, 8, 8, 8], **TORCH, "epochs": 6}, ("spot",)),
    # a segmentation model maps the SPOT PAN pixels (S2 fusion: tests/test_fcn.py)
    "fcn": ({"type": "fcn", "widths": [4, 8, 8], "tile_px": 32, "tile_margin_px": 4, "window_px": 32, "overlap_px": 8, "epochs": 10,
             "lr": 0.005, "batch_size": 4}, ("spot",)),
}
GRIDS = {"fcn": {"resolution_m": 1.5, "tile_size_px": 96}}
INPUTS = {"s2": {"path": "s2"}, "s1": {"path": "s1"}, "spot": {"path": "spot"}}


def test_every_registered_model_type_has_a_case():
    assert set(MODELS.names()) <= set(CASES), f"add a conformance case for {sorted(set(MODELS.names()) - set(CASES))}"


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request, full_scene, tmp_path_factory):
    kind = request.param
    section, needs = CASES[kind]
    workdir = tmp_path_factory.mktemp(kind) / "work"
    cfg = config_for(full_scene, workdir, {k: INPUTS[k] for k in needs}, model=section,
                     split={"scheme": "64/16/20", "runs": 1, "small_class": "drop"}, **({"grid": GRIDS[kind]} if kind in GRIDS else {}))
    run_pipeline(cfg, to_step="train")
    ctx = Context(cfg, cfg.workdir)
    return kind, cfg, ctx, ctx.paths.model(0)


def test_the_type_declares_its_kind_schema_and_files(trained):
    kind, cfg, ctx, folder = trained
    t = models.model_type(kind)
    assert t.name == kind and t.kind in KINDS
    assert t.config.model_fields["type"].annotation.__args__ == (kind,)  # model.type selects this schema
    assert config.parse_model({"type": kind, **{k: v for k, v in CASES[kind][0].items() if k != "type"}}) == cfg.model
    for f in (*t.files, "manifest.json"):
        assert (folder / f).stat().st_size > 0, f  # what the train step declares is there


def test_the_manifest_records_what_classification_checks(trained):
    kind, cfg, ctx, folder = trained
    manifest = models.read_manifest(folder)
    spec = products.spec(ctx)
    assert manifest["type"] == kind and manifest["feature_names"] == spec.names
    assert manifest["classes"] == sorted(manifest["classes"]) and set(manifest["train_pixels"]) == {str(c) for c in manifest["classes"]}
    assert manifest["versions"]["chain"] and manifest["versions"]["numpy"]
    inputs = [i.to_dict() for i in models.model_type(kind).inputs(cfg.model, spec, products.catalog(ctx))]
    assert models.check(folder, spec.names, inputs) == manifest
    assert bool(inputs) == (models.model_type(kind).kind in ("patch", "segmentation"))


def test_probabilities_have_the_classes_shape_and_survive_a_save_load_round_trip(trained, tmp_path):
    kind, cfg, ctx, folder = trained
    cat, spec = products.catalog(ctx), products.spec(ctx)
    samples = products.samples(ctx).take(np.arange(0, len(products.samples(ctx).code), 7))
    a = models.load(folder)
    moved = tmp_path / "copy"
    shutil.copytree(folder, moved)  # an artifact does not depend on where it lies
    b = models.load(moved)
    np.testing.assert_array_equal(a.classes_, models.read_manifest(folder)["classes"])
    pa = _proba(a, samples, cat, spec)
    pb = _proba(b, samples, cat, spec)
    assert pa.shape == (len(samples.code), len(a.classes_))
    assert np.all((pa >= 0) & (pa <= 1)) and np.allclose(pa.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(pa, pb)
    pred = predict_samples(a, samples, cat, spec, cfg.grid.tile_size_px)
    assert set(np.unique(pred)) <= set(a.classes_.tolist())
    assert (pred == samples.code).mean() > 0.3  # trained on these pixels' polygons' split: far above chance


def _proba(model, samples, cat, spec):
    if not model.inputs:
        return model.predict_proba(samples.X)
    if model.whole_tile:  # segmentation: read off the map of the tiles holding the samples
        from chain.evaluation import proba_of_samples

        return proba_of_samples(model, samples, cat, spec, 64)
    from chain.deep.inputs import TileBlock, by_tile

    out = np.zeros((len(samples.code), len(model.classes_)), np.float64)
    for window, idx in by_tile(cat, samples.row, samples.col, 32):
        out[idx] = model.predict_proba(TileBlock(cat, spec, model.inputs, window).gather(samples.row[idx], samples.col[idx]))
    return out


def test_a_tiled_map_equals_an_untiled_one(trained):
    kind, cfg, ctx, folder = trained
    cat, spec = products.catalog(ctx), products.spec(ctx)
    model = models.load(folder)
    g = cat.grid
    valid, proba, _ = model.predict_window(cat, spec, Window(0, 0, g.width, g.height))
    whole = np.zeros(valid.shape, np.int64)
    whole[valid] = model.classes_[proba.argmax(1)]
    tiled = np.zeros_like(whole)
    for t in make_tiles(g, 20):  # tiles that do not divide the scene
        v, p, _ = model.predict_window(cat, spec, t.window)
        block = np.zeros(v.shape, np.int64)
        block[v] = model.classes_[p.argmax(1)]
        r, c = int(t.window.row_off), int(t.window.col_off)
        tiled[r:r + v.shape[0], c:c + v.shape[1]] = block
    assert valid.mean() > 0.5
    np.testing.assert_array_equal(tiled, whole)


def test_an_unknown_type_lists_the_known_ones():
    with pytest.raises(ConfigError, match="did you mean 'rf_patch'") as err:
        config.parse_model({"type": "rf_pach"})
    assert all(n in str(err.value) for n in MODELS.names())


def test_a_model_folder_without_manifest_is_a_clear_error(tmp_path: Path):
    from chain.errors import StepError

    with pytest.raises(StepError, match="run the train step"):
        models.load(tmp_path)
