"""`LitContrastive`: contrastive (CLIP) fine-tuning of a registry encoder under Lightning.

The encoder is a plain nn.Module from `create_encoder`; this module adds the symmetric InfoNCE
loss with a learnable temperature, the optimizer, and retrieval metrics. Its hyperparameters
(encoder name, overrides, optimisation) are saved into every checkpoint, so a checkpoint alone
rebuilds the model: `create_encoder(name, pretrained="path/last.ckpt")`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from coldstart.data.schema import ImageTextBatch
from coldstart.encoders.loss import ClipLoss, retrieval_recall
from coldstart.encoders.pooling import TemporalPooling
from coldstart.encoders.registry import create_encoder


def caption_groups(tokens: torch.Tensor) -> torch.Tensor:
    """(B, L) token ids -> (B,) int64 ids equal exactly when the captions are identical.

    Trailing padding (repeats of a row's last id) is stripped first, so captions tokenized in
    batches padded to different lengths still match.
    """
    out = []
    for row in tokens.tolist():
        end = len(row)
        while end > 1 and row[end - 1] == row[-1]:
            end -= 1
        out.append(hash(tuple(row[:end])))  # int tuples hash identically in every process
    return torch.tensor(out, dtype=torch.int64)


class LitContrastive(L.LightningModule):
    """Fine-tune an open_clip / HF CLIP encoder with the CLIP loss.

    Args:
        encoder: registry name (see `encoders.list_encoders()`), e.g. "tiny-clip", "ViT-B-32".
        pretrained: open_clip tag / weights file / HF path, as for `create_encoder`.
        encoder_overrides: extra EncoderConfig fields.
        lr, weight_decay, warmup_steps: AdamW with linear warmup, then (lr_schedule="cosine")
            cosine decay to 0 over the known number of steps, or a constant rate.
        init_temperature: starting softmax temperature when the encoder has no logit scale.
        max_logit_scale: clamp of exp(logit_scale), as in CLIP (100).
        local_loss, gather_with_grad: see `ClipLoss` / `gather_features`.
        recall_ks: k values of the logged image->text and text->image recall.
        video_pooling: None, or "attention" / "mean": a `TemporalPooling` (`video_pool`) over
            the frames of video-text pairs, trained with the towers; the embed job loads it
            from this checkpoint with `--video-pooling-state` (its `video_pool.*` weights).
    """

    def __init__(
        self,
        encoder: str = "tiny-clip",
        pretrained: str | None = None,
        encoder_overrides: dict[str, Any] | None = None,
        lr: float = 5e-4,
        weight_decay: float = 0.1,
        warmup_steps: int = 0,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        local_loss: bool = True,
        gather_with_grad: bool = True,
        recall_ks: tuple[int, ...] = (1, 5, 10),
        lr_schedule: str = "cosine",
        video_pooling: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = create_encoder(encoder, pretrained, **(encoder_overrides or {}))
        self.encoder.train()
        self.video_pool = (
            TemporalPooling(self.encoder.dim, video_pooling) if video_pooling else None
        )
        # Learnable temperature: reuse the CLIP model's own logit scale so a fine-tuned model
        # keeps it; towers without one (e.g. composite) get a fresh parameter here.
        self._own_scale = self.encoder.logit_scale is None
        if self._own_scale:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.loss = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad)
        self._eval_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # -- model ---------------------------------------------------------------------------------
    def scale(self) -> torch.Tensor:
        raw = self.logit_scale if self._own_scale else self.encoder.logit_scale
        return raw.exp().clamp(max=self.hparams.max_logit_scale)

    def forward(self, batch: ImageTextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> media (B, D), text (B, D), both L2-normalized, with gradients. A video row's media
        vector is its frames' vectors pooled by `video_pool` (mean without one)."""
        if batch.frames is None:  # image-text pairs only (towers in their original order)
            image = F.normalize(self.encoder.image_features(batch.images), dim=-1)
            return image, F.normalize(self.encoder.text_features(batch.tokens), dim=-1)
        text = F.normalize(self.encoder.text_features(batch.tokens), dim=-1)
        v, k = batch.frames.shape[:2]
        frames = self.encoder.image_features(batch.frames.flatten(0, 1)).view(v, k, -1)
        pool = self.video_pool or TemporalPooling(frames.shape[-1], "mean")
        media = text.new_zeros(text.shape).index_copy(
            0, batch.video_rows, pool(frames, batch.frame_mask).to(text.dtype)
        )  # (B, D): out of place, so gradients reach the pooling and the towers
        if batch.images is not None and len(batch.images):
            pics = F.normalize(self.encoder.image_features(batch.images), dim=-1)
            media = media.index_copy(0, batch.image_rows, pics.to(text.dtype))
        return media, text

    # -- steps ---------------------------------------------------------------------------------
    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> torch.Tensor:
        image, text = self(batch)
        loss = self.loss(image, text, self.scale())
        bs = image.shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=bs)
        self.log("logit_scale", self.scale().detach(), batch_size=bs)
        return loss

    def _eval_step(self, batch: ImageTextBatch) -> None:
        image, text = self(batch)
        self._eval_outputs.append((image.detach(), text.detach(), caption_groups(batch.tokens)))

    def validation_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs = []

    on_test_epoch_start = on_validation_epoch_start

    def _gather_eval(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's eval outputs -> everyone's (ranks may hold different counts)."""
        d = self.encoder.dim
        if self._eval_outputs:
            image = torch.cat([o[0] for o in self._eval_outputs])
            text = torch.cat([o[1] for o in self._eval_outputs])
            groups = torch.cat([o[2] for o in self._eval_outputs]).to(self.device)
        else:
            image = text = torch.zeros(0, d, device=self.device)
            groups = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._eval_outputs = []
        if self.trainer.world_size == 1:
            return image, text, groups
        n = torch.tensor([image.shape[0]], device=self.device)
        sizes = self.all_gather(n).view(-1)  # (W,)
        m = int(sizes.max())
        pad = m - image.shape[0]
        image = F.pad(image, (0, 0, 0, pad))
        text = F.pad(text, (0, 0, 0, pad))
        groups = F.pad(groups, (0, pad))
        gi, gt, gg = (self.all_gather(x) for x in (image, text, groups))  # (W, m, ...)
        keep = [slice(0, int(s)) for s in sizes]
        image = torch.cat([gi[r][keep[r]] for r in range(len(keep))])
        text = torch.cat([gt[r][keep[r]] for r in range(len(keep))])
        groups = torch.cat([gg[r][keep[r]] for r in range(len(keep))])
        return image, text, groups

    def _log_retrieval(self, prefix: str) -> None:
        image, text, groups = self._gather_eval()
        if image.shape[0] == 0:
            return
        metrics = retrieval_recall(image, text, tuple(self.hparams.recall_ks), groups)
        metrics["loss"] = float(
            ClipLoss()(image.float(), text.float(), self.scale().detach().float())
        )
        metrics["samples"] = float(image.shape[0])
        # Every rank holds the same gathered numbers, so no further sync is needed.
        for name, value in metrics.items():
            self.log(
                f"{prefix}_{name}",
                value,
                prog_bar=name in ("i2t_r1", "t2i_r1"),
                rank_zero_only=False,
            )

    def on_validation_epoch_end(self) -> None:
        self._log_retrieval("val")

    def on_test_epoch_end(self) -> None:
        self._log_retrieval("test")

    def on_train_epoch_start(self) -> None:
        # Reshuffle shards per epoch: the loader's dataset is copied into fresh workers each epoch.
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is not None and hasattr(dataset, "epoch"):
            dataset.epoch = self.current_epoch

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            # Gains, biases, embeddings' scale and the temperature are not weight-decayed (CLIP).
            (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        total = self.trainer.estimated_stepping_batches if self.trainer is not None else math.inf
        warmup = max(0, int(self.hparams.warmup_steps))
        schedule = self.hparams.lr_schedule
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {schedule!r}")

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if schedule == "constant" or not math.isfinite(total) or total <= warmup:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["encoder_config"] = dataclasses.asdict(self.encoder.config)
