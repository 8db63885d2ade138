"""Every config key changes some step's outputs (so changing it re-runs that step), or is declared as not
changing any (``chain.params.NO_EFFECT``, with the reason); and changing a key re-runs exactly what it affects."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from chain import config
from chain.params import NO_EFFECT, From
from chain.plugins import MODELS, SOURCES
from chain.runner import run_pipeline, step_class, step_names


def _models_in(annotation: object) -> list[type[BaseModel]]:
    args = [annotation, *typing.get_args(annotation)]
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        if key == "inputs":
            out += leaves(config.ReferenceInput, "inputs.reference.")
            for s in SOURCES.names():
                out += leaves(SOURCES.get(s).config, f"inputs.{s}.")
        elif key in ("model", "compare_models"):
            out += sorted({leaf for t in MODELS.names() for leaf in leaves(MODELS.get(t).config, f"{key}.")})
        elif key in ("classes", "vars"):  # free-form mappings: the whole value is the parameter
            out.append(key)
        elif sub := _models_in(field.annotation):
            out += leaves(sub[0], f"{key}.")
        else:
            out.append(key)
    return out


def reads() -> list[tuple[str, From]]:
    return [(name, src) for name in step_names() for p in (step_class(name).Params, *step_class(name).more_params)
            for src in p.sources().values()]


def _covers(src: From, leaf: str) -> bool:
    if not (leaf == src.path or leaf.startswith(src.path + ".")):
        return False
    rel = leaf[len(src.path) + 1:]
    return not any(rel == e or rel.startswith(e + ".") for e in src.exclude)


def test_every_config_key_is_read_by_a_step_or_declared_without_effect():
    schema = leaves(config.Config)
    assert "inputs.s2.bands" in schema and "model.epochs" in schema and "inputs.landsat.cirrus_invalid" in schema
    unread = [leaf for leaf in schema
              if not any(_covers(src, leaf) for _, src in reads())
              and not any(leaf == k or leaf.startswith(k + ".") for k in NO_EFFECT)]
    assert not unread, f"config keys no step reads (add them to a step's Params, or to chain.params.NO_EFFECT with why): {unread}"
    contradicted = [(k, s) for k in NO_EFFECT for s, src in reads() if _covers(src, k)]
    assert not contradicted, f"declared without effect but read by a step: {contradicted}"


def test_every_declared_key_exists():
    schema = leaves(config.Config)
    for step, src in reads():
        assert any(leaf == src.path or leaf.startswith(src.path + ".") for leaf in schema), (step, src.path)
    for key in NO_EFFECT:
        assert any(leaf == key or leaf.startswith(key + ".") for leaf in schema), key


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_scene):
    from tests.conftest import tiny_config

    path = tiny_config(tiny_scene, tmp_path_factory.mktemp("params"), classes={1: {"color": "#ff0000"}})
    run_pipeline(config.load(path))
    return path


@pytest.mark.parametrize("override,expected", [
    ("classes.1.color=[0, 0, 255]", {"mosaic", "regularize", "validate"}),  # presentation only
    ("model.n_jobs=2", set()),
    ("cluster.n_workers=3", set()),
    ("classify.engine=sklearn", set()),
    ("regularize.mmu_px=9", {"regularize", "validate"}),
    ("split.runs=2", {"split", "train", "classify", "mosaic", "regularize", "validate"}),
    ("gapfill.interval_days=20", {"gapfill", "features", "sample", "train", "classify", "mosaic", "regularize", "validate"}),
])
def test_a_changed_key_re_runs_exactly_what_it_affects(done, override, expected):
    reports = run_pipeline(config.load(done, [override]), dry_run=True)
    assert {r.step for r in reports if r.action == "would run"} == expected
    # the optional steps this config does not enable are never run
    assert {r.step for r in reports if r.action == "off"} <= {"carryover", "cube", "segment", "objects", "compare_models", "vectorize", "changes"}
