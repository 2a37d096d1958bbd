"""Cold-start split invariants on the embedded MovieLens copy and the real data beside the repo."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldstart.commands.data import main as data_main
from coldstart.data.movielens import load_movielens
from coldstart.data.schema import ITEM_ID, TIMESTAMP, USER_ID, Dataset
from coldstart.data.split import PARTS, SPLIT_COLUMN, cold_start_split, load_split, write_split
from coldstart.data.synthetic import make_synthetic

KEY = [USER_ID, ITEM_ID, TIMESTAMP]


@pytest.fixture(scope="module")
def embedded():
    return load_movielens()


def check_invariants(dataset, split) -> None:
    inter = dataset.interactions
    m = split.manifest
    sizes = {name: len(split.part(name)) for name in PARTS}
    # Counts add up, and match the manifest.
    assert sum(sizes.values()) == len(inter) == m["interactions"]
    for name in PARTS:
        assert m[name] == sizes[name]
    # Every interaction lands in exactly one part: the multiset of rows is preserved.
    parts = pd.concat([split.part(n)[KEY] for n in PARTS], ignore_index=True)
    a = parts.sort_values(KEY).reset_index(drop=True)
    b = inter[KEY].sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    # No cold item in train/val/test; cold parts hold only their own items.
    cold = set(split.cold_item_ids.tolist())
    cold_val = set(split.item_ids("cold_val").tolist())
    cold_test = set(split.item_ids("cold_test").tolist())
    assert cold_val | cold_test == cold and not cold_val & cold_test
    for name in ("train", "val", "test"):
        assert not set(split.part(name)[ITEM_ID].tolist()) & cold
    assert set(split.cold_val[ITEM_ID].tolist()) == cold_val
    assert set(split.cold_test[ITEM_ID].tolist()) == cold_test
    # Every cold item's interactions all moved with it.
    n_cold_rows = int(inter[ITEM_ID].isin(list(cold)).sum())
    assert n_cold_rows == sizes["cold_val"] + sizes["cold_test"]
    # Val/test users and items are all seen in train.
    train_users, train_items = set(split.train[USER_ID]), set(split.train[ITEM_ID])
    for name in ("val", "test"):
        assert set(split.part(name)[USER_ID]) <= train_users
        assert set(split.part(name)[ITEM_ID]) <= train_items
    # Fractions (default 20% cold of items with interactions, 50/50 cold, 80/10/10 warm).
    active = inter[ITEM_ID].nunique()
    assert m["cold_items"] == round(m["cold_fraction"] * active) == len(cold)
    assert m["warm_items"] + m["cold_items"] == active
    assert abs(m["cold_val_items"] - m["cold_test_items"]) <= 1
    warm_rows = len(inter) - n_cold_rows
    moved = m["moved_to_train"]["val"] + m["moved_to_train"]["test"]
    n_val, n_test = round(m["val_fraction"] * warm_rows), round(m["test_fraction"] * warm_rows)
    assert sizes["val"] + m["moved_to_train"]["val"] == n_val
    assert sizes["test"] + m["moved_to_train"]["test"] == n_test
    assert sizes["train"] - moved == warm_rows - n_val - n_test


def test_split_embedded_invariants(embedded):
    split = cold_start_split(embedded, seed=0)
    check_invariants(embedded, split)
    labels = split.items[SPLIT_COLUMN].value_counts().to_dict()
    assert labels["warm"] == split.manifest["warm_items"]
    assert labels.get("unseen", 0) == split.manifest["items_without_interactions"]


def test_split_real_data_deterministic(shared_data, tmp_path):
    dataset = load_movielens(shared_data / "movielens-small")
    a = cold_start_split(dataset, seed=0)
    check_invariants(dataset, a)
    b = cold_start_split(load_movielens(shared_data / "movielens-small"), seed=0)
    ma = write_split(a, tmp_path / "a")
    mb = write_split(b, tmp_path / "b")
    assert ma == mb  # byte-identical files (sha256 in the manifest), same counts
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (
        tmp_path / "b" / "manifest.json"
    ).read_bytes()
    c = cold_start_split(dataset, seed=1)
    assert c.manifest["cold_items_sha256"] != a.manifest["cold_items_sha256"]
    assert ma["source_sha256"]["ratings.csv"].startswith("aa289ca8")


def test_split_independent_of_row_order(embedded):
    shuffled = embedded.interactions.sample(frac=1.0, random_state=3)
    items = embedded.items.sample(frac=1.0, random_state=4)
    ds2 = type(embedded)(name="movielens", items=items, interactions=shuffled)
    a, b = cold_start_split(embedded, seed=0), cold_start_split(ds2, seed=0)
    assert a.manifest["cold_items_sha256"] == b.manifest["cold_items_sha256"]
    for name in PARTS:
        key = a.part(name)[KEY].sort_values(KEY).reset_index(drop=True)
        pd.testing.assert_frame_equal(
            key, b.part(name)[KEY].sort_values(KEY).reset_index(drop=True)
        )


def test_write_load_roundtrip(tmp_path):
    data = make_synthetic(n_items=60, n_users=30, interactions_per_user=10, image_size=8)
    split = cold_start_split(data.dataset, seed=5)
    manifest = write_split(split, tmp_path)
    loaded = load_split(tmp_path, verify=True)
    assert loaded.manifest == manifest
    for name in PARTS:
        pd.testing.assert_frame_equal(loaded.part(name), split.part(name), check_dtype=False)
    # List columns come back as Python lists of strings.
    original = split.items.set_index(ITEM_ID)["genres"]
    back = loaded.items.set_index(ITEM_ID)["genres"]
    assert all(isinstance(v, list) for v in back)
    assert back.to_dict() == original.map(list).to_dict()


def test_load_split_detects_corruption(tmp_path):
    split = cold_start_split(make_synthetic(n_items=40, n_users=10, image_size=8).dataset)
    write_split(split, tmp_path)
    (tmp_path / "val.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="sha256"):
        load_split(tmp_path, verify=True)


def test_bad_fractions():
    ds = make_synthetic(n_items=20, n_users=5, image_size=8).dataset
    with pytest.raises(ValueError):
        cold_start_split(ds, cold_fraction=1.5)
    with pytest.raises(ValueError):
        cold_start_split(ds, val_fraction=0.5, test_fraction=0.5)


def test_cli_split(tmp_path, capsys, embedded):
    out = tmp_path / "split"
    assert data_main(["split", "--dataset", "movielens", "--out", str(out), "--seed", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in ("warm_items", "cold_items", "train", "val", "test", "cold_val", "cold_test"):
        assert isinstance(printed[key], int)
    assert printed["train"] + printed["val"] + printed["test"] + printed["cold_val"] + printed[
        "cold_test"
    ] == len(embedded.interactions)
    assert (out / "manifest.json").exists()
    assert np.isclose(
        printed["cold_items"] / (printed["warm_items"] + printed["cold_items"]), 0.2, atol=1e-3
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_rows=st.integers(1, 300),
    n_users=st.integers(1, 20),
    n_items=st.integers(1, 40),
    cold_fraction=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    string_ids=st.booleans(),
)
def test_split_invariants_property(seed, n_rows, n_users, n_items, cold_fraction, string_ids):
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n_items, n_rows)
    inter = pd.DataFrame(
        {
            USER_ID: rng.integers(0, n_users, n_rows),
            ITEM_ID: [f"i{v}" for v in items] if string_ids else items,
            TIMESTAMP: rng.integers(0, 1000, n_rows),
        }
    )
    catalogue = pd.DataFrame({ITEM_ID: pd.unique(inter[ITEM_ID])})
    dataset = Dataset(name="prop", items=catalogue, interactions=inter)
    split = cold_start_split(dataset, seed=seed, cold_fraction=cold_fraction)
    check_invariants(dataset, split)
