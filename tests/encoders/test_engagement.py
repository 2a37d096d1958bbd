"""Engagement-aware encoder fine-tuning: pairs, the logQ loss, the adapter and its checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from coldstart.encoders.engagement import CHECKPOINT, co_engagement_pairs, fit_item_encoder
from coldstart.encoders.loss import logq_infonce
from coldstart.encoders.registry import create_encoder
from coldstart.encoders.tune_config import ItemTuneConfig


def test_pairs_respect_user_context_and_window() -> None:
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([10, 11, 12, 20, 21])
    stamps = np.array([0, 10, 1000, 0, 5])
    pairs = {tuple(p) for p in co_engagement_pairs(users, items, stamps, 2, 100.0).tolist()}
    # 12 is 990 s after 11 (outside the window); users never mix.
    assert pairs == {(10, 11), (20, 21)}
    untimed = {tuple(p) for p in co_engagement_pairs(users, items, None, 2, 100.0).tolist()}
    assert {frozenset(p) for p in untimed} == {
        frozenset(p) for p in [(10, 11), (10, 12), (11, 12), (20, 21)]
    }


def test_logq_loss_is_infonce_when_q_is_uniform_and_masks_accidental_hits() -> None:
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    scale, zeros = torch.tensor(10.0), torch.zeros(6)
    logits = scale * a @ b.T
    labels = torch.arange(6)
    plain = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    assert torch.allclose(logq_infonce(a, b, scale, zeros, zeros), plain)
    # Popular candidates are pushed down less: their logits are lowered by log q.
    skew = torch.log(torch.tensor([0.5, 0.1, 0.1, 0.1, 0.1, 0.1]))
    assert not torch.allclose(logq_infonce(a, b, scale, skew, skew), plain)
    # Row 1's positive is item 7, and so is column 0's: that column is masked, not a negative.
    ids = torch.tensor([7, 8, 9, 10, 11, 12])
    ids_b = torch.tensor([7, 7, 9, 10, 11, 12])
    masked = logq_infonce(a, b, scale, zeros, zeros, ids, ids_b)
    assert masked < logq_infonce(a, b, scale, zeros, zeros) + 1e-6


def _toy(n: int = 60, users: int = 40, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.arange(100, 100 + n)
    # Two taste groups: each user engages items of one half of the catalogue only.
    rows = []
    for u in range(users):
        half = ids[: n // 2] if u % 2 else ids[n // 2 :]
        for t, item in enumerate(rng.choice(half, 8, replace=False)):
            rows.append((f"u{u}", int(item), t))
    return ids, pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_frozen_adapter_checkpoint_feeds_create_encoder(tmp_path: Path) -> None:
    ids, train = _toy()
    base = create_encoder("tiny-clip")
    texts = [f"item {i}" for i in ids]
    vectors = base.encode_text(texts).numpy()
    # Untrained, the adapter is the identity: "adapter:<name>" embeds as <name> does.
    untrained = create_encoder("adapter:tiny-clip")
    untrained.base.load_state_dict(base.state_dict())
    assert np.allclose(untrained.encode_text(texts).numpy(), vectors, atol=1e-5)

    cfg = ItemTuneConfig(epochs=2, batch_size=32, lr=1e-2, window_s=1e9)
    summary = fit_item_encoder(
        "tiny-clip",
        None,
        ids,
        train,
        cfg,
        tmp_path,
        {"accelerator": "cpu"},
        features={"text": (ids, vectors)},
    )
    assert summary["encoder"] == "adapter:tiny-clip" and summary["pairs"] > 0
    assert summary["loss_last"] < summary["loss_first"]
    tuned = create_encoder(summary["encoder"], pretrained=str(tmp_path / CHECKPOINT))
    out = tuned.encode_text(texts).numpy()
    assert out.shape == vectors.shape and not np.allclose(out, vectors, atol=1e-3)
    # What was learned: items of one taste group move closer together than across groups.
    half = len(ids) // 2
    sims = out @ out.T
    within = (sims[:half, :half].mean() + sims[half:, half:].mean()) / 2
    assert within > sims[:half, half:].mean()


def test_whole_mode_trains_every_weight(tmp_path: Path) -> None:
    ids, train = _toy(n=24, users=10)
    cfg = ItemTuneConfig(mode="whole", epochs=1, batch_size=16, window_s=1e9)
    before = create_encoder("tiny-clip").weights_sha256()
    summary = fit_item_encoder(
        "tiny-clip",
        None,
        ids,
        train,
        cfg,
        tmp_path,
        {"accelerator": "cpu"},
        texts={i: f"item {i}" for i in ids},
    )
    assert summary["encoder"] == "tiny-clip"
    after = create_encoder("tiny-clip", pretrained=str(tmp_path / CHECKPOINT)).weights_sha256()
    assert after != before


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="whole"):
        ItemTuneConfig(mode="whole", objective="clip").validate()
    with pytest.raises(ValueError, match="objective"):
        ItemTuneConfig(objective="likes").validate()


def test_training_pairs_read_int_seconds_and_datetimes_and_drop_non_warm_items() -> None:
    from coldstart.encoders.engagement import training_pairs

    cfg = ItemTuneConfig(window_s=60)
    seconds = pd.DataFrame(
        {"user_id": [1, 1, 1, 1], "item_id": [5, 6, 7, 9], "timestamp": [0, 10, 100000, 100005]}
    )
    stamped = seconds.assign(timestamp=pd.to_datetime(seconds["timestamp"], unit="s", utc=True))
    for train in (seconds, stamped):
        # 9 is not among the learnable items: its row goes before pairing, so 7 stays alone.
        pairs, counts = training_pairs(train, np.array([5, 6, 7]), cfg)
        assert pairs.tolist() == [[0, 1]] and counts.tolist() == [1, 1, 0]
