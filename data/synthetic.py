"""Synthetic multimodal data with known ground truth, for tests that check quality.

Items are drawn from latent classes. Each class has a colour and a pattern, rendered into the
image so the class is visible, and a caption naming both; users prefer a few classes, so a
good model can recover who likes what from content alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.schema import (
    EVENT,
    GENRES,
    ITEM_ID,
    MEDIA_KEY,
    MEDIA_TYPE,
    MEDIA_TYPES,
    TIMESTAMP,
    TITLE,
    USER_ID,
    VALUE,
    Dataset,
)

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 50, 190),
    "orange": (240, 140, 30),
    "cyan": (40, 200, 210),
    "grey": (128, 128, 128),
}
PATTERNS = ("stripes", "checks", "dots", "rings")


@dataclass
class SyntheticData:
    dataset: Dataset
    images: dict[str, np.ndarray]  # media_key -> (H, W, 3) uint8
    captions: dict[str, str]  # media_key -> caption
    item_class: np.ndarray  # (n_items,) int64 latent class per item (row order of items)
    user_classes: np.ndarray  # (n_users, classes_per_user) liked classes per user
    # With `media`: (n_items,) media type codes (data.schema.MEDIA_TYPES: 1 photo, 2 carousel,
    # 3 video), (n_users,) each user's preferred type, and media_key -> shard sample fields
    # (image, images or video bytes) for data.shards.write_shards. None / {} otherwise.
    item_media: np.ndarray | None = None
    user_media: np.ndarray | None = None
    media: dict[str, dict] | None = None


def class_name(label: int) -> tuple[str, str]:
    """(colour, pattern) of a class id."""
    colours = list(COLOURS)
    return colours[label % len(colours)], PATTERNS[(label // len(colours)) % len(PATTERNS)]


def render(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) uint8 image of a class: its colour in its pattern, plus noise."""
    colour, pattern = class_name(label)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    period = size / rng.uniform(3, 5)
    if pattern == "stripes":
        mask = np.sin(2 * np.pi * xx / period + phase) > 0
    elif pattern == "checks":
        mask = (np.sin(2 * np.pi * xx / period + phase) * np.sin(2 * np.pi * yy / period)) > 0
    elif pattern == "dots":
        mask = (np.sin(2 * np.pi * xx / period + phase) + np.sin(2 * np.pi * yy / period)) > 1.0
    else:
        cx, cy = rng.uniform(0.3, 0.7, size=2) * size
        mask = np.sin(np.hypot(xx - cx, yy - cy) * 2 * np.pi / period) > 0
    image = np.full((size, size, 3), 245.0, dtype=np.float32)
    image[mask] = COLOURS[colour]
    image += rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass
class SyntheticConfig:
    """The synthetic data set's knobs: the one home of their defaults.

    make_synthetic takes the same knobs (its defaults are these), plus the image size; the
    experiment's `data.synthetic` section and `--dataset synthetic` (load_synthetic) write the
    data as foreign-looking files for the generic loader. `timestamps`: False writes the events
    without a time column (as many implicit-feedback logs come), so request grouping and time
    hold-outs cannot work.
    """

    n_items: int = 300
    n_classes: int = 8
    n_users: int = 150
    interactions_per_user: int = 25
    classes_per_user: int = 2
    noise: float = 0.1
    content_noise: float = 0.0
    popularity: float = 0.0
    timestamps: bool = True
    seed: int = 0
    taste_groups: int = 0
    media: bool = False
    media_affinity: float = 0.0


# Shard media of a synthetic item of each type (`media: true`): images per carousel, frames per
# video (each a rendering of the item's class, like its photo: single frames do not tell a
# video from a photo).
CAROUSEL_IMAGES = 3
VIDEO_FRAMES = 4


def make_synthetic(
    # Defaults are SyntheticConfig's (dataclass fields keep their default as a class attribute).
    n_items: int = SyntheticConfig.n_items,
    n_classes: int = SyntheticConfig.n_classes,
    n_users: int = SyntheticConfig.n_users,
    interactions_per_user: int = SyntheticConfig.interactions_per_user,
    classes_per_user: int = SyntheticConfig.classes_per_user,
    image_size: int = 32,
    noise: float = SyntheticConfig.noise,
    seed: int = SyntheticConfig.seed,
    content_noise: float = SyntheticConfig.content_noise,
    popularity: float = SyntheticConfig.popularity,
    taste_groups: int = SyntheticConfig.taste_groups,
    media: bool = SyntheticConfig.media,
    media_affinity: float = SyntheticConfig.media_affinity,
) -> SyntheticData:
    """Deterministic synthetic catalogue, images, captions and interaction log for a seed.

    Each user interacts with items of their liked classes, except a `noise` share of uniform
    random items. Timestamps increase per user so request grouping and splits behave as on logs.
    content_noise: share of items whose title, genres and caption name a random class instead
      of their own (content weakly informative); their image still shows the true class.
    popularity: Zipf exponent of item popularity inside a class (0: uniform), so an item's ID
      carries evidence its content does not.
    taste_groups: > 0 partitions the classes at random into this many groups of unrelated
      colours and patterns, and each user likes classes of one group only: which classes go
      together is known to co-engagement, not to any title (an upstream encoder tuned on
      co-engagement can learn it). These knobs draw from their own random streams: at 0 the
      data equal those of earlier versions for the same seed.
    media: each item is a photo, a carousel or a video (a third each, at random), rendered
      from its class (SyntheticData.media: what write_generic_files packs into shards), and
      the catalogue gets a media_type column.
    media_affinity: each user prefers one media type (at random), whatever the class: this
      share of their non-noise interactions goes to an item of a liked class in that type.
      Only the media type tells which items those are (a title names the class alone).
    """
    if n_classes > len(COLOURS) * len(PATTERNS):
        raise ValueError(f"at most {len(COLOURS) * len(PATTERNS)} classes")
    rng = np.random.default_rng(seed)
    item_class = rng.integers(0, n_classes, size=n_items)
    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    keys = [f"{i:06d}" for i in item_ids]
    shown_class = item_class.copy()  # the class the item's text names
    if content_noise > 0:
        side = np.random.default_rng([seed, 1])
        wrong = side.random(n_items) < content_noise
        shown_class[wrong] = side.integers(0, n_classes, size=int(wrong.sum()))
    images, captions, titles, genres = {}, {}, [], []
    for key, label, shown in zip(keys, item_class, shown_class):
        colour, pattern = class_name(int(shown))
        images[key] = render(int(label), image_size, rng)
        captions[key] = f"a {colour} pattern of {pattern}"
        titles.append(f"{colour} {pattern} item {key}")
        genres.append([colour, pattern])
    items = pd.DataFrame({ITEM_ID: item_ids, TITLE: titles, GENRES: genres, MEDIA_KEY: keys})
    item_media = user_media = None
    shard_media: dict[str, dict] = {}
    if media or media_affinity > 0:
        side_media = np.random.default_rng([seed, 4])
        item_media = side_media.integers(1, len(MEDIA_TYPES), size=n_items)  # photo..video
        user_media = side_media.integers(1, len(MEDIA_TYPES), size=n_users)
        items[MEDIA_TYPE] = [MEDIA_TYPES[c] for c in item_media]
        if media:
            shard_media = _render_media(keys, item_class, item_media, images, image_size, seed)

    if taste_groups > 0:
        side = np.random.default_rng([seed, 3])
        groups = np.array_split(side.permutation(n_classes), taste_groups)
        if min(len(g) for g in groups) < classes_per_user:
            raise ValueError(
                f"taste_groups={taste_groups} leaves groups smaller than classes_per_user="
                f"{classes_per_user}"
            )
        user_classes = np.stack(
            [
                side.choice(groups[side.integers(taste_groups)], classes_per_user, replace=False)
                for _ in range(n_users)
            ]
        )
    else:
        user_classes = np.stack(
            [rng.choice(n_classes, size=classes_per_user, replace=False) for _ in range(n_users)]
        )
    by_class = {c: item_ids[item_class == c] for c in range(n_classes)}
    weights: dict[int, np.ndarray] = {}
    if popularity > 0:  # a fixed random popularity rank per item inside its class
        side = np.random.default_rng([seed, 2])
        for c, pool in by_class.items():
            w = (1.0 + side.permutation(len(pool))) ** -popularity
            weights[c] = w / w.sum()
    by_media = (
        {c: item_ids[item_media == c] for c in range(1, len(MEDIA_TYPES))}
        if item_media is not None
        else {}
    )
    side_pick = np.random.default_rng([seed, 5])
    rows = []
    for user in range(n_users):
        t = 1_600_000_000 + int(rng.integers(0, 10_000))
        for _ in range(interactions_per_user):
            if rng.random() < noise:
                item = int(rng.choice(item_ids))
            elif media_affinity > 0 and side_pick.random() < media_affinity:
                c = int(side_pick.choice(user_classes[user]))
                pool = by_media[int(user_media[user])]
                pool = pool[item_class[pool - 1] == c]  # a liked class, the preferred type
                if len(pool) == 0:
                    continue
                item = int(side_pick.choice(pool))
            else:
                c = int(rng.choice(user_classes[user]))
                pool = by_class[c]
                if len(pool) == 0:
                    continue
                item = int(rng.choice(pool, p=weights.get(c)))
            t += int(rng.integers(1, 600))
            rows.append((user + 1, item, t, "click", 1.0))
    interactions = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, TIMESTAMP, EVENT, VALUE])
    interactions = interactions.drop_duplicates([USER_ID, ITEM_ID]).reset_index(drop=True)
    dataset = Dataset(name="synthetic", items=items, interactions=interactions)
    return SyntheticData(
        dataset,
        images,
        captions,
        item_class.astype(np.int64),
        user_classes,
        item_media,
        user_media,
        shard_media,
    )


def _render_media(
    keys: list[str],
    item_class: np.ndarray,
    item_media: np.ndarray,
    images: dict[str, np.ndarray],
    size: int,
    seed: int,
) -> dict[str, dict]:
    """media_key -> {"image"} (photo), {"images"} (carousel: the photo and more renderings of
    its class) or {"video"} (MP4 of renderings of its class), from a random stream of its own."""
    from coldstart.data.video_synth import frames_video

    rng = np.random.default_rng([seed, 6])
    out: dict[str, dict] = {}
    for key, label, code in zip(keys, item_class.tolist(), item_media.tolist()):
        kind = MEDIA_TYPES[code]
        if kind == "photo":
            out[key] = {"image": images[key]}
        elif kind == "carousel":
            more = [render(label, size, rng) for _ in range(CAROUSEL_IMAGES - 1)]
            out[key] = {"images": [images[key], *more]}
        else:
            frames = [images[key], *(render(label, size, rng) for _ in range(VIDEO_FRAMES - 1))]
            out[key] = {"video": frames_video(frames)}
    return out


_MAPPING = """\
# Generic mapping (data/generic.py) of a synthetic shop: items.csv + events.parquet.
name: {name}
loader: generic
unknown_items: drop
interactions:
  path: events.parquet
  columns: {{user_id: customer, item_id: sku{time}, event: action, value: weight}}
  id_type: str
{time_format}items:
  path: items.csv
  columns: {{item_id: sku, title: name, genres: category{media}}}
  id_type: str
  list_separator: "|"
"""
MEDIA_SHARDS = "media/shard-%05d.tar"  # under write_generic_files' `out` (config.media)


def write_generic_files(
    out: str | Path, config: SyntheticConfig | None = None, name: str = "synthetic-shop"
) -> Path:
    """Write items.csv, events.parquet and mapping.yaml (data.generic) into `out`.

    Column names, string ids ("SKU-00001", "c1") and ISO timestamps differ from the schema on
    purpose: only the YAML mapping knows them. With config.media, also the items' photos,
    carousels and videos as webdataset shards (out/media/shard-*.tar, json item_id = the SKU)
    and (with media or media_affinity) a `kind` column mapped to media_type. Returns the
    mapping path.
    """
    config = config or SyntheticConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {k: v for k, v in asdict(config).items() if k != "timestamps"}
    synthetic = make_synthetic(**kwargs)
    items, events = synthetic.dataset.items, synthetic.dataset.interactions
    skus = [f"SKU-{i:05d}" for i in items[ITEM_ID]]
    table = {"sku": skus, "name": items[TITLE], "category": ["|".join(g) for g in items[GENRES]]}
    if MEDIA_TYPE in items:
        table["kind"] = items[MEDIA_TYPE]
    if config.media:
        from coldstart.data.shards import write_shards

        samples = (
            {"key": sku, **synthetic.media[key], "json": {"item_id": sku}}
            for sku, key in zip(skus, items[MEDIA_KEY])
        )
        write_shards(samples, str(out / MEDIA_SHARDS), maxcount=500)
    pd.DataFrame(table).to_csv(out / "items.csv", index=False)
    frame = {
        "customer": [f"c{u}" for u in events[USER_ID]],
        "sku": [f"SKU-{i:05d}" for i in events[ITEM_ID]],
    }
    if config.timestamps:
        when = pd.to_datetime(events[TIMESTAMP], unit="s", utc=True)
        frame["when"] = when.dt.strftime("%Y-%m-%dT%H:%M:%S")
    frame["action"] = events[EVENT]
    frame["weight"] = events[VALUE].astype("float32")
    pd.DataFrame(frame).to_parquet(out / "events.parquet", index=False)
    mapping = _MAPPING.format(
        name=name,
        time=", timestamp: when" if config.timestamps else "",
        time_format="  timestamp_format: iso\n" if config.timestamps else "",
        media=", media_type: kind" if MEDIA_TYPE in items else "",
    )
    (out / "mapping.yaml").write_text(mapping)
    return out / "mapping.yaml"


def load_synthetic(config: SyntheticConfig | None = None, name: str = "synthetic") -> Dataset:
    """The synthetic data set exactly as an experiment with `data.loader: synthetic` reads it:
    written as files by write_generic_files, read back through the generic loader (string ids
    such as "SKU-00001" and "c1"). Used by `load_dataset("synthetic")` (`--dataset synthetic`),
    so both paths give the same tables for the same config."""
    import tempfile

    from coldstart.data.generic import load_generic

    with tempfile.TemporaryDirectory(prefix="coldstart-synthetic-") as tmp:
        return load_generic(write_generic_files(tmp, config, name=name))


def clustered_vectors(
    n: int, dim: int, n_clusters: int = 64, spread: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 L2-normalized vectors around random centroids, and (n,) cluster labels."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    labels = rng.integers(0, n_clusters, size=n)
    vectors = centroids[labels] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), labels.astype(np.int64)
