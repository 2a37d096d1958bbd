"""Write the synthetic data set (data.synthetic) as a foreign-looking CSV + Parquet pair plus the
generic YAML mapping that describes it: the held-out style check needs a data set that no code
knows by name. Column names, id strings and ISO timestamps differ from the schema on purpose.

`python -m tests.coldstart.synthetic_files DIR` regenerates the copy under
tests/coldstart/data/synthetic that configs/experiments/synthetic_generic.yaml points at.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from data.synthetic import make_synthetic

MAPPING = """\
# Generic mapping (data/generic.py) of a small synthetic shop: items.csv + events.parquet.
name: synthetic-shop
loader: generic
unknown_items: drop
interactions:
  path: events.parquet
  columns: {user_id: customer, item_id: sku, timestamp: when, event: action, value: weight}
  id_type: str
  timestamp_format: iso
items:
  path: items.csv
  columns: {item_id: sku, title: name, genres: category}
  id_type: str
  list_separator: "|"
"""


def write_synthetic_files(
    out: str | Path, n_items: int = 300, n_users: int = 150, per_user: int = 25, seed: int = 0
) -> Path:
    """Write items.csv, events.parquet and mapping.yaml into `out`; returns the mapping path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    synthetic = make_synthetic(
        n_items=n_items, n_users=n_users, interactions_per_user=per_user, seed=seed
    )
    items, events = synthetic.dataset.items, synthetic.dataset.interactions
    pd.DataFrame(
        {
            "sku": [f"SKU-{i:05d}" for i in items["item_id"]],
            "name": items["title"],
            "category": ["|".join(g) for g in items["genres"]],
        }
    ).to_csv(out / "items.csv", index=False)
    when = pd.to_datetime(events["timestamp"], unit="s", utc=True)
    pd.DataFrame(
        {
            "customer": [f"c{u}" for u in events["user_id"]],
            "sku": [f"SKU-{i:05d}" for i in events["item_id"]],
            "when": when.dt.strftime("%Y-%m-%dT%H:%M:%S"),
            "action": events["event"],
            "weight": events["value"].astype("float32"),
        }
    ).to_parquet(out / "events.parquet", index=False)
    (out / "mapping.yaml").write_text(MAPPING)
    return out / "mapping.yaml"


if __name__ == "__main__":
    print(
        write_synthetic_files(
            sys.argv[1] if len(sys.argv) > 1 else "tests/coldstart/data/synthetic"
        )
    )
