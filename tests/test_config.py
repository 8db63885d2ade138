from pathlib import Path

import pytest
import yaml

from chain import config
from chain.errors import ConfigError

MINIMAL = {"workdir": "out", "inputs": {"s2": {"path": "s2"}, "reference": {"path": "ref.gpkg"}}}


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_paths_are_relative_to_the_config_file(tmp_path):
    cfg = config.load(_write(tmp_path, MINIMAL))
    assert cfg.workdir == (tmp_path / "out").resolve()
    assert cfg.inputs.s2.path == (tmp_path / "s2").resolve()
    assert cfg.model.n_estimators == 100  # defaults filled in


def test_unknown_keys_get_a_closest_name_hint_and_all_problems_are_listed(tmp_path):
    data = {**MINIMAL, "modle": {}, "split": {"shceme": "30/70", "runs": 0}}
    with pytest.raises(ConfigError) as e:
        config.load(_write(tmp_path, data))
    msg = str(e.value)
    assert str(tmp_path / "c.yaml") in msg
    assert "unknown key 'modle'; did you mean 'model'?" in msg
    assert "unknown key 'split.shceme'; did you mean 'scheme'?" in msg
    assert "split.runs" in msg and "greater than or equal to 1" in msg


def test_bad_choice_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"split.scheme.*'50/50'"):
        config.load(_write(tmp_path, {**MINIMAL, "split": {"scheme": "50/50"}}))


def test_missing_sections_and_files(tmp_path):
    with pytest.raises(ConfigError, match="missing required key 'inputs'"):
        config.load(_write(tmp_path, {"workdir": "x"}))
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")


def test_set_overrides_any_key(tmp_path):
    cfg = config.load(_write(tmp_path, MINIMAL), ["model.n_estimators=7", "gapfill.start=2021-02-01", "split.scheme=64/16/20"])
    assert cfg.model.n_estimators == 7
    assert str(cfg.gapfill.start) == "2021-02-01"
    assert cfg.split.scheme == "64/16/20"


def test_example_and_demo_configs_are_valid():
    root = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert {"example.yaml", "demo.yaml", "demo_spot.yaml", "demo_all.yaml", "demo_sen2cor_2tiles.yaml"} <= set(names)
    for name in names:
        config.load(root / name)


def test_placeholders_are_filled_from_vars_and_set(tmp_path):
    data = {**MINIMAL, "workdir": "out/${year}", "vars": {"year": 2021, "trees": 50},
            "gapfill": {"start": "${year}-01-01", "end": "${year}-12-31"}, "model": {"n_estimators": "${trees}"}}
    path = _write(tmp_path, data)
    cfg = config.load(path)
    assert cfg.workdir.name == "2021" and str(cfg.gapfill.start) == "2021-01-01"
    assert cfg.model.n_estimators == 50
    cfg = config.load(path, ["year=2022"])
    assert cfg.workdir.name == "2022" and str(cfg.gapfill.end) == "2022-12-31"
    assert config.load(path, ["vars.year=2023"]).workdir.name == "2023"


def test_undefined_placeholder_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'workdir': placeholder \$\{year\} has no value"):
        config.load(_write(tmp_path, {**MINIMAL, "workdir": "out/${year}"}))


def test_paths_can_use_environment_variables(tmp_path, monkeypatch):
    data = {**MINIMAL, "workdir": "${env:CHAIN_TEST_OUT}/${year}", "vars": {"year": 2021},
            "inputs": {**MINIMAL["inputs"], "s2": {"path": "${env:CHAIN_TEST_DATA}/s2"}}}
    path = _write(tmp_path, data)
    monkeypatch.setenv("CHAIN_TEST_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CHAIN_TEST_OUT", str(tmp_path / "out"))
    cfg = config.load(path)
    assert cfg.inputs.s2.path == tmp_path / "data" / "s2" and cfg.workdir == tmp_path / "out" / "2021"
    monkeypatch.delenv("CHAIN_TEST_DATA")
    with pytest.raises(ConfigError, match=r"key 'inputs.s2.path': environment variable CHAIN_TEST_DATA is not set"):
        config.load(path)


def test_set_addresses_integer_keys_and_colours_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("workdir: w\ninputs: {s2: {path: s2}, reference: {path: r.gpkg}}\n"
                    "classes: {1: {name: cane, color: '#102030'}}\n")
    cfg = config.load(path, ["classes.1.name=sugarcane"])
    assert cfg.classes[1].name == "sugarcane" and cfg.classes[1].color == (16, 32, 48)  # the file's colour is kept
    assert config.load(path, ["classes.1.color=darkgreen"]).classes[1].color == (0, 100, 0)
    for bad in ("reddish", "[300, 0, 0]"):
        with pytest.raises(ConfigError, match="classes.1.color"):
            config.load(path, [f"classes.1.color={bad}"])


def test_demo_two_tiles_need_a_product_layout(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("workdir: w\ninputs: {s2: {path: s2}, reference: {path: r.gpkg}}\ndemo: {s2_tiles: 2}\n")
    with pytest.raises(ConfigError, match="key 'demo': .*s2_tiles: 2 .*needs a product layout"):
        config.load(path)
