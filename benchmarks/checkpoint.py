"""Benchmark: sharded checkpoints (torch.distributed.checkpoint) of a 50M x 32 row-wise table.

The table is built on the meta device and sharded row-wise by TorchRec over N gloo processes
(each allocates only its rows, as in training; fused row-wise Adagrad), trained a few steps,
then saved with ranker.sharding.save_shards (each rank writes its own shards and optimizer
state); fresh processes then build the same sharded model and load it (load_shards), and a
checksum of the table must match. The same run on ONE process gives the baseline peak. Each
phase runs in its own processes, so a peak RSS is that phase's (it includes building the
shards, which a save or a load cannot avoid). Prints one JSON line:
{"bench": "checkpoint", "rows", "dim", "processes", "save_s", "load_s", "bytes",
 "peak_rss_mb_save", "peak_rss_mb_load", "peak_rss_mb_one_process", "peak_rss_ratio", ...}
(per-process peaks: the largest over the processes; the ratio: the largest of them over the
one-process peak).

The same run then measures what checkpointing costs training (issue 20, part 6): the MovieLens
ranker of configs/ranker/movielens.yaml ("ours", default params; 384-d content vectors of
MiniLM's shape, random here) trains on one process, validation off, for the config's whole run
(the method's epochs; or `--overhead-steps` steps), with `LastCheckpoint` at that config's
cadence (or one of its own: `--cadence-steps`, `--cadence-minutes`, `--cadence-epochs`) and
without it, interleaved `--repeats` times. Added keys: "checkpoint_overhead" = the seconds spent in the
saves over the seconds of the same run's steps without them (median over repeats): the
fractional extra time, measured inside one run, so a shared machine's load moves it little;
"checkpoint_overhead_ab" = median seconds with / median seconds without - 1 (two separate
runs: on a busy machine their difference is mostly noise); "overhead": {cadence, steps, saves,
save_ms, step_ms_without, step_ms_with, last_ckpt_bytes, seconds per run}. `--async-arm` adds
a run with Lightning's AsyncCheckpointIO ("checkpoint_overhead_async_blocking": only the part
that blocks training, the clone; the write competes for the CPU from another thread).

    python benchmarks/checkpoint.py [--rows 50000000] [--dim 32] [--processes 2] [--dir DIR]
    python benchmarks/checkpoint.py --only overhead       # the overhead part alone
    python benchmarks/checkpoint.py --only shards         # the sharded save/load part alone
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(rank: int, world: int, args: argparse.Namespace, phase: str) -> None:
    import torch
    import torch.distributed as dist

    from coldstart.ranker.sharding import (
        ShardingConfig,
        is_sharded,
        load_shards,
        save_shards,
        shard_model,
    )
    from coldstart.ranker.tables import HashedTableConfig
    from coldstart.ranker.torchrec_tables import TorchRecHashedEmbedding

    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Table(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # On the meta device: no process ever holds the whole table.
            config = HashedTableConfig(dim=args.dim, hash_size=args.rows, init_std=0.01)
            self.table = TorchRecHashedEmbedding("big", config, device="meta")

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.table(ids).square().mean()

    sharding = ShardingConfig(constraints={"big": "row_wise"}, table_lr=0.05)
    model, _ = shard_model(Table(), sharding, torch.device("cpu"))
    gen = torch.Generator().manual_seed(rank)
    for _ in range(args.steps):  # the fused row-wise Adagrad updates rows and its state
        model(torch.randint(0, 2**40, (args.batch,), generator=gen)).backward()
    tables = {k: v for k, v in model.state_dict().items() if is_sharded(v)}
    assert tables, "no sharded table"
    fused = model.fused_optimizer.state_dict()
    directory = Path(args.dir) / "ck"
    dist.barrier()
    t0 = time.perf_counter()
    if phase == "save":
        save_shards(directory, tables, fused["state"])
    else:
        load_shards(directory, tables, fused["state"])
        model.load_state_dict(dict(tables), strict=False)
        model.fused_optimizer.load_state_dict(fused)
    dist.barrier()
    seconds = time.perf_counter() - t0
    # Checksum of the whole table: float64 sums of 1M-row blocks (a float64 sum of a whole
    # shard would first copy it to float64, twice its bytes).
    local = sum(
        float(torch.sum(block, dtype=torch.float64))
        for v in tables.values()
        for s in v.local_shards()
        for block in s.tensor.split(1 << 20)
    )
    mine = torch.tensor([_peak_rss_mb(), seconds, local], dtype=torch.float64)
    gathered = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    if rank == 0:
        result = {
            "peak_rss_mb": [round(float(g[0]), 1) for g in gathered],
            "seconds": max(float(g[1]) for g in gathered),
            "checksum": sum(float(g[2]) for g in gathered),
        }
        (Path(args.dir) / f"{phase}.json").write_text(json.dumps(result))


def run(args: argparse.Namespace, processes: int) -> dict:
    """Save, then load in fresh processes; returns both phases' figures."""
    from coldstart.ranker.sharding import run_distributed

    out = {}
    for phase in ("save", "load"):
        run_distributed(worker, processes, (args, phase), timeout=3600)
        out[phase] = json.loads((Path(args.dir) / f"{phase}.json").read_text())
    out["bytes"] = sum(p.stat().st_size for p in (Path(args.dir) / "ck").iterdir())
    if abs(out["save"]["checksum"] - out["load"]["checksum"]) > 1e-6 * max(
        1.0, abs(out["save"]["checksum"])
    ):
        raise AssertionError(f"loaded table differs from the saved one: {out}")
    shutil.rmtree(Path(args.dir) / "ck")
    return out


def _movielens_data():  # noqa: ANN202
    """The MovieLens split of configs/ranker/movielens.yaml (seed 0) with random 384-d content
    vectors (the shape of the MiniLM export; timing and checkpoint bytes do not depend on the
    values)."""
    import numpy as np

    from coldstart.data.movielens import load_movielens
    from coldstart.data.split import cold_start_split
    from coldstart.ranker.data import build_ranker_data

    dataset = load_movielens()
    split = cold_start_split(dataset, seed=0)
    ids = dataset.items["item_id"].to_numpy()
    vectors = np.random.default_rng(0).standard_normal((len(ids), 384)).astype(np.float32)
    return build_ranker_data(split, ids, vectors)


CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ranker" / "movielens.yaml"


def default_cadence(config: Path = CONFIG) -> dict:
    """LastCheckpoint's cadence in `config` (every_n_train_steps, every_n_minutes,
    every_n_epochs)."""
    import yaml

    for callback in yaml.safe_load(config.read_text())["trainer"]["callbacks"]:
        if callback["class_path"].endswith("LastCheckpoint"):
            args = callback.get("init_args", {})
            return {
                "every_n_train_steps": int(args.get("every_n_train_steps") or 0),
                "every_n_minutes": args.get("every_n_minutes"),
                "every_n_epochs": int(args.get("every_n_epochs", 1)),
            }
    raise ValueError(f"no LastCheckpoint in {config}")


def _train_seconds(  # noqa: ANN001
    data, steps: int | None, ckpt_dir: Path | None, cadence: dict, async_io: bool = False
) -> dict:
    """Train `steps` steps (None: the whole default run, the method's epochs) of the MovieLens
    ranker on one process; with `ckpt_dir`, LastCheckpoint
    writes there at `cadence` and at epoch ends (async_io: Lightning's AsyncCheckpointIO, which
    clones the tensors on the training thread and writes the file from another). Seconds of
    training (first step to last, saves included) and of each save (what blocks training)."""
    import lightning as L
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    from coldstart.ranker.checkpoints import LastCheckpoint
    from coldstart.ranker.lit import LitRanker, RankerDataModule

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
            if trainer.global_step == 1:  # after the first step: building and warm-up left out
                self.start = time.perf_counter()

        def on_train_end(self, trainer: L.Trainer, *args: object) -> None:
            self.seconds = time.perf_counter() - self.start
            self.steps = trainer.global_step - 1

    class TimedLast(LastCheckpoint):
        saves: list[float] = []

        def _save_last_checkpoint(self, *args: object, **kwargs: object) -> None:
            t0 = time.perf_counter()
            super()._save_last_checkpoint(*args, **kwargs)
            self.saves.append(time.perf_counter() - t0)

    L.seed_everything(0, verbose=False)
    clock = Clock()
    callbacks: list = [clock]
    if ckpt_dir is not None:
        TimedLast.saves = []
        callbacks.append(TimedLast(str(ckpt_dir), **cadence))
    dm = RankerDataModule(dataset="movielens")
    dm.data = data
    model = LitRanker("ours", {"label_threshold": 4.0})  # as configs/ranker/movielens.yaml
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=model.resolved.train.epochs if steps is None else None,
        max_steps=-1 if steps is None else steps + 1,
        logger=False,
        enable_checkpointing=ckpt_dir is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        plugins=[AsyncCheckpointIO()] if async_io else None,
    )
    trainer.fit(model, dm)
    saves = [] if ckpt_dir is None else list(TimedLast.saves)
    return {"seconds": clock.seconds, "steps": clock.steps, "saves": saves}


def overhead(args: argparse.Namespace) -> dict:
    """What checkpointing at the default cadence costs training: one process, the same steps
    and config with and without LastCheckpoint, interleaved runs."""
    import statistics

    import torch

    torch.set_num_threads(1)
    cadence = default_cadence()
    given = (args.cadence_steps, args.cadence_minutes, args.cadence_epochs)
    if any(x is not None for x in given):  # a cadence of its own: what is not given is off
        cadence = {
            "every_n_train_steps": args.cadence_steps or 0,
            "every_n_minutes": args.cadence_minutes,
            "every_n_epochs": args.cadence_epochs or 0,
        }
    data = _movielens_data()
    ckpt_dir = Path(args.dir) / "overhead"
    steps, arms = args.overhead_steps, ["without", "with"] + (["async"] * args.async_arm)
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for _ in range(args.repeats):
        for arm in arms:
            where = None if arm == "without" else ckpt_dir / arm
            runs[arm].append(_train_seconds(data, steps, where, cadence, arm == "async"))
    last = ckpt_dir / "with" / "last.ckpt"
    nbytes = last.stat().st_size if last.exists() else 0
    shutil.rmtree(ckpt_dir, ignore_errors=True)

    def median(arm: str, key: str = "seconds") -> float:
        return statistics.median(
            r["seconds"] if key == "seconds" else sum(r["saves"]) for r in runs[arm]
        )

    def in_run(arm: str) -> float:
        # The saves' seconds over the same run's training seconds without them.
        return statistics.median(
            sum(r["saves"]) / (r["seconds"] - sum(r["saves"])) for r in runs[arm]
        )

    saves = len(runs["with"][-1]["saves"])
    steps = runs["with"][-1]["steps"]
    out = {
        "checkpoint_overhead": round(in_run("with"), 4),
        "checkpoint_overhead_ab": round(median("with") / median("without") - 1, 4),
        "overhead": {
            "config": "configs/ranker/movielens.yaml (ours), 1 process, validation off",
            "cadence": cadence,
            "steps": steps,
            "saves": saves,
            "repeats": args.repeats,
            "save_ms": round(1000 * median("with", "saves") / max(saves, 1), 1),
            "step_ms_without": round(1000 * median("without") / steps, 2),
            "step_ms_with": round(1000 * median("with") / steps, 2),
            "last_ckpt_bytes": nbytes,
            "seconds": {a: [round(r["seconds"], 2) for r in rs] for a, rs in runs.items()},
        },
    }
    if args.async_arm:
        out["checkpoint_overhead_async_blocking"] = round(in_run("async"), 4)
        out["overhead"]["save_ms_async_blocking"] = round(
            1000 * median("async", "saves") / max(saves, 1), 1
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="training steps before saving")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument(
        "--only", choices=("shards", "overhead"), default=None, help="run one part (default: both)"
    )
    parser.add_argument(
        "--overhead-steps",
        type=int,
        default=None,
        help="steps timed per run (default: the whole default run, the method's epochs)",
    )
    parser.add_argument(
        "--cadence-steps",
        type=int,
        default=None,
        help="LastCheckpoint every N steps (default: the cadence of configs/ranker/movielens.yaml)",
    )
    parser.add_argument("--cadence-minutes", type=float, default=None, help="... every M minutes")
    parser.add_argument("--cadence-epochs", type=int, default=None, help="... every N epochs")
    parser.add_argument("--repeats", type=int, default=2, help="runs with and without, each")
    parser.add_argument(
        "--async-arm", action="store_true", help="also with Lightning's AsyncCheckpointIO"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        args.dir = tmp
        cost = overhead(args) if args.only != "shards" else {}
        if args.only == "overhead":
            print(json.dumps({"bench": "checkpoint", **cost}), flush=True)
            return 0
        one = run(args, 1)
        many = run(args, args.processes)
    one_peak = max(max(one["save"]["peak_rss_mb"]), max(one["load"]["peak_rss_mb"]))
    save_peak, load_peak = max(many["save"]["peak_rss_mb"]), max(many["load"]["peak_rss_mb"])
    print(
        json.dumps(
            {
                "bench": "checkpoint",
                "rows": args.rows,
                "dim": args.dim,
                "processes": args.processes,
                "save_s": round(many["save"]["seconds"], 2),
                "load_s": round(many["load"]["seconds"], 2),
                "bytes": many["bytes"],
                "peak_rss_mb_save": save_peak,
                "peak_rss_mb_load": load_peak,
                "peak_rss_mb_one_process": one_peak,
                "peak_rss_ratio": round(max(save_peak, load_peak) / one_peak, 3),
                "per_process_mb": {
                    "save": many["save"]["peak_rss_mb"],
                    "load": many["load"]["peak_rss_mb"],
                },
                "one_process": {
                    "save_s": round(one["save"]["seconds"], 2),
                    "load_s": round(one["load"]["seconds"], 2),
                    "peak_rss_mb_save": max(one["save"]["peak_rss_mb"]),
                    "peak_rss_mb_load": max(one["load"]["peak_rss_mb"]),
                },
                **cost,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
