"""Cold-start split, the protocol of the cold-start literature (ColdRec / ALDI).

1. The items that have interactions are sorted by id and shuffled with `seed`; the first
   `cold_fraction` (20%) become cold items, taking *all* their interactions with them.
2. Warm interactions, in (user, item, timestamp) order, are shuffled with the same generator and cut 80/10/10 into train/val/test.
   A val/test row whose user or item never appears in train moves to train (a warm model cannot
   score an id it never saw, so such a row would measure cold start, not warm ranking).
3. Cold items are cut 50/50 into cold-val and cold-test items; each part holds all their rows.

Every interaction lands in exactly one part; no cold item appears in train. The split is a
function of (interactions, items, seed, fractions) only, so a seed reproduces it bit for bit.

On disk (`write_split`): train/val/test/cold_val/cold_test.parquet, items.parquet (the catalogue
plus a `split` column: warm, cold_val, cold_test or unseen = no interactions) and manifest.json
(counts, seed, fractions, source sha256, a digest of the cold item ids).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coldstart.data.embeddings import atomic_write_json, sha256_file
from coldstart.data.io import read_table, write_table
from coldstart.data.schema import ITEM_ID, TIMESTAMP, USER_ID, Dataset

PARTS = ("train", "val", "test", "cold_val", "cold_test")
SPLIT_COLUMN = "split"  # items.parquet: warm | cold_val | cold_test | unseen
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class SplitConfig:
    """Seed and fractions of the cold-start protocol: the one home of their defaults
    (cold_start_split, `coldstart data split` and the experiment's split section use them)."""

    seed: int = field(default=0, metadata={"help": "seed of the item shuffle and the warm cut"})
    cold_fraction: float = field(
        default=0.2, metadata={"help": "share of the interacted items held out as cold items"}
    )
    val_fraction: float = field(default=0.1, metadata={"help": "share of warm rows for val"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of warm rows for test"})
    cold_val_fraction: float = field(
        default=0.5, metadata={"help": "share of the cold items for cold_val (rest: cold_test)"}
    )

    def validate(self) -> None:
        for name in ("cold_fraction", "val_fraction", "test_fraction", "cold_val_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 (train would be empty)")


@dataclass
class Split:
    """The five interaction parts, the labelled catalogue and the manifest."""

    name: str
    items: pd.DataFrame  # catalogue + SPLIT_COLUMN
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    cold_val: pd.DataFrame
    cold_test: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str) -> pd.DataFrame:
        if name not in PARTS:
            raise KeyError(f"unknown part {name!r}; parts are {PARTS}")
        return getattr(self, name)

    @property
    def parts(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in PARTS}

    def item_ids(self, which: str) -> np.ndarray:
        """Item ids labelled `which` (warm, cold, cold_val, cold_test, unseen), catalogue order."""
        labels = self.items[SPLIT_COLUMN]
        mask = labels.isin(["cold_val", "cold_test"]) if which == "cold" else labels == which
        return self.items.loc[mask, ITEM_ID].to_numpy()

    @property
    def warm_item_ids(self) -> np.ndarray:
        return self.item_ids("warm")

    @property
    def cold_item_ids(self) -> np.ndarray:
        return self.item_ids("cold")

    def train_dataset(self) -> Dataset:
        """The train part as a Dataset (same catalogue), e.g. for request grouping."""
        return Dataset(name=f"{self.name}:train", items=self.items, interactions=self.train)


def _ids_digest(ids: np.ndarray) -> str:
    """sha256 of sorted ids, one per line: compares splits without reading the files."""
    text = "\n".join(str(v) for v in np.sort(np.asarray(ids)))
    return hashlib.sha256(text.encode()).hexdigest()


def _n(fraction: float, total: int) -> int:
    return int(round(fraction * total))


def cold_start_split(
    dataset: Dataset,
    # Defaults are SplitConfig's (dataclass fields keep their default as a class attribute).
    seed: int = SplitConfig.seed,
    cold_fraction: float = SplitConfig.cold_fraction,
    val_fraction: float = SplitConfig.val_fraction,
    test_fraction: float = SplitConfig.test_fraction,
    cold_val_fraction: float = SplitConfig.cold_val_fraction,
) -> Split:
    """Split `dataset` with the cold-start protocol (see the module docstring)."""
    config = SplitConfig(seed, cold_fraction, val_fraction, test_fraction, cold_val_fraction)
    config.validate()
    inter = dataset.interactions.reset_index(drop=True)
    rng = np.random.default_rng(seed)

    # 1. Items with interactions, sorted (order-independent of the file), shuffled by seed.
    active = np.unique(inter[ITEM_ID].to_numpy())
    shuffled = active[rng.permutation(len(active))]
    n_cold = _n(cold_fraction, len(active))
    cold = shuffled[:n_cold]
    n_cold_val = _n(cold_val_fraction, n_cold)
    cold_val_items, cold_test_items = cold[:n_cold_val], cold[n_cold_val:]

    item_col = inter[ITEM_ID]
    is_cold_val = item_col.isin(cold_val_items).to_numpy()
    is_cold_test = item_col.isin(cold_test_items).to_numpy()
    warm_rows = np.flatnonzero(~(is_cold_val | is_cold_test))

    # 2. Warm rows 80/10/10 after a seeded shuffle of their canonical (user, item, time) order,
    # so the split does not depend on the order of rows in the source file.
    key = [c for c in (USER_ID, ITEM_ID, TIMESTAMP) if c in inter.columns]
    canonical = inter.iloc[warm_rows].sort_values(key, kind="stable").index.to_numpy()
    order = canonical[rng.permutation(len(canonical))]
    n_val = _n(val_fraction, len(order))
    n_test = _n(test_fraction, len(order))
    n_train = len(order) - n_val - n_test
    train_rows, val_rows, test_rows = (
        order[:n_train],
        order[n_train : n_train + n_val],
        order[n_train + n_val :],
    )
    # Rows whose user or item is unseen in train move to train. Moving only ever *adds* ids to
    # train, so one pass reaches the fixed point.
    train_users = set(inter[USER_ID].to_numpy()[train_rows].tolist())
    train_items = set(item_col.to_numpy()[train_rows].tolist())
    moved = {}
    kept = {}
    for name, rows in (("val", val_rows), ("test", test_rows)):
        users = inter[USER_ID].to_numpy()[rows]
        items = item_col.to_numpy()[rows]
        seen = np.fromiter(
            (
                u in train_users and i in train_items
                for u, i in zip(users.tolist(), items.tolist(), strict=True)
            ),
            dtype=bool,
            count=len(rows),
        )
        kept[name], moved[name] = rows[seen], rows[~seen]
    train_rows = np.concatenate([train_rows, moved["val"], moved["test"]])

    def take(rows: np.ndarray) -> pd.DataFrame:
        # Original row order inside each part: stable, and readable next to the source log.
        return inter.iloc[np.sort(rows)].reset_index(drop=True)

    cold_val_rows, cold_test_rows = np.flatnonzero(is_cold_val), np.flatnonzero(is_cold_test)
    parts = {
        "train": take(train_rows),
        "val": take(kept["val"]),
        "test": take(kept["test"]),
        "cold_val": take(cold_val_rows),
        "cold_test": take(cold_test_rows),
    }

    items = dataset.items.reset_index(drop=True).copy()
    label = np.full(len(items), "unseen", dtype=object)
    ids = items[ITEM_ID]
    label[ids.isin(active).to_numpy()] = "warm"
    label[ids.isin(cold_val_items).to_numpy()] = "cold_val"
    label[ids.isin(cold_test_items).to_numpy()] = "cold_test"
    items[SPLIT_COLUMN] = label
    missing = np.setdiff1d(active, ids.to_numpy())

    train_user_set = set(parts["train"][USER_ID].tolist())
    cold_users = set(parts["cold_val"][USER_ID].tolist()) | set(
        parts["cold_test"][USER_ID].tolist()
    )
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset.name,
        **asdict(config),
        "interactions": len(inter),
        "items_with_interactions": len(active),
        "warm_items": len(active) - n_cold,
        "cold_items": n_cold,
        "cold_val_items": len(cold_val_items),
        "cold_test_items": len(cold_test_items),
        "catalogue_items": len(items),
        "items_without_interactions": int((label == "unseen").sum()),
        "interacted_items_missing_from_catalogue": len(missing),
        "users": int(inter[USER_ID].nunique()),
        "train_users": len(train_user_set),
        "cold_users_unseen_in_train": len(cold_users - train_user_set),
        **{name: len(df) for name, df in parts.items()},
        "moved_to_train": {"val": len(moved["val"]), "test": len(moved["test"])},
        "cold_items_sha256": _ids_digest(cold),
        "cold_val_items_sha256": _ids_digest(cold_val_items),
        "source_sha256": dict(sorted(dataset.source_sha256.items())),
    }
    return Split(name=dataset.name, items=items, manifest=manifest, **parts)


def write_split(split: Split, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the split as Parquet parts + items.parquet + manifest.json; returns the manifest.

    The manifest is written last, so a directory with a manifest is a complete split. It also
    records each file's row count and sha256.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for name, df in [*split.parts.items(), ("items", split.items)]:
        path = write_table(df, out / f"{name}.parquet")
        files[path.name] = {"rows": len(df), "sha256": sha256_file(path)}
    manifest = {**split.manifest, "files": files}
    atomic_write_json(out / MANIFEST, manifest)
    split.manifest = manifest
    return manifest


def load_split(directory: str | os.PathLike, verify: bool = False) -> Split:
    """Read a split written by `write_split`. verify=True checks every file's sha256 first."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a split directory: no {MANIFEST}")
    manifest = json.loads(path.read_text())
    if verify:
        for name, info in manifest.get("files", {}).items():
            actual = sha256_file(directory / name)
            if actual != info["sha256"]:
                raise ValueError(
                    f"{directory / name}: sha256 {actual} != manifest {info['sha256']}"
                )
    parts = {name: read_table(directory / f"{name}.parquet") for name in PARTS}
    items = read_table(directory / "items.parquet")
    return Split(
        name=manifest.get("dataset", directory.name), items=items, manifest=manifest, **parts
    )


def manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest minus the per-file table (what `coldstart data split` prints)."""
    return {k: v for k, v in manifest.items() if k != "files"}
