"""Offline vs served Recall@20 of the same ranker artifact (issue 19, parity).

For each data set: run the experiment (configs/experiments/<name>.yaml, method `ours` only, no
analysis stages; cached stages are reused), then start the server on 127.0.0.1 with the
ranker artifact (`serve --ranker` wiring: coldstart.ranker_serving) and the experiment's
encoder, replay every cold_test item as an upload sending its text only (the encoder and the
method's cold-item path compute its vector), and ask recommendations for every test user over
HTTP (exclude_seen: train, val and cold_val positives, as the offline test masks them).
Served Recall@20 applies the offline tie rule to the returned scores (coldstart.parity).

Prints one JSON line per data set and segment:
  {"bench": "parity", "dataset", "segment", "offline_recall_at_20", "served_recall_at_20",
   "abs_diff", "users", "experiment_recall_at_20", "uploads", "upload_s", "recs_s"}
offline_recall_at_20 is recomputed from the artifact's vectors; experiment_recall_at_20 is
the experiment's own metrics.json figure (the two must agree).

    .venv/bin/python benchmarks/serving_parity.py [--datasets movielens synthetic_generic]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def run_dataset(name: str, out: Path, work: Path) -> list[dict[str, Any]]:
    import httpx

    from coldstart.data.schema import ITEM_ID, item_text
    from coldstart.experiment import stages
    from coldstart.experiment.config import load_config
    from coldstart.experiment.pipeline import run_experiment
    from coldstart.index.config import ServerConfig
    from coldstart.index.registry import get_backend
    from coldstart.index.server import create_app, serve_in_thread
    from coldstart.parity import parity_rows, upload_items
    from coldstart.ranker.data import build_ranker_data
    from coldstart.ranker.methods import read_vectors
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service
    from coldstart.serving import make_encode

    config = load_config(
        REPO / "configs" / "experiments" / f"{name}.yaml",
        [
            f"output_dir={out / name}",
            "ranker.methods=[ours]",
            "stability.enabled=false",
            "dims.enabled=false",
        ],
    )
    result = run_experiment(config, log=lambda line: print(line, file=sys.stderr))
    split_dir, embed_dir = result.artifacts["split"].path, result.artifacts["embed"].path
    method_dir = result.artifacts["ranker"].path / "methods" / "ours"
    split = stages.load_split(split_dir)
    ids, content = stages.content_vectors(embed_dir)
    data = build_ranker_data(split, ids, content)  # as the ranker and evaluate stages build it
    items, users = read_vectors(method_dir, data)

    encode, _ = make_encode(config.embed.encoder, config.embed.pretrained)
    fields = tuple(config.embed.text_fields)
    texts = {row[ITEM_ID]: item_text(row, fields) for row in split.items.to_dict("records")}
    faiss = get_backend("faiss")
    id_type = "int" if np.issubdtype(np.asarray(ids).dtype, np.integer) else "str"
    index, _ = faiss.build(
        [i.item() if hasattr(i, "item") else i for i in ids],
        content,
        str(work / name / "content"),
        {"index": {"dim": int(content.shape[1]), "id_type": id_type}},
        {},
    )
    service = open_ranker_service(RankerArtifact.load(method_dir), work / name / "ranker")
    app = create_app(index, ServerConfig(insecure_writes=True), encode=encode, ranker=service)
    cold = [
        i.item() if hasattr(i, "item") else i for i in data.item_ids[data.item_split == "cold_test"]
    ]
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        while client.get("/ready").status_code != 200:
            time.sleep(0.05)
        start = time.perf_counter()
        upload_items(client, cold, [texts[i] for i in cold])
        upload_s = time.perf_counter() - start
        start = time.perf_counter()
        rows = parity_rows(client, data, items, users)
        recs_s = time.perf_counter() - start
    experiment = result.metrics["methods"]["ours"]
    return [
        {
            "bench": "parity",
            "dataset": name,
            **row,
            "experiment_recall_at_20": round(experiment[row["segment"]]["recall@20"], 6),
            "uploads": len(cold),
            "upload_s": round(upload_s, 1),
            "recs_s": round(recs_s, 1),
        }
        for row in rows
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["movielens", "synthetic_generic"])
    p.add_argument("--out", default="runs/parity", help="experiment output root (cache)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        for name in args.datasets:
            for row in run_dataset(name, Path(args.out), Path(tmp)):
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
