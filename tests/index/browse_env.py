"""A synthetic world for the browsing page: catalogue, image shards, index, ID rows, and a real
`coldstart serve` process over them. Used by the browser tests and by the README screenshot:

    python -m tests.index.browse_env --out docs/browse_page.png
    python -m tests.index.browse_env --user-view --out docs/browse_user.png  # with a ranker

Items come from `data.synthetic` (images where the class is visible); the index holds each
item's fused image + title vector from the tiny random-init open_clip preset, whose weights are
saved so the server's encoder is the very same one (`--pretrained <file>`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coldstart.data.io import write_table
from coldstart.data.shards import write_shards
from coldstart.data.synthetic import class_name, make_synthetic
from tests.exports import write_export

TOKEN = "page-test-token"
XSS_TITLE = "<img src=x onerror=alert(1)>"
XSS_ID = 9999  # an item in the index and the catalogue whose title is markup
NO_IMAGE_ID = 9998  # in the index and the catalogue, but not in the shards
ID_ROW_DIM = 8


@dataclass
class BrowseEnv:
    root: Path
    index: Path
    catalogue: Path
    shards: list[str]
    weights: Path
    id_rows: Path
    items: pd.DataFrame
    images: dict[int, np.ndarray]  # item id -> (H, W, 3) uint8
    vectors: np.ndarray | None = None  # (N, D) content vector of each row of `items`
    dataset: Any = None  # data.synthetic's dataset (users and their interactions)


def build_env(
    root: Path,
    n_items: int = 48,
    n_classes: int = 32,
    image_size: int = 96,
    pretrained: str | None = None,
    seed: int = 0,
) -> BrowseEnv:
    """Write catalogue, shards, encoder weights, index and ID rows under `root`.

    pretrained: tiny-clip weights for both sides (e.g. the checkpoint of `coldstart encoder
    fit --config configs/encoders/tiny-clip.yaml`); None draws random weights and saves them.
    Each item's vector fuses its image and its synthetic caption ("a blue pattern of dots").
    """
    import torch

    from coldstart.encoders import create_encoder
    from coldstart.index.config import IndexConfig, StoreConfig
    from coldstart.index.store import DurableIndex
    from coldstart.index.vector_index import VectorIndex
    from coldstart.serving import encode_fn_from_encoder

    root.mkdir(parents=True, exist_ok=True)
    syn = make_synthetic(n_items=n_items, n_classes=n_classes, image_size=image_size, seed=seed)
    items = syn.dataset.items.copy()
    labels = syn.item_class
    items["title"] = [
        f"{class_name(int(c))[0].capitalize()} {class_name(int(c))[1]} no. {i}"
        for i, c in zip(items["item_id"], labels)
    ]
    images = {int(i): syn.images[k] for i, k in zip(items["item_id"], items["media_key"])}
    items["text"] = [syn.captions[k] for k in items["media_key"]]
    extra = pd.DataFrame(
        {
            "item_id": [XSS_ID, NO_IMAGE_ID],
            "title": [XSS_TITLE, "An item without a picture"],
            "text": [XSS_TITLE, "An item without a picture"],
            "genres": [["<b>bold</b>", "grey"], ["grey"]],
            "media_key": [None, None],
        }
    )
    items = pd.concat([items, extra], ignore_index=True)
    catalogue = write_table(items, root / "items.parquet")
    shards = write_shards(
        (
            {"key": key, "image": syn.images[key], "json": {"item_id": int(i)}}
            for i, key in zip(syn.dataset.items["item_id"], syn.dataset.items["media_key"])
        ),
        str(root / "shards" / "items-%03d.tar"),
        maxcount=max(1, n_items // 2),
        image_format="png",
    )

    torch.manual_seed(seed)
    encoder = create_encoder("tiny-clip", pretrained=pretrained)
    if pretrained is None:
        weights = root / "tiny-clip.pt"
        torch.save(encoder.model.state_dict(), weights)
    else:
        weights = Path(pretrained)
    encode = encode_fn_from_encoder(encoder)
    from PIL import Image

    vectors = []
    for item_id, text in zip(items["item_id"], items["text"]):
        pictures = [Image.fromarray(images[int(item_id)])] if int(item_id) in images else []
        vectors.append(encode(pictures, [text]))
    ids = [int(i) for i in items["item_id"]]
    x = np.stack(vectors).astype(np.float32)  # (N, D)
    index = VectorIndex.build(ids, x, IndexConfig(factory="Flat", dim=x.shape[1]))
    DurableIndex.create(root / "index", index, StoreConfig(fsync=False)).close(snapshot=False)

    # ID rows of the warm items (every catalogue item here), as a ranker would export them.
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((len(ids), ID_ROW_DIM)).astype(np.float32)
    write_export(root / "id_rows", ids, rows, modality="id", encoder="ranker", normalized=False)
    return BrowseEnv(
        root,
        root / "index",
        catalogue,
        shards,
        weights,
        root / "id_rows",
        items,
        images,
        x,
        syn.dataset,
    )


def build_ranker(env: BrowseEnv, method: str = "content_projection", seed: int = 0) -> Path:
    """A small trained ranker over the env's items and synthetic users (its content vectors
    are the index's, so uploads through the server's encoder take its cold-item path); returns
    the method directory for `serve(env, "--ranker", dir, "--ranker-store", store)`."""
    from coldstart.data.split import cold_start_split
    from coldstart.ranker.data import build_ranker_data
    from coldstart.ranker.methods import export_fitted, fit_method, resolve_method

    split = cold_start_split(env.dataset, seed=seed)
    ids = np.asarray([int(i) for i in env.items["item_id"]])
    data = build_ranker_data(split, ids, env.vectors)
    params = {"dim": ID_ROW_DIM, "epochs": 2}
    fitted = fit_method(method, data, params=params)
    out = env.root / "ranker" / method
    export_fitted(out, fitted, resolve_method(method, params))
    return out


@contextmanager
def serve(env: BrowseEnv, *extra: str, timeout: float = 120) -> Iterator[str]:
    """A real `coldstart serve` process on 127.0.0.1:<free port>; yields its base URL."""
    from tests.index.conftest import ServeProcess

    args = ["--encoder", "tiny-clip", "--pretrained", str(env.weights)]
    args += ["--catalogue", str(env.catalogue), "--media", str(env.root / "shards")]
    args += ["--id-rows", str(env.id_rows), "--no-fsync", *extra]
    with ServeProcess(env.index, *args, log=env.root / "serve.log", token=TOKEN) as server:
        server.wait_ready(timeout)
        yield server.url


# ------------------------------------------------------------------------------ browser
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser_missing() -> str | None:
    """Why a real browser cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


def make_driver(profile: Path, width: int = 1280, height: int = 900):  # noqa: ANN201
    """Headless Debian Chromium through selenium, fresh profile, no network side traffic."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def main(argv: list[str] | None = None) -> int:
    """Screenshot the page: over synthetic items (a server started here), or at --url."""
    p = argparse.ArgumentParser(description="Screenshot the browsing page (README images).")
    p.add_argument("--out", default="runs/browse/browse_page.png", help="desktop screenshot")
    p.add_argument("--phone", help="also save a phone-width screenshot here")
    p.add_argument("--url", help="a running `coldstart serve` (else: synthetic items, served here)")
    p.add_argument("--work", default="runs/browse/env", help="scratch directory")
    p.add_argument("--query", default="a blue pattern of dots")
    p.add_argument("--new-item", default="a yellow pattern of rings")
    p.add_argument("--items", type=int, default=96)
    p.add_argument(
        "--pretrained",
        help="tiny-clip checkpoint (coldstart encoder fit --config configs/encoders/tiny-clip.yaml)",
    )
    p.add_argument(
        "--user-view",
        action="store_true",
        help="serve a small trained ranker too, upload --new-item to it, and screenshot the "
        "'for a user' view of a user it recommends that new (cold) item",
    )
    args = p.parse_args(argv)
    missing = browser_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    if args.url:
        screenshot(args.url.rstrip("/"), args)
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="env-", dir=args.work))  # never reuse an old index
    env = build_env(scratch, n_items=args.items, pretrained=args.pretrained)
    if args.user_view:
        method = build_ranker(env)
        with serve(env, "--ranker", str(method), "--ranker-store", str(scratch / "store")) as url:
            user_screenshot(url, args)
        return 0
    with serve(env) as url:
        screenshot(url, args)
    return 0


def user_screenshot(url: str, args: argparse.Namespace, k: int = 48) -> None:
    """Upload --new-item to the served ranker, then show the first user it is recommended to."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with httpx.Client(base_url=url, timeout=60) as client:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        data = {"id": "90001", "text": args.new_item or "a yellow pattern of rings"}
        client.post("/v1/ranker/items", data=data, headers=headers).raise_for_status()
        users = client.get("/v1/users", params={"limit": 1000}).json()["ids"]
        rank = {}  # the user who ranks the new item highest
        for u in users:
            recs = client.get(f"/v1/users/{u}/recommendations", params={"k": k}).json()
            if "cold" in recs["segments"]:
                rank[u] = recs["segments"].index("cold")
        user = min(rank, key=rank.get) if rank else users[0]
    driver = make_driver(Path(args.work) / f"profile-{os.getpid()}", 1280, 900)
    try:
        from selenium.webdriver.support.ui import Select

        driver.get(f"{url}/")
        Select(driver.find_element(By.ID, "k")).select_by_value(str(k))
        driver.execute_script("location.hash = arguments[0]", f"user={user}")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "user-recs").get_attribute("data-count"))
        wait.until(_images_settled)
        _save(driver, args.out)
        print(json.dumps({"screenshot": args.out, "url": url, "user": user}))
    finally:
        driver.quit()


def screenshot(url: str, args: argparse.Namespace) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver(Path(args.work) / f"profile-{os.getpid()}", 1360, 900)
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60)
        driver.find_element(By.ID, "query").send_keys(args.query)
        driver.find_element(By.ID, "search-btn").click()
        wait.until(lambda d: d.find_element(By.ID, "results").get_attribute("data-count"))
        if args.new_item:
            driver.find_element(By.ID, "new-title").send_keys(args.new_item)
            driver.find_element(By.ID, "new-run").click()
            wait.until(lambda d: d.find_element(By.ID, "new-results").get_attribute("data-count"))
        wait.until(_images_settled)
        _save(driver, args.out)
        print(json.dumps({"screenshot": args.out, "url": url}))
        if args.phone:
            driver.set_window_size(390, 1100)
            time.sleep(0.3)
            _save(driver, args.phone)
            print(json.dumps({"screenshot": args.phone}))
    finally:
        driver.quit()


def _save(driver, path: str) -> None:
    """A screenshot as an optimised PNG (smaller files for docs/)."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.save(path, format="PNG", optimize=True)


def _images_settled(driver) -> bool:  # noqa: ANN001
    """No search, catalogue row or thumbnail is in flight (the page counts them)."""
    return driver.execute_script(
        "const b = document.body.dataset;"
        " return b.state === 'idle' && b.newState !== 'busy' && b.pending === '0'"
    )


if __name__ == "__main__":
    raise SystemExit(main())
