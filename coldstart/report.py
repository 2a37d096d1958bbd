"""The experiment report: report.md plus PNG plots in the run directory.

Sections: the quality table (cold / warm / all x Recall and NDCG @10/@20 x every method), Recall@K
curves for cold vs warm items, embedding stability, output dimension vs serving cost, content
neighbours from the index, stage timings, and the artifact versions used. Plots are written with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from coldstart.experiment.config import ExperimentConfig
    from coldstart.experiment.pipeline import RunResult

PARTS = ("cold", "warm", "all")
METRIC_KEYS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
_SHORT = {"recall@10": "R@10", "recall@20": "R@20", "ndcg@10": "N@10", "ndcg@20": "N@20"}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _params_text(params: dict[str, Any]) -> str:
    keys = ("dim", "epochs", "init", "id_dropout", "lr", "max_seconds")
    return ", ".join(f"{k}={params[k]}" for k in keys if k in params) or "ranker defaults"


def quality_table(methods: dict[str, Any]) -> str:
    """Markdown table: one row per method, cold/warm/all x R@10, R@20, N@10, N@20; best in bold."""
    if not methods:
        return "_no quality figures (the ranker and evaluate stages did not run)_\n"
    columns = [(part, key) for part in PARTS for key in METRIC_KEYS]
    best = {c: max(methods[m][c[0]][c[1]] for m in methods) for c in columns}
    header = "| method | " + " | ".join(f"{p} {_SHORT[k]}" for p, k in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [header, rule]
    for name, values in methods.items():
        cells = []
        for part, key in columns:
            value = values[part][key]
            text = f"{value:.4f}"
            cells.append(f"**{text}**" if value == best[(part, key)] and len(methods) > 1 else text)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def summary_table(methods: dict[str, Any]) -> str:
    """The short plain-text table `coldstart demo` prints: Recall@20 and NDCG@20 per part."""
    if not methods:
        return "(no quality figures: the ranker and evaluate stages did not run)"
    width = max(len("method"), *(len(m) for m in methods))
    head = f"{'method':<{width}}  " + "  ".join(
        f"{p + ' ' + k:>14}" for p in PARTS for k in ("R@20", "N@20")
    )
    lines = [head, "-" * len(head)]
    for name, v in methods.items():
        cells = "  ".join(f"{v[p][k]:>14.4f}" for p in PARTS for k in ("recall@20", "ndcg@20"))
        lines.append(f"{name:<{width}}  {cells}")
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality(methods: dict[str, Any], path: Path) -> Path:
    """Grouped bars: Recall@20 for cold / warm / all per method."""
    import numpy as np

    plt = _plt()
    names = list(methods)
    x = np.arange(len(names))
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 3.6))
    for i, part in enumerate(PARTS):
        values = [methods[m][part]["recall@20"] for m in names]
        ax.bar(x + (i - 1) * width, values, width, label=part)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("Recall@20")
    ax.set_title("Recall@20 by method: cold vs warm vs all items")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_curves(curves: dict[str, Any], path: Path) -> Path:
    """Two panels (cold, warm): Recall@K against K, one line per method."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=False)
    for ax, part in zip(axes, ("cold", "warm")):
        for method, by_part in curves.items():
            points = sorted((int(k), float(v)) for k, v in by_part.get(part, {}).items())
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K")
        ax.set_title(f"{part} items")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_timings(stages: dict[str, Any], path: Path) -> Path:
    """Horizontal bars: build seconds per stage (hatched when reused from the cache)."""
    plt = _plt()
    names = [n for n, s in stages.items() if s.get("status") in ("built", "reused")]
    values = [float(stages[n].get("build_seconds") or 0.0) for n in names]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.2))
    bars = ax.barh(names, values)
    for bar, name in zip(bars, names):
        if stages[name]["status"] == "reused":
            bar.set_hatch("//")
            bar.set_alpha(0.6)
    ax.invert_yaxis()
    ax.set_xlabel("seconds to build (hatched: reused from cache in this run)")
    ax.set_title("Stage timings")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_dims(rows: list[dict[str, Any]], path: Path) -> Path:
    """Left: cold and warm Recall@20 vs item-vector dim; right: index memory and search QPS."""
    plt = _plt()
    dims = [r["dim"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(dims, [r["cold_recall@20"] for r in rows], marker="o", label="cold Recall@20")
    left.plot(dims, [r["warm_recall@20"] for r in rows], marker="o", label="warm Recall@20")
    left.set_xscale("log", base=2)
    left.set_xticks(dims, [str(d) for d in dims])
    left.set_xlabel("item-vector dim")
    left.set_title("quality")
    left.legend()
    left.grid(alpha=0.3)
    right.plot(dims, [r["index_bytes"] / 2**20 for r in rows], marker="s", color="C2")
    right.set_xscale("log", base=2)
    right.set_xticks(dims, [str(d) for d in dims])
    right.set_xlabel("item-vector dim")
    right.set_ylabel("index memory (MiB)", color="C2")
    twin = right.twinx()
    twin.plot(dims, [r["qps"] for r in rows], marker="^", color="C3")
    twin.set_ylabel("search QPS", color="C3")
    right.set_title("serving cost")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def stability_table(data: dict[str, Any]) -> str:
    k = data.get("k", 10)
    a, b = data["seeds"][0], data["seeds"][1]
    lines = [
        f"| init | top-{k} overlap, seed {a} vs {b}: all (warm / cold) "
        f"| top-{k} overlap, old vs retrained: all (warm / cold) | cold R@20 | warm R@20 |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in data["rows"]:

        def cell(name: str, row: dict[str, Any] = row) -> str:
            return (
                f"{_fmt(row[name], 3)} ({_fmt(row.get(name + '_warm'), 3)} / "
                f"{_fmt(row.get(name + '_cold'), 3)})"
            )

        lines.append(
            f"| {row['init']} | {cell('seed_overlap')} | {cell('retrain_overlap')} "
            f"| {_fmt(row.get('cold_recall@20'))} | {_fmt(row.get('warm_recall@20'))} |"
        )
    return "\n".join(lines) + "\n"


def dims_table(data: dict[str, Any]) -> str:
    lines = [
        "| dim | vector dim | cold R@20 | warm R@20 | index memory (MiB) | search QPS | factory |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['dim']} | {r.get('vector_dim', '–')} | {_fmt(r['cold_recall@20'])} "
            f"| {_fmt(r['warm_recall@20'])} "
            f"| {r['index_bytes'] / 2**20:.2f} | {r['qps']:.0f} | {r.get('factory', '')} |"
        )
    return "\n".join(lines) + "\n"


def mixture_section(ranker_dir: Path, names: list[str]) -> list[str]:
    """Markdown lines: each mixture method's tuned weights and its channels' val Recall@K."""
    lines: list[str] = []
    for name in names:
        info = _read_json(ranker_dir / "methods" / name / "info.json") or {}
        mix = info.get("mixture")
        if not mix:
            continue
        if not lines:
            lines += ["## Mixture weights (tuned on val / cold-val, never test)", ""]
        cold = ", ".join(f"{c} {w:.2f}" for c, w in (mix.get("cold") or {}).items())
        warm = mix.get("warm") or {}
        lines.append(
            f"`{name}`: cold items {cold}; warm items gate n/(n+kappa) with kappa "
            f"{warm.get('kappa')}, ws share rho {warm.get('rho')}, popularity pi "
            f"{warm.get('pi')} (channels standardized by their score std)."
        )
        lines += ["", "| part | " + " | ".join(mix.get("channels", [])) + " | mixture |"]
        lines.append("|---|" + "---:|" * (len(mix.get("channels", [])) + 1))
        for part, single, total in (
            ("cold-val", mix.get("cold_val_single") or {}, mix.get("cold_val_recall")),
            ("val (warm)", mix.get("warm_val_single") or {}, mix.get("warm_val_recall")),
        ):
            cells = [_fmt(single.get(c)) for c in mix.get("channels", [])]
            lines.append(f"| {part} R@20 | " + " | ".join(cells) + f" | {_fmt(total)} |")
        lines.append("")
    return lines


def timings_table(stages: dict[str, Any]) -> str:
    lines = ["| stage | status | build s | this run s | version |", "|---|---|---:|---:|---|"]
    for name, s in stages.items():
        lines.append(
            f"| {name} | {s['status']} | {_fmt(s.get('build_seconds'), 1)} "
            f"| {_fmt(s.get('seconds'), 1)} | `{s['version']}` |"
        )
    return "\n".join(lines) + "\n"


def write_report(result: RunResult, config: ExperimentConfig, total_seconds: float) -> Path:
    """Write report.md and the plots into result.run_dir; returns the report path."""
    run_dir = result.run_dir
    methods = result.metrics["methods"]
    stages = result.metrics["stages"]
    arts = result.artifacts
    out: list[str] = [f"# Experiment `{config.name}`", ""]
    built = sum(float(s.get("build_seconds") or 0.0) for s in stages.values())
    out.append(
        f"Run directory `{run_dir}` · {total_seconds:.1f} s end to end in this run "
        f"(stages cost {built:.0f} s when built) · "
        f"data `{config.data.loader}`"
        + (f" + posters `{config.data.posters}`" if config.data.posters else "")
        + f" · encoder `{config.embed.encoder}`"
    )
    out.append("")
    if "split" in arts:
        s = arts["split"].manifest.get("summary", {})
        out.append(
            f"Split (seed {s.get('seed')}): {s.get('warm_items')} warm items, "
            f"{s.get('cold_items')} cold items; train {s.get('train')}, val {s.get('val')}, "
            f"test {s.get('test')}, cold-val {s.get('cold_val')}, cold-test {s.get('cold_test')} "
            "interactions."
        )
        out.append("")

    part = config.evaluate.part
    out += ["## Quality", ""]
    out.append(
        f"Part `{part}`: full ranking over the catalogue with the user's known positives masked "
        "(train" + (", val and cold-val" if part == "test" else "") + "); `cold` ranks cold "
        "items only (warm masked), `warm` warm items only (cold masked), `all` every item. "
        "Recall@K = hits / |relevant| (ColdRec, RecBole); metrics.json also keeps "
        "`capped_recall@K` = hits / min(K, |relevant|). Tied scores count as their expectation "
        "over random orders (ranker.metrics), so figures do not depend on a sort's tie order."
    )
    if methods:
        first = next(iter(methods.values()))
        out.append(
            "Users per segment: "
            + ", ".join(f"{seg} {first[seg].get('users', '–')}" for seg in PARTS)
            + "."
        )
    out.append("")
    out.append(quality_table(methods))
    if methods:
        plot_quality(methods, run_dir / "quality.png")
        out += ["![Recall@20 by method](quality.png)", ""]

    if "ranker" in arts:
        out += mixture_section(arts["ranker"].path, list(methods))

    if "evaluate" in arts:
        curves = _read_json(arts["evaluate"].path / "curves.json") or {}
        if curves:
            plot_curves(curves, run_dir / "recall_curves.png")
            out += [
                "## Recall@K, cold vs warm items",
                "",
                "![Recall@K curves](recall_curves.png)",
                "",
            ]

    if "stability" in arts:
        data = _read_json(arts["stability"].path / "stability.json")
        out += ["## Embedding stability", ""]
        out.append(
            f"Method `{data['method']}` trained twice with different seeds: the mean overlap of "
            f"each item's top-{data['k']} neighbours (cosine over item vectors) between the two "
            "runs, and between an old model (trained without "
            + (
                f"the newest {data['retrain_fraction']:.0%} of the training log"
                if data.get("retrain_holdout", "newest") == "newest"
                else f"a random {data['retrain_fraction']:.0%} of the training log, which has "
                "no timestamps"
            )
            + ") and the retrained one. "
            "Rows: content warm start vs random init of the ID rows. Trained with "
            f"`{_params_text({k: v for k, v in data['rows'][0].get('params', {}).items() if k != 'init'})}`."
        )
        out.append("")
        out.append(stability_table(data))

    if "dims" in arts:
        data = _read_json(arts["dims"].path / "dims.json")
        out += ["## Output dimension vs serving cost", ""]
        out.append(
            f"Method `{data['method']}` at each item-vector dim; the index holds every item "
            f"vector (`{data['factory']}`), QPS = {data['queries']} user-vector queries of "
            f"top-{data['k']}, batched, best of 3 passes, on {data['threads']} thread(s). Trained "
            f"with `{_params_text({k: v for k, v in data.get('params', {}).items() if k != 'dim'})}`."
        )
        out.append("")
        out.append(dims_table(data))
        plot_dims(data["rows"], run_dir / "dims.png")
        out += ["![dims vs cost](dims.png)", ""]

    if "index" in arts:
        s = arts["index"].manifest.get("summary", {})
        out += ["## Content index", ""]
        out.append(
            f"`{s.get('factory')}` over {s.get('ntotal')} item content vectors ({s.get('dim')}-d, "
            f"{s.get('metric')}); recall@10 against exact search: {_fmt(s.get('recall@10'))}."
        )
        examples = s.get("examples") or []
        if examples:
            out += ["", "Nearest warm items of a few cold items (content only):", ""]
            for ex in examples:
                out.append(f"- **{ex['item']}** → " + "; ".join(ex["neighbours"]))
        out.append("")

    if "encoder" in arts:
        out += encoder_section(arts["encoder"].manifest.get("summary", {}), stages["encoder"])

    out += ["## Stage timings", "", timings_table(stages)]
    if stages:
        plot_timings(stages, run_dir / "stage_timings.png")
        out += ["![stage timings](stage_timings.png)", ""]

    out += ["## Artifact versions", ""]
    out.append("| stage | version (key prefix) | path | upstream |")
    out.append("|---|---|---|---|")
    for name, art in arts.items():
        upstream = ", ".join(f"{u}@{v['key'][:16]}" for u, v in art.manifest["upstream"].items())
        out.append(f"| {name} | `{art.version}` | `{art.path}` | {upstream or '–'} |")
    out.append("")
    if "embed" in arts and config.data.posters:
        out += ["## Media", ""]
        out.append(
            f"Media: item images come from `{config.data.posters}`. Caution: when the presence of "
            "an image depends on interactions (MovieLens posters exist only for movies with at "
            "least 5 ratings), the image modality tells a cold item's popularity; compare "
            "against a text-only run before crediting the images."
        )
        out.append("")
    if "embed" in arts:
        s = arts["embed"].manifest.get("summary", {})
        out.append(
            f"Encoder `{s.get('encoder')}` ({s.get('dim')}-d), weights sha256 "
            f"`{str(s.get('weights_sha256'))[:16]}`, modalities {s.get('modalities')}, "
            f"{s.get('count')} vectors."
        )
        out.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(out))
    return path


def encoder_section(summary: dict[str, Any], stage: dict[str, Any]) -> list[str]:
    """Markdown lines: the encoder stage's keep decision and, for a few cold items, their
    nearest warm items (by title) before and after it, so a person sees what it learned."""
    out = ["## Encoder stage", ""]
    decision = stage.get("decision")
    if decision:
        out += [f"The stage was {decision['reason']}.", ""]
    examples = summary.get("examples") or []
    if examples:
        out += [
            "Nearest warm items of a few cold items, by content, before -> after the stage:",
            "",
            "| cold item | before | after |",
            "|---|---|---|",
        ]
        for ex in examples:
            cells = [ex["item"], "; ".join(ex["before"]), "; ".join(ex["after"])]
            out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        out.append("")
    return out


def publish(run_dir: str | Path, dest: str | Path, prefix: str) -> list[Path]:
    """Copy a run's report.md and PNGs into `dest` as `<prefix>_*` (for the README's docs/).

    Image links in the copied report are rewritten to the new names. Returns the written paths.
    """
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    config = _read_json(run_dir / "config.json") or {}
    if (config.get("data") or {}).get("posters"):
        raise ValueError(
            "refusing to publish a run that used posters: committed figures come from the "
            "embedded MovieLens data only"
        )
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    report = (run_dir / "report.md").read_text()
    for png in sorted(run_dir.glob("*.png")):
        target = dest / f"{prefix}_{png.name}"
        shutil.copyfile(png, target)
        report = report.replace(f"]({png.name})", f"]({target.name})")
        written.append(target)
    (dest / f"{prefix}_report.md").write_text(report)
    written.append(dest / f"{prefix}_report.md")
    return written
