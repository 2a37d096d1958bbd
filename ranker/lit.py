"""Lightning wrappers: `RankerDataModule` (split + content -> request batches) and `LitRanker`.

LitRanker takes a method name and flat params, exactly like the experiment's `fit_method`, and
resolves them with `ranker.methods.resolve_method`: one registry, one set of defaults for both
paths. The Ranker's sizes depend on the data (items, users, content width, semantic-ID rows), so
LitRanker builds it in `setup()` from the datamodule, or from a checkpoint's tensors when loaded
without data (`on_load_checkpoint`). Checkpoints carry the resolved configs under "ranker".
`RankerCLI` is the LightningCLI of `coldstart ranker`: `trainer.max_epochs` defaults to the
method's resolved `epochs`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader, IterableDataset

from coldstart.ranker.checkpoints import epoch_position
from coldstart.ranker.data import RankerData, build_ranker_data
from coldstart.ranker.metrics import KS, SEGMENTS, ranking_metrics, user_auc
from coldstart.ranker.mixture import ChannelRanker
from coldstart.ranker.model import (
    ItemTower,
    Ranker,
    RankerConfig,
    UserTower,
)
from coldstart.ranker.tables import TORCHREC_KEY, match_state, to_torch_state
from coldstart.ranker.train import RequestBatches, create_optimizer


def synthetic_ranker_data(
    n_items: int = 300, n_users: int = 120, seed: int = 0, content_dim: int = 16
) -> RankerData:
    """Small synthetic split with content that reveals each item's latent class (tests, DDP)."""
    from coldstart.data.split import cold_start_split
    from coldstart.data.synthetic import make_synthetic

    syn = make_synthetic(
        n_items=n_items, n_users=n_users, interactions_per_user=30, seed=seed, image_size=8
    )
    split = cold_start_split(syn.dataset, seed=seed)
    rng = np.random.default_rng(seed)
    content = np.zeros((n_items, content_dim), np.float32)
    content[np.arange(n_items), syn.item_class % content_dim] = 1.0
    content += 0.2 * rng.standard_normal(content.shape).astype(np.float32)
    return build_ranker_data(split, syn.dataset.items["item_id"].to_numpy(), content)


class _Batches(IterableDataset):
    """Request batches of one epoch, sharded across DDP ranks (equal count per rank).

    The epoch and the offset into it follow from `batches_done()` (batches trained so far, all
    ranks together), restored with a checkpoint: a run resumed mid-epoch trains next the batch
    an uninterrupted run would (ranker.checkpoints), on any number of processes.
    """

    def __init__(self, batches: RequestBatches, batches_done: Callable[[], int]) -> None:
        self.batches, self.batches_done = batches, batches_done

    def __iter__(self):  # noqa: ANN204
        world, rank = 1, 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        limit = (len(self.batches) // world) * world
        epoch, done = epoch_position(self.batches_done(), limit)
        first = (done // world) * world  # every rank gets the same number of batches
        for i, batch in enumerate(self.batches.epoch_batches(epoch, first), start=first):
            if i >= limit:
                break
            if i % world == rank:
                yield batch


class RankerDataModule(L.LightningDataModule):
    """Split + content vectors for the ranker (where the data comes from; how it is batched for
    training is the method's TrainConfig, resolved by LitRanker).

    split_dir: a split written by `coldstart data split` (data.split.write_split). When None,
      `dataset` is split on the fly with `split_seed` (movielens = the embedded copy, or
      synthetic = a small synthetic catalogue for tests).
    embeddings_dir / modality: an embedding export (`coldstart embed`) giving content vectors.
    """

    def __init__(
        self,
        split_dir: str | None = None,
        dataset: str = "movielens",
        split_seed: int = 0,
        embeddings_dir: str | None = None,
        modality: str | None = "text",
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data: RankerData | None = None
        self._resumed = {"batches": 0, "global_step": 0}  # see _batches_done

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        hp = self.hparams
        if hp.dataset == "synthetic" and hp.split_dir is None:
            self.data = synthetic_ranker_data(seed=hp.split_seed)
            return
        from coldstart.data.split import cold_start_split, load_split

        if hp.split_dir is not None:
            split = load_split(hp.split_dir)
        elif hp.dataset == "movielens":
            from coldstart.data.movielens import load_movielens

            split = cold_start_split(load_movielens(), seed=hp.split_seed)
        else:
            raise ValueError(
                f"dataset must be movielens or synthetic when split_dir is unset, got {hp.dataset!r}"
            )
        ids = vectors = None
        if hp.embeddings_dir is not None:
            from coldstart.data.embeddings import read_embeddings

            if not Path(hp.embeddings_dir, "manifest.json").exists():
                raise FileNotFoundError(
                    f"no embedding export at {hp.embeddings_dir} (make one with `coldstart embed`)"
                )
            ids, vectors = read_embeddings(hp.embeddings_dir, hp.modality)
            if len(ids) == 0:
                raise ValueError(f"{hp.embeddings_dir} has no vectors of modality {hp.modality!r}")
        self.data = build_ranker_data(split, ids, vectors)

    def train_dataloader(self) -> DataLoader:
        lit = self.trainer.lightning_module
        train = dataclasses.replace(lit.resolved.train)
        if lit.config.loss != "bce":
            train.label_threshold = None  # labels only matter to the BCE loss
        return DataLoader(
            _Batches(RequestBatches(self.data, lit.ranker.history_len, train), self._batches_done),
            batch_size=None,
            num_workers=self.hparams.num_workers,
            # Its own generator: starting an epoch draws no number from torch's global RNG,
            # whose stream (ID dropout) a resumed run must replay exactly.
            generator=torch.Generator(),
        )

    def _batches_done(self) -> int:
        """Training batches consumed so far by all ranks together: those of the checkpoint
        resumed from (by its own number of processes) plus the steps since times this run's."""
        trainer = self.trainer
        since = trainer.global_step - self._resumed["global_step"]
        return (
            self._resumed["batches"] + since * trainer.accumulate_grad_batches * trainer.world_size
        )

    def state_dict(self) -> dict[str, int]:
        return {"batches": self._batches_done(), "global_step": self.trainer.global_step}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resumed = dict(state_dict)

    def _one(self) -> DataLoader:
        # Evaluation ranks the whole catalogue in one step; the loader only triggers it.
        return DataLoader([0], batch_size=None)

    val_dataloader = test_dataloader = _one

    def predict_dataloader(self) -> DataLoader:
        rows = torch.arange(self.data.num_items)
        return DataLoader(list(rows.split(4096)), batch_size=None)


class LitRanker(L.LightningModule):
    """Train, evaluate and export one registered method (ranker.methods) under Lightning.

    method: a registered method that trains a Ranker (ours, ours+sid, id_only, ...).
    params: flat overrides, the same keys as the experiment's `ranker.params` (dim, lr,
      id_dropout, batch_requests, history, hash_size, ...); everything else is the registry's
      default, so `LitRanker(m, p)` and `fit_method(m, ..., params=p)` build the same model.
    eval_ks: the K of Recall@K / NDCG@K logged on validation and test.
    """

    def __init__(
        self,
        method: str = "ours",
        params: dict[str, Any] | None = None,
        eval_ks: tuple[int, ...] = KS,
    ) -> None:
        super().__init__()
        from coldstart.ranker.methods import get_method, resolve_method

        if not get_method(method).trains_ranker:
            raise ValueError(
                f"method {method!r} trains no ranker model; run it with `coldstart experiment`"
            )
        self.resolved = resolve_method(method, params)
        self.config, self.build = self.resolved.ranker, self.resolved.build
        # Plain values in the checkpoint (no pickled classes): loadable with weights_only=True.
        self.save_hyperparameters(
            {"method": method, "params": dict(params or {}), "eval_ks": list(eval_ks)}
        )
        self.ranker: Ranker | ChannelRanker | None = None
        self.build_report: dict[str, Any] = {}

    # ------------------------------------------------------------------ building
    def setup(self, stage: str) -> None:
        from coldstart.ranker.methods import create_method_model

        if self.ranker is not None:
            return
        dm = self.trainer.datamodule
        dm.setup(stage)
        self.ranker, self.build_report = create_method_model(dm.data, self.resolved)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return create_optimizer(self.ranker, self.resolved.train)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ranker"] = {
            "method": self.resolved.name,
            "model": dataclasses.asdict(self.config),
            "build": dataclasses.asdict(self.build),
            "train": dataclasses.asdict(self.resolved.train),
            "report": json.loads(json.dumps(self.build_report, default=str)),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from coldstart.ranker.sharding import fill_whole_tables

        # Tables saved as shards (TorchRecStrategy) are read whole here, unless the strategy
        # reads them into its own shards (it then took them out of the checkpoint).
        fill_whole_tables(checkpoint, self._trainer.ckpt_path if self._trainer else None)
        if self.ranker is None:
            state = checkpoint["state_dict"]
            if self.resolved.channels:
                self.ranker = ChannelRanker(
                    {
                        name: ranker_from_state_dict(c.ranker, state, f"ranker.channels.{name}.")
                        for name, c in self.resolved.channels.items()
                    }
                )
            else:
                self.ranker = ranker_from_state_dict(self.config, state)
        # Tables trained as TorchRec collections load into torch tables and vice versa.
        checkpoint["state_dict"] = match_state(self, checkpoint["state_dict"])

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.ranker.loss(batch, dedup=self.resolved.train.dedup)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.item_ids))
        return loss

    def vectors(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(items (I, D), users (U, D), info): the method's served vectors (its finish step
        included), computed as fit_method computes them."""
        from coldstart.ranker.methods import model_vectors

        self.ranker.eval()
        return model_vectors(self.ranker, self.trainer.datamodule.data, self.resolved)

    def _evaluate(self, part: str) -> dict[str, float]:
        data = self.trainer.datamodule.data
        items, users, _ = self.vectors()

        def score(u: np.ndarray, c: np.ndarray) -> np.ndarray:
            return users[u] @ items[c].T

        out = {}
        for seg in SEGMENTS:
            for key, value in ranking_metrics(
                score, data.task(seg, part), tuple(self.hparams.eval_ks)
            ).items():
                if key != "users":
                    out[f"{part}/{seg}/{key}"] = value
        threshold = self.resolved.train.label_threshold
        if threshold is not None:  # AUC where labels exist: held-out rows, value >= threshold
            for seg, name in (("warm", part), ("cold", "cold_" + part)):
                rows = data.parts[name]
                s = (users[rows.users] * items[rows.items]).sum(1)
                out[f"{part}/{seg}/auc"] = user_auc(rows.users, s, rows.values >= threshold)
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log_dict(self._evaluate("val"), batch_size=1, sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log_dict(self._evaluate("test"), batch_size=1, sync_dist=True)

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The model's raw item vectors of these rows (a mixture: its channels' side by side);
        RankerExportWriter exports the served vectors (the method's finish step included)."""
        rankers = self.ranker.channels.values() if self.resolved.channels else [self.ranker]
        return torch.cat([r.item_tower(batch, drop_ids=False) for r in rankers], dim=1)


def ranker_from_state_dict(
    config: RankerConfig, state: dict[str, torch.Tensor], prefix: str = "ranker."
) -> Ranker:
    """Rebuild an (untrained) Ranker with the shapes of a saved state dict, ready for loading."""
    s = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    # TorchRec tables (tables: torchrec) keep their rows under "<table>.ebc.embedding_bags.<name>.
    # weight" (or ".ec.embeddings."): the row counts below read the same under torch names.
    s.update({TORCHREC_KEY.sub(".weight", k): v for k, v in s.items()})
    num_items = s["item_tower.content"].shape[0]
    sid_rows = s.get("item_tower.sid.item_prefix_rows")
    item = ItemTower(
        config.item,
        config.dim,
        num_items,
        content=s["item_tower.content"] if config.item.use_content else None,
        id_available=s["item_tower.id_available"],
        id_keys=s["item_tower.id_keys"],
        sid_rows=None if sid_rows is None else sid_rows.numpy(),
        sid_num_rows=0 if sid_rows is None else s["item_tower.sid.table.weight"].shape[0] - 1,
        tables=config.tables,
    )
    num_users = s["user_tower.table.weight"].shape[0] if "user_tower.table.weight" in s else 1
    if config.user.hash_size:
        num_users = 1  # hashed: the table size comes from hash_size, not from the user count
    user = UserTower(
        config.user, config.dim, num_users, _history_items(s, num_items), config.tables
    )
    return Ranker(config, item, user, s["item_log_q"])


def _history_items(s: dict[str, torch.Tensor], default: int) -> int:
    for key in ("user_tower.history.bag.weight", "user_tower.history.item.weight"):
        if key in s:
            return s[key].shape[0] - 1
    return default


class RankerCLI(LightningCLI):
    """LightningCLI over LitRanker + RankerDataModule whose `trainer.max_epochs` defaults to the
    method's resolved `epochs` (ranker.methods), so `coldstart ranker fit` trains as long as
    the experiment does. An explicit `--trainer.max_epochs` (e.g. to resume for more) wins.
    Under torchrun with restarts, each attempt opens its process group with keys of its own
    (ranker.elastic)."""

    def before_instantiate_classes(self) -> None:
        from coldstart.ranker.methods import resolve_method

        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.max_epochs is None and config.trainer.max_steps in (None, -1):
            resolved = resolve_method(config.model.method, config.model.params)
            config.trainer.max_epochs = resolved.train.epochs

    def _before_run(self) -> None:
        # Under torchrun --max-restarts: this attempt's own process-group keys (ranker.elastic).
        from coldstart.ranker.elastic import init_attempt_process_group

        init_attempt_process_group(self.trainer.strategy)

    before_fit = before_validate = before_test = before_predict = _before_run

    def _instantiate_trainer(self, config, callbacks):  # noqa: ANN001, ANN202 - LightningCLI's
        from coldstart.ranker.checkpoints import with_atomic_checkpoint_io

        # Checkpoint files written atomically (fsynced beside their target, then renamed) and
        # refused whole when damaged, on every strategy.
        config["plugins"] = with_atomic_checkpoint_io(config.get("plugins"))
        return super()._instantiate_trainer(config, callbacks)


class RankerExportWriter(BasePredictionWriter):
    """`predict` output: item vectors (warm and cold parts), user vectors and the user tower.

    output_dir/items: embedding export (modality "ranker"), part-warm and part-cold(+unseen);
    output_dir/users: user vectors (item_id column = user id, modality "user");
    output_dir/user_tower.pt: the user tower's state dict, config and the users' histories (a
      mixture: one entry per model channel under "channels").
    """

    def __init__(self, output_dir: str = "runs/ranker/export") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: LitRanker, predictions: Any, batch_indices: Any
    ) -> None:
        from coldstart.ranker.methods import export_vectors

        if trainer.global_rank != 0:
            return
        data = trainer.datamodule.data
        # The served vectors (the method's finish step included), as the experiment exports them.
        from coldstart.ranker.methods import history_user_map, method_vectors

        pl_module.ranker.eval()
        resolved = pl_module.resolved
        items, users, info, cold = method_vectors(pl_module.ranker, data, resolved)
        out = Path(self.output_dir)
        # Everything `coldstart serve --ranker` loads, as the experiment exports it: the cold-item
        # path, the user side over a history, and the content export the data module read.
        history = history_user_map(resolved.name, pl_module.ranker, data, info)
        source = trainer.datamodule.hparams.embeddings_dir
        export_vectors(out, data, items, users, resolved, cold, history, source)
        hist = data.histories(pl_module.ranker.history_len)

        def tower(ranker: Ranker) -> dict[str, Any]:
            t = ranker.user_tower
            return {
                "config": dataclasses.asdict(ranker.config.user),
                "dim": ranker.config.dim,
                # torch table names whatever `tables` trained it: UserTower(config) loads it.
                "state_dict": to_torch_state(t, t.state_dict()),
            }

        towers = (
            {"channels": {n: tower(r) for n, r in pl_module.ranker.rankers()}}
            if isinstance(pl_module.ranker, ChannelRanker)
            else tower(pl_module.ranker)
        )
        payload = {"user_ids": data.user_ids, "histories": hist, "item_ids": data.item_ids}
        torch.save({**towers, **payload}, os.fspath(out / "user_tower.pt"))
