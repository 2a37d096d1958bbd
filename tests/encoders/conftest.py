"""Fixtures for encoder tests: synthetic (image, caption) shards written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from coldstart.data.shards import write_shards
from coldstart.data.synthetic import make_synthetic


@pytest.fixture(scope="session")
def pair_shards(tmp_path_factory) -> dict:
    """4 train shards x 64 + 1 val shard x 128 of 32 px class-visible images with captions."""
    root: Path = tmp_path_factory.mktemp("pairs")
    syn = make_synthetic(n_items=384, n_classes=8, image_size=32, seed=0)
    items = syn.dataset.items
    samples = [
        {"key": k, "image": syn.images[k], "text": syn.captions[k], "json": {"item_id": int(i)}}
        for k, i in zip(items["media_key"], items["item_id"])
    ]
    train = write_shards(samples[:256], str(root / "train-%03d.tar"), maxcount=64)
    val = write_shards(samples[256:], str(root / "val-%03d.tar"), maxcount=128)
    return {
        "root": root,
        "train": str(root / "train-{000..003}.tar"),
        "val": val[0],
        "train_paths": train,
        "synthetic": syn,
        "items": items,
    }
