"""Torch-free config of the engagement-aware encoder fine-tune (encoders.engagement), so the
experiment config can take its defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

OBJECTIVES = ("clip", "coengagement", "both")
TUNE_MODES = ("frozen", "whole")


@dataclass
class ItemTuneConfig:
    """Contrastive fine-tune of an item encoder on the TRAINING part of a split.

    objective: "clip" (image <-> text of warm items with images), "coengagement" (item <-> item:
      two items engaged by the same user, within `context` neighbours of each other in the
      user's time-ordered history and at most `window_s` apart where timestamps exist; in-batch
      negatives, popularity-corrected (logQ) when `logq`), or "both" (their sum, the CLIP term weighted by
      clip_weight).
    mode: "frozen": the backbone stays fixed and a residual linear adapter per modality trains
      on its cached vectors (encoders.adapter; seconds on a CPU); "whole": every weight of the
      encoder trains on tokens (a GPU's job; co-engagement only).
    max_pairs: a seeded random subset of the pairs when there are more (bounded CPU time).
    """

    objective: str = "coengagement"
    mode: str = "frozen"
    epochs: int = 3
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    temperature: float = 0.05
    context: int = 5
    window_s: float = 86400.0
    logq: bool = False  # val (configs/suites/encoder.yaml): off wins on 4 of 5 data sets
    clip_weight: float = 1.0
    max_pairs: int = 300_000
    seed: int = 0

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"encoder.objective must be one of {OBJECTIVES}, got {self.objective!r}"
            )
        if self.mode not in TUNE_MODES:
            raise ValueError(f"encoder.mode must be one of {TUNE_MODES}, got {self.mode!r}")
        if self.mode == "whole" and self.objective != "coengagement":
            raise ValueError(
                "encoder.mode 'whole' trains on co-engagement only; whole-encoder CLIP "
                "fine-tuning is `coldstart encoder fit` (its .ckpt goes to embed.pretrained)"
            )
        if self.context < 1 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError("encoder.context and encoder.epochs must be >= 1, batch_size >= 2")
