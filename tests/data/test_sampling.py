"""Rare-ID buckets and upsampling: counts reported, and sampled frequencies match the targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coldstart.data.movielens import load_movielens
from coldstart.data.sampling import (
    RARE_INDEX,
    UpsamplingConfig,
    apply_rare_bucket,
    build_vocabulary,
    coverage_weights,
    event_weights,
    expected_entity_share,
    make_sampler,
    rare_id_sweep,
    sample_weights,
    upsampling_report,
)
from coldstart.data.schema import EVENT, ITEM_ID


def draw(weights: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    return np.fromiter(make_sampler(weights, num_samples=n, seed=seed), dtype=np.int64, count=n)


def chi2_ok(observed: np.ndarray, expected_p: np.ndarray, n: int) -> bool:
    """Pearson chi-square within mean + 5 sd of its null distribution (df = k - 1)."""
    expected = expected_p * n
    stat = float(((observed - expected) ** 2 / expected).sum())
    df = len(expected_p) - 1
    return stat < df + 5 * np.sqrt(2 * df)


def test_vocabulary_by_hand():
    values = ["a"] * 5 + ["b"] * 3 + ["c", "d"]
    vocab = build_vocabulary(values, min_count=2)
    assert vocab.ids.tolist() == ["a", "b"] and vocab.size == 3
    assert vocab.lookup(["a", "b", "c", "d", "zzz"]).tolist() == [1, 2, RARE_INDEX, RARE_INDEX, 0]
    r = vocab.report
    assert (r.ids_total, r.ids_kept, r.ids_rare, r.rows_total, r.rows_rare) == (4, 2, 2, 10, 2)
    assert r.as_dict()["rare_row_share"] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        build_vocabulary(values, min_count=0)


def test_rare_bucket_on_movielens():
    inter = load_movielens().interactions
    counts = inter[ITEM_ID].value_counts()
    out, report = apply_rare_bucket(inter, ITEM_ID, min_count=5)
    assert report.ids_kept == int((counts >= 5).sum())
    assert report.rows_rare == int(counts[counts < 5].sum()) == int((out[ITEM_ID] == -1).sum())
    assert out[ITEM_ID].nunique() == report.ids_kept + 1
    sweep = rare_id_sweep(inter[ITEM_ID].to_numpy(), (1, 2, 5, 10))
    kept = [row["ids_kept"] for row in sweep]
    assert kept[0] == counts.size and kept == sorted(kept, reverse=True)
    assert all(row["ids_kept"] + row["ids_rare"] == counts.size for row in sweep)


def test_event_weights_frequency():
    events = np.array(["click"] * 3000 + ["purchase"] * 1000 + ["view"] * 1000, dtype=object)
    w = event_weights(events, {"purchase": 6.0, "view": 0.0})
    n = 60_000
    rows = draw(w, n)
    drawn = pd.Series(events[rows]).value_counts()
    p = 6000 / 9000  # purchase weight mass / total mass (clicks 3000, purchases 6000, views 0)
    assert "view" not in drawn.index  # weight 0 is never drawn
    assert abs(drawn["purchase"] / n - p) < 5 * np.sqrt(p * (1 - p) / n)
    with pytest.raises(ValueError):
        event_weights(events, {"click": -1.0})


def test_coverage_min_count_frequency():
    ids = np.array(
        [f"tail{i}" for i in range(50)] + [f"head{i}" for i in range(10) for _ in range(100)]
    )
    w = coverage_weights(ids, min_count=20)
    share = expected_entity_share(ids, w)
    # Tail items count as 20 rows each: 50 x 20 = 1000 vs head 10 x 100 = 1000.
    assert share[share.index.str.startswith("tail")].sum() == pytest.approx(0.5)
    report = upsampling_report(ids, w)
    assert report["tail_share_before"] == pytest.approx(50 / 1050)
    assert report["tail_share_after"] == pytest.approx(0.5)
    n = 100_000
    drawn = pd.Series(ids[draw(w, n, seed=1)]).value_counts().reindex(share.index, fill_value=0)
    assert chi2_ok(drawn.to_numpy(), share.to_numpy(), n)
    # The test has power: natural frequencies fail the same check.
    natural = expected_entity_share(ids, np.ones(len(ids)))
    assert not chi2_ok(drawn.to_numpy(), natural.to_numpy(), n)


def test_coverage_alpha_one_is_uniform_over_entities():
    rng = np.random.default_rng(0)
    ids = rng.zipf(1.6, size=5000) % 40
    w = coverage_weights(ids, alpha=1.0)
    share = expected_entity_share(ids, w)
    assert np.allclose(share.to_numpy(), 1 / share.size)
    n = 80_000
    drawn = pd.Series(ids[draw(w, n)]).value_counts().reindex(share.index, fill_value=0)
    assert chi2_ok(drawn.to_numpy(), share.to_numpy(), n)


def test_sample_weights_combined_and_seeded():
    log = pd.DataFrame(
        {ITEM_ID: [1, 1, 1, 1, 2], EVENT: ["click", "click", "buy", "click", "click"]}
    )
    w = sample_weights(log, UpsamplingConfig(event_weights={"buy": 3.0}, min_count=4))
    assert w.tolist() == [1.0, 1.0, 3.0, 1.0, 4.0]
    assert sample_weights(log, UpsamplingConfig()).tolist() == [1.0] * 5
    assert draw(w, 50, seed=3).tolist() == draw(w, 50, seed=3).tolist()
    assert draw(w, 50, seed=3).tolist() != draw(w, 50, seed=4).tolist()
