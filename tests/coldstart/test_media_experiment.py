"""configs/experiments/synthetic_media.yaml end to end, small: the synthetic photos, carousels
and videos are packed in the data artifact, embedded as posters, and the ranker's media-type
feature reaches the exported cold-item path."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import yaml

from coldstart.commands.experiment import main as experiment_main

REPO = Path(__file__).resolve().parents[2]


def test_synthetic_media_experiment(tmp_path) -> None:
    from coldstart.data.embeddings import EmbeddingManifest
    from coldstart.ranker.cold_items import ColdItemMap

    raw = yaml.safe_load((REPO / "configs/experiments/synthetic_media.yaml").read_text())
    raw["output_dir"] = str(tmp_path / "out")
    raw["data"]["synthetic"].update(n_items=48, n_users=60, interactions_per_user=8)
    # tiny-clip has an image and a text tower of one space (random init: fast, offline).
    raw["embed"].update(encoder="tiny-clip", image_encoder=None, batch_size=64)
    raw["embed"].update(fusion="weighted", image_weight=0.3)  # a weight for videos too
    raw["ranker"].update(methods=["warmstart"], params={"dim": 8, "epochs": 1, "media_type": True})
    raw["index"]["eval_queries"] = 10
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(raw))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert experiment_main(["--config", str(config), "--no-analysis"]) == 0
    run_dir = Path(buffer.getvalue().strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"warmstart"}
    artifacts = run_dir.parents[1] / "artifacts"
    (embed,) = [d for d in (artifacts / "embed").iterdir() if (d / "manifest.json").exists()]
    manifest = EmbeddingManifest.load(embed)
    assert {"image", "video", "text", "fused"} <= set(manifest.modalities)
    (ranker,) = [d for d in (artifacts / "ranker").iterdir() if (d / "methods").is_dir()]
    cold = ColdItemMap.load(ranker / "methods" / "warmstart" / "cold_item")
    assert cold.reads_media and cold.arrays["media"].shape[0] == 4
    # `coldstart serve --ranker` finds the export the method read and fuses uploads as it did.
    from coldstart.data.fusion import FusionSpec
    from coldstart.ranker_serving import ranker_export

    export = ranker_export(ranker, "warmstart")
    assert export is not None and Path(export).resolve() == embed.resolve()
    spec = FusionSpec.from_manifest(manifest)
    assert spec.method == "weighted" and spec.weights == {"image": 0.3, "video": 0.3, "text": 0.7}
    assert spec.video_frames == 8 and spec.video_pooling == "mean"


def test_media_types_come_from_the_shards_when_the_catalogue_has_none(tmp_path) -> None:
    import dataclasses

    import numpy as np

    from coldstart.data.generic import load_generic
    from coldstart.data.shards import write_shards
    from coldstart.data.synthetic import SyntheticConfig, write_generic_files
    from coldstart.experiment.stages import add_media_types

    config = SyntheticConfig(n_items=24, n_users=20, interactions_per_user=5, media=True)
    dataset = load_generic(write_generic_files(tmp_path / "d", config))
    assert add_media_types(dataset, str(tmp_path / "d" / "media")) is dataset  # has a column
    bare = dataclasses.replace(dataset, items=dataset.items.drop(columns="media_type"))
    derived = add_media_types(bare, str(tmp_path / "d" / "media"))
    assert derived.items["media_type"].tolist() == dataset.items["media_type"].tolist()
    # Photos only (MovieLens posters): one type, the catalogue stays as it was.
    image = np.zeros((8, 8, 3), np.uint8)
    shards = write_shards(
        ({"key": str(i), "image": image} for i in range(3)), str(tmp_path / "p-%03d.tar")
    )
    assert add_media_types(bare, shards[0]) is bare
