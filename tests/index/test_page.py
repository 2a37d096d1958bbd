"""The browsing page in a real headless Chromium against a real `coldstart serve` on 127.0.0.1.

Synthetic items with rendered images (data.synthetic) in webdataset shards, a tiny open_clip
encoder, a FAISS index and ID rows (tests/index/browse_env.py). Screenshots are saved under
runs/test-artifacts/page/ (git-ignored). Skips with the reason when chromium, chromedriver or
selenium is missing; `.ci/run` installs them.
"""

from __future__ import annotations

import time

import httpx
import pytest
from PIL import Image

from tests.index.browse_env import (
    ID_ROW_DIM,
    NO_IMAGE_ID,
    TOKEN,
    XSS_ID,
    XSS_TITLE,
    browser_missing,
    build_env,
    build_ranker,
    make_driver,
    serve,
)
from tests.index.conftest import REPO_ROOT

MISSING = browser_missing()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"no real browser: {MISSING}"),
]
ARTIFACTS = REPO_ROOT / "runs" / "test-artifacts" / "page"
K = 6


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_env(tmp_path_factory.mktemp("browse"))


@pytest.fixture(scope="module")
def url(env):
    with serve(env) as base:
        yield base


@pytest.fixture(scope="module")
def api(url):
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def driver(env, tmp_path_factory):
    drv = make_driver(tmp_path_factory.mktemp("profile"))
    yield drv
    drv.quit()


@pytest.fixture
def page(driver, url):
    """The page, fresh: empty hash, no token in the tab, desktop width."""
    driver.set_window_size(1280, 900)
    driver.get(url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(url + "/?fresh")  # a full load after the clear
    wait_idle(driver)
    return driver


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait_for(driver, condition, timeout: float = 30, what: str = "condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except Exception as err:
        shot(driver, f"timeout-{int(time.time())}")
        logs = driver.execute_script("return document.body.dataset")
        raise AssertionError(f"timed out waiting for {what}; page state {logs}") from err


def wait_idle(driver) -> None:
    wait_for(
        driver,
        lambda d: d.execute_script(
            "const b = document.body.dataset;"
            " return b.state === 'idle' && b.newState !== 'busy' && b.pending === '0'"
        ),
        what="the page to settle",
    )


def grid(driver, container: str = "results") -> list[dict]:
    """The cards of a grid: id, title text, score, whether a loaded image shows."""
    return driver.execute_script(
        """
        return [...document.querySelectorAll(`#${arguments[0]} .card`)].map(c => {
          const img = c.querySelector('img.thumb');
          return {id: c.dataset.id, title: c.querySelector('.card-title').textContent,
                  score: Number(c.dataset.score), placeholder: !!c.querySelector('.placeholder'),
                  natural: img ? img.naturalWidth : 0};
        });
        """,
        container,
    )


def search_text(driver, text: str) -> list[dict]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "k")).select_by_value(str(K))
    box = driver.find_element(By.ID, "query")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "search-btn").click()
    wait_for(driver, lambda d: len(grid(d)) == K, what=f"{K} results")
    wait_idle(driver)
    return grid(driver)


def titles(env) -> dict[str, str]:
    return {str(i): t for i, t in zip(env.items["item_id"], env.items["title"])}


def check_cards(env, cards: list[dict]) -> None:
    """Titles come from the catalogue; items with images show them, others a placeholder."""
    names = titles(env)
    for c in cards:
        assert c["title"] == names.get(c["id"], f"item {c['id']}"), c
        if int(c["id"]) in env.images:
            assert c["natural"] > 0 and not c["placeholder"], f"image of {c['id']} not loaded"
        else:
            assert c["natural"] == 0 and c["placeholder"], c


def test_text_search_shows_k_results_with_images(page, env, api):
    cards = search_text(page, "a blue pattern of dots")
    expected = api.post("/v1/search/media", data={"text": "a blue pattern of dots", "k": K})
    assert [c["id"] for c in cards] == [str(i) for i in expected.json()["ids"]]
    check_cards(env, cards)
    assert sum(c["natural"] > 0 for c in cards) >= K - 2  # only 2 catalogue items lack images
    assert "#q=a%20blue%20pattern%20of%20dots" in page.current_url  # back/forward work
    shot(page, "search")


def test_click_a_result_for_its_neighbours(page, env, api):
    from selenium.webdriver.common.by import By

    cards = search_text(page, "a red pattern of stripes")
    target = next(c for c in cards if int(c["id"]) in env.images)
    page.find_element(By.CSS_SELECTOR, f'#results .card[data-id="{target["id"]}"]').click()
    wait_for(page, lambda d: f"#item={target['id']}" in d.current_url, what="the item view")
    wait_idle(page)
    neighbours = api.get(f"/v1/items/{target['id']}/neighbors", params={"k": K}).json()
    cards = grid(page)
    assert [c["id"] for c in cards] == [str(i) for i in neighbours["ids"]]
    assert target["id"] not in [c["id"] for c in cards]
    check_cards(env, cards)
    assert page.find_element(By.ID, "context-title").text == titles(env)[target["id"]]
    hero = page.find_element(By.CSS_SELECTOR, "#context-media img.thumb")
    assert page.execute_script("return arguments[0].naturalWidth", hero) > 0
    shot(page, "neighbours")
    page.back()  # to the search it came from
    wait_for(page, lambda d: "#q=" in d.current_url, what="back to the search")
    wait_idle(page)
    assert len(grid(page)) == K


def test_image_upload_searches_by_image(page, env, api, tmp_path):
    from selenium.webdriver.common.by import By

    item = sorted(env.images)[5]
    path = tmp_path / "query.png"
    Image.fromarray(env.images[item]).save(path)
    page.find_element(By.ID, "image-input").send_keys(str(path))
    wait_for(page, lambda d: len(grid(d)) == 12, what="image results")  # the default k
    wait_idle(page)
    cards = grid(page)
    with open(path, "rb") as handle:
        expected = api.post(
            "/v1/search/media", files={"image": ("q.png", handle, "image/png")}, data={"k": 12}
        ).json()
    assert [c["id"] for c in cards] == [str(i) for i in expected["ids"]]
    check_cards(env, cards)
    preview = page.find_element(By.CSS_SELECTOR, "#context-media img")
    assert page.execute_script("return arguments[0].naturalWidth", preview) == 96
    shot(page, "image-search")


def test_video_upload_searches_by_video(page, env, api, tmp_path):
    """A dropped/picked MP4 goes up as `video` (frames sampled and pooled by the server) and
    plays muted as the search's preview."""
    from selenium.webdriver.common.by import By

    from coldstart.data.video_synth import moving_pattern_video

    path = tmp_path / "query.mp4"
    path.write_bytes(moving_pattern_video(2, seconds=1.0))
    page.find_element(By.ID, "image-input").send_keys(str(path))
    wait_for(page, lambda d: len(grid(d)) == 12, what="video results")
    wait_idle(page)
    expected = api.post(
        "/v1/search/media", files={"video": ("q.mp4", path.read_bytes(), "video/mp4")},
        data={"k": 12},
    ).json()  # fmt: skip
    assert [c["id"] for c in grid(page)] == [str(i) for i in expected["ids"]]
    preview = page.find_element(By.CSS_SELECTOR, "#context-media video")
    assert page.execute_script("return arguments[0].muted", preview) is True
    shot(page, "video-search")


def test_new_item_panel_then_insert_with_the_token(page, env, api):
    from selenium.webdriver.common.by import By

    title = "a never seen zebra pattern of waves"
    page.find_element(By.ID, "new-title").send_keys(title)
    page.find_element(By.ID, "new-run").click()
    wait_for(page, lambda d: len(grid(d, "new-results")) == 6, what="new-item neighbours")
    wait_idle(page)
    expected = api.post("/v1/coldstart/media", data={"text": title, "k": 6}).json()
    cards = grid(page, "new-results")
    assert [c["id"] for c in cards] == [str(i) for i in expected["neighbors"]["ids"]]
    check_cards(env, cards)
    row = page.find_element(By.ID, "id-row")
    assert row.get_attribute("data-dim") == str(ID_ROW_DIM)
    assert len(row.find_elements(By.CSS_SELECTOR, ".id-strip > span")) == ID_ROW_DIM
    assert f"{expected['id_row'][0]:.3f}" in row.text
    shot(page, "new-item")

    # Insert: the page asks for the token; a wrong one is refused and asked again.
    page.find_element(By.ID, "new-id").send_keys("777001")
    page.find_element(By.ID, "insert").click()
    dialog = page.find_element(By.ID, "token-dialog")
    wait_for(page, lambda d: dialog.get_attribute("open") is not None, what="the token dialog")
    page.find_element(By.ID, "token-input").send_keys("wrong-token")
    page.find_element(By.ID, "token-ok").click()
    wait_for(page, lambda d: "refused" in d.find_element(By.ID, "token-why").text, what="retry")
    assert dialog.get_attribute("open") is not None
    page.find_element(By.ID, "token-input").send_keys(TOKEN)
    page.find_element(By.ID, "token-ok").click()
    message = page.find_element(By.ID, "new-message")
    wait_for(page, lambda d: "Inserted item 777001" in message.text, what="the insert")
    assert page.execute_script("return sessionStorage.getItem('coldstart.token')") == TOKEN
    assert TOKEN not in page.current_url
    assert api.get("/v1/items/777001").status_code == 200  # really in the index
    shot(page, "inserted")

    # Searching for its title now finds it first (same text, same vector).
    cards = search_text(page, title)
    assert cards[0]["id"] == "777001" and cards[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert cards[0]["title"] == title and cards[0]["placeholder"]  # new: no catalogue row
    assert TOKEN not in page.current_url


def test_catalogue_text_is_escaped(page, env, url):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    page.get(f"{url}/#item={XSS_ID}")
    wait_for(page, lambda d: d.find_element(By.ID, "context-title").text == XSS_TITLE, what="title")
    wait_idle(page)
    assert page.find_element(By.ID, "context-title").text == XSS_TITLE  # shown as text
    assert page.find_elements(By.CSS_SELECTOR, 'img[src="x"]') == []
    assert page.find_elements(By.CSS_SELECTOR, "#context-fields b") == []
    chips = [c.text for c in page.find_elements(By.CSS_SELECTOR, "#context-fields .chip")]
    assert "<b>bold</b>" in chips
    # The item also appears as a card (in a search for its own title) as text.
    cards = search_text(page, XSS_TITLE)
    assert any(c["id"] == str(XSS_ID) and c["title"] == XSS_TITLE for c in cards)
    assert page.find_elements(By.CSS_SELECTOR, 'img[src="x"]') == []
    time.sleep(0.3)  # an onerror handler would have fired by now
    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert.text  # noqa: B018 - raises when no alert is open
    shot(page, "escaping")


def test_missing_image_shows_a_placeholder(page, url):
    from selenium.webdriver.common.by import By

    page.get(f"{url}/#item={NO_IMAGE_ID}")
    wait_idle(page)
    assert page.find_element(By.ID, "context-title").text == "An item without a picture"
    assert page.find_elements(By.CSS_SELECTOR, "#context-media .placeholder")
    assert page.find_elements(By.CSS_SELECTOR, "#context-media img") == []
    page.get(f"{url}/#item=123456789")  # unknown everywhere: an error message, not a broken page
    wait_idle(page)
    message = page.find_element(By.ID, "message")
    assert message.is_displayed() and "123456789" in message.text


def test_phone_width(page, url):
    from selenium.webdriver.common.by import By

    page.set_window_size(390, 844)
    page.get(url + "/#q=" + "a%20green%20pattern%20of%20checks")
    wait_for(page, lambda d: len(grid(d)) == 12, what="results at phone width")
    wait_idle(page)
    layout = page.execute_script(
        """
        const r = document.getElementById('results');
        return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                columns: getComputedStyle(r).gridTemplateColumns.split(' ').length,
                resultsTop: r.getBoundingClientRect().top,
                panelTop: document.getElementById('new-form').getBoundingClientRect().top,
                cardWidth: r.querySelector('.card').getBoundingClientRect().width};
        """
    )
    assert layout["scroll"] <= layout["inner"], layout  # no sideways scrolling
    assert layout["columns"] == 2 and layout["cardWidth"] > 120, layout
    assert layout["panelTop"] > layout["resultsTop"], layout  # the panel stacks below
    search = page.find_element(By.ID, "search-btn").rect
    assert search["x"] + search["width"] <= 390
    shot(page, "phone")


def test_auth_reads_asks_for_the_token_and_loads_images_with_it(driver, env, monkeypatch):
    """--auth-reads: the page asks once, keeps the token in the tab, fetches thumbnails with it."""
    from selenium.webdriver.common.by import By

    from coldstart.index.catalogue import Catalogue, MediaStore
    from coldstart.index.config import ServerConfig, StoreConfig
    from coldstart.index.server import create_app
    from coldstart.index.store import DurableIndex
    from tests.index.conftest import live_server

    monkeypatch.setenv("COLDSTART_API_TOKEN", TOKEN)
    catalogue = Catalogue.load(env.catalogue)
    media = MediaStore.scan(env.shards, "int", catalogue.media_keys())
    durable = DurableIndex.open(env.index, StoreConfig(fsync=False))
    app = create_app(durable, ServerConfig(auth_reads=True), catalogue=catalogue, media=media)
    item = sorted(env.images)[0]
    with live_server(app) as base:
        assert httpx.get(f"{base}/v1/items/{item}/meta").status_code == 401
        driver.set_window_size(1280, 900)
        driver.get(base + "/")
        driver.execute_script("sessionStorage.clear()")
        driver.get(f"{base}/#item={item}")
        dialog = driver.find_element(By.ID, "token-dialog")
        wait_for(driver, lambda d: dialog.get_attribute("open") is not None, what="token dialog")
        assert "--auth-reads" in driver.find_element(By.ID, "token-why").text
        driver.find_element(By.ID, "token-input").send_keys(TOKEN)
        driver.find_element(By.ID, "token-ok").click()
        wait_for(driver, lambda d: len(grid(d)) == 12, what="neighbours with the token")
        wait_idle(driver)
        cards = grid(driver)
        check_cards(env, cards)
        srcs = driver.execute_script(
            "return [...document.querySelectorAll('#results img.thumb')].map(i => i.src)"
        )
        assert srcs and all(s.startswith("blob:") for s in srcs)  # fetched with the header
        assert TOKEN not in driver.current_url
        shot(driver, "auth-reads")
    media.close()


# ------------------------------------------------------------------ for a user (a served ranker)
NEW_RANKER_ITEM = "90001"


@pytest.fixture(scope="module")
def ranker_url(env, tmp_path_factory):
    """A second server over a copy of the env's index, with a small trained ranker."""
    import dataclasses
    import shutil

    root = tmp_path_factory.mktemp("ranker")
    shutil.copytree(env.index, root / "index")
    method = build_ranker(env)
    served = dataclasses.replace(env, index=root / "index")
    with serve(served, "--ranker", str(method), "--ranker-store", str(root / "store")) as base:
        yield base


def test_without_a_ranker_the_user_view_is_hidden(page):
    from selenium.webdriver.common.by import By

    wait_for(page, lambda d: d.execute_script("return document.body.dataset.ranker"), what="probe")
    assert page.execute_script("return document.body.dataset.ranker") == "none"
    assert not page.find_element(By.ID, "user-panel").is_displayed()
    assert search_text(page, "a blue pattern of dots")  # the rest still works


def test_for_a_user_history_and_recommendations_with_an_upload_marked_cold(driver, ranker_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with httpx.Client(base_url=ranker_url, timeout=30) as client:
        info = client.get("/v1/ranker").json()
        added = client.post(
            "/v1/ranker/items",
            data={"id": NEW_RANKER_ITEM, "text": "a yellow pattern of rings"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert added.status_code == 200, added.text
        users = client.get("/v1/users", params={"limit": 5}).json()["ids"]
        assert client.get("/v1/users/123456789/history").status_code == 404
        user = users[0]
        # k = 48 exceeds every served item (trained ones + the upload): the upload is among them.
        k = 48
        assert info["warm_items"] + 1 <= k
        history = client.get(f"/v1/users/{user}/history").json()
        recs = client.get(f"/v1/users/{user}/recommendations", params={"k": k}).json()
    assert int(NEW_RANKER_ITEM) in recs["ids"]

    driver.set_window_size(1280, 900)
    driver.get(ranker_url + "/")
    wait_idle(driver)
    assert driver.execute_script("return document.body.dataset.ranker") == "ready"
    assert driver.find_element(By.ID, "user-panel").is_displayed()
    Select(driver.find_element(By.ID, "k")).select_by_value(str(k))
    Select(driver.find_element(By.ID, "user-pick")).select_by_value(str(user))
    driver.find_element(By.ID, "user-show").click()  # the first user is picked already
    wait_for(driver, lambda d: len(grid(d, "user-recs")) == len(recs["ids"]), what="recs")
    wait_idle(driver)
    assert driver.current_url.endswith(f"#user={user}")
    assert not driver.find_element(By.ID, "results").is_displayed()
    cards = grid(driver, "user-recs")
    assert [c["id"] for c in cards] == [str(i) for i in recs["ids"]]
    shown = [c["id"] for c in grid(driver, "user-history")]
    assert shown == [str(i) for i in history["items"]] and shown
    assert not set(shown) & {c["id"] for c in cards}  # seen items are excluded
    marks = driver.execute_script(
        """return [...document.querySelectorAll('#user-recs .card')].map(c =>
             [c.dataset.id, c.dataset.segment, !!c.querySelector('.badge-cold')]);"""
    )
    for item, segment, badge in marks:
        cold = item == NEW_RANKER_ITEM
        assert (segment, badge) == (("cold", True) if cold else ("warm", False)), item
    shot(driver, "for-a-user")

    # An unknown user: the server's 404 shows as a message, the page keeps working.
    driver.get(ranker_url + "/#user=123456789")
    wait_for(driver, lambda d: d.find_element(By.ID, "message").is_displayed(), what="404")
    assert "unknown user" in driver.find_element(By.ID, "message").text
