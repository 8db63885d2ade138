"""The contract every registered input source (and every Sentinel-2 product format) keeps.

Parametrized over the registries: a source registered without a case here fails
``test_every_registered_source_has_a_case``. Each case is a real product written by the demo
generator (or, for the feature stack, a GeoTIFF written here), read through the chain's own config.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from chain.catalog import build_catalog
from chain.demo import generate
from chain.errors import InputMissingError
from chain.features import compute_features, feature_spec
from chain.fingerprint import fingerprint_files
from chain.plugins import SOURCES
from chain.sources.sentinel2 import FORMATS
from tests.conftest import TINY, config_for


@pytest.fixture(scope="module")
def scenes(full_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {"full": full_scene}
    for layout in ("theia_zip", "sen2cor"):
        out[layout] = generate(tmp_path_factory.mktemp(layout) / "scene", **{**TINY, "n_dates": 4}, layout=layout)
    # a feature stack: 3 named float32 bands on the S2 grid, a no-data corner
    with rasterio.open(next((full_scene / "s2").glob("*/DEMO_*_B2.tif"))) as src:
        profile = {**src.profile, "count": 3, "dtype": "float32", "nodata": -9999.0}
        rng = np.random.default_rng(1)
        data = rng.normal(size=(3, src.height, src.width)).astype(np.float32)
    data[:, :5, :5] = -9999.0
    stack = full_scene.parent / "stack.tif"
    with rasterio.open(stack, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(("alpha", "beta", "gamma"), 1):
            dst.set_band_description(i, name)
    out["stack"] = stack
    return out


# source (or "s2:<format>") -> its config section, from the scenes above
CASES = {
    "s2:folders": lambda s: ("s2", {"path": str(s["full"] / "s2")}),
    "s2:theia": lambda s: ("s2", {"path": str(s["theia_zip"] / "s2"), "format": "theia"}),
    "s2:sen2cor": lambda s: ("s2", {"path": str(s["sen2cor"] / "s2"), "format": "sen2cor"}),
    "s1": lambda s: ("s1", {"path": str(s["full"] / "s1")}),
    "spot": lambda s: ("spot", {"path": str(s["full"] / "spot")}),
    "stack": lambda s: ("stack", {"path": str(s["stack"])}),
    "landsat": lambda s: ("landsat", {"path": str(s["full"] / "landsat")}),
}


def registered() -> list[str]:
    return [f"s2:{f}" for f in FORMATS.names()] + [n for n in SOURCES.names() if n != "s2"]


def test_every_registered_source_has_a_case():
    assert set(registered()) <= set(CASES), f"add a conformance case for {sorted(set(registered()) - set(CASES))}"


def _catalog(scenes, case, tmp_path, **grid):
    name, section = CASES[case](scenes)
    cfg = config_for(scenes["full"], tmp_path / "work", {name: section}, grid={"tile_size_px": 32, **grid})
    cat = build_catalog(cfg)
    return cfg, cat, cat.source(name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_description_round_trips_and_lists_its_files(scenes, tmp_path, case):
    _, _, src = _catalog(scenes, case, tmp_path)
    again = type(src).from_dict(json.loads(json.dumps(src.to_dict())))  # what the catalogue stores is plain JSON
    assert again == src
    files = src.files()
    assert files and len(fingerprint_files(files)) >= 1  # every file exists on disk (inside its archive, if any)
    assert src.summary() and src.grid_headers()[0].crs is not None


@pytest.mark.parametrize("case", sorted(CASES))
def test_names_match_the_bands_read_and_the_validity_convention_holds(scenes, tmp_path, case):
    cfg, cat, src = _catalog(scenes, case, tmp_path)
    spec = feature_spec(cfg, cat)
    groups = [g for _, g in spec.of_source(src.name)]
    assert groups and all(len(g.names) == len(set(g.names)) for g in groups)
    for g in groups:
        if g.is_series:  # band-major: <...channel>_<YYYYMMDD>, every date of a channel, then the next channel
            expected = [(c, f"{d:%Y%m%d}") for c in g.channels for d in g.dates]
            assert [(n[:-9], n[-8:]) for n in g.names] == [(n[:-9], d) for n, (c, d) in zip(g.names, expected, strict=True)]
            assert all(n[:-9].endswith(c) for n, (c, _) in zip(g.names, expected, strict=True))
    w = Window(0, 0, min(24, cat.grid.width), min(24, cat.grid.height))
    block = src.read(cat.grid, w, groups, spec.method)
    assert block.values.shape == (sum(len(g.names) for g in groups), int(w.height), int(w.width))
    assert block.values.dtype == np.float32 and block.count.dtype == np.uint16
    assert block.per_sensor and all(v.shape == block.count.shape and v.dtype == np.uint16 for v in block.per_sensor.values())
    assert np.isnan(block.values[:, block.count == 0]).all()  # nothing observed: no features
    if block.usable is not None:
        assert np.isnan(block.values[:, ~block.usable]).all()
    assert np.isfinite(block.values[:, block.count > 0]).mean() > 0.5


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_window_read_alone_equals_the_same_window_cut_from_a_bigger_read(scenes, tmp_path, case):
    """On the S2 10 m grid, whatever the source's own pixels (warped, up-sampled, averaged): tiles must not show."""
    with rasterio.open(next((scenes["full"] / "s2").glob("*/DEMO_*_B2.tif"))) as ref:
        grid = {"crs": "EPSG:32740", "resolution_m": 10, "bounds": list(ref.bounds)}
    cfg, cat, src = _catalog(scenes, case, tmp_path, **grid)
    spec = feature_spec(cfg, cat)
    whole = compute_features(cat, spec, Window(0, 0, cat.grid.width, cat.grid.height))
    part = compute_features(cat, spec, Window(13, 7, 29, 33))
    np.testing.assert_array_equal(part.values, whole.values[:, 7:40, 13:42])
    np.testing.assert_array_equal(part.n_valid, whole.n_valid[7:40, 13:42])


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_missing_input_is_a_clear_error_naming_the_key(scenes, tmp_path, case):
    name, section = CASES[case](scenes)
    missing = {**section, "path": str(tmp_path / "nowhere")}
    cfg = config_for(scenes["full"], tmp_path / "work", {name: missing})
    with pytest.raises(InputMissingError, match=f"inputs.{name}") as err:
        build_catalog(cfg)
    assert "nowhere" in str(err.value)
