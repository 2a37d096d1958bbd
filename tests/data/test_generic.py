"""Generic YAML-mapped loader: column mapping, bad rows counted, Parquet and CSV inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from coldstart.commands.data import main as data_main
from coldstart.data.generic import DatasetConfig, load_dataset, load_generic, parse_timestamps
from coldstart.data.io import write_table
from coldstart.data.movielens import load_movielens
from coldstart.data.schema import (
    EVENT,
    GENRES,
    ITEM_ID,
    MEDIA_KEY,
    TEXT,
    TIMESTAMP,
    TITLE,
    USER_ID,
    VALUE,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "datasets" / "example.yaml"

EVENTS_CSV = """customer;sku;when;action;amount;shop
u1;A;2024-01-02 10:00:00;view;1;web
u1;B;2024-01-02 10:00:30;buy;19.5;web
u2;A;2024-01-03 09:00:00;view;1;app
;A;2024-01-03 09:00:00;view;1;app
u3;;2024-01-03 09:00:00;view;1;app
u3;C;not a date;view;1;app
u3;C;2024-01-04 08:00:00;view;abc;app
u4;Z;2024-01-05 08:00:00;view;2;app
u4;C;2024-01-05 08:01:00;;2;app
"""

ITEMS_CSV = """sku,name,blurb,notes,cats,img
A,Alpha,First item,,x|y,a.jpg
B,Beta,,second,(none),b.jpg
C,Gamma,Third,more,z,
C,Gamma again,dup,,z,
,Nameless,no id,,,
"""


def write_config(tmp_path: Path, **overrides) -> Path:
    (tmp_path / "events.csv").write_text(EVENTS_CSV)
    (tmp_path / "items.csv").write_text(ITEMS_CSV)
    config = {
        "name": "shop",
        "interactions": {
            "path": "events.csv",
            "read_options": {"sep": ";"},
            "columns": {
                USER_ID: "customer",
                ITEM_ID: "sku",
                TIMESTAMP: "when",
                EVENT: "action",
                VALUE: "amount",
                "shop": "shop",
            },
            "timestamp_format": "%Y-%m-%d %H:%M:%S",
            "defaults": {EVENT: "click"},
        },
        "items": {
            "path": "items.csv",
            "columns": {
                ITEM_ID: "sku",
                TITLE: "name",
                TEXT: ["blurb", "notes"],
                GENRES: "cats",
                MEDIA_KEY: "img",
            },
            "list_null_values": ["(none)"],
        },
        **overrides,
    }
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_generic_csv_bad_rows_counted(tmp_path):
    ds = load_dataset(write_config(tmp_path))
    inter, items = ds.interactions, ds.items
    r = ds.reports["interactions"].as_dict()
    assert r["rows_read"] == 9 and r["rows_kept"] == 5 == len(inter)
    assert r["dropped"] == {
        "missing_user_id": 1,
        "missing_item_id": 1,
        "bad_timestamp": 1,
        "bad_value": 1,
    }
    assert inter[USER_ID].tolist() == ["u1", "u1", "u2", "u4", "u4"]
    assert inter[TIMESTAMP].iloc[0] == 1704189600  # 2024-01-02 10:00:00 UTC
    assert inter[TIMESTAMP].iloc[1] - inter[TIMESTAMP].iloc[0] == 30
    assert inter[EVENT].tolist() == ["view", "buy", "view", "view", "click"]  # empty -> default
    assert inter[VALUE].dtype == np.float32 and inter[VALUE].iloc[1] == pytest.approx(19.5)
    assert inter["shop"].tolist() == ["web", "web", "app", "app", "app"]
    ri = ds.reports["items"].as_dict()
    assert ri["dropped"] == {"missing_item_id": 1, "duplicate_item_id": 1} and len(items) == 3
    row = items.set_index(ITEM_ID)
    assert row.loc["A", TEXT] == "First item" and row.loc["B", TEXT] == "second"
    assert row.loc["C", TEXT] == "Third. more" and row.loc["C", TITLE] == "Gamma"
    assert row.loc["A", GENRES] == ["x", "y"] and row.loc["B", GENRES] == []
    assert row.loc["A", MEDIA_KEY] == "a.jpg"
    assert set(ds.source_sha256) == {"events.csv", "items.csv"}
    # "Z" is not in the catalogue: kept by default.
    assert "Z" in set(inter[ITEM_ID])


def test_unknown_items_policies(tmp_path):
    dropped = load_dataset(write_config(tmp_path, unknown_items="drop"))
    assert dropped.reports["interactions"].dropped["unknown_item"] == 1
    assert "Z" not in set(dropped.interactions[ITEM_ID])
    added = load_dataset(write_config(tmp_path, unknown_items="add"))
    assert "Z" in set(added.items[ITEM_ID]) and len(added.interactions) == 5
    with pytest.raises(ValueError):
        load_dataset(write_config(tmp_path, unknown_items="explode"))


def test_parquet_inputs_and_int_ids(tmp_path):
    events = pd.DataFrame(
        {
            "u": [10, 11, 12, 13],
            "i": [1, 2, 2, 3],
            "t": pd.to_datetime(["2024-01-01", "2024-01-02", None, "2024-01-03"], utc=True),
        }
    )
    events.to_parquet(tmp_path / "ev.parquet")
    write_table(
        pd.DataFrame({"item": [1, 2, 3], "tags": [["a"], [], ["b", "c"]]}), tmp_path / "it.parquet"
    )
    ds = load_generic(
        {
            "name": "pq",
            "base_dir": str(tmp_path),
            "interactions": {
                "path": "ev.parquet",
                "columns": {USER_ID: "u", ITEM_ID: "i", TIMESTAMP: "t"},
            },
            "items": {"path": "it.parquet", "columns": {ITEM_ID: "item", "tags": "tags"}},
        }
    )
    assert ds.interactions[ITEM_ID].dtype == np.int64 and ds.interactions[USER_ID].dtype == np.int64
    assert ds.reports["interactions"].dropped == {"bad_timestamp": 1}
    assert ds.interactions[TIMESTAMP].tolist() == [1704067200, 1704153600, 1704240000]
    assert ds.interactions[EVENT].tolist() == ["interaction"] * 3
    assert ds.items.set_index(ITEM_ID)["tags"].to_dict() == {1: ["a"], 2: [], 3: ["b", "c"]}


def test_parse_timestamps_formats():
    s = pd.Series(["1700000000", "1700000000500", "x"])
    assert parse_timestamps(s.iloc[:1], "unix_s").tolist() == [1.7e9]
    assert parse_timestamps(s.iloc[1:2], "unix_ms").tolist() == [1700000000.5]
    assert np.isnan(parse_timestamps(s.iloc[2:], "unix_s").iloc[0])
    iso = parse_timestamps(pd.Series(["2024-01-01T00:00:00Z", "nope"]), "iso")
    assert iso.iloc[0] == 1704067200 and np.isnan(iso.iloc[1])
    auto = parse_timestamps(pd.Series(["2024-01-01", "garbage", "2024-01-02"]))
    assert auto.iloc[0] == 1704067200 and np.isnan(auto.iloc[1])


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset config keys"):
        DatasetConfig.from_dict({"interactions": {"path": "x"}, "colums": {}})
    with pytest.raises(ValueError, match="unknown keys in interactions"):
        DatasetConfig.from_dict({"interactions": {"path": "x", "column": {}}})
    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["interactions"]["columns"][USER_ID] = "nobody"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(KeyError, match="nobody"):
        load_dataset(path)
    with pytest.raises(FileNotFoundError):
        load_generic({"base_dir": str(tmp_path), "interactions": {"path": "missing.csv"}})
    with pytest.raises(ValueError):
        load_dataset("no-such-dataset")


def test_example_config_reproduces_movielens():
    generic = load_dataset(EXAMPLE)
    builtin = load_movielens()
    pd.testing.assert_frame_equal(generic.interactions, builtin.interactions, check_dtype=False)
    assert generic.items[ITEM_ID].tolist() == builtin.items[ITEM_ID].tolist()
    assert generic.items[GENRES].map(list).tolist() == builtin.items[GENRES].map(list).tolist()
    assert generic.source_sha256["ratings.csv"] == builtin.source_sha256["ratings.csv"]
    via_loader = load_dataset(REPO / "configs" / "datasets" / "movielens.yaml")
    assert len(via_loader.interactions) == len(builtin.interactions)


def test_cli_split_and_inspect_with_config(tmp_path, capsys):
    path = write_config(tmp_path)
    assert data_main(["inspect", "--config", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["interactions"] == 5 and info["reports"]["interactions"]["dropped"]["bad_value"] == 1
    )
    # u1's two events 30 s apart form one request; u2 one; u4's two, 60 s apart, one.
    assert info["requests"]["requests"] == 3 and info["requests"]["max_size"] == 2
    assert [r["ids_kept"] for r in info["rare_item_ids"]] == [4, 1, 0, 0, 0]  # A twice, B/C/Z once
    out = tmp_path / "split"
    assert (
        data_main(["split", "--config", str(path), "--out", str(out), "--cold-fraction", "0.25"])
        == 0
    )
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["dataset"] == "shop" and manifest["cold_items"] == 1
    assert sum(manifest[k] for k in ("train", "val", "test", "cold_val", "cold_test")) == 5


def test_inspect_warns_when_requests_cannot_come_from_time(tmp_path, capsys):
    """Without timestamps (or request ids) requests are grouped arbitrarily: say so."""
    from coldstart.data.synthetic import SyntheticConfig, write_generic_files

    mapping = write_generic_files(
        tmp_path, SyntheticConfig(n_items=60, n_users=20, timestamps=False)
    )
    assert data_main(["inspect", "--config", str(mapping)]) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)
    # (the loader fills timestamp = 0 on every row: "no clock")
    assert len(info["warnings"]) == 1 and "no timestamps" in info["warnings"][0]
    assert "warning: the interactions have no timestamps" in captured.err
    timed = write_generic_files(tmp_path / "timed", SyntheticConfig(n_items=60, n_users=20))
    assert data_main(["inspect", "--config", str(timed)]) == 0
    assert "warnings" not in json.loads(capsys.readouterr().out)
