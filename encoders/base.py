"""The uniform encoder interface every backend implements.

An `Encoder` is a plain `nn.Module` (no IO): it owns its preprocessing (an image transform and a
tokenizer, bundled in a picklable `Preprocessor` so DataLoader workers can run it), exposes raw
features with gradients for training (`image_features`, `text_features`), and L2-normalized
embeddings in eval mode without gradients for serving (`encode_image`, `encode_text`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coldstart.encoders.images import PixelSplit, split_transform

IMAGE = "image"
TEXT = "text"
VIDEO = "video"  # K frames through the image tower, pooled over time (encoders.pooling)


@dataclass
class EncoderConfig:
    """Everything needed to rebuild an encoder (stored in manifests and checkpoints).

    backend: "open_clip" | "hf_clip" | "hf_text" | "composite".
    model: open_clip architecture (or "local-dir:/path", "hf-hub:org/repo"), or a Hugging Face
        path / hub id for the hf_* backends.
    pretrained: open_clip pretrained tag or weights file, or a Lightning checkpoint (.ckpt) of a
        fine-tuned encoder; None means the backend default (random init for open_clip archs).
    image_encoder / text_encoder: registry names of the two halves of a composite encoder.
    """

    name: str = "tiny-clip"
    backend: str = "open_clip"
    model: str = "coldstart-tiny"
    pretrained: str | None = None
    image_encoder: str | None = None
    text_encoder: str | None = None
    max_length: int = 128  # hf_text / hf_clip tokenizer truncation
    pooling: str = "mean"  # hf_text: "mean" (sentence-transformers) or "cls"
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


class Preprocessor:
    """Picklable preprocessing: PIL image -> (3, H, W) float tensor; texts -> (B, L) int64 ids.

    Built by an encoder and handed to DataLoader workers, so decoding and resizing run in
    parallel with the model's forward pass.
    """

    def __init__(
        self,
        image_transform: Callable[[Any], torch.Tensor] | None,
        tokenizer: Callable[[list[str]], torch.Tensor] | None,
    ) -> None:
        self.image_transform = image_transform
        self.tokenizer = tokenizer

    @staticmethod
    def _rgb(image: Any) -> Any:
        if isinstance(image, np.ndarray):
            from PIL import Image

            image = Image.fromarray(image)
        if hasattr(image, "mode") and image.mode != "RGB":
            image = image.convert("RGB")
        return image

    def image(self, image: Any) -> torch.Tensor:
        if self.image_transform is None:
            raise ValueError("this encoder has no image tower")
        return self.image_transform(self._rgb(image))  # (3, H, W)

    @property
    def split(self) -> PixelSplit | None:
        """The image transform cut at ToTensor (encoders.images), None when it cannot be."""
        if not hasattr(self, "_split"):
            self._split = split_transform(self.image_transform) if self.image_transform else None
        return self._split

    def image_host(self, image: Any) -> torch.Tensor:
        """The host half of `image`: (3, H, W) uint8 when the transform splits, else the full
        float transform. `finish_pixels` completes either on any device."""
        if self.split is None:
            return self.image(image)
        from coldstart.encoders.images import pil_to_uint8

        return pil_to_uint8(self.split.host(self._rgb(image)))  # (3, H, W) uint8

    def finish_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) from `image_host` (uint8 or float) -> float input of the image tower."""
        if pixels.dtype != torch.uint8:
            return pixels
        from coldstart.encoders.images import normalize_uint8

        return normalize_uint8(pixels, self.split.mean, self.split.std)

    def text(self, texts: Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("this encoder has no text tower")
        return self.tokenizer(list(texts))  # (B, L)


class Encoder(nn.Module):
    """Base class: subclasses set `config`, `modalities`, `dim` and implement the feature hooks."""

    config: EncoderConfig
    modalities: tuple[str, ...] = ()
    dim: int = 0

    # -- hooks for backends (raw features, gradients allowed; used by training) ----------------
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, H, W) preprocessed -> (B, D) unnormalized features."""
        raise NotImplementedError(f"{type(self).__name__} has no image tower")

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64 -> (B, D) unnormalized features."""
        raise NotImplementedError(f"{type(self).__name__} has no text tower")

    def preprocessor(self) -> Preprocessor:
        raise NotImplementedError

    @property
    def logit_scale(self) -> nn.Parameter | None:
        """The model's learnable log-temperature, when it has one (CLIP models do)."""
        return None

    # -- the uniform embedding API ------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode and no grad for the duration, restoring the previous mode afterwards."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def encode_image(self, images: torch.Tensor | Sequence[Any]) -> torch.Tensor:
        """images: (B, 3, H, W) preprocessed tensor, or B PIL images / uint8 arrays -> (B, D).

        Output rows are L2-normalized float32.
        """
        if IMAGE not in self.modalities:
            raise ValueError(f"encoder {self.config.name!r} has no image modality")
        if not isinstance(images, torch.Tensor):
            pre = self.preprocessor()
            images = torch.stack([pre.image(im) for im in images]) if len(images) else None
        if images is None:
            return torch.zeros(0, self.dim)
        with self._inference():
            out = self.image_features(images.to(self.device))
        return F.normalize(out.float(), dim=-1)

    def encode_text(self, texts: torch.Tensor | Sequence[str]) -> torch.Tensor:
        """texts: B strings (or (B, L) token ids from `preprocessor().text`) -> (B, D) normalized."""
        if TEXT not in self.modalities:
            raise ValueError(f"encoder {self.config.name!r} has no text modality")
        if not isinstance(texts, torch.Tensor):
            if len(texts) == 0:
                return torch.zeros(0, self.dim)
            texts = self.preprocessor().text(texts)
        with self._inference():
            out = self.text_features(texts.to(self.device))
        return F.normalize(out.float(), dim=-1)

    def weights_sha256(self) -> str:
        """sha256 over the state dict (names, dtypes, shapes, bytes): identifies the weights."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            # The raw bytes through the buffer protocol (no copy of the weights).
            digest.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
        return digest.hexdigest()
