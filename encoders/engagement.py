"""Engagement-aware fine-tuning of an item encoder (the experiment's `encoder` stage).

Two items engaged by the same user are a positive pair (co-engagement); image and text of one
item are another (CLIP). `fit_item_encoder` trains a registry encoder on either or both under
Lightning and writes a checkpoint that `create_encoder(name, pretrained=ckpt)` loads, so the
embed job runs the tuned encoder unchanged. It is given only what may be learned from: the
training interactions and the warm items' content; nothing else is passed in.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from coldstart.data.schema import ITEM_ID, TIMESTAMP, USER_ID
from coldstart.encoders.adapter import ADAPTER_PREFIX, AdaptedEncoder
from coldstart.encoders.base import IMAGE, TEXT
from coldstart.encoders.loss import ClipLoss, logq_infonce
from coldstart.encoders.registry import create_encoder
from coldstart.encoders.tune_config import ItemTuneConfig

CHECKPOINT = "encoder.ckpt"


def co_engagement_pairs(
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray | None,
    context: int,
    window_s: float,
    seed: int = 0,
) -> np.ndarray:
    """(P, 2) int64 pairs of `items` values engaged by one user.

    users, items: (R,) one row per interaction; timestamps: (R,) seconds, or None. Each user's
    rows are ordered by time (random order without timestamps) and every row is paired with
    its next `context` rows, if no more than `window_s` later (when timed). Pairs of an item
    with itself are dropped.
    """
    rng = np.random.default_rng(seed)
    tie = rng.random(len(users))  # random order inside a user when there is no time
    keys = (tie, timestamps, users) if timestamps is not None else (tie, users)
    order = np.lexsort(keys)
    u, it = users[order], items[order]
    t = None if timestamps is None else timestamps[order].astype(np.float64)
    out = []
    for k in range(1, context + 1):
        same = u[k:] == u[:-k]
        if t is not None:
            same &= (t[k:] - t[:-k]) <= window_s
        out.append(np.stack([it[:-k][same], it[k:][same]], axis=1))
    pairs = np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)
    return pairs[pairs[:, 0] != pairs[:, 1]].astype(np.int64)


def training_pairs(
    train: pd.DataFrame, item_ids: np.ndarray, cfg: ItemTuneConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Co-engagement pairs as rows of `item_ids` from the `train` interactions -> (pairs (P, 2),
    counts (N,) occurrences of each row in the pairs). Rows of items outside `item_ids` (not
    warm) are dropped first, so such an item never enters a pair."""
    row_of = pd.Series(np.arange(len(item_ids)), index=pd.Index(item_ids))
    rows = row_of.reindex(train[ITEM_ID].to_numpy()).to_numpy()
    keep = ~np.isnan(rows)
    users = pd.factorize(train[USER_ID].to_numpy()[keep])[0]
    timed = TIMESTAMP in train.columns and train[TIMESTAMP].nunique() > 1
    stamps = None
    if timed:
        ts = train[TIMESTAMP]
        if pd.api.types.is_datetime64_any_dtype(ts):  # the schema's int seconds, or datetimes
            ts = ts.dt.tz_localize(None) if ts.dt.tz is not None else ts
            ts = ts.astype("datetime64[s]").astype(np.int64)
        stamps = ts.to_numpy()[keep]
    pairs = co_engagement_pairs(
        users, rows[keep].astype(np.int64), stamps, cfg.context, cfg.window_s, cfg.seed
    )
    if len(pairs) > cfg.max_pairs:
        pick = np.random.default_rng(cfg.seed).choice(len(pairs), cfg.max_pairs, replace=False)
        pairs = pairs[np.sort(pick)]
    counts = np.bincount(pairs.reshape(-1), minlength=len(item_ids))
    return pairs, counts


class LitItemTune(L.LightningModule):
    """Contrastive fine-tune of an item encoder over item rows.

    Frozen mode: `features[modality]` (N, D) holds the frozen backbone's vectors of the N items
    and only the encoder's adapters (encoders.adapter) train. Whole mode: `tokens` (N, L) holds
    the items' text tokens and every encoder weight trains.
    log_q: (N,) log probability of each row appearing in a pair (logQ correction).
    clip_rows: (M,) rows with both an image and a text vector (CLIP objective).
    """

    def __init__(
        self,
        encoder: Any,
        cfg: ItemTuneConfig,
        log_q: torch.Tensor,
        features: dict[str, torch.Tensor] | None = None,
        tokens: torch.Tensor | None = None,
        clip_rows: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        # Inputs, not weights: plain attributes so they stay out of the checkpoint.
        self._log_q = log_q
        self._features = features or {}
        self._tokens = tokens
        self._clip_rows = clip_rows
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self.clip_loss = ClipLoss()
        self.losses: list[float] = []

    def _vectors(self, rows: torch.Tensor, modality: str) -> torch.Tensor:
        """rows (B,) -> (B, D) L2-normalized item vectors of `modality`, with gradients."""
        if self.cfg.mode == "frozen":
            base = self._features[modality][rows.cpu()].to(self.device)
            return F.normalize(self.encoder.adapt(base, modality), dim=-1)
        tokens = self._tokens[rows.cpu()].to(self.device)
        return F.normalize(self.encoder.text_features(tokens), dim=-1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (rows,) = batch  # (B, 2) pairs, or (B,) items for clip alone
        scale = torch.tensor(1.0 / self.cfg.temperature, device=self.device)
        loss = torch.zeros((), device=self.device)
        if self.cfg.objective in ("coengagement", "both"):
            a, b = rows[:, 0], rows[:, 1]
            log_q = self._log_q.to(self.device)
            loss = loss + logq_infonce(
                self._vectors(a, TEXT),
                self._vectors(b, TEXT),
                scale,
                log_q[a] if self.cfg.logq else torch.zeros_like(log_q[a]),
                log_q[b] if self.cfg.logq else torch.zeros_like(log_q[b]),
                a,
                b,
            )
        if self.cfg.objective in ("clip", "both"):
            if self.cfg.objective == "clip":
                items = rows
            else:  # one random batch of imaged items beside each pair batch
                pick = torch.randint(len(self._clip_rows), (rows.shape[0],), generator=self._gen)
                items = self._clip_rows[pick].unique().to(self.device)
            image, text = self._vectors(items, IMAGE), self._vectors(items, TEXT)
            weight = 1.0 if self.cfg.objective == "clip" else self.cfg.clip_weight
            loss = loss + weight * self.clip_loss(image, text, scale)
        self.losses.append(float(loss.detach()))
        self.log("train_loss", loss, prog_bar=True, batch_size=rows.shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["encoder_config"] = dataclasses.asdict(self.encoder.config)
        checkpoint["tune_config"] = dataclasses.asdict(self.cfg)


def fit_item_encoder(
    encoder: str,
    pretrained: str | None,
    item_ids: np.ndarray,
    train: pd.DataFrame,
    cfg: ItemTuneConfig,
    out: str | Path,
    trainer: dict[str, Any] | None = None,
    features: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    texts: dict[Any, str] | None = None,
) -> dict[str, Any]:
    """Fine-tune `encoder` on `train` (interactions) and the content of `item_ids`; write
    `out/encoder.ckpt`. Returns {"encoder": the registry name to embed with, "checkpoint",
    "pairs", "clip_items", "steps", "loss_first", "loss_last", "seconds"}.

    item_ids: (N,) the items that may be learned from (warm items). features (frozen mode):
    modality -> (ids (M,), base vectors (M, D)) from an embed export of `encoder`; items
    without a vector of a modality take zeros and never enter its objective. texts (whole
    mode): item id -> text. trainer: Lightning Trainer kwargs (accelerator, devices, ...).
    """
    cfg.validate()
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    item_ids = np.asarray(item_ids)
    torch.manual_seed(cfg.seed)
    name = ADAPTER_PREFIX + encoder if cfg.mode == "frozen" else encoder
    model = create_encoder(name, pretrained)
    if isinstance(model, AdaptedEncoder):
        model.freeze_base()
    model.train()

    n = len(item_ids)
    has: dict[str, np.ndarray] = {}
    feats: dict[str, torch.Tensor] = {}
    tokens = None
    if cfg.mode == "frozen":
        if not features or TEXT not in features:
            raise ValueError("the frozen mode needs the base encoder's text vectors (features)")
        for modality, (ids, vectors) in features.items():
            rows = pd.Series(np.arange(len(ids)), index=pd.Index(ids)).reindex(item_ids)
            has[modality] = rows.notna().to_numpy()
            full = np.zeros((n, vectors.shape[1]), dtype=np.float32)
            full[has[modality]] = vectors[rows[has[modality]].to_numpy().astype(np.int64)]
            feats[modality] = torch.from_numpy(full)
    else:
        if texts is None:
            raise ValueError("the whole mode needs the items' texts")
        tokens = model.preprocessor().text([texts.get(i, "") for i in item_ids])

    pairs, counts = training_pairs(train, item_ids, cfg)
    if cfg.objective in ("coengagement", "both") and len(pairs) == 0:
        raise ValueError("no co-engagement pairs in the training interactions")
    if cfg.mode == "frozen":  # an item without a text vector cannot be in a text pair
        pairs = pairs[has[TEXT][pairs[:, 0]] & has[TEXT][pairs[:, 1]]]
    clip_rows = None
    if cfg.objective in ("clip", "both"):
        if IMAGE not in has:
            raise ValueError(f"objective {cfg.objective!r} needs images (data.posters)")
        clip_rows = torch.from_numpy(np.flatnonzero(has[IMAGE] & has[TEXT]))
        if len(clip_rows) < 2:
            raise ValueError("fewer than 2 warm items with both an image and a text")
    # q: how often an item appears in a pair (the sampling of in-batch negatives).
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1) / max(1, counts.sum()))).float()

    lit = LitItemTune(model, cfg, log_q, feats, tokens, clip_rows)
    rows = torch.from_numpy(pairs) if cfg.objective != "clip" else clip_rows
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(rows),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(rows) > cfg.batch_size,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    kwargs = {"accelerator": "auto", "devices": "auto", "strategy": "auto", **(trainer or {})}
    fit = L.Trainer(
        max_epochs=cfg.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=False,
        **kwargs,
    )
    fit.fit(lit, loader)
    fit.save_checkpoint(out / CHECKPOINT, weights_only=True)
    return {
        "encoder": name,
        "checkpoint": CHECKPOINT,
        "objective": cfg.objective,
        "mode": cfg.mode,
        "pairs": int(len(pairs)),
        "clip_items": int(len(clip_rows)) if clip_rows is not None else 0,
        "steps": int(fit.global_step),
        "loss_first": lit.losses[0] if lit.losses else None,
        "loss_last": float(np.mean(lit.losses[-10:])) if lit.losses else None,
        "seconds": round(time.perf_counter() - start, 3),
    }
