"""Experiment configs map 1:1 onto the dataclass tree; typos are errors, not defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from coldstart.experiment.config import ConfigError, ExperimentConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_cover_every_section(path):
    import yaml

    config = load_config(path)
    assert isinstance(config, ExperimentConfig)
    raw = yaml.safe_load(path.read_text())
    # 1:1: every section of the dataclass tree is spelled out in the file.
    assert set(raw) == set(config.to_dict())


def test_shipped_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"movielens.yaml", "synthetic_generic.yaml"} <= names


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nranker:\n  methds: [ours]\n")
    with pytest.raises(ConfigError, match="methds"):
        load_config(path)


def test_wrong_type_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("split:\n  seed: zero\n")
    with pytest.raises(ConfigError, match="split.seed"):
        load_config(path)


def test_overrides(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: x\n")
    config = load_config(
        path, ["ranker.params.epochs=3", "dims.dims=[16, 32]", "data.posters=a.tar"]
    )
    assert config.ranker.params == {"epochs": 3}
    assert config.dims.dims == [16, 32]
    assert config.data.posters == "a.tar"


def test_data_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    """data.mapping (and root, posters) in a YAML file resolve against that file's directory,
    not the working directory; --set values stay relative to the working directory."""
    folder = tmp_path / "configs" / "experiments"
    folder.mkdir(parents=True)
    path = folder / "x.yaml"
    path.write_text("data:\n  loader: generic\n  mapping: ../data/mapping.yaml\n  root: /abs\n")
    monkeypatch.chdir(tmp_path / "configs")
    config = load_config(path)
    assert Path(config.data.mapping) == tmp_path / "configs" / "data" / "mapping.yaml"
    assert config.data.root == "/abs"
    assert load_config(path, ["data.mapping=m.yaml"]).data.mapping == "m.yaml"
