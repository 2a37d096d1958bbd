"""The samples README.md and docs/*.md show, checked against what the code prints and does.

- every `coldstart index build` sample shows the keys the real command prints, in its order;
- the `metrics.json` block in docs/experiments.md names the keys a real experiment writes;
- the README's Python example runs;
- every relative link (and heading anchor) in the pages points at something that exists;
- every `from coldstart... import name` in a page's Python resolves;
- the README's command table lists the commands `coldstart` has.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from coldstart import cli
from tests.exports import write_export

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def code_blocks(path: Path, lang: str | None = None) -> list[str]:
    blocks = [(tag, body) for tag, body in FENCE.findall(path.read_text())]
    return [body for tag, body in blocks if lang is None or tag == lang]


def build_samples(backend: str) -> list[tuple[Path, list[str], bool]]:
    """(page, keys shown, truncated) for each `coldstart index build` sample of `backend`.

    A sample is the run of `# ...` comment lines right after the command (and its `\\`
    continuation lines); a trailing `...` marks it as cut short.
    """
    samples = []
    for page in PAGES:
        for block in code_blocks(page):
            lines = block.splitlines()
            for i, line in enumerate(lines):
                if not line.lstrip().startswith("coldstart index build"):
                    continue
                command, j = line, i
                while lines[j].rstrip().endswith("\\") and j + 1 < len(lines):
                    j += 1
                    command += " " + lines[j]
                if ("--backend milvus" in command) != (backend == "milvus"):
                    continue
                comment = []
                for follow in lines[j + 1 :]:
                    if not follow.startswith("#"):
                        break
                    comment.append(follow.lstrip("#").strip())
                text = " ".join(comment)
                if not text.startswith("{"):
                    continue  # a command shown without its output
                keys = re.findall(r'"([^"]+)":', text)
                samples.append((page, keys, "..." in text))
    return samples


def _export(directory: Path, n: int = 300, dim: int = 16) -> Path:
    """A tiny embedding export (one Parquet part + manifest), as `coldstart embed` writes."""
    from coldstart.data.synthetic import clustered_vectors

    vectors, _ = clustered_vectors(n, dim, n_clusters=8, seed=0)
    return write_export(directory, np.arange(n), vectors, modality="text")


def _index_build(argv: list[str], capsys) -> dict:
    from coldstart.commands import index as index_cmd

    capsys.readouterr()
    assert index_cmd.main(["build", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _check_samples(samples, printed: list[str]) -> None:
    for page, keys, truncated in samples:
        where = page.relative_to(REPO)
        if truncated:
            assert keys == printed[: len(keys)], f"{where}: {keys} is not a prefix of {printed}"
        else:
            assert keys == printed, f"{where}: shows {keys}, the command prints {printed}"


def test_index_build_sample_shows_the_keys_the_command_prints(tmp_path, capsys):
    samples = build_samples("faiss")
    assert any(page == README for page, _, _ in samples), "README lost its index build sample"
    report = _index_build(
        ["--embeddings", str(_export(tmp_path / "emb")), "--out", str(tmp_path / "idx")], capsys
    )
    _check_samples(samples, list(report))


def test_milvus_index_build_sample_shows_the_keys_the_command_prints(tmp_path, capsys):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    samples = build_samples("milvus")
    assert samples, "docs/index-service.md lost its Milvus index build sample"
    report = _index_build(
        [
            "--embeddings",
            str(_export(tmp_path / "emb")),
            "--backend",
            "milvus",
            "--uri",
            str(tmp_path / "items.db"),
            "--index-type",
            "FLAT",
        ],
        capsys,
    )
    _check_samples(samples, list(report))


def documented_metrics_schema() -> dict[str, tuple[str, set[str], set[str]]]:
    """{"methods" | "stages": (level-2 name, level-2 values or empty, keys)} from the block
    in docs/experiments.md that starts with `metrics.json`."""
    blocks = [b for b in code_blocks(REPO / "docs/experiments.md") if b.startswith("metrics.json")]
    assert len(blocks) == 1, "docs/experiments.md: one block starting with `metrics.json`"
    schema = {}
    for line in blocks[0].splitlines()[1:]:
        optional = re.fullmatch(r"(\w+)\.(\w+)\.(\w+) \([^)]+\): (.+)", line.strip())
        if optional:  # top.<stage>.<key> (when): keys of a sub-dictionary some runs have
            top, stage, key, keys = optional.groups()
            schema[f"{top}.{stage}.{key}"] = (set(), {k.strip() for k in keys.split(",")})
            continue
        path, _, keys = line.strip().partition(">: ")
        parts = re.fullmatch(r"(\w+)\.<\w+>(?:\.<\w+: ([^>]+))?|(\w+)\.<\w+: ([^>]+)", path)
        assert parts, f"cannot read {line!r}"
        if parts.group(1):  # top.<name>.<level: a | b>
            top, values = parts.group(1), parts.group(2)
        else:  # top.<level: a | b>
            top, values = parts.group(3), parts.group(4)
        schema[top] = (
            {v.strip() for v in values.split("|")} if values else set(),
            {k.strip() for k in keys.split(",")},
        )
    return schema


def test_metrics_json_schema_in_docs_matches_a_real_run(tmp_path):
    from coldstart.commands.experiment import main as experiment_main
    from tests.coldstart.synthetic_files import write_synthetic_files

    mapping = write_synthetic_files(tmp_path / "data", n_items=120, n_users=40, per_user=10)
    raw = yaml.safe_load((REPO / "configs/experiments/synthetic_generic.yaml").read_text())
    raw["output_dir"] = str(tmp_path / "out")
    raw["data"]["mapping"] = str(mapping)
    raw["embed"]["encoder"] = "tiny-clip"  # random init: the schema, not the quality
    raw["ranker"]["methods"] = ["popularity", "ours"]
    raw["ranker"]["params"] = {"dim": 8, "epochs": 1}
    raw["stability"].update(enabled=True, params={"epochs": 1})
    raw["dims"].update(enabled=True, method="warmstart", dims=[8], qps_queries=20)
    raw["dims"]["params"] = {"epochs": 1}
    # The optional stage, so its entry is checked, with its keep decision (ours decides).
    raw["encoder"].update(enabled=True, epochs=1, keep="val")
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert experiment_main(["--config", str(config)]) == 0
    run_dir = Path(out.getvalue().strip().splitlines()[-1])  # documented: the last stdout line
    metrics = json.loads((run_dir / "metrics.json").read_text())

    schema = documented_metrics_schema()
    assert set(metrics) == {k for k in schema if "." not in k}
    segments, metric_keys = schema["methods"]
    assert list(metrics["methods"]) == raw["ranker"]["methods"]  # config order, as documented
    for name, parts in metrics["methods"].items():
        assert set(parts) == segments, name
        for segment, values in parts.items():
            assert set(values) == metric_keys, (name, segment)
    stages, stage_keys = schema["stages"]
    assert set(metrics["stages"]) == stages
    for name, stage in metrics["stages"].items():
        extra = {k for k in stage if f"stages.{name}.{k}" in schema}
        assert set(stage) - extra == stage_keys, name
        for key in extra:
            assert set(stage[key]) == schema[f"stages.{name}.{key}"][1], (name, key)
        assert stage["status"] in ("built", "reused")
        assert stage["version"] == stage["key"][:16]
    assert "decision" in metrics["stages"]["encoder"]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = code_blocks(README, "python")
    assert len(blocks) == 1, "the README has one Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["hits"].ids[0][0] == 1  # as its comment says: item 1 first
    assert float(namespace["hits"].scores[0][0]) == pytest.approx(1.0, abs=1e-5)
    assert out.getvalue().startswith("[1, ")
    assert (tmp_path / "example-index" / "manifest.json").exists()


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_relative_link_points_at_something_that_exists():
    broken = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_figure_in_docs_is_shown_somewhere():
    shown = set()
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            shown.add((page.parent / target.partition("#")[0]).resolve())
    unused = [p.name for p in sorted((REPO / "docs").glob("*.png")) if p.resolve() not in shown]
    assert not unused, f"figures no page links to: {unused}"


def test_coldstart_imports_in_the_pages_resolve():
    missing = []
    for page in PAGES:
        for block in code_blocks(page, "python"):
            for node in ast.walk(ast.parse(block)):
                if not (isinstance(node, ast.ImportFrom) and node.module):
                    continue
                if node.module.split(".")[0] != "coldstart":
                    continue
                module = importlib.import_module(node.module)
                missing += [
                    f"{page.relative_to(REPO)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if not hasattr(module, alias.name)
                ]
    assert not missing, missing


def test_readme_command_table_lists_every_command():
    table = next(b for b in code_blocks(README, "text") if b.startswith("coldstart data"))
    shown = [line.split()[1] for line in table.splitlines() if line.startswith("coldstart ")]
    assert shown == list(cli.COMMANDS)


def test_usage_names_both_backends():
    usage = cli.usage()
    assert "FAISS" in usage and "Milvus" in usage
    assert "Milvus" in cli.COMMANDS["index"][1] and "Milvus" in cli.COMMANDS["serve"][1]


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_help_into_a_closed_pipe_exits_quietly(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert cli.main(["--help"]) == 0


def test_help_piped_into_head_prints_no_traceback(tmp_path):
    import subprocess

    script = f"{sys.executable} -m coldstart --help | true; {sys.executable} -m coldstart | true"
    for _ in range(3):
        done = subprocess.run(
            ["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
