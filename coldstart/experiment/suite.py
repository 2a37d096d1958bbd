"""Suites: many experiments (data sets x split seeds x variants) -> one table of mean and std.

A suite YAML (configs/suites/*.yaml) names experiment configs, the split seeds of each, the
overrides shared by all runs and named variants (override lists). Every run goes through
`run_experiment` in the experiment's own output_dir, so splits, embeddings and trained rankers
are cached per stage (and shared with plain experiment runs of that config): a variant
that changes only the ranker retrains only the ranker, every seed of one data set shares one
embedding. `part: val` scores val/cold_val (what defaults are chosen on), `part: test` the test
parts (what the README reports). The result is suite.json (every run's metrics) and suite.md:
per data set, every (variant, method) with cold / warm / all Recall@20 and NDCG@20 as mean and
std over the seeds, and a target check: does `target_method` reach the best baseline's
cold AND warm Recall@20?

    name: quality
    output_dir: runs/suites/quality     # suite.json + suite.md
    part: test
    experiments:
      - {config: ../experiments/movielens.yaml, seeds: [0, 1, 2]}
    set: [stability.enabled=false, dims.enabled=false]
    variants: {default: []}
    baselines: [popularity, id_only, content_knn, content_projection]
    target_method: ours
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coldstart.experiment.config import from_dict, load_config

SEGMENTS = ("cold", "warm", "all")
KEYS = ("recall@20", "ndcg@20")


@dataclass
class SuiteExperiment:
    """One experiment config (relative to the suite file) and the split seeds to run it at."""

    config: str
    seeds: list[int] = field(default_factory=lambda: [0])
    label: str | None = None  # the table's name for it (default: the experiment's name)


@dataclass
class SuiteConfig:
    """A suite: see the module docstring. variants: name -> overrides (`section.key=value`)."""

    name: str = "suite"
    output_dir: str = "runs/suites"
    part: str = "test"
    experiments: list[SuiteExperiment] = field(default_factory=list)
    set: list[str] = field(default_factory=list)
    variants: dict[str, list[str]] = field(default_factory=lambda: {"default": []})
    baselines: list[str] = field(
        default_factory=lambda: ["popularity", "id_only", "content_knn", "content_projection"]
    )
    target_method: str = "ours"


def load_suite(path: str | os.PathLike, overrides: list[str] | None = None) -> SuiteConfig:
    """Read a suite YAML; experiment config paths are taken relative to the suite file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"suite config not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    suite = from_dict(SuiteConfig, raw, str(path))
    if suite.part not in ("val", "test"):
        raise ValueError(f"{path}: part must be val or test, got {suite.part!r}")
    for exp in suite.experiments:
        if not Path(exp.config).is_absolute():
            exp.config = os.path.normpath(path.resolve().parent / exp.config)
    suite.set = [*suite.set, *(overrides or [])]
    return suite


def run_suite(suite: SuiteConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every (experiment, seed, variant); returns {"runs": [...], "summary": {...}}."""
    from coldstart.experiment.pipeline import run_experiment

    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    total = sum(len(e.seeds) for e in suite.experiments) * len(suite.variants)
    done = 0
    for exp in suite.experiments:
        for seed in exp.seeds:
            for variant, extra in suite.variants.items():
                overrides = [
                    *suite.set,
                    f"split.seed={seed}",
                    f"evaluate.part={suite.part}",
                    *extra,
                ]
                # Each experiment keeps its own output_dir: its stage cache is shared with plain
                # `coldstart experiment` runs (and `make demo`) of the same config.
                config = load_config(exp.config, overrides)
                label = exp.label or config.name
                done += 1
                log(f"[suite] {done}/{total}: {label} seed {seed} variant {variant}")
                t0 = time.perf_counter()
                result = run_experiment(config, log=log, only=set())
                runs.append(
                    {
                        "dataset": label,
                        "seed": seed,
                        "variant": variant,
                        "overrides": extra,
                        "seconds": round(time.perf_counter() - t0, 1),
                        "run_dir": str(result.run_dir),
                        "methods": result.metrics["methods"],
                        # the optional encoder stage's own time (its build, not a cache hit)
                        "encoder_seconds": result.metrics["stages"]
                        .get("encoder", {})
                        .get("build_seconds"),
                    }
                )
    summary = summarize(runs, suite)
    return {
        "suite": dataclasses.asdict(suite),
        "seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
        "summary": summary,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _row_name(method: str, variant: str, in_variants: set[str]) -> str:
    """A method's table name: plain when it ran in one variant or in "default", else
    "method (variant)"."""
    return method if len(in_variants) == 1 or variant == "default" else f"{method} ({variant})"


def summarize(runs: list[dict[str, Any]], suite: SuiteConfig) -> dict[str, Any]:
    """{dataset: {"rows": {name: {seg: {key: [mean, std]}, "method", "variant", "seeds"}},
    "targets": {name: {"cold"|"warm": check}}}}.

    The best baseline of a check is the best row of any baseline method in any variant (e.g.
    the baselines at two sizes).
    """
    out: dict[str, Any] = {}
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    for ds in datasets:
        mine = [r for r in runs if r["dataset"] == ds]
        methods = list(dict.fromkeys(m for r in mine for m in r["methods"]))
        rows: dict[str, Any] = {}
        for variant in variants:
            for method in methods:
                vals = [
                    r["methods"][method]
                    for r in mine
                    if r["variant"] == variant and method in r["methods"]
                ]
                if not vals:
                    continue
                in_variants = {r["variant"] for r in mine if method in r["methods"]}
                rows[_row_name(method, variant, in_variants)] = {
                    seg: {k: list(_mean_std([v[seg][k] for v in vals])) for k in KEYS}
                    | {"users": vals[0][seg].get("users")}
                    for seg in SEGMENTS
                } | {"method": method, "variant": variant, "seeds": len(vals)}
        targets = {}
        base = {k: v for k, v in rows.items() if v["method"] in suite.baselines}
        for key, row in rows.items():
            if row["method"] != suite.target_method or not base:
                continue
            check = {}
            for seg in ("cold", "warm"):
                best_name = max(base, key=lambda b, s=seg: base[b][s]["recall@20"][0])
                best = base[best_name][seg]["recall@20"][0]
                ours = row[seg]["recall@20"][0]
                check[seg] = {
                    "ours": ours,
                    "best_baseline": best_name,
                    "best": best,
                    "ratio": ours / best if best > 0 else float("inf"),
                    "holds": ours >= best,
                }
            targets[key] = check
        out[ds] = {"rows": rows, "targets": targets}
    return out


def rank_variants(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Target-method rows ranked by their worst ratio to the best baseline over every data set
    and both segments (then by the mean ratio): the rule a sweep picks defaults by, so a
    default may not buy one data set's gain with another's loss."""
    ratios: dict[str, list[float]] = {}
    for block in summary.values():
        for key, check in block["targets"].items():
            ratios.setdefault(key, []).extend(check[s]["ratio"] for s in ("cold", "warm"))
    ranked = [
        {"variant": k, "worst_ratio": min(v), "mean_ratio": sum(v) / len(v), "checks": len(v)}
        for k, v in ratios.items()
    ]
    return sorted(ranked, key=lambda r: (-r["worst_ratio"], -r["mean_ratio"]))


def _cell(pair: list[float], seeds: int) -> str:
    mean, std = pair
    return f"{mean:.4f} ± {std:.4f}" if seeds > 1 else f"{mean:.4f}"


def suite_markdown(result: dict[str, Any]) -> str:
    """suite.md: one table per data set plus the target checks and how the suite was run."""
    suite = result["suite"]
    part = suite["part"]
    lines = [f"# Suite `{suite['name']}` (part: {part})", ""]
    lines.append(
        f"{len(result['runs'])} runs in {result['seconds']:.0f} s. Recall@20 = hits / |relevant|, "
        "known positives masked (train" + (", val" if part == "test" else "") + "), ties "
        "counted as their expectation over random orders. Mean ± std over split seeds where a "
        "data set has several."
    )
    lines.append("")
    for ds, block in result["summary"].items():
        seeds = sorted({r["seed"] for r in result["runs"] if r["dataset"] == ds})
        lines += [f"## {ds} (split seeds {', '.join(map(str, seeds))})", ""]
        rows = block["rows"]
        best = {
            (seg, k): max(r[seg][k][0] for r in rows.values()) for seg in SEGMENTS for k in KEYS
        }
        header = "| method | " + " | ".join(
            f"{seg} {'R' if k.startswith('recall') else 'N'}@20" for seg in SEGMENTS for k in KEYS
        )
        lines += [header + " |", "|---|" + "---:|" * (len(SEGMENTS) * len(KEYS))]
        for name, row in rows.items():
            cells = []
            for seg in SEGMENTS:
                for k in KEYS:
                    text = _cell(row[seg][k], row["seeds"])
                    cells.append(f"**{text}**" if row[seg][k][0] == best[(seg, k)] else text)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        users = next(iter(rows.values()))
        lines.append("")
        lines.append(
            "Users per segment (first seed): "
            + ", ".join(f"{seg} {users[seg].get('users')}" for seg in SEGMENTS)
            + "."
        )
        timed = [r for r in result["runs"] if r["dataset"] == ds and r.get("encoder_seconds")]
        for variant in dict.fromkeys(r["variant"] for r in timed):
            secs = [r["encoder_seconds"] for r in timed if r["variant"] == variant]
            lines.append(f"- encoder stage ({variant}): {sum(secs) / len(secs):.1f} s per split.")
        for name, check in block["targets"].items():
            parts = []
            for seg in ("cold", "warm"):
                c = check[seg]
                verdict = "holds" if c["holds"] else "FALLS SHORT"
                parts.append(
                    f"{seg} {c['ours']:.4f} vs {c['best_baseline']} {c['best']:.4f} "
                    f"({c['ratio']:.3f}x, {verdict})"
                )
            lines.append(f"- target `{name}` ≥ best baseline: " + "; ".join(parts) + ".")
        lines.append("")
    ranked = rank_variants(result["summary"])
    if len(ranked) > 1:
        lines += [
            f"## Variants of `{suite['target_method']}` ranked",
            "",
            "By the worst ratio to the best baseline's Recall@20 over every data set and both "
            "cold and warm (then the mean ratio).",
            "",
            "| variant | worst ratio | mean ratio | checks |",
            "|---|---:|---:|---:|",
        ]
        for r in ranked:
            lines.append(
                f"| {r['variant']} | {r['worst_ratio']:.3f} | {r['mean_ratio']:.3f} | {r['checks']} |"
            )
        lines.append("")
    shown = {**suite, "experiments": [dict(e) for e in suite.get("experiments", [])]}
    for e in shown["experiments"]:  # paths as the repository knows them, not this machine's
        rel = os.path.relpath(e["config"])
        e["config"] = e["config"] if rel.startswith("..") else rel
    how = yaml.safe_dump(shown, sort_keys=False, default_flow_style=None, width=100)
    lines += ["## How it ran", "", "```yaml", how.rstrip(), "```", ""]
    return "\n".join(lines)


def write_suite(result: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write suite.json and suite.md into `out_dir`; returns their paths."""
    from coldstart.data.embeddings import atomic_write_json, jsonable

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "suite.json", jsonable(result))
    (out / "suite.md").write_text(suite_markdown(result))
    return out / "suite.json", out / "suite.md"
