"""The experiment's index stage chooses its store through index.registry (`index.backend`),
and FAISS runs keep the stage keys they had before the key existed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from coldstart.data.io import write_table
from coldstart.data.synthetic import clustered_vectors
from coldstart.experiment import stages
from coldstart.experiment.config import ExperimentConfig
from coldstart.experiment.pipeline import index_section, run_experiment
from coldstart.index.registry import UnknownBackend
from tests.exports import write_export
from tests.index.test_backends import HAVE_MILVUS


def _inputs(root: Path, n: int = 120) -> tuple[Path, Path]:
    ids = [f"i{k}" for k in range(n)]
    split = root / "split"
    split.mkdir()
    items = pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"title {k}" for k in range(n)],
            "split": ["cold_test" if k % 4 == 0 else "warm" for k in range(n)],
        }
    )
    write_table(items, split / "items.parquet")
    x, _ = clustered_vectors(n, 8, n_clusters=6, seed=0)
    embed = root / "embed"
    return split, write_export(embed, ids, x, modality="text")


@pytest.mark.parametrize(
    "backend",
    [
        "faiss",
        pytest.param(
            "milvus",
            marks=pytest.mark.skipif(not HAVE_MILVUS, reason="pip install 'coldstart[milvus]'"),
        ),
    ],
)
def test_the_index_stage_builds_the_configured_backend(backend: str, tmp_path: Path) -> None:
    split, embed = _inputs(tmp_path)
    cfg = dataclasses.replace(ExperimentConfig().index, backend=backend, eval_queries=50)
    out = tmp_path / "artifact"
    out.mkdir()
    summary = stages.build_index(split, embed, cfg, out)
    assert summary["backend"] == backend and summary["ntotal"] == 120 and summary["dim"] == 8
    assert summary["recall@10"] == 1.0 and summary["factory"].upper() == "FLAT"
    assert len(summary["examples"]) == 5  # cold items and their warm neighbours, read back
    assert all(ex["neighbours"] for ex in summary["examples"])
    assert (out / ("index" if backend == "faiss" else "index.db")).exists()


def test_faiss_keeps_its_stage_key_and_other_backends_change_it() -> None:
    faiss = ExperimentConfig().index
    assert faiss.backend == "faiss"
    assert index_section(faiss) == {"factory": "Flat", "metric": "ip", "eval_queries": 200}
    milvus = index_section(dataclasses.replace(faiss, backend="milvus"))
    assert milvus["backend"] == "milvus"


def test_an_unknown_backend_stops_the_experiment_before_any_stage(tmp_path: Path) -> None:
    config = ExperimentConfig()
    config.output_dir = str(tmp_path / "runs")
    config.index.backend = "qdrant"
    with pytest.raises(UnknownBackend, match="known backends are faiss, milvus"):
        run_experiment(config, log=lambda _: None)
    assert not (tmp_path / "runs").exists()
