"""Parquet helpers: list columns, all-null columns and string ids survive a round trip."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from coldstart.data.embeddings import remove_stale_temps, temp_sibling
from coldstart.data.io import read_any, read_table, write_table
from coldstart.data.schema import GENRES, ITEM_ID, TAGS, TEXT, TITLE


def test_roundtrip_lists_nulls_and_ids(tmp_path):
    df = pd.DataFrame(
        {
            ITEM_ID: ["a", "b", "c"],
            TITLE: ["A", None, "C"],
            TEXT: [None, None, None],
            GENRES: [["x", "y"], [], None],
            TAGS: [[], [], []],
            "score": [1.5, 2.0, float("nan")],
        }
    )
    path = write_table(df, tmp_path / "t.parquet")
    schema = pq.read_schema(path)
    assert schema.field(GENRES).type == pa.list_(pa.string())
    assert schema.field(TAGS).type == pa.list_(pa.string())  # all-empty lists keep their type
    assert schema.field(TEXT).type == pa.string()  # all-None still a string column
    back = read_table(path)
    assert back[ITEM_ID].tolist() == ["a", "b", "c"]
    assert back[TITLE].tolist() == ["A", None, "C"]
    assert back[TEXT].tolist() == [None, None, None]
    assert back[GENRES].tolist() == [["x", "y"], [], []]  # null list -> empty list
    assert back[TAGS].tolist() == [[], [], []]
    assert back["score"].iloc[0] == 1.5 and pd.isna(back["score"].iloc[2])
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp file


def test_read_any_csv_tsv(tmp_path):
    (tmp_path / "a.csv").write_text("id,x\n007,\n")
    (tmp_path / "a.tsv").write_text("id\tx\n1\t2\n")
    csv = read_any(tmp_path / "a.csv")
    assert csv["id"].tolist() == ["007"] and csv["x"].tolist() == [""]  # nothing parsed
    assert read_any(tmp_path / "a.tsv")["x"].tolist() == ["2"]


def test_remove_stale_temps_keeps_live_writers(tmp_path):
    """A killed writer's temp file goes; this process's and another live process's stay."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)  # that process has exited
    target = tmp_path / "part-00001.parquet.json"
    mine = temp_sibling(target)
    mine.write_bytes(b"in progress")
    assert mine.name == f".part-00001.parquet.json.tmp-{os.getpid()}"
    stale = tmp_path / f".part-00002.parquet.tmp-{dead_pid}"
    live = tmp_path / f".part-00003.parquet.tmp-{os.getppid()}"
    unrelated = tmp_path / ".notes.tmp-backup"
    for path in (stale, live, unrelated):
        path.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (mine, live, unrelated)
    )
