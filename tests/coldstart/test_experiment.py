"""The experiment cycle end to end on a data set known only through a generic YAML mapping.

One module-scoped experiment on tiny synthetic data (CSV catalogue + Parquet events, string ids,
ISO timestamps), then: metrics.json shape, the report files, stage caching (a second run reuses
every stage; changing only the ranker section rebuilds only the ranker and its evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from coldstart.commands.experiment import main as experiment_main
from coldstart.experiment.stages import QUALITY_KEYS
from tests.coldstart.synthetic_files import write_synthetic_files

REPO = Path(__file__).resolve().parents[2]
METHODS = ["popularity", "id_only", "content_knn", "content_projection", "ours", "ours+sid"]
METRIC_KEYS = set(QUALITY_KEYS)  # recall, ndcg and capped_recall @10 and @20

pytestmark = pytest.mark.slow


def _run(capsys, argv: list[str]) -> tuple[Path, dict, str]:
    assert experiment_main(argv) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1])  # the contract: last stdout line
    return run_dir, json.loads((run_dir / "metrics.json").read_text()), out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    mapping = write_synthetic_files(root / "data", n_items=300, n_users=100, per_user=20, seed=3)
    raw = yaml.safe_load((REPO / "configs/experiments/synthetic_generic.yaml").read_text())
    raw["output_dir"] = str(root / "out")
    raw["data"]["mapping"] = str(mapping)
    raw["ranker"]["params"] = {"dim": 16, "epochs": 2}
    raw["stability"]["params"] = {"epochs": 1}
    # dims on warmstart, whose vectors are `dim` wide: ours on these 300 items may serve its best
    # single channel (content_knn: content-wide whatever `dim`), so its bytes need not grow.
    raw["dims"].update(method="warmstart", dims=[8, 16], qps_queries=100, params={"epochs": 1})
    raw["evaluate"]["curve_ks"] = [1, 5, 10, 20]
    config = root / "experiment.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


@pytest.fixture(scope="module")
def first_run(setup):
    # capsys is function-scoped: capture by hand for the module-scoped run.
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert experiment_main(["--config", str(setup)]) == 0
    out = buffer.getvalue()
    run_dir = Path(out.strip().splitlines()[-1])
    return run_dir, json.loads((run_dir / "metrics.json").read_text()), out


def test_metrics_json_shape(first_run):
    run_dir, metrics, _ = first_run
    assert set(metrics) == {"methods", "stages"}
    assert list(metrics["methods"]) == METHODS  # config order
    for name, parts in metrics["methods"].items():
        assert set(parts) == {"cold", "warm", "all"}, name
        for part, values in parts.items():
            assert set(values) == METRIC_KEYS | {"users"}, (name, part)
            assert all(0.0 <= values[k] <= 1.0 for k in METRIC_KEYS), (name, part, values)
            assert values["recall@20"] <= values["capped_recall@20"] + 1e-12
            assert values["users"] > 0
        # Every method averages over the same users of a segment.
        assert parts["cold"]["users"] == metrics["methods"]["popularity"]["cold"]["users"]
    # The run directory sits beside the artifacts, not in a nested runs/<name>/runs/.
    assert run_dir.parent.name == "reports" and (run_dir.parents[1] / "artifacts").is_dir()
    stages = metrics["stages"]
    assert set(stages) == {"split", "embed", "index", "ranker", "evaluate", "stability", "dims"}
    assert all(s["status"] == "built" for s in stages.values()), stages
    assert all(s["build_seconds"] >= 0 and len(s["version"]) == 16 for s in stages.values())


def test_quality_is_real_on_known_ground_truth(first_run):
    # Users prefer latent classes that the item text names: content must find cold items far
    # better than popularity (which knows nothing about them) and id_only (untrained rows).
    # NDCG@10: the cold candidate set is small, so Recall@20 saturates.
    methods = first_run[1]["methods"]
    assert (
        methods["content_knn"]["cold"]["ndcg@10"] > methods["popularity"]["cold"]["ndcg@10"] + 0.1
    )
    assert methods["ours"]["cold"]["ndcg@10"] > methods["id_only"]["cold"]["ndcg@10"]


def test_report_files(first_run):
    run_dir, _, out = first_run
    for name in ("report.md", "quality.png", "recall_curves.png", "stage_timings.png", "dims.png"):
        assert (run_dir / name).stat().st_size > 0, name
    report = (run_dir / "report.md").read_text()
    for heading in (
        "## Quality",
        "## Recall@K, cold vs warm items",
        "## Embedding stability",
        "## Output dimension vs serving cost",
        "## Stage timings",
        "## Artifact versions",
    ):
        assert heading in report
    assert "| ours+sid |" in report
    assert "ours" in out and "cold R@20" in out  # the printed summary table
    stability = json.loads(
        (Path(first_run[1]["stages"]["stability"]["path"]) / "stability.json").read_text()
    )
    assert [r["init"] for r in stability["rows"]] == ["content", "random"]
    for row in stability["rows"]:
        assert 0.0 <= row["seed_overlap"] <= 1.0 and 0.0 <= row["retrain_overlap"] <= 1.0
    dims = json.loads((Path(first_run[1]["stages"]["dims"]["path"]) / "dims.json").read_text())
    assert [r["dim"] for r in dims["rows"]] == [8, 16]
    # Flat stores every vector: memory grows with the dim.
    assert dims["rows"][1]["index_bytes"] > dims["rows"][0]["index_bytes"] > 0


def test_second_run_reuses_every_stage(first_run, setup, capsys):
    run_dir, metrics, _ = first_run
    again_dir, again, _ = _run(capsys, ["--config", str(setup)])
    assert again_dir != run_dir
    assert all(s["status"] == "reused" for s in again["stages"].values()), again["stages"]
    assert {n: s["key"] for n, s in again["stages"].items()} == {
        n: s["key"] for n, s in metrics["stages"].items()
    }
    assert again["methods"] == metrics["methods"]


def test_changing_the_ranker_section_reruns_only_the_ranker(first_run, setup, capsys):
    _, metrics, _ = first_run
    fewer = ["popularity", "content_knn", "ours"]
    _, changed, _ = _run(capsys, ["--config", str(setup), "--set", f"ranker.methods={fewer}"])
    status = {n: s["status"] for n, s in changed["stages"].items()}
    assert status == {
        "split": "reused",
        "embed": "reused",
        "index": "reused",
        "ranker": "built",
        "evaluate": "built",  # evaluates the new ranker artifact
        "stability": "reused",
        "dims": "reused",
    }
    assert list(changed["methods"]) == fewer
    # Same training seed and params: the methods that remain reproduce their figures.
    assert changed["methods"]["content_knn"] == metrics["methods"]["content_knn"]


def test_shipped_synthetic_config_points_at_reproducible_files(tmp_path):
    from coldstart.data.generic import load_dataset
    from coldstart.experiment import load_config

    # data.mapping is relative to the config file, whatever the working directory.
    config = load_config(REPO / "configs/experiments/synthetic_generic.yaml")
    shipped = load_dataset(config.data.mapping)
    fresh = load_dataset(write_synthetic_files(tmp_path))
    assert shipped.interactions.equals(fresh.interactions)
    assert shipped.items["item_id"].tolist() == fresh.items["item_id"].tolist()


def test_publish_copies_report_and_plots_and_refuses_posters(first_run, tmp_path):
    from coldstart.report import publish

    run_dir = first_run[0]
    written = publish(run_dir, tmp_path / "docs", "synthetic")
    names = {p.name for p in written}
    assert {"synthetic_report.md", "synthetic_quality.png", "synthetic_dims.png"} <= names
    text = (tmp_path / "docs" / "synthetic_report.md").read_text()
    assert "](synthetic_quality.png)" in text and "](quality.png)" not in text

    fake = tmp_path / "poster_run"
    fake.mkdir()
    (fake / "config.json").write_text(json.dumps({"data": {"posters": "posters-{000..003}.tar"}}))
    (fake / "report.md").write_text("# x\n")
    with pytest.raises(ValueError, match="posters"):
        publish(fake, tmp_path / "docs2", "x")


def test_posters_join_text_content(tmp_path, capsys):
    """With media shards, image vectors are embedded, fused with text, and feed the ranker."""
    from coldstart.data.embeddings import EmbeddingManifest, read_embeddings
    from coldstart.data.shards import write_shards
    from coldstart.data.synthetic import make_synthetic

    mapping = write_synthetic_files(tmp_path / "data", n_items=120, n_users=60, per_user=15, seed=4)
    synthetic = make_synthetic(n_items=120, n_users=60, interactions_per_user=15, seed=4)
    keys = synthetic.dataset.items["item_id"].tolist()
    # Media keys of the generic catalogue default to the item id string (SKU-00001, ...).
    samples = [
        {"key": f"SKU-{i:05d}", "image": synthetic.images[f"{i:06d}"]} for i in keys[:100]
    ]  # the last 20 items have no image: they keep text only
    shards = write_shards(samples, str(tmp_path / "shards" / "media-%03d.tar"), maxcount=50)
    assert len(shards) == 2
    raw = yaml.safe_load((REPO / "configs/experiments/synthetic_generic.yaml").read_text())
    raw.update(output_dir=str(tmp_path / "out"))
    raw["data"].update(
        mapping=str(mapping), posters=str(tmp_path / "shards" / "media-{000..001}.tar")
    )
    raw["embed"].update(encoder="tiny-clip", image_encoder=None, fusion="mean")
    raw["ranker"].update(
        methods=["popularity", "content_knn", "ours"], params={"dim": 8, "epochs": 1}
    )
    config = tmp_path / "posters.yaml"
    config.write_text(yaml.safe_dump(raw))
    _, metrics, _ = _run(capsys, ["--config", str(config), "--no-analysis"])
    assert list(metrics["methods"]) == ["popularity", "content_knn", "ours"]
    assert "stability" not in metrics["stages"] and "dims" not in metrics["stages"]
    embed_dir = Path(metrics["stages"]["embed"]["path"])
    manifest = EmbeddingManifest.load(embed_dir)
    assert set(manifest.modalities) == {"text", "image", "fused"}
    assert len([s for s in manifest.source_shards if s.endswith(".tar")]) == 2
    image_ids, _ = read_embeddings(embed_dir, "image")
    fused_ids, fused = read_embeddings(embed_dir, "fused")
    text_ids, text = read_embeddings(embed_dir, "text")
    assert len(image_ids) == 100 and len(fused_ids) == 120
    # Items without an image keep exactly their text vector; the others are moved by the image.
    row = {v: i for i, v in enumerate(text_ids.tolist())}
    no_image = [i for i, v in enumerate(fused_ids.tolist()) if v not in set(image_ids.tolist())]
    with_image = [i for i in range(len(fused_ids)) if i not in set(no_image)]
    import numpy as np

    assert np.allclose(fused[no_image], text[[row[fused_ids[i]] for i in no_image]], atol=1e-5)
    moved = fused[with_image] - text[[row[fused_ids[i]] for i in with_image]]
    assert np.abs(moved).max() > 1e-3


def test_timestamp_free_generic_data_runs_end_to_end_with_analyses(tmp_path, capsys):
    """The generic path on implicit feedback without timestamps (data.synthetic written as
    foreign files): every stage runs, stability holds out a random share instead of crashing,
    and per-method vectors come back in the embedding-export format with their ids."""
    from coldstart.data.embeddings import EmbeddingManifest, read_embeddings

    raw = yaml.safe_load((REPO / "configs/experiments/synthetic_generic.yaml").read_text())
    raw["output_dir"] = str(tmp_path / "out")
    raw["data"] = {
        "loader": "synthetic",
        "synthetic": {
            "n_items": 120,
            "n_users": 60,
            "interactions_per_user": 8,
            "timestamps": False,
        },
    }
    raw["ranker"].update(methods=["popularity", "content_knn", "id_only", "ours"])
    raw["ranker"]["params"] = {"dim": 8, "epochs": 1}
    raw["stability"].update(params={"epochs": 1}, inits=["content"])
    raw["dims"].update(dims=[8], qps_queries=50, params={"epochs": 1})
    config = tmp_path / "notime.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert experiment_main(["--config", str(config)]) == 0
    captured = capsys.readouterr()
    run_dir = Path(captured.out.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    stages = metrics["stages"]
    assert set(stages) == {
        "data",
        "split",
        "embed",
        "index",
        "ranker",
        "evaluate",
        "stability",
        "dims",
    }
    stability = json.loads((Path(stages["stability"]["path"]) / "stability.json").read_text())
    assert stability["retrain_holdout"] == "random"
    assert 0 < stability["old_train_rows"] < stability["train_rows"]
    report = (run_dir / "report.md").read_text()
    assert "trained without a random 10% of the training log, which has no timestamps" in report
    vectors = Path(stages["ranker"]["path"]) / "methods" / "ours"
    ids, items = read_embeddings(vectors / "items", "ranker")
    assert (
        len(ids) == 120
        and EmbeddingManifest.load(vectors / "items").encoder_config["method"] == "ours"
    )
    user_ids, _ = read_embeddings(vectors / "users", "user")
    assert all(str(u).startswith("c") for u in user_ids)  # the data set's own user ids
    # Methods that train nothing do not log training params.
    assert "computing popularity (no training)" in captured.err
    assert "training popularity" not in captured.err
