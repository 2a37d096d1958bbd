"""Config dataclasses of the encoders package, torch-free so that loading an experiment config
or building `coldstart embed --help` does not import torch. Their defaults live here only: the
embed CLI derives its flags from EmbedConfig (coldstart/commands/options.py), and the
experiment's embed section takes its defaults from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coldstart.encoders.catalogue import DEFAULT_FIELDS

PRECISIONS = ("32", "bf16-mixed", "16-mixed")  # Lightning's names
DECODES = ("cpu", "device")
FUSION_METHODS = ("mean", "weighted", "learned")
POOLINGS = ("mean", "attention")  # encoders.pooling (torch-free copy of the names)


@dataclass
class FusionConfig:
    """method: "mean" (equal weights), "weighted" (fixed `weights`), "learned" (a trained gate)."""

    method: str = "mean"
    modalities: tuple[str, ...] = ("image", "text")
    weights: dict[str, float] = field(default_factory=dict)  # weighted: modality -> weight
    dim: int = 0  # learned: embedding dimension (needed to build the gate)


@dataclass
class EmbedConfig:
    """One embedding run. inputs: shard specs (brace pattern, glob, directory) and/or at most one
    catalogue ('movielens', 'movielens:<root>', items .parquet/.csv).

    precision: Lightning's 32 | bf16-mixed | 16-mixed for the forward pass (vectors are stored
    float32 either way). decode: "cpu" (DataLoader workers decode with PIL) or "device" (JPEGs
    decoded in batches on the model's device by torchvision; other formats and files the
    device cannot decode take the CPU path).
    """

    encoder: str = field(
        metadata={"help": "registry name, e.g. tiny-clip, minilm, small-clip+minilm"}
    )
    inputs: list[str]
    out: str = field(metadata={"help": "output directory (created; reruns resume)"})
    pretrained: str | None = field(
        default=None, metadata={"help": "open_clip tag / weights file, or a fine-tuned .ckpt"}
    )
    batch_size: int = field(default=64, metadata={"help": "samples per forward batch"})
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers per device"})
    devices: int = field(default=1, metadata={"help": "devices (processes); work split by shard"})
    accelerator: str = field(default="cpu", metadata={"help": "cpu, gpu, auto"})
    precision: str = field(
        default="32",
        metadata={
            "choices": PRECISIONS,
            "help": "forward precision (Lightning's names; 16-mixed runs as bf16-mixed on a "
            "CPU); vectors are stored float32 either way, and one export keeps one precision",
        },
    )
    decode: str = field(
        default="cpu",
        metadata={
            "choices": DECODES,
            "help": "cpu: workers decode images (PIL); device: JPEGs decoded in batches on the "
            "model's device (torchvision decode_jpeg, nvjpeg on a GPU), other formats and files "
            "it cannot decode on the CPU",
        },
    )
    text_fields: tuple[str, ...] = field(
        default=DEFAULT_FIELDS, metadata={"help": "catalogue fields joined into the text"}
    )
    with_tags: bool = field(
        default=False,
        metadata={
            "help": "also embed user tags as a 'tags' modality (interaction-derived: leaks for "
            "cold items)"
        },
    )
    fusion: str = field(
        default=FusionConfig.method,
        metadata={"choices": ("mean", "weighted"), "help": "how an item's modalities combine"},
    )
    fusion_weights: dict[str, float] = field(default_factory=dict)  # weighted: modality -> w
    text_chunk: int = 4096  # catalogue items without media per text part
    video_frames: int = field(
        default=8, metadata={"help": "frames sampled uniformly in time from each video"}
    )
    video_pooling: str = field(
        default="mean",
        metadata={
            "choices": POOLINGS,
            "help": "how a video's frame vectors pool over time: mean, or attention (trained "
            "weights from --video-pooling-state; untrained it equals mean)",
        },
    )
    video_pooling_state: str | None = field(
        default=None,
        metadata={"help": "attention pooling weights: a .pt state_dict, or a fine-tuning .ckpt"},
    )
    max_video_seconds: float = field(
        default=600.0, metadata={"help": "longer videos (by their container) are skipped"}
    )
    progress: bool = field(default=True, metadata={"help": "the progress bar"})
    # Seeds the random initialisation of towers without pretrained weights, so every process
    # (a rerun, each --devices rank) draws the same weights and a killed job can resume.
    init_seed: int = field(
        default=0,
        metadata={
            "help": "seed for towers without pretrained weights (random init): a rerun with the "
            "same seed draws the same weights, so it resumes"
        },
    )


__all__ = ["DECODES", "FUSION_METHODS", "POOLINGS", "PRECISIONS", "EmbedConfig", "FusionConfig"]
