"""Run an experiment: every stage through the artifact store, then the report.

Stage graph (arrows are upstream -> downstream; a stage's key hashes its config section and its
upstream keys):

    (data: synthetic files, loader "synthetic" only) -> split
    split -> embed (keyed by the catalogue's content, not the split: every split seed of one
                    data set shares one embedding) -> index
    (encoder enabled:) split, untuned embed -> encoder -> embed (the tuned encoder's export,
                    per split: it learned from that split's train part) -> index
    split, embed -> ranker; split, embed, ranker -> evaluate
    split, embed -> stability
    split, embed -> dims
    everything -> report (always written to a fresh run directory, <output_dir>/reports/)

A stage that fails stops the run with its error; the artifacts built before it stay cached. A
killed run resumes when rerun: the ranker stage keeps its finished methods and its training
checkpoint in a work directory keyed like its artifact (stages.build_ranker, ArtifactStore).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coldstart.experiment import stages
from coldstart.experiment.artifacts import Artifact, ArtifactStore
from coldstart.experiment.config import (
    ENCODER_KEY_EXCLUDES,
    EncoderStageConfig,
    ExperimentConfig,
    resolve_trainer,
    trainer_key,
)

STAGE_ORDER = (
    "data",
    "split",
    "encoder",
    "embed",
    "index",
    "ranker",
    "evaluate",
    "stability",
    "dims",
)


@dataclass
class RunResult:
    """What one run produced."""

    run_dir: Path
    metrics: dict[str, Any]
    artifacts: dict[str, Artifact] = field(default_factory=dict)

    def stage_status(self, name: str) -> str:
        if name in self.artifacts:
            return "reused" if self.artifacts[name].reused else "built"
        return "skipped"


def _section(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def index_section(cfg: Any) -> dict[str, Any]:
    """What the index stage's key hashes: the section, with `backend` left out for FAISS, so
    that FAISS runs keep the keys (and cached artifacts) they had before the key existed."""
    section = _section(cfg)
    if section["backend"] == "faiss":
        del section["backend"]
    return section


def ranker_stage_section(config: ExperimentConfig) -> dict[str, Any]:
    """The ranker stage's cache-key section: its config, every method's resolved params, and
    the resolved trainer only where it differs from "auto" (default configs keep their keys)."""
    # The resolved configs enter the key, not only the YAML: a changed default retrains.
    section = {
        **_section(config.ranker),
        "resolved": {m: stages.resolved_params(config.ranker, m) for m in config.ranker.methods},
    }
    trainer = trainer_key(resolve_trainer(config.trainer, config.ranker.trainer))
    del section["trainer"]
    if trainer:
        section["trainer"] = trainer
    del section["checkpoint_every"]  # where a killed run resumes, not what it trains
    return section


def run_experiment(
    config: ExperimentConfig,
    log: Callable[[str], None] = print,
    force: set[str] | None = None,
    only: set[str] | None = None,
) -> RunResult:
    """Run (or reuse) every stage of `config` and write the report; returns the run directory.

    force: stage names to rebuild even when cached. only: when given, the optional analysis
    stages (stability, dims) not named here are skipped (the core stages always run).
    """
    from coldstart import report as report_mod
    from coldstart.index.registry import get_backend

    get_backend(config.index.backend)  # an unknown store fails now, not after the embed stage
    if config.encoder.enabled:
        config.encoder.validate()
        if config.encoder.keep == "val" and config.encoder.keep_method not in config.ranker.methods:
            raise ValueError(
                f"encoder.keep_method {config.encoder.keep_method!r} must be one of "
                f"ranker.methods {list(config.ranker.methods)} (keep: val decides on its val recall)"
            )
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    store = ArtifactStore(root, log=log, force=set(force or ()))
    started = time.perf_counter()
    artifacts: dict[str, Artifact] = {}

    data_cfg = config.data
    if data_cfg.loader == "synthetic":
        # Written as foreign files + a YAML mapping, then read by the generic loader.
        synthetic_section = _section(data_cfg.synthetic)
        for key in ("taste_groups", "media", "media_affinity"):
            if not synthetic_section[key]:  # added later: at 0 the data (and key) hold
                del synthetic_section[key]
        artifacts["data"] = store.run(
            "data",
            synthetic_section,
            [],
            lambda out: stages.build_synthetic_data(data_cfg.synthetic, config.name, out),
            version=stages.VERSIONS["data"],
        )
        data_cfg = dataclasses.replace(
            data_cfg, loader="generic", mapping=str(artifacts["data"].path / "mapping.yaml")
        )
        if data_cfg.synthetic.media and not data_cfg.posters:
            # Its photos, carousels and videos are the posters (shards in the data artifact,
            # whose directory name is its key: the embed key follows the data).
            media = str(artifacts["data"].path / "media")
            data_cfg = dataclasses.replace(data_cfg, posters=media)
            config = dataclasses.replace(
                config, data=dataclasses.replace(config.data, posters=media)
            )

    # The dataset is loaded once here (cheap) so its source hashes can enter the split key (the
    # hash of the loaded tables, not the paths they came from).
    def dataset_fn() -> Any:
        dataset = stages.load_dataset(data_cfg)
        # Media types from the posters' shards where the catalogue has none (two or more types).
        return stages.add_media_types(dataset, data_cfg.posters) if data_cfg.posters else dataset

    data_section = {"loader": config.data.loader}

    def run_split() -> Artifact:
        dataset = dataset_fn()
        section = {
            "data": data_section,
            "split": _section(config.split),
            "source": stages.dataset_fingerprint(dataset),
        }
        return store.run(
            "split",
            section,
            [],
            lambda out: stages.build_split(dataset, config.split, out),
            version=stages.VERSIONS["split"],
        )

    artifacts["split"] = run_split()

    trainers = {
        name: resolve_trainer(config.trainer, getattr(config, name).trainer)
        for name in ("encoder", "embed", "ranker")
    }
    embed_section = {
        "embed": _section(config.embed),
        "posters": config.data.posters,
        # The catalogue, not the split: split seeds of one data set share their embeddings.
        "catalogue": stages.catalogue_fingerprint(artifacts["split"].path, config.embed),
    }
    # Only a trainer that differs from "auto" enters the key: default configs keep their keys.
    del embed_section["embed"]["trainer"]
    if trainer_key(trainers["embed"]):
        embed_section["trainer"] = trainer_key(trainers["embed"])
    if not config.data.posters:
        # Without posters the image settings change nothing: keep them out of the key.
        for key in ("image_encoder", "fusion", "image_weight"):
            embed_section["embed"].pop(key)
    artifacts["embed"] = store.run(
        "embed",
        embed_section,
        [],
        lambda out: stages.build_embed(
            artifacts["split"].path, config.embed, config.data, out, trainer=trainers["embed"]
        ),
        version=stages.VERSIONS["embed"],
    )
    base_embed = artifacts["embed"]
    if config.encoder.enabled:
        # The untuned export stays cached (and shared by split seeds); the tuned one is per split.
        encoder_section = {
            "encoder": {
                k: v for k, v in _section(config.encoder).items() if k not in ENCODER_KEY_EXCLUDES
            },
            "trainer": trainer_key(trainers["encoder"]),
        }
        artifacts["encoder"] = store.run(
            "encoder",
            encoder_section,
            [artifacts["split"], base_embed],
            lambda out: stages.build_encoder(
                artifacts["split"].path,
                base_embed.path,
                config.encoder,
                config.embed,
                config.data,
                trainers["encoder"],
                out,
            ),
            version=stages.VERSIONS["encoder"],
        )
        artifacts["embed"] = store.run(
            "embed",
            embed_section,
            [artifacts["encoder"]],
            lambda out: stages.build_embed(
                artifacts["split"].path,
                config.embed,
                config.data,
                out,
                encoder_dir=artifacts["encoder"].path,
                trainer=trainers["embed"],
            ),
            version=stages.VERSIONS["embed"],
        )
    ranker_section = ranker_stage_section(config)
    for line in stages.ranker_trainer_notes(trainers["ranker"]):
        log(line)

    def run_ranker(embed: Artifact) -> Artifact:
        return store.run(
            "ranker",
            ranker_section,
            [artifacts["split"], embed],
            lambda out, work: stages.build_ranker(
                artifacts["split"].path,
                embed.path,
                config.ranker,
                out,
                work,
                trainer=trainers["ranker"],
            ),
            version=stages.VERSIONS["ranker"],
            resumable=True,  # finished methods and the training loop survive a kill
        )

    def run_evaluate(embed: Artifact, ranker: Artifact, part: str) -> Artifact:
        evaluate_cfg = dataclasses.replace(config.evaluate, part=part)
        return store.run(
            "evaluate",
            _section(evaluate_cfg),
            [artifacts["split"], embed, ranker],
            lambda out: stages.build_evaluate(
                artifacts["split"].path, embed.path, ranker.path, evaluate_cfg, out
            ),
            version=stages.VERSIONS["evaluate"],
        )

    decision = None
    if config.encoder.enabled and config.encoder.keep == "val":
        tuned_embed = artifacts["embed"]
        val = {
            branch: json.loads(
                (run_evaluate(e, run_ranker(e), "val").path / "quality.json").read_text()
            )
            for branch, e in (("off", base_embed), ("on", tuned_embed))
        }
        decision = keep_decision(val, config.encoder)
        log(f"[encoder] {decision['reason']}")
        artifacts["embed"] = tuned_embed if decision["kept"] else base_embed
    artifacts["index"] = store.run(
        "index",
        index_section(config.index),
        [artifacts["split"], artifacts["embed"]],
        lambda out: stages.build_index(
            artifacts["split"].path, artifacts["embed"].path, config.index, out
        ),
        version=stages.VERSIONS["index"],
    )
    artifacts["ranker"] = run_ranker(artifacts["embed"])
    artifacts["evaluate"] = run_evaluate(
        artifacts["embed"], artifacts["ranker"], config.evaluate.part
    )
    # The analyses train extra rankers: their sections include the ranker params they inherit.
    for name, section_cfg, builder in (
        ("stability", config.stability, stages.build_stability),
        ("dims", config.dims, stages.build_dims),
    ):
        if not section_cfg.enabled or (only is not None and name not in only):
            continue
        section = {
            name: _section(section_cfg),
            "ranker_params": config.ranker.params,
            "resolved": stages.resolved_params(
                config.ranker, section_cfg.method, section_cfg.params
            ),
        }
        artifacts[name] = store.run(
            name,
            section,
            [artifacts["split"], artifacts["embed"]],
            lambda out, section_cfg=section_cfg, builder=builder: builder(
                artifacts["split"].path,
                artifacts["embed"].path,
                section_cfg,
                config.ranker,
                config.index,
                out,
            ),
            version=stages.VERSIONS[name],
        )

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = root / "reports" / f"{stamp}-{config.name}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = root / "reports" / f"{stamp}-{config.name}-{suffix}"
    run_dir.mkdir(parents=True)

    metrics = {
        "methods": _methods_metrics(artifacts, list(config.ranker.methods)),
        "stages": _stages_summary(artifacts),
    }
    if decision is not None:
        metrics["stages"]["encoder"]["decision"] = decision
    # Plain json.dumps (not sorted) so methods keep the config's order in the file.
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    result = RunResult(run_dir, metrics, artifacts)
    report_mod.write_report(result, config, total_seconds=time.perf_counter() - started)
    return result


def keep_decision(val: dict[str, dict[str, Any]], cfg: EncoderStageConfig) -> dict[str, Any]:
    """Keep the encoder stage or not (`encoder.keep: val`), from the val quality tables of the
    ranker trained without ("off") and with ("on") the tuned export: kept when
    `cfg.keep_method`'s cold Recall@20 gains at least keep_min_cold_gain (and more than 0) and
    its warm Recall@20 drops no more than keep_max_warm_drop. Returns the figures and the rule.
    """
    key = "recall@20"
    figures = {
        branch: {seg: float(val[branch][cfg.keep_method][seg][key]) for seg in ("cold", "warm")}
        for branch in ("off", "on")
    }
    gain = figures["on"]["cold"] - figures["off"]["cold"]
    drop = figures["off"]["warm"] - figures["on"]["warm"]
    kept = gain > 0 and gain >= cfg.keep_min_cold_gain and drop <= cfg.keep_max_warm_drop
    reason = (
        f"{'kept' if kept else 'dropped'} on val: {cfg.keep_method} cold Recall@20 "
        f"{figures['off']['cold']:.4f} -> {figures['on']['cold']:.4f} (gain {gain:+.4f}, "
        f"needs > 0 and >= {cfg.keep_min_cold_gain}), warm {figures['off']['warm']:.4f} -> "
        f"{figures['on']['warm']:.4f} (drop {drop:+.4f}, allowed <= {cfg.keep_max_warm_drop})"
    )
    return {"kept": kept, "method": cfg.keep_method, "val_recall@20": figures, "reason": reason}


def _methods_metrics(artifacts: dict[str, Artifact], order: list[str]) -> dict[str, Any]:
    """{method: {"cold"|"warm"|"all": {recall@10, recall@20, ndcg@10, ndcg@20, capped_recall@10,
    capped_recall@20, users}}}, config order (users: how many users the segment averages)."""
    if "evaluate" not in artifacts:
        return {}
    table = json.loads((artifacts["evaluate"].path / "quality.json").read_text())
    keys = stages.QUALITY_KEYS
    names = [m for m in order if m in table] + [m for m in table if m not in order]
    return {
        method: {
            part: {k: float(table[method][part][k]) for k in keys}
            | {"users": int(table[method][part]["users"])}
            for part in ("cold", "warm", "all")
        }
        for method in names
    }


def _stages_summary(artifacts: dict[str, Artifact]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in STAGE_ORDER:
        if name in artifacts:
            out[name] = {"status": "reused" if artifacts[name].reused else "built"}
            out[name].update(artifacts[name].summary())
    return out
