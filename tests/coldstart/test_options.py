"""One home per default: CLI flags, function signatures and the experiment's sections take their
defaults from the config dataclasses, so none can drift; each config class name means one thing;
`--dataset synthetic` and `data.loader: synthetic` build the same data."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from collections import defaultdict
from pathlib import Path

import pytest

from coldstart.commands.options import add_config_options, config_defaults, config_kwargs

REPO = Path(__file__).resolve().parents[2]


def test_data_split_flags_are_split_config_defaults():
    from coldstart.commands.data import build_parser
    from coldstart.data.split import SplitConfig, cold_start_split

    args = build_parser().parse_args(["split", "--out", "x"])
    assert config_kwargs(SplitConfig, args) == dataclasses.asdict(SplitConfig())
    # The library entry point shares them too.
    signature = inspect.signature(cold_start_split).parameters
    assert {n: signature[n].default for n in config_defaults(SplitConfig)} == config_defaults(
        SplitConfig
    )
    args = build_parser().parse_args(["split", "--out", "x", "--cold-fraction", "0.3"])
    assert config_kwargs(SplitConfig, args)["cold_fraction"] == 0.3


def test_embed_flags_are_embed_config_defaults():
    from coldstart.commands.embed import FLAGS, OPTIONS, parse_args
    from coldstart.encoders.config import EmbedConfig

    args = parse_args(["--encoder", "minilm", "--input", "items.parquet", "--out", "o"])
    built = EmbedConfig(inputs=args.inputs, **config_kwargs(EmbedConfig, args, OPTIONS))
    assert built == EmbedConfig(encoder="minilm", inputs=["items.parquet"], out="o")
    # Switches and lists parse into the field's type.
    args = parse_args(
        ["--encoder", "e", "--input", "a", "--out", "o", "--tags", "--no-progress"]
        + ["--text-fields", "title, text", "--precision", "bf16-mixed"]
    )
    kwargs = config_kwargs(EmbedConfig, args, OPTIONS)
    assert kwargs["with_tags"] is True and kwargs["progress"] is False
    assert kwargs["text_fields"] == ("title", "text") and kwargs["precision"] == "bf16-mixed"
    with pytest.raises(SystemExit):
        parse_args(["--encoder", "e", "--input", "a", "--out", "o", "--decode", "gpu"])
    assert FLAGS["with_tags"] == "--tags"


def test_helper_required_fields_and_help():
    import argparse

    @dataclasses.dataclass
    class Knobs:
        name: str = dataclasses.field(metadata={"help": "who"})
        size: int | None = dataclasses.field(default=None, metadata={"help": "how big, in %"})
        fast: bool = True

    parser = argparse.ArgumentParser()
    assert add_config_options(parser, Knobs) == ["name", "size", "fast"]
    with pytest.raises(SystemExit):
        parser.parse_args([])
    args = parser.parse_args(["--name", "a", "--size", "3", "--no-fast"])
    assert Knobs(**config_kwargs(Knobs, args)) == Knobs("a", 3, False)
    assert "how big, in %" in parser.format_help()


def test_library_defaults_come_from_the_configs():
    from coldstart.data.synthetic import SyntheticConfig, make_synthetic
    from coldstart.encoders.config import EmbedConfig, FusionConfig
    from coldstart.encoders.fusion import create_fusion

    params = inspect.signature(make_synthetic).parameters
    for name, default in config_defaults(SyntheticConfig).items():
        if name in params:
            assert params[name].default == default, name
    assert inspect.signature(create_fusion).parameters["method"].default == FusionConfig.method
    assert EmbedConfig.fusion == FusionConfig.method


def test_experiment_sections_share_the_domain_defaults():
    from coldstart.encoders.config import EmbedConfig
    from coldstart.experiment.config import EmbedStageConfig, IndexStageConfig
    from coldstart.index.config import IndexConfig

    for stage, domain in ((EmbedStageConfig, EmbedConfig), (IndexStageConfig, IndexConfig)):
        stage_defaults, domain_defaults = config_defaults(stage), config_defaults(domain)
        shared = set(stage_defaults) & set(domain_defaults)
        assert shared, stage
        for name in shared:
            value = domain_defaults[name]
            # A YAML list is the section's spelling of the domain's tuple.
            expected = list(value) if isinstance(value, tuple) else value
            assert stage_defaults[name] == expected, (stage, name)


def test_config_class_names_mean_one_thing():
    defined: dict[str, list[str]] = defaultdict(list)
    for folder in ("coldstart", "data", "encoders", "ranker", "index"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                    defined[node.name].append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in defined.items() if len(paths) > 1} == {}


def test_dataset_synthetic_is_the_experiments_synthetic_data(tmp_path, capsys):
    """`coldstart data split --dataset synthetic` splits exactly the data an experiment with
    `data.loader: synthetic` (default section) splits."""
    from coldstart.commands.data import main as data_main
    from coldstart.data.generic import load_dataset
    from coldstart.experiment import stages
    from coldstart.experiment.config import DataConfig, ExperimentConfig, SplitConfig

    config = ExperimentConfig(data=DataConfig(loader="synthetic"))
    files = tmp_path / "files"
    files.mkdir()
    stages.build_synthetic_data(config.data.synthetic, config.name, files)
    experiment = stages.load_dataset(
        DataConfig(loader="generic", mapping=str(files / "mapping.yaml"))
    )
    cli = load_dataset("synthetic")
    assert cli.items.equals(experiment.items)
    assert cli.interactions.equals(experiment.interactions)
    assert len(cli.items) == config.data.synthetic.n_items

    assert data_main(["split", "--dataset", "synthetic", "--out", str(tmp_path / "cli")]) == 0
    printed = json.loads(capsys.readouterr().out)
    built = stages.build_split(experiment, SplitConfig(), tmp_path / "experiment")
    # Everything but the data set's name (the experiment names it) and the CLI's load reports.
    printed = {k: v for k, v in printed.items() if k not in ("dataset", "files", "load_reports")}
    assert printed == {k: v for k, v in built.items() if k != "dataset"}
    assert printed["cold_items"] > 0 and printed["source_sha256"]


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs" / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_experiments_state_their_embed_and_split_values(path):
    """Where an experiment differs from the domain default (batch 128), its YAML says so: every
    key of the embed and split sections is written out, none falls back silently."""
    import yaml

    from coldstart.experiment.config import load_config

    raw, config = yaml.safe_load(path.read_text()), load_config(path).to_dict()
    for section in ("embed", "split"):
        assert set(raw[section]) == set(config[section]), (path.name, section)
