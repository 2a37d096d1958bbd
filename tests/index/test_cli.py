"""`coldstart index build|info`, `coldstart serve --help`, encoder wiring, import direction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coldstart.commands import index as index_cmd
from coldstart.data.synthetic import clustered_vectors
from coldstart.index.store import DurableIndex
from coldstart.index.vector_index import InvalidInput
from coldstart.serving import encode_fn_from_encoder
from tests.exports import write_export
from tests.index.conftest import REPO_ROOT


def test_index_build_prints_recall_and_info(tmp_path, capsys):
    x, _ = clustered_vectors(3000, 24, n_clusters=16, seed=0)
    write_export(tmp_path / "emb", np.arange(3000) * 10, x)
    code = index_cmd.main(
        [
            "build",
            "--embeddings",
            str(tmp_path / "emb"),
            "--out",
            str(tmp_path / "idx"),
            "--factory",
            "IVF32,Flat",
            "--nprobe",
            "8",
            "--recall-queries",
            "200",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3000 and report["dim"] == 24 and report["factory"] == "IVF32,Flat"
    assert 0.9 <= report["recall_at_10"] <= 1.0
    durable = DurableIndex.open(tmp_path / "idx")
    assert len(durable) == 3000 and durable.index.config.id_type == "int"
    assert durable.search(x[5:6], 1).ids == [[50]]
    assert durable.manifest["source"]["count"] == 3000
    durable.close(snapshot=False)
    assert index_cmd.main(["info", "--index", str(tmp_path / "idx")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["live_items"] == 3000 and info["factory"] == "IVF32,Flat"
    # refuses to overwrite, and says why
    again = ["build", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "idx")]
    assert index_cmd.main(again) == 2
    assert "already holds an index" in capsys.readouterr().err


def test_index_build_string_ids_and_config_file(tmp_path, capsys):
    x, _ = clustered_vectors(300, 8, seed=1)
    write_export(tmp_path / "emb", [f"m{i}" for i in range(300)], x)
    config = REPO_ROOT / "configs" / "index" / "hnsw.yaml"
    args = ["build", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "idx")]
    assert index_cmd.main([*args, "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["factory"].startswith("HNSW") and report["recall_at_10"] > 0.9
    durable = DurableIndex.open(tmp_path / "idx")
    assert durable.search(x[:1], 1).ids == [["m0"]]
    durable.close(snapshot=False)


def test_serve_help_is_fast_and_documented(capsys):
    from coldstart.commands import serve

    with pytest.raises(SystemExit):
        serve.main(["--help"])
    out = capsys.readouterr().out
    assert "--index" in out and "--encoder" in out and "--no-batching" in out
    assert "--catalogue" in out and "--media" in out


def test_configs_parse():
    from coldstart.index.browse import BrowseConfig
    from coldstart.index.config import IndexConfig, ServerConfig, StoreConfig, load_yaml

    paths = sorted((REPO_ROOT / "configs" / "index").glob("*.yaml"))
    assert len(paths) >= 4
    for path in paths:
        raw = load_yaml(path)
        IndexConfig.from_dict(raw.get("index", {}))
        StoreConfig.from_dict(raw.get("store", {}))
        ServerConfig.from_dict(raw.get("server", {}))
        BrowseConfig.from_dict(raw.get("browse", {}))
    assert "browse" in load_yaml(REPO_ROOT / "configs" / "index" / "server.yaml")


class FakeEncoder:
    """Duck-typed like encoders.create_encoder's result."""

    modalities = ("image", "text")
    dim = 4

    def encode_image(self, images):
        return np.tile(np.array([[1.0, 0, 0, 0]], np.float32), (len(images), 1))

    def encode_text(self, texts):
        return np.tile(np.array([[0, 2.0, 0, 0]], np.float32), (len(texts), 1))


def test_encode_fn_fuses_modalities():
    encode = encode_fn_from_encoder(FakeEncoder())
    np.testing.assert_allclose(encode([object()], []), [1, 0, 0, 0])
    np.testing.assert_allclose(encode([], ["t"]), [0, 1, 0, 0])
    np.testing.assert_allclose(encode([object()], ["t"]), [2**-0.5, 2**-0.5, 0, 0], atol=1e-6)
    with pytest.raises(InvalidInput):
        encode([], [])
    text_only = FakeEncoder()
    text_only.modalities = ("text",)
    with pytest.raises(InvalidInput):
        encode_fn_from_encoder(text_only)([object()], [])


@pytest.mark.slow
def test_server_with_a_registered_encoder(tmp_path):
    """The coldstart wiring end to end: encoders.create_encoder -> encode -> /v1/search/media."""
    import io

    import httpx
    from PIL import Image

    from coldstart.index.config import IndexConfig, ServerConfig, StoreConfig
    from coldstart.index.server import create_app
    from coldstart.index.vector_index import VectorIndex
    from coldstart.serving import make_encode
    from tests.index.conftest import live_server, wait_ready

    pytest.importorskip("open_clip")
    encode, dim = make_encode("tiny-clip")  # random-init tiny open_clip config, no hub
    x, _ = clustered_vectors(200, dim, seed=2)
    index = VectorIndex.build(range(200), x, IndexConfig())
    durable = DurableIndex.create(tmp_path / "idx", index, StoreConfig(fsync=False))
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (200, 30, 30)).save(buf, format="JPEG")
    with (
        live_server(create_app(durable, ServerConfig(), encode=encode)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        wait_ready(client)
        r = client.post(
            "/v1/search/media",
            data={"text": "a red poster", "k": "5"},
            files={"image": ("p.jpg", buf.getvalue(), "image/jpeg")},
        )
        assert r.status_code == 200 and len(r.json()["ids"]) == 5
        expected = encode([Image.open(io.BytesIO(buf.getvalue())).convert("RGB")], ["a red poster"])
        assert r.json()["ids"][0] == index.search(expected[None, :], 1).ids[0][0]
