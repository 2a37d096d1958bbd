"""ranker.methods: every method trains and scores on a split; ours beats ID-only on cold items;
one registry and one set of defaults serve the experiment and LitRanker."""

from __future__ import annotations

import numpy as np
import pytest

from coldstart.ranker.methods import fit_method, list_methods, resolve_method, run_method

BASELINES = ("popularity", "id_only", "content_knn", "content_projection")
TINY = {
    "dim": 16,
    "epochs": 4,
    "content_hidden": 32,
    "batch_requests": 32,
    "history_len": 20,
    "sid_codewords": 8,
}


@pytest.fixture(scope="module")
def fitted(syn_data):
    return {m: fit_method(m, syn_data, params=TINY) for m in list_methods()}


def test_every_method_reports_every_segment(fitted, syn_data) -> None:
    for name, f in fitted.items():
        out = f.evaluate("test")
        assert set(out) == {"cold", "warm", "all"}, name
        for seg in out.values():
            assert {"recall@10", "recall@20", "ndcg@10", "ndcg@20"} <= set(seg)
            assert all(
                0.0 <= seg[k] <= 1.0 for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
            )
        assert f.item_vectors().shape[0] == syn_data.num_items
        assert f.user_vectors().shape[0] == syn_data.num_users


def test_ours_beats_id_only_on_cold_items(fitted) -> None:
    cold = {
        m: fitted[m].evaluate("val")["cold"]["recall@20"] for m in ("id_only", "ours", "popularity")
    }
    assert cold["ours"] > cold["id_only"] + 0.1
    assert cold["ours"] > cold["popularity"] + 0.1


def test_content_projection_keeps_warm_vectors_and_maps_cold_ones(fitted, syn_data) -> None:
    warm = syn_data.item_split == "warm"
    proj, sid = fitted["content_projection"], fitted["warmstart+sid"].info
    assert np.isfinite(proj.item_vectors()).all()
    assert "sid_cold_prefix_seen" in sid and 0 <= sid["sid_code_collision_rate"] <= 1
    # A mixture reports its channels' build reports by channel.
    assert "sid_cold_prefix_seen" in fitted["ours+sid"].info["channels"]["ws"]
    # Same training as id_only (same seed): warm rows identical, cold rows mapped from content.
    np.testing.assert_allclose(
        proj.item_vectors()[warm], fitted["id_only"].item_vectors()[warm], atol=1e-5
    )
    cold_proj = proj.evaluate("val")["cold"]["recall@20"]
    assert cold_proj > fitted["id_only"].evaluate("val")["cold"]["recall@20"] + 0.1


def test_params_are_validated_and_run_method_matches(syn_data) -> None:
    with pytest.raises(ValueError, match="unknown ranker param"):
        fit_method("ours", syn_data, params={"no_such_knob": 1})
    with pytest.raises(ValueError, match="unknown method"):
        resolve_method("nope")
    out = run_method("popularity", syn_data, part="val")
    assert out["warm"]["users"] > 0


def test_one_source_of_defaults_for_the_experiment_and_lightning(syn_data) -> None:
    """The disagreements of issue 12 (id_dropout 0.5 vs 0.3, epochs 10 vs 8, batch_requests
    256 vs 128, label_threshold None vs 4.0) cannot come back: both paths resolve here."""
    import dataclasses

    from coldstart.ranker.lit import LitRanker, RankerDataModule
    from coldstart.ranker.model import RankerConfig
    from coldstart.ranker.train import TrainConfig

    ours = resolve_method("ours")
    # The config dataclasses' own defaults are the method defaults (warmstart registers no
    # overrides; ours only its channels' dim, chosen by the sweep).
    warmstart = resolve_method("warmstart")
    assert warmstart.ranker == RankerConfig() and warmstart.train == TrainConfig(seed=0)
    assert ours.channels["ws"].ranker == dataclasses.replace(RankerConfig(), dim=128)
    for name in ("ours", "ours+sid", "id_only", "content_projection"):
        lit = LitRanker(name, {"dim": 24})
        resolved = resolve_method(name, {"dim": 24})
        assert (lit.config, lit.build, lit.resolved.train) == (
            resolved.ranker,
            resolved.build,
            resolved.train,
        ), name
    lit = LitRanker("ours")
    assert lit.config.item.id_dropout == ours.ranker.item.id_dropout
    assert lit.resolved.train.epochs == ours.train.epochs
    assert lit.resolved.train.batch_requests == ours.train.batch_requests
    assert lit.resolved.train.label_threshold is None
    # The DataModule holds where the data comes from, no training knob of its own.
    import inspect

    knobs = set(inspect.signature(RankerDataModule).parameters)
    assert not knobs & {"batch_requests", "items_per_request", "label_threshold", "seed"}
    with pytest.raises(ValueError, match="trains no ranker"):
        LitRanker("popularity")


def test_adding_a_method_is_one_registration(syn_data, monkeypatch) -> None:
    import coldstart.ranker.methods as methods
    from coldstart.experiment.config import RankerStageConfig as ExperimentRanker
    from coldstart.experiment.stages import params_for
    from coldstart.ranker.lit import LitRanker

    spec = methods.MethodSpec(
        "ours_no_dropout", "ours without ID dropout", {"id_dropout": 0.0}, needs_content=True
    )
    monkeypatch.setitem(methods._REGISTRY, spec.name, spec)
    assert "ours_no_dropout" in list_methods() and "ours_no_dropout" in methods.default_methods()
    assert "ours_no_dropout" in ExperimentRanker().methods  # the experiment's default list
    # Per-method params in the experiment config are recognised by name.
    params = params_for(
        ExperimentRanker(params={"dim": 8, "ours_no_dropout": {"lr": 0.01}}), spec.name
    )
    assert params == {"dim": 8, "lr": 0.01}
    fitted = fit_method(spec.name, syn_data, params={**TINY, "epochs": 1})
    assert (
        fitted.info["params"]["id_dropout"] == 0.0 and fitted.items.shape[0] == syn_data.num_items
    )
    assert LitRanker(spec.name).config.item.id_dropout == 0.0


def test_method_vectors_round_trip_through_the_export_format(fitted, syn_data, tmp_path) -> None:
    """Per-method vectors are written with their ids and a manifest, so anyone can re-score."""
    from coldstart.data.embeddings import EmbeddingManifest, read_embeddings
    from coldstart.ranker.methods import export_vectors, read_vectors

    f = fitted["content_projection"]
    export_vectors(tmp_path, syn_data, f.items, f.users, resolve_method(f.name))
    manifest = EmbeddingManifest.load(tmp_path / "items")
    assert manifest.encoder_config["method"] == "content_projection"
    assert manifest.encoder_config["params"]["ridge"] == 10.0
    ids, _ = read_embeddings(tmp_path / "items", "ranker")
    assert sorted(ids.tolist()) == sorted(syn_data.item_ids.tolist())
    items, users = read_vectors(tmp_path, syn_data)
    np.testing.assert_array_equal(items, f.items)
    np.testing.assert_array_equal(users, f.users)


def test_ours_contains_its_baselines(fitted, syn_data) -> None:
    """The mixture's ID channel IS content_projection (trained side by side, same seed), its
    knn channel IS content_knn, and the weights tuned on val make it at least as good as
    each of them there, on cold and warm items at once."""
    from coldstart.ranker.methods import model_vectors

    ours = fitted["ours"]
    resolved = resolve_method("ours", TINY)
    items, users, _ = model_vectors(ours.model.channels["id"], syn_data, resolved.channels["id"])
    np.testing.assert_allclose(items, fitted["content_projection"].items, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(users, fitted["content_projection"].users, rtol=1e-5, atol=1e-6)
    mix = ours.info["mixture"]
    assert mix["cold_val_recall"] >= max(mix["cold_val_single"].values()) - 1e-9
    assert mix["warm_val_recall"] >= max(mix["warm_val_single"].values()) - 1e-9
    val = {m: fitted[m].evaluate("val") for m in ("ours", *BASELINES)}
    for seg in ("cold", "warm"):
        best = max(val[m][seg]["recall@20"] for m in BASELINES)
        assert val["ours"][seg]["recall@20"] >= best - 0.01, seg
    # Still one dot product: the served score is users @ items.
    assert ours.items.shape[1] == ours.users.shape[1]
    np.testing.assert_allclose(
        ours.score(np.arange(3), np.arange(5)), ours.users[:3] @ ours.items[:5].T, rtol=1e-6
    )


def test_mixture_channels_and_grid_are_params(syn_data) -> None:
    """Leaving the ws channel out trains one model; a one-point grid pins the weights."""
    only = fit_method(
        "ours",
        syn_data,
        params={**TINY, "epochs": 1, "mix_channels": ["id", "knn"], "mix_kappas": [0.0]},
    )
    assert list(only.model.channels) == ["id"]
    mix = only.info["mixture"]
    # kappa from the one-point grid, or a single channel's point (id: 0, knn: inf).
    assert mix["channels"] == ["id", "knn"] and mix["warm"]["kappa"] in (0.0, float("inf"))
    with pytest.raises(ValueError, match="mix_channels"):
        fit_method("ours", syn_data, params={**TINY, "epochs": 1, "mix_channels": ["nope"]})
    # Untrained channels only: nothing to train, still one dot product.
    untrained = fit_method("ours", syn_data, params={"mix_channels": ["knn", "pop"]})
    assert untrained.model is None and untrained.items.shape[1] == untrained.users.shape[1]
