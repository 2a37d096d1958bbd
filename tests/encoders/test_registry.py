"""Registry and backends: names resolve offline, outputs are (B, D) unit vectors, batch-invariant."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from coldstart.encoders import create_encoder, list_encoders
from coldstart.encoders.backends import attention_mask_from_ids
from coldstart.encoders.registry import resolve_config


@pytest.fixture(scope="module")
def tiny():
    return create_encoder("tiny-clip")


@pytest.fixture(scope="module")
def minilm():
    return create_encoder("minilm")


def test_list_and_resolve_names():
    names = list_encoders()
    assert {"tiny-clip", "minilm", "small-clip+minilm"} <= set(names)
    assert "ViT-B-32" in list_encoders(include_open_clip=True)
    # Hub names must still be accepted (resolution only: no hub on this machine).
    cfg = resolve_config("ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert (cfg.backend, cfg.model, cfg.pretrained) == (
        "open_clip",
        "ViT-B-32",
        "laion2b_s34b_b79k",
    )
    assert resolve_config("hf-clip:openai/clip-vit-base-patch32").backend == "hf_clip"
    assert resolve_config("hf-text:sentence-transformers/all-MiniLM-L6-v2").backend == "hf_text"
    assert resolve_config("minilm").model.endswith("model")  # offline package path
    with pytest.raises(ValueError, match="unknown encoder"):
        resolve_config("no-such-model")
    with pytest.raises(TypeError, match="unknown encoder option"):
        resolve_config("tiny-clip", colour="red")


def test_open_clip_uniform_interface(tiny):
    assert tiny.modalities == ("image", "text") and tiny.dim == 64
    assert not tiny.training
    images = [
        np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8) for i in range(3)
    ]
    img = tiny.encode_image(images)
    txt = tiny.encode_text(["a red pattern of stripes", "a blue pattern of dots"])
    assert img.shape == (3, 64) and txt.shape == (2, 64)
    assert not img.requires_grad
    torch.testing.assert_close(img.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(2))
    # Preprocessed tensors give the same vectors as raw images; the encoder owns preprocessing.
    pre = pickle.loads(pickle.dumps(tiny.preprocessor()))  # DataLoader workers get a copy
    pixels = torch.stack([pre.image(im) for im in images])
    assert pixels.shape == (3, 3, 32, 32)
    torch.testing.assert_close(tiny.encode_image(pixels), img)
    # encode_* restores the caller's mode.
    tiny.train()
    tiny.encode_text(["x"])
    assert tiny.training
    tiny.eval()


def test_open_clip_local_dir_roundtrip(tiny, tmp_path):
    import open_clip

    cfg = open_clip.get_model_config("coldstart-tiny")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(tiny.model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    loaded = create_encoder(str(tmp_path))
    assert loaded.config.backend == "open_clip"
    assert loaded.weights_sha256() == tiny.weights_sha256()
    fresh = create_encoder("tiny-clip")  # random init differs
    assert fresh.weights_sha256() != tiny.weights_sha256()


def test_minilm_mean_pooling_is_batch_invariant(minilm):
    assert minilm.modalities == ("text",) and minilm.dim == 384
    short, long_ = (
        "Toy Story (1995)",
        "Heat (1995). Action, Crime, Thriller and a long tail of words",
    )
    alone = minilm.encode_text([short])
    batched = minilm.encode_text([short, long_])  # padded: mask must hide the padding
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-4)
    # Real pretrained weights: related titles are closer than unrelated ones.
    v = minilm.encode_text(
        [
            "a space adventure film",
            "science fiction movie in outer space",
            "a cooking recipe for bread",
        ]
    )
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2
    with pytest.raises(ValueError, match="no image modality"):
        minilm.encode_image(torch.zeros(1, 3, 8, 8))


def test_hf_clip_from_local_dir(tmp_path, minilm):
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    tok = AutoTokenizer.from_pretrained(minilm.config.model)  # any tokenizer will do offline
    config = CLIPConfig(
        text_config={
            "vocab_size": tok.vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "eos_token_id": tok.sep_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = create_encoder(str(tmp_path))  # sniffed: model_type clip
    assert enc.config.backend == "hf_clip" and enc.dim == 24
    img = enc.encode_image([np.full((64, 48, 3), 100, np.uint8)] * 2)
    assert img.shape == (2, 24)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(2))
    alone = enc.encode_text(["a cat"])
    batched = enc.encode_text(["a cat", "a much longer caption about a dog on a sofa"])
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-4)
    assert enc.logit_scale is not None
    assert create_encoder(f"hf-clip:{tmp_path}").weights_sha256() == enc.weights_sha256()


def test_attention_mask_when_pad_is_eos():
    ids = torch.tensor([[5, 6, 9, 9, 9], [5, 9, 9, 9, 9]])  # 9 = eos = pad
    mask = attention_mask_from_ids(ids, pad_id=9, eos_id=9)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert attention_mask_from_ids(ids, pad_id=0, eos_id=9).sum() == 10


def test_composite_encoder_checks_dims():
    with pytest.raises(ValueError, match="dim 64 but text encoder"):
        create_encoder("tiny-clip+minilm")
