"""Shared fixtures: a tiny generated scene (real GeoTIFFs/GPKG, real CRS) and configs pointing at it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from chain.demo import generate

TINY = {"size_px": 64, "n_dates": 8, "n_fields": 30, "seed": 3}


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo generator at a tiny size: 64 x 64 px, 8 dates, ~30 fields, 7 classes."""
    return generate(tmp_path_factory.mktemp("scene"), **TINY)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_config(scene: Path, folder: Path, **sections: Any) -> Path:
    """Write a config for ``scene`` into ``folder`` (relative paths, as users write them)."""
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / "scene"
    if not local.exists():
        shutil.copytree(scene, local)
    cfg = {
        "workdir": "work",
        "seed": 7,
        "inputs": {"s2": {"path": "scene/s2"}, "reference": {"path": "scene/reference.gpkg", "name_field": "name"}},
        "grid": {"tile_size_px": 32},
        "gapfill": {"interval_days": 30},
        "split": {"scheme": "30/70", "runs": 1, "small_class": "drop"},
        "model": {"n_estimators": 20, "n_jobs": 1},
        "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "memory_limit": "1GiB"},
    }
    model = sections.get("model") or {}
    if model.get("type", "rf") not in ("rf", "rf_patch"):
        cfg.pop("model")  # the RF defaults above mean nothing to a torch model
    cfg = _merge(cfg, sections)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def make_config(tiny_scene: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(name: str = "case", **sections: Any) -> Path:
        return tiny_config(tiny_scene, tmp_path / name, **sections)

    return make


@pytest.fixture(scope="session")
def full_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny scene with every product the generator writes: S2 (date folders), S1, SPOT (GeoTIFF pair), Landsat."""
    return generate(tmp_path_factory.mktemp("full") / "scene", **{**TINY, "n_dates": 6}, s1=True, spot="geotiff", landsat=True)


def config_for(scene: Path, workdir: Path, inputs: dict[str, Any], **sections: Any) -> Any:
    """A validated config reading ``scene`` in place (absolute paths), writing into ``workdir``."""
    from chain import config

    data = {
        "workdir": str(workdir), "seed": 7,
        "inputs": {**inputs, "reference": {"path": str(scene / "reference.gpkg"), "name_field": "name"}},
        "grid": {"tile_size_px": 32}, "gapfill": {"interval_days": 30},
        "split": {"scheme": "30/70", "runs": 1, "small_class": "drop"},
        "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "memory_limit": "1GiB"},
    }
    return config.parse(_merge(data, sections), base_dir=scene)
