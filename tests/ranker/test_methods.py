"""ranker.methods: every method trains and scores on a split; ours beats ID-only on cold items."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.methods import METHODS, fit_method, method_params, run_method

TINY = {
    "dim": 16,
    "epochs": 4,
    "content_hidden": 32,
    "batch_requests": 32,
    "history_len": 20,
    "sid_codewords": 8,
}


@pytest.fixture(scope="module")
def fitted(syn_data):
    return {m: fit_method(m, syn_data, params=TINY) for m in METHODS}


def test_every_method_reports_every_segment(fitted, syn_data) -> None:
    for name, f in fitted.items():
        out = f.evaluate("test")
        assert set(out) == {"cold", "warm", "all"}, name
        for seg in out.values():
            assert {"recall@10", "recall@20", "ndcg@10", "ndcg@20"} <= set(seg)
            assert all(
                0.0 <= seg[k] <= 1.0 for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
            )
        assert f.item_vectors().shape[0] == syn_data.num_items
        assert f.user_vectors().shape[0] == syn_data.num_users


def test_ours_beats_id_only_on_cold_items(fitted) -> None:
    cold = {
        m: fitted[m].evaluate("val")["cold"]["recall@20"] for m in ("id_only", "ours", "popularity")
    }
    assert cold["ours"] > cold["id_only"] + 0.1
    assert cold["ours"] > cold["popularity"] + 0.1


def test_content_projection_keeps_warm_vectors_and_maps_cold_ones(fitted, syn_data) -> None:
    warm = syn_data.item_split == "warm"
    proj, ours_sid = fitted["content_projection"], fitted["ours+sid"]
    assert np.isfinite(proj.item_vectors()).all()
    assert (
        "sid_cold_prefix_seen" in ours_sid.info
        and 0 <= ours_sid.info["sid_code_collision_rate"] <= 1
    )
    # Same training as id_only (same seed): warm rows identical, cold rows mapped from content.
    np.testing.assert_allclose(
        proj.item_vectors()[warm], fitted["id_only"].item_vectors()[warm], atol=1e-5
    )
    cold_proj = proj.evaluate("val")["cold"]["recall@20"]
    assert cold_proj > fitted["id_only"].evaluate("val")["cold"]["recall@20"] + 0.1


def test_params_are_validated_and_run_method_matches(syn_data) -> None:
    with pytest.raises(ValueError, match="unknown ranker param"):
        fit_method("ours", syn_data, params={"no_such_knob": 1})
    with pytest.raises(ValueError, match="unknown method"):
        method_params("nope")
    out = run_method("popularity", syn_data, part="val")
    assert out["warm"]["users"] > 0
