"""Suites: config loading, mean ± std over seeds, the target check and the variant ranking."""

from __future__ import annotations

from pathlib import Path

import pytest

from coldstart.experiment.suite import (
    SuiteConfig,
    load_suite,
    rank_variants,
    suite_markdown,
    summarize,
)

REPO = Path(__file__).resolve().parents[2]


def _metrics(cold: float, warm: float) -> dict:
    seg = lambda r: {"recall@20": r, "ndcg@20": r / 2, "users": 10}  # noqa: E731
    return {"cold": seg(cold), "warm": seg(warm), "all": seg((cold + warm) / 2)}


def _runs() -> list[dict]:
    runs = []
    for seed, (ours_cold, ours_warm) in enumerate([(0.30, 0.20), (0.34, 0.22)]):
        runs.append(
            {
                "dataset": "d",
                "seed": seed,
                "variant": "baselines",
                "methods": {"id_only": _metrics(0.01, 0.21), "content_knn": _metrics(0.30, 0.05)},
            }
        )
        runs.append(
            {
                "dataset": "d",
                "seed": seed,
                "variant": "default",
                "methods": {"ours": _metrics(ours_cold, ours_warm)},
            }
        )
        runs.append(
            {
                "dataset": "d",
                "seed": seed,
                "variant": "worse",
                "methods": {"ours": _metrics(0.20, 0.25)},
            }
        )
    return runs


def test_summary_mean_std_targets_and_ranking() -> None:
    suite = SuiteConfig(baselines=["id_only", "content_knn"], target_method="ours")
    summary = summarize(_runs(), suite)
    rows = summary["d"]["rows"]
    # Methods of one variant keep their name; ours in two variants: "default" plain.
    assert set(rows) == {"id_only", "content_knn", "ours", "ours (worse)"}
    mean, std = rows["ours"]["cold"]["recall@20"]
    assert mean == pytest.approx(0.32) and std == pytest.approx(0.0282843, rel=1e-4)
    checks = summary["d"]["targets"]
    assert checks["ours"]["cold"]["holds"] and checks["ours"]["warm"]["holds"]
    assert checks["ours"]["warm"]["best_baseline"] == "id_only"
    assert not checks["ours (worse)"]["cold"]["holds"]  # 0.20 < content_knn's 0.30
    ranked = rank_variants(summary)
    assert [r["variant"] for r in ranked] == ["ours", "ours (worse)"]
    text = suite_markdown(
        {
            "suite": {"name": "t", "part": "val", "target_method": "ours"},
            "seconds": 1.0,
            "runs": _runs(),
            "summary": summary,
        }
    )
    assert "0.3200 ± 0.0283" in text and "FALLS SHORT" in text and "holds" in text


def test_shipped_suites_load_with_paths_relative_to_the_file() -> None:
    for name in ("quality", "sweep"):
        suite = load_suite(REPO / "configs" / "suites" / f"{name}.yaml")
        assert suite.experiments and all(Path(e.config).exists() for e in suite.experiments)
    quality = load_suite(REPO / "configs" / "suites" / "quality.yaml")
    assert quality.part == "test"
    assert [e.seeds for e in quality.experiments][0] == [0, 1, 2]  # MovieLens at three seeds
    assert load_suite(REPO / "configs" / "suites" / "sweep.yaml").part == "val"
