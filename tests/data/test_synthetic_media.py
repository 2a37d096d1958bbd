"""data.synthetic with media (issue 22 part 5): photos, carousels and videos of known classes
in shards, a media_type column, and users who prefer a media type."""

from __future__ import annotations

import numpy as np
import pandas as pd

from coldstart.data.synthetic import SyntheticConfig, make_synthetic, write_generic_files


def test_media_leaves_the_interactions_of_a_seed_alone() -> None:
    """media: true adds media from random streams of its own: the same log as without."""
    plain = make_synthetic(n_items=60, n_users=30, image_size=8)
    media = make_synthetic(n_items=60, n_users=30, image_size=8, media=True)
    pd.testing.assert_frame_equal(plain.dataset.interactions, media.dataset.interactions)
    assert "media_type" not in plain.dataset.items and plain.item_media is None
    assert set(media.dataset.items["media_type"]) == {"photo", "carousel", "video"}
    kinds = {k: next(iter(v)) for k, v in media.media.items()}
    assert {kinds[k] for k in media.dataset.items["media_key"]} == {"image", "images", "video"}


def test_users_prefer_their_media_type() -> None:
    syn = make_synthetic(n_items=300, n_users=100, image_size=8, media_affinity=0.8)
    events = syn.dataset.interactions
    media = dict(zip(syn.dataset.items["item_id"], syn.item_media))
    preferred = syn.user_media[events["user_id"].to_numpy() - 1]
    share = np.mean([media[i] for i in events["item_id"]] == preferred)
    assert share > 0.7  # 0.8 of the non-noise rows, plus a third of the rest


def test_files_carry_shards_and_the_media_type(tmp_path) -> None:
    from coldstart.data.generic import load_generic
    from coldstart.data.shards import media_summary

    config = SyntheticConfig(n_items=24, n_users=20, interactions_per_user=5, media=True)
    dataset = load_generic(write_generic_files(tmp_path, config))
    counts = dataset.items["media_type"].value_counts().to_dict()
    summary = media_summary(str(tmp_path / "media"), decode=False)
    assert summary["samples"] == 24 and summary["skipped"] == {}
    assert {k: v for k, v in summary["media"].items() if v} == counts
    assert summary["carousel_images"]["min"] == 3 and summary["videos"]["formats"] == {
        "mp4": counts["video"]
    }
