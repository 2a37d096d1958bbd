"""Browsing-page media benchmark: map shards at start, then thumbnails uncached vs cached.

    python benchmarks/thumbnails.py                                # the poster shards when present
    python benchmarks/thumbnails.py --shards 'shards/*.tar' --n 200 --size 128

Starts `coldstart serve --media <shards>` as a separate process over a Flat index of the
shards' item ids (no encoder: the image route needs none), reads the time the server logged
for mapping the shards (tar headers only, nothing extracted), then requests `--n` thumbnails
once (decode + resize + JPEG) and again (the in-memory cache), one at a time over loopback.
Without the poster shards it writes synthetic ones (data.synthetic) under a temp directory.
Prints one JSON line:
{"bench": "thumbnails", "images", "map_s", "first_ms_p50", "cached_ms_p50", "speedup", ...}
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
POSTERS = REPO.parent / "shared" / "data" / "movielens-small-posters" / "posters-{000..003}.tar"


def _synthetic_shards(directory: Path, n: int) -> str:
    from coldstart.data.shards import write_shards
    from coldstart.data.synthetic import make_synthetic

    syn = make_synthetic(n_items=n, n_classes=32, image_size=256, seed=0)
    samples = ({"key": key, "image": image} for key, image in syn.images.items())
    write_shards(samples, str(directory / "media-%03d.tar"), maxcount=500)
    return str(directory)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", help="webdataset shards (default: the poster shards, if present)")
    p.add_argument("--n", type=int, default=100, help="thumbnails requested (distinct items)")
    p.add_argument("--size", type=int, default=256, help="longest side of the thumbnails")
    args = p.parse_args()

    import httpx

    from coldstart.index.catalogue import MediaStore
    from coldstart.index.config import IndexConfig, StoreConfig
    from coldstart.index.store import DurableIndex
    from coldstart.index.vector_index import VectorIndex
    from tests.index.conftest import ServeProcess

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        shards = args.shards
        source = "given"
        if shards is None:
            if Path(str(POSTERS).replace("{000..003}", "000")).exists():
                shards, source = str(POSTERS), "movielens posters"
            else:
                shards, source = _synthetic_shards(tmp_dir, max(args.n, 200)), "synthetic"
        ids = sorted(MediaStore.scan(shards).refs)  # int ids: the posters' movieIds
        vectors = np.random.default_rng(0).standard_normal((len(ids), 8)).astype(np.float32)
        index = VectorIndex.build(ids, vectors, IndexConfig(factory="Flat"))
        DurableIndex.create(tmp_dir / "idx", index, StoreConfig(fsync=False)).close()
        log = tmp_dir / "serve.log"
        with ServeProcess(
            tmp_dir / "idx", "--media", shards, "--log-level", "info", log=log
        ) as srv:
            srv.wait_ready(timeout=120)
            mapped = re.search(r"media: (\{.*\}) in ([0-9.]+) s", log.read_text())
            pick = np.random.default_rng(1).choice(len(ids), min(args.n, len(ids)), replace=False)
            picked = [ids[i] for i in sorted(pick)]
            with httpx.Client(base_url=srv.url, timeout=30) as client:

                def fetch(item: int) -> tuple[float, int]:
                    start = time.perf_counter()
                    r = client.get(f"/v1/items/{item}/image", params={"size": args.size})
                    r.raise_for_status()
                    return (time.perf_counter() - start) * 1000, len(r.content)

                first = [fetch(i) for i in picked]
                cached = [fetch(i) for i in picked]
    first_ms = statistics.median(t for t, _ in first)
    cached_ms = statistics.median(t for t, _ in cached)
    print(
        json.dumps(
            {
                "bench": "thumbnails",
                "source": source,
                "images": len(ids),
                "map_s": float(mapped.group(2)) if mapped else None,
                "size": args.size,
                "n": len(picked),
                "first_ms_p50": round(first_ms, 2),
                "cached_ms_p50": round(cached_ms, 2),
                "speedup": round(first_ms / cached_ms, 2),
                "thumb_bytes_p50": statistics.median(b for _, b in first),
            }
        )
    )


if __name__ == "__main__":
    main()
