"""Shared test fixtures. Tests are CPU-only and small; real data beside the repo is optional."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COLDSTART_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
POSTER_SHARDS = sorted((SHARED_DATA / "movielens-small-posters").glob("posters-*.tar"))

# Keep the two cores for the test itself; tokenizers' thread pools fight with torch otherwise.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a reason when it is absent (a user's machine)."""
    if not (SHARED_DATA / "movielens-small" / "ratings.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (CI keeps ../shared beside the clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def poster_shards(shared_data: Path) -> list[str]:
    """The four real poster shards; skips when they are absent."""
    if not POSTER_SHARDS:
        pytest.skip(f"poster shards not found under {SHARED_DATA / 'movielens-small-posters'}")
    return [str(p) for p in POSTER_SHARDS]
