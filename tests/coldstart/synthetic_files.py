"""The synthetic data set (data.synthetic) as a foreign-looking CSV + Parquet pair plus the
generic YAML mapping that describes it: the held-out style check needs a data set that no code
knows by name (data.synthetic.write_generic_files does the writing).

`python -m tests.coldstart.synthetic_files DIR` regenerates the copy under
tests/coldstart/data/synthetic that configs/experiments/synthetic_generic.yaml points at.
"""

from __future__ import annotations

import sys
from pathlib import Path

from coldstart.data.synthetic import SyntheticConfig, write_generic_files


def write_synthetic_files(
    out: str | Path, n_items: int = 300, n_users: int = 150, per_user: int = 25, seed: int = 0
) -> Path:
    """Write items.csv, events.parquet and mapping.yaml into `out`; returns the mapping path."""
    config = SyntheticConfig(
        n_items=n_items, n_users=n_users, interactions_per_user=per_user, seed=seed
    )
    return write_generic_files(out, config)


if __name__ == "__main__":
    print(
        write_synthetic_files(
            sys.argv[1] if len(sys.argv) > 1 else "tests/coldstart/data/synthetic"
        )
    )
