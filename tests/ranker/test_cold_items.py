"""ranker.cold_items: each method's cold-item path is one persisted function, and the offline
vectors of cold rows are exactly its output (what a server runs on an uploaded item)."""

from __future__ import annotations

import numpy as np
import pytest

from coldstart.ranker.cold_items import ColdItemMap
from coldstart.ranker.methods import cold_rows, export_vectors, fit_method, resolve_method

TINY = {"dim": 8, "epochs": 1, "content_hidden": 16, "batch_requests": 32, "history_len": 10}
KIND = {
    "popularity": "zeros",
    "content_knn": "normalize",
    "content_projection": "ridge",
    "warmstart": "tower",
    "ours": "mixture",
}


@pytest.fixture(scope="module")
def fitted(syn_data):
    return {m: fit_method(m, syn_data, params=TINY) for m in (*KIND, "id_only", "ours+sid")}


@pytest.mark.parametrize("name", list(KIND))
def test_cold_rows_are_the_maps_output(fitted, syn_data, name) -> None:
    f = fitted[name]
    assert f.cold_item is not None and f.cold_item.kind == KIND[name]
    rows = cold_rows(syn_data)
    assert len(rows) > 0
    out = f.cold_item(syn_data.content[rows])  # (N, D)
    assert out.shape == (len(rows), f.items.shape[1]) and out.dtype == np.float32
    np.testing.assert_array_equal(out, f.items[rows])
    # One row at a time (a server's upload) gives the batch's vector.
    np.testing.assert_allclose(f.cold_item(syn_data.content[rows[:1]]), out[:1], atol=1e-6)


def test_methods_without_a_content_path_have_no_map(fitted) -> None:
    assert fitted["id_only"].cold_item is None  # cold rows are untrained ID rows
    # Semantic-ID prefixes need the item's row: a mixture keeping the ws channel has no map.
    sid = fitted["ours+sid"]
    kept = sid.info["mixture"]["cold"]
    assert sid.cold_item is None or "ws" not in sid.cold_item.params["channels"], kept


@pytest.mark.parametrize("name", ["ours", "warmstart"])
def test_map_round_trips_through_the_artifact(fitted, syn_data, name, tmp_path) -> None:
    f = fitted[name]
    export_vectors(tmp_path, syn_data, f.items, f.users, resolve_method(name), f.cold_item)
    loaded = ColdItemMap.load(tmp_path / "cold_item")
    x = syn_data.content[cold_rows(syn_data)]
    np.testing.assert_allclose(loaded(x), f.cold_item(x), atol=1e-6)
    assert (tmp_path / "seen.parquet").exists()


def test_bad_content_shape_is_refused(fitted) -> None:
    with pytest.raises(ValueError, match="content must be"):
        fitted["ours"].cold_item(np.zeros((1, 3), np.float32))


def _train_rows(data, user: int) -> np.ndarray:
    tr = data.train
    mine = tr.users == user
    return tr.items[mine][np.argsort(tr.timestamps[mine], kind="stable")]


def test_history_user_path_is_the_methods_user_side(fitted, syn_data, tmp_path) -> None:
    import torch

    from coldstart.ranker.cold_items import HistoryUserMap

    u = 3
    # content_knn has no user-ID part: a known user's history gives their exported vector.
    knn = fitted["content_knn"]
    np.testing.assert_allclose(knn.history_user(_train_rows(syn_data, u)), knn.users[u], atol=1e-5)
    assert fitted["popularity"].history_user(np.zeros(0, np.int64)).tolist() == [1.0]
    # A Ranker: exported user vector = its user-ID row + the history part the map computes.
    ws = fitted["warmstart"]
    length = ws.model.user_tower.config.history_len
    rows = syn_data.histories(length)[u]
    id_row = ws.model.user_tower.table(torch.tensor([u]))[0].detach().numpy()
    got = ws.history_user(rows) + np.append(id_row, 0.0)
    np.testing.assert_allclose(got, ws.users[u], atol=1e-5)
    # The mixture: every kept channel's user side, same width as its served user vectors.
    ours = fitted["ours"]
    assert ours.history_user.kind == "mixture"
    vec = ours.history_user(ours.history_user.rows_of(syn_data.item_ids[rows[rows >= 0]]))
    assert vec.shape == ours.users[u].shape and np.isfinite(vec).all()
    export_vectors(
        tmp_path, syn_data, ours.items, ours.users, resolve_method("ours"), None, ours.history_user
    )
    loaded = HistoryUserMap.load(tmp_path / "history_user")
    np.testing.assert_allclose(loaded(rows), ours.history_user(rows), atol=1e-6)
    assert loaded.rows_of(["no such item"]).tolist() == [-1]
