"""Encoder backends: open_clip, Hugging Face CLIP, Hugging Face text (mean pooling), composite.

Heavy libraries are imported inside constructors so importing `encoders` stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coldstart.encoders.base import IMAGE, TEXT, Encoder, EncoderConfig, Preprocessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class OpenClipTokenize:
    """Picklable wrapper: texts -> (B, context_length) int64 ids with open_clip's tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).long()


class HFTokenize:
    """Picklable wrapper: texts -> (B, L) int64 ids, padded to the longest text of the batch."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return out["input_ids"].long()


def attention_mask_from_ids(
    ids: torch.Tensor, pad_id: int | None, eos_id: int | None
) -> torch.Tensor:
    """(B, L) ids -> (B, L) int64 mask of real tokens.

    When the pad token differs from EOS the mask is simply ids != pad. CLIP tokenizers often pad
    with the EOS token itself, so there the mask keeps everything up to and including the first EOS.
    """
    if pad_id is None:
        return torch.ones_like(ids)
    if eos_id is None or pad_id != eos_id:
        return (ids != pad_id).long()
    is_eos = (ids == eos_id).long()
    seen_before = torch.cumsum(is_eos, dim=1) - is_eos  # EOS tokens strictly before position
    return (seen_before == 0).long()


def _image_transform(size: int, mean: tuple = CLIP_MEAN, std: tuple = CLIP_STD) -> Any:
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


class OpenClipEncoder(Encoder):
    """Any open_clip architecture: built-in name + pretrained tag/file, 'local-dir:', 'hf-hub:'."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        import open_clip

        self.config = config
        pretrained = config.pretrained
        if pretrained and str(pretrained).endswith(".ckpt"):
            pretrained = None  # a Lightning checkpoint: loaded by the registry after building
        model, _, preprocess = open_clip.create_model_and_transforms(
            config.model, pretrained=pretrained, device=config.device
        )
        self.model = model
        self._transform = preprocess
        self._tokenizer = open_clip.get_tokenizer(config.model)
        self.modalities = (IMAGE, TEXT)
        self.dim = int(self._infer_dim())

    def _infer_dim(self) -> int:
        out_dim = getattr(self.model.visual, "output_dim", None)
        if out_dim:
            return out_dim
        with torch.no_grad():
            return self.model.encode_text(self._tokenizer(["x"]).to(self.device)).shape[-1]

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)  # (B, D)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)  # (B, D)

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self._transform, OpenClipTokenize(self._tokenizer))

    @property
    def logit_scale(self) -> nn.Parameter | None:
        return getattr(self.model, "logit_scale", None)


class HFClipEncoder(Encoder):
    """transformers.CLIPModel from a local folder or a hub id."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        from transformers import AutoTokenizer, CLIPModel

        self.config = config
        self.model = CLIPModel.from_pretrained(config.model).to(config.device)
        tokenizer = AutoTokenizer.from_pretrained(config.model)
        self._tokenize = HFTokenize(tokenizer, min(config.max_length, self._max_positions()))
        self._pad_id = tokenizer.pad_token_id
        self._eos_id = self.model.config.text_config.eos_token_id
        size = self.model.config.vision_config.image_size
        mean, std = CLIP_MEAN, CLIP_STD
        proc = Path(config.model) / "preprocessor_config.json"
        if proc.is_file():  # follow the checkpoint's own normalization when it ships one
            raw = json.loads(proc.read_text())
            mean = tuple(raw.get("image_mean", mean))
            std = tuple(raw.get("image_std", std))
        self._transform = _image_transform(size, mean, std)
        self.modalities = (IMAGE, TEXT)
        self.dim = int(self.model.config.projection_dim)

    def _max_positions(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    @staticmethod
    def _pooled(out: Any) -> torch.Tensor:
        # transformers < 5 returns the projected tensor; >= 5 an output object with pooler_output
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._pooled(self.model.get_image_features(pixel_values=pixels))  # (B, D)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = attention_mask_from_ids(tokens, self._pad_id, self._eos_id)
        return self._pooled(self.model.get_text_features(input_ids=tokens, attention_mask=mask))

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self._transform, self._tokenize)

    @property
    def logit_scale(self) -> nn.Parameter | None:
        return self.model.logit_scale


class HFTextEncoder(Encoder):
    """A Hugging Face text model with mean pooling over real tokens (sentence-transformers style)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        self.model = AutoModel.from_pretrained(config.model).to(config.device)
        tokenizer = AutoTokenizer.from_pretrained(config.model)
        max_pos = getattr(self.model.config, "max_position_embeddings", config.max_length)
        self._tokenize = HFTokenize(tokenizer, min(config.max_length, int(max_pos)))
        self._pad_id = tokenizer.pad_token_id
        self.modalities = (TEXT,)
        self.dim = int(self.model.config.hidden_size)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = attention_mask_from_ids(tokens, self._pad_id, None)
        hidden = self.model(input_ids=tokens, attention_mask=mask).last_hidden_state  # (B, L, H)
        if self.config.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-6)  # (B, H)

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(None, self._tokenize)


class CompositeEncoder(Encoder):
    """Images from one encoder, texts from another (e.g. an open_clip image tower + MiniLM).

    Both halves must embed into the same dimension so modalities can be fused and compared.
    """

    def __init__(self, config: EncoderConfig, image: Encoder, text: Encoder) -> None:
        super().__init__()
        if image.dim != text.dim:
            raise ValueError(
                f"composite encoder {config.name!r}: image encoder {image.config.name!r} has dim "
                f"{image.dim} but text encoder {text.config.name!r} has dim {text.dim}"
            )
        self.config = config
        self.image = image
        self.text = text
        self.modalities = (IMAGE, TEXT)
        self.dim = image.dim

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image.image_features(pixels)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text.text_features(tokens)

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(
            self.image.preprocessor().image_transform, self.text.preprocessor().tokenizer
        )
