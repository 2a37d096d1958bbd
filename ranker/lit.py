"""Lightning wrappers: `RankerDataModule` (split + content -> request batches) and `LitRanker`.

The Ranker's sizes depend on the data (items, users, content width, semantic-ID rows), so
LitRanker builds it in `setup()` from the datamodule, or from a checkpoint's tensors when loaded
without data (`on_load_checkpoint`). Checkpoints carry the resolved configs under "ranker".
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset

from ranker.data import RankerData, build_ranker_data
from ranker.metrics import KS, SEGMENTS, ranking_metrics, user_auc
from ranker.model import (
    ItemTower,
    ItemTowerConfig,
    Ranker,
    RankerConfig,
    UserTower,
    UserTowerConfig,
)
from ranker.train import BuildConfig, RequestBatches, TrainConfig, create_optimizer, create_ranker


def synthetic_ranker_data(
    n_items: int = 300, n_users: int = 120, seed: int = 0, content_dim: int = 16
) -> RankerData:
    """Small synthetic split with content that reveals each item's latent class (tests, DDP)."""
    from data.split import cold_start_split
    from data.synthetic import make_synthetic

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
    """Request batches of one epoch, sharded across DDP ranks (equal count per rank)."""

    def __init__(self, batches: RequestBatches) -> None:
        self.batches = batches

    def __iter__(self):  # noqa: ANN204
        world, rank = 1, 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        limit = (len(self.batches) // world) * world
        for i, batch in enumerate(self.batches):
            if i >= limit:
                break
            if i % world == rank:
                yield batch


class RankerDataModule(L.LightningDataModule):
    """Split + content vectors for the ranker.

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
        batch_requests: int = 128,
        items_per_request: int = 6,
        label_threshold: float | None = 4.0,
        upsample_min_count: int = 0,
        upsample_alpha: float = 0.0,
        requests: str = "pages",
        event_weights: dict[str, float] | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data: RankerData | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        hp = self.hparams
        if hp.dataset == "synthetic" and hp.split_dir is None:
            self.data = synthetic_ranker_data(seed=hp.split_seed)
            return
        from data.split import cold_start_split, load_split

        if hp.split_dir is not None:
            split = load_split(hp.split_dir)
        elif hp.dataset == "movielens":
            from data.movielens import load_movielens

            split = cold_start_split(load_movielens(), seed=hp.split_seed)
        else:
            raise ValueError(
                f"dataset must be movielens or synthetic when split_dir is unset, got {hp.dataset!r}"
            )
        ids = vectors = None
        if hp.embeddings_dir is not None:
            from data.embeddings import read_embeddings

            if not Path(hp.embeddings_dir, "manifest.json").exists():
                raise FileNotFoundError(
                    f"no embedding export at {hp.embeddings_dir} (make one with `coldstart embed`)"
                )
            ids, vectors = read_embeddings(hp.embeddings_dir, hp.modality)
            if len(ids) == 0:
                raise ValueError(f"{hp.embeddings_dir} has no vectors of modality {hp.modality!r}")
        self.data = build_ranker_data(split, ids, vectors)

    def train_config(self) -> TrainConfig:
        hp = self.hparams
        return TrainConfig(
            batch_requests=hp.batch_requests,
            items_per_request=hp.items_per_request,
            label_threshold=hp.label_threshold,
            upsample_min_count=hp.upsample_min_count,
            upsample_alpha=hp.upsample_alpha,
            requests=hp.requests,
            event_weights=dict(hp.event_weights or {}),
            seed=hp.seed,
        )

    def train_dataloader(self) -> DataLoader:
        history_len = self.trainer.lightning_module.config.user.history_len
        train = self.train_config()
        lit = self.trainer.lightning_module
        if lit.config.loss != "bce":
            train.label_threshold = None
        return DataLoader(
            _Batches(RequestBatches(self.data, history_len, train)),
            batch_size=None,
            num_workers=self.hparams.num_workers,
        )

    def _one(self) -> DataLoader:
        # Evaluation ranks the whole catalogue in one step; the loader only triggers it.
        return DataLoader([0], batch_size=None)

    val_dataloader = test_dataloader = _one

    def predict_dataloader(self) -> DataLoader:
        rows = torch.arange(self.data.num_items)
        return DataLoader(list(rows.split(4096)), batch_size=None)


class LitRanker(L.LightningModule):
    """Train, evaluate and export the ranker.

    model: architecture and loss. build: rows from data (rare-ID threshold, ...).
    lr / weight_decay / optimizer: adam, or rowwise_adagrad for sparse hashed tables.
    dedup: run the user side once per request (same result, less compute).
    """

    def __init__(
        self,
        model: RankerConfig | dict | None = None,
        build: BuildConfig | dict | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        dedup: bool = True,
        eval_ks: tuple[int, ...] = KS,
    ) -> None:
        super().__init__()
        self.config = (
            ranker_config_from_dict(model) if isinstance(model, dict) else (model or RankerConfig())
        )
        self.build = BuildConfig(**build) if isinstance(build, dict) else (build or BuildConfig())
        # Plain dicts in the checkpoint (no pickled classes): loadable with weights_only=True.
        self.save_hyperparameters(
            {
                "model": dataclasses.asdict(self.config),
                "build": dataclasses.asdict(self.build),
                "lr": lr,
                "weight_decay": weight_decay,
                "optimizer": optimizer,
                "dedup": dedup,
                "eval_ks": list(eval_ks),
            }
        )
        self.ranker: Ranker | None = None
        self.build_report: dict[str, Any] = {}

    # ------------------------------------------------------------------ building
    def setup(self, stage: str) -> None:
        if self.ranker is not None:
            return
        dm = self.trainer.datamodule
        dm.setup(stage)
        self.ranker, self.build_report = create_ranker(dm.data, self.config, self.build)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        train = TrainConfig(
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            optimizer=self.hparams.optimizer,
        )
        return create_optimizer(self.ranker, train)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ranker"] = {
            "model": dataclasses.asdict(self.config),
            "build": dataclasses.asdict(self.build),
            "report": json.loads(json.dumps(self.build_report, default=str)),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ranker is None:
            self.ranker = ranker_from_state_dict(self.config, checkpoint["state_dict"])

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.ranker.loss(batch, dedup=self.hparams.dedup)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.item_ids))
        return loss

    def _evaluate(self, part: str) -> dict[str, float]:
        data = self.trainer.datamodule.data
        self.ranker.eval()
        items = self.ranker.item_vectors()[: data.num_items].cpu().numpy()
        hist = torch.as_tensor(data.histories(self.config.user.history_len), device=self.device)
        users = (
            self.ranker.user_vectors(torch.arange(data.num_users, device=self.device), hist)
            .cpu()
            .numpy()
        )

        def score(u: np.ndarray, c: np.ndarray) -> np.ndarray:
            return users[u] @ items[c].T

        out = {}
        for seg in SEGMENTS:
            for key, value in ranking_metrics(
                score, data.task(seg, part), tuple(self.hparams.eval_ks)
            ).items():
                if key != "users":
                    out[f"{part}/{seg}/{key}"] = value
        threshold = self.trainer.datamodule.hparams.label_threshold
        if (
            threshold is not None
        ):  # AUC where labels exist: held-out rated rows, rating >= threshold
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
        return self.ranker.item_tower(batch, drop_ids=False)


def ranker_config_from_dict(raw: dict[str, Any]) -> RankerConfig:
    """RankerConfig from its asdict() form (nested item/user dicts)."""
    raw = dict(raw)
    item = ItemTowerConfig(**raw.pop("item", {}))
    user = UserTowerConfig(**raw.pop("user", {}))
    return RankerConfig(**raw, item=item, user=user)


def ranker_from_state_dict(
    config: RankerConfig, state: dict[str, torch.Tensor], prefix: str = "ranker."
) -> Ranker:
    """Rebuild an (untrained) Ranker with the shapes of a saved state dict, ready for loading."""
    s = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
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
    )
    num_users = s["user_tower.table.weight"].shape[0] if "user_tower.table.weight" in s else 1
    if config.user.hash_size:
        num_users = 1  # hashed: the table size comes from hash_size, not from the user count
    user = UserTower(config.user, config.dim, num_users, _history_items(s, num_items))
    return Ranker(config, item, user, s["item_log_q"])


def _history_items(s: dict[str, torch.Tensor], default: int) -> int:
    for key in ("user_tower.history.bag.weight", "user_tower.history.item.weight"):
        if key in s:
            return s[key].shape[0] - 1
    return default


class RankerExportWriter(BasePredictionWriter):
    """`predict` output: item vectors (warm and cold parts), user vectors and the user tower.

    output_dir/items: embedding export (modality "ranker"), part-warm and part-cold(+unseen);
    output_dir/users: user vectors (item_id column = user id, modality "user");
    output_dir/user_tower.pt: the user tower's state dict, config and the users' histories.
    """

    def __init__(self, output_dir: str = "runs/ranker/export") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: LitRanker, predictions: Any, batch_indices: Any
    ) -> None:
        from data.embeddings import EmbeddingManifest, write_part

        if trainer.global_rank != 0:
            return
        data = trainer.datamodule.data
        preds = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        items = torch.cat(list(preds)).cpu().numpy()[: data.num_items]
        out = Path(self.output_dir)
        config = {"model": dataclasses.asdict(pl_module.config), "dim": int(items.shape[1])}
        parts = []
        for name, mask in (
            ("warm", data.item_split == "warm"),
            ("cold", data.item_split != "warm"),
        ):
            parts.append(
                write_part(
                    out / "items",
                    f"part-{name}.parquet",
                    data.item_ids[mask],
                    "ranker",
                    items[mask],
                    source=name,
                )
            )
        EmbeddingManifest(
            encoder="ranker",
            encoder_config=config,
            weights_sha256="",
            dim=int(items.shape[1]),
            normalized=False,
            modalities=["ranker"],
            parts=parts,
            extra={"score": "inner product of user vector [u, 1] and item vector [v, bias]"},
        ).save(out / "items")
        hist = data.histories(pl_module.config.user.history_len)
        users = (
            pl_module.ranker.user_vectors(
                torch.arange(data.num_users, device=pl_module.device),
                torch.as_tensor(hist, device=pl_module.device),
            )
            .cpu()
            .numpy()
        )
        upart = write_part(
            out / "users", "part-00000.parquet", data.user_ids, "user", users, source="train"
        )
        EmbeddingManifest(
            encoder="ranker-user-tower",
            encoder_config=config,
            weights_sha256="",
            dim=int(users.shape[1]),
            normalized=False,
            modalities=["user"],
            parts=[upart],
        ).save(out / "users")
        torch.save(
            {
                "config": dataclasses.asdict(pl_module.config.user),
                "dim": pl_module.config.dim,
                "state_dict": pl_module.ranker.user_tower.state_dict(),
                "user_ids": data.user_ids,
                "histories": hist,
                "item_ids": data.item_ids,
            },
            os.fspath(out / "user_tower.pt"),
        )
