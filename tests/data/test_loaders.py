"""MovieLens loader (embedded copy, any root, bad rows), synthetic data and schema helpers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from coldstart import data
from coldstart.commands.data import main as data_main
from coldstart.data.movielens import EMBEDDED_ROOT, load_movielens, title_year
from coldstart.data.schema import (
    GENRES,
    ITEM_ID,
    MEDIA_KEY,
    TAGS,
    TIMESTAMP,
    USER_ID,
    VALUE,
    ImageTextBatch,
    RequestBatch,
    item_text,
)
from coldstart.data.split import cold_start_split, write_split
from coldstart.data.synthetic import class_name, make_synthetic


def test_embedded_movielens():
    ds = load_movielens()
    assert EMBEDDED_ROOT.is_relative_to(Path(data.__file__).resolve().parent)  # inside the package
    assert len(ds.items) == 9742 and len(ds.interactions) == 100836
    assert ds.interactions[USER_ID].nunique() == 610 and ds.interactions[ITEM_ID].nunique() == 9724
    assert (
        ds.interactions[ITEM_ID].dtype == np.int64 and ds.interactions[TIMESTAMP].dtype == np.int64
    )
    assert set(np.unique(ds.interactions[VALUE])) <= {x / 2 for x in range(1, 11)}
    toy = ds.items.set_index(ITEM_ID).loc[1]
    assert toy[GENRES] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy[MEDIA_KEY] == "1" and "pixar" in toy[TAGS]
    assert ds.source_sha256["ratings.csv"].startswith("aa289ca8")
    assert not ds.reports["interactions"].dropped and ds.reports["items"].rows_kept == 9742
    assert title_year("Heat (1995)") == 1995 and title_year("No year") is None


def test_movielens_other_root_with_bad_rows(tmp_path):
    root = tmp_path / "ml"
    shutil.copytree(EMBEDDED_ROOT, root)
    with open(root / "ratings.csv", "a") as handle:
        handle.write(",1,4.0,964982703\n")  # missing user
        handle.write("1,2,4.0,yesterday\n")  # bad timestamp
        handle.write("1,3,great,964982703\n")  # bad rating
    with pytest.raises(FileNotFoundError):
        load_movielens(tmp_path)
    ds = load_movielens(root)
    report = ds.reports["interactions"]
    assert report.rows_read == 100839 and report.rows_kept == 100836
    assert dict(report.dropped) == {"missing_or_bad_id": 1, "bad_timestamp": 1, "bad_value": 1}


def test_real_movielens_matches_embedded(shared_data, tmp_path, capsys):
    real = load_movielens(shared_data / "movielens-small")
    embedded = load_movielens()
    assert real.source_sha256 == embedded.source_sha256  # the vendored copy is unchanged
    out = tmp_path / "cli"
    root = str(shared_data / "movielens-small")
    assert data_main(["split", "--dataset", "movielens", "--root", root, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    api = write_split(cold_start_split(real, seed=0), tmp_path / "api")
    assert {k: v for k, v in printed.items() if k != "load_reports"} == api


def test_synthetic_is_deterministic_with_visible_classes():
    a = make_synthetic(n_items=40, n_users=10, interactions_per_user=8, image_size=16, seed=2)
    b = make_synthetic(n_items=40, n_users=10, interactions_per_user=8, image_size=16, seed=2)
    assert a.dataset.interactions.equals(b.dataset.interactions)
    keys = a.dataset.items[MEDIA_KEY].tolist()
    assert all(np.array_equal(a.images[k], b.images[k]) for k in keys)
    # The class colour dominates each image: mean colour is closest to its own class colour.
    from coldstart.data.synthetic import COLOURS

    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    for key, label in zip(keys, a.item_class, strict=True):
        colour, pattern = class_name(int(label))
        assert colour in a.captions[key] and pattern in a.captions[key]
        pixels = a.images[key].reshape(-1, 3).astype(np.float32)
        far_from_bg = pixels[np.abs(pixels - 245).sum(1) > 60]
        nearest = np.argmin(((palette[None] - far_from_bg.mean(0)) ** 2).sum(-1))
        assert list(COLOURS)[nearest] == colour


def test_item_text_and_batches():
    assert item_text({"title": "Heat (1995)", "genres": ["Action", "Crime"], "text": None}) == (
        "Heat (1995). Action, Crime"
    )
    batch = RequestBatch(
        user_ids=torch.zeros(2, dtype=torch.long),
        history=torch.full((2, 3), -1),
        item_ids=torch.arange(5),
        request_index=torch.tensor([0, 0, 0, 1, 1]),
    )
    moved = batch.to("cpu")
    assert torch.equal(moved.item_ids, batch.item_ids) and moved.labels is None
    images = ImageTextBatch(torch.zeros(1, 3, 4, 4), torch.zeros(1, 5, dtype=torch.long), ["k"])
    assert images.to("cpu").keys == ["k"]


def test_split_of_synthetic_keeps_every_interaction():
    ds = make_synthetic(n_items=80, n_users=30, interactions_per_user=12, image_size=8).dataset
    split = cold_start_split(ds, seed=3)
    assert sum(len(p) for p in split.parts.values()) == len(ds.interactions)
