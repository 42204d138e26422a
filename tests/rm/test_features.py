"""Cached backbone features (RMConfig.cache_features): same training as the uncached frozen run, cache reuse."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from jaxalign import config as cfglib
from jaxalign.cli.main import main
from jaxalign.rm import features as fx
from jaxalign.rm.step import split_trainable
from jaxalign.rm.trainer import RMConfig, build_reward_model, encode, load_pairs, load_trained, train_rm
from jaxalign.runlog import read_metrics
from tests import configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["data.max_train_pairs=24", "data.max_test_pairs=12", "data.max_len=256", "data.length_multiple=256",
         "data.ends_multiple=16", "init.num_layers=1", "init.hidden_size=32", "init.intermediate_size=64",
         "init.num_heads=2", "init.num_kv_heads=1", "head_dim=8", "batch_size=8", "max_steps=4", "run.save_every=2",
         "run.log_every=1", "eval_batch_size=8", "freeze_backbone=true", "optim.learning_rate=3e-2"]


def frozen_config(tmp_path, kind: str, name: str, cache: bool) -> RMConfig:
    return cfglib.load(RMConfig, os.path.join(ROOT, "configs/rm/tiny_cpu.yaml"),
                       SMALL + [f"kind={kind}", f"run.run_dir={tmp_path / name}",
                                f"cache_features={str(cache).lower()}"])


def heads(model):
    return jax.tree.leaves(jax.device_get(split_trainable(model, True)[1]))


# The cached path computes the heads' inputs with other batch shapes than the in-step backbone, so
# the two runs agree only up to float rounding (~1e-6 relative). Adam would turn that rounding of
# near-zero gradients into lr-sized steps (update ~ lr * g / |g|); with eps = 1 >> |g| the update is
# ~ lr * m, Lipschitz in the gradient with constant lr (SGD with momentum), so after 4 steps the
# parameters differ by at most 4 * lr * max|dg|, with |dg| ~ 1e-6 * |g| from the rounding of the
# features: at lr = 1 that is ~1e-6 where training moves them by ~1e-2. The tolerance below follows
# from that bound, not from how one CPU rounds.
EPS_1 = ["optim.eps=1.0", "optim.learning_rate=1.0"]


@pytest.mark.parametrize("kind", ["sentence", "response"])
def test_cached_features_train_like_the_uncached_frozen_run(tmp_path, kind):
    def run(name, cache):
        config = cfglib.load(RMConfig, os.path.join(ROOT, "configs/rm/tiny_cpu.yaml"),
                             SMALL + EPS_1 + [f"kind={kind}", f"run.run_dir={tmp_path / name}",
                                              f"cache_features={str(cache).lower()}"])
        return config, train_rm(config, resume=False)

    _, plain = run("plain", False)
    config, cached = run("cached", True)
    assert cached["steps"] == plain["steps"] == 4
    # Every distinct response once (a chosen side shared by pairs of the same problem: once).
    assert cached["train_pairs"] < cached["features"]["train"]["rows"] <= 2 * cached["train_pairs"]
    losses = [[r["train/loss"] for r in read_metrics(s["run_dir"]) if "train/loss" in r] for s in (plain, cached)]
    assert len(losses[0]) == 4 and losses[0][0] != losses[0][-1]  # the heads did learn
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    moved = 0.0
    for a, b, c in zip(heads(cached["model"]), heads(plain["model"]), heads(build_reward_model(config)[0]),
                       strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)  # seen: <= 3e-7
        moved = max(moved, float(np.abs(b - c).max()))
    assert moved > 100 * 1e-5  # the tolerance is far below how far training moved the heads (seen: >= 1e-2)
    # Accuracy may differ only through pairs whose score margin is within the score tolerance.
    with open(os.path.join(plain["run_dir"], "eval.json")) as f:
        s_plain = json.load(f)["scores"]
    with open(os.path.join(config.run.run_dir, "eval.json")) as f:
        s_cached = json.load(f)["scores"]
    for side in ("chosen", "rejected"):
        np.testing.assert_allclose(s_cached[side], s_plain[side], rtol=0, atol=1e-4)
    margin = np.abs(np.subtract(s_plain["chosen"], s_plain["rejected"]))
    assert abs(cached["eval"]["accuracy"] - plain["eval"]["accuracy"]) <= np.mean(margin < 2e-4)
    if kind == "sentence":
        assert cached["eval"]["localisation"] == pytest.approx(plain["eval"]["localisation"], abs=0.05)
    # Heads-only checkpoints reload with the rebuilt frozen backbone and score like the end of training
    # (the scorer runs the backbone: no cache involved).
    _, rm, tok, end_id = load_trained(config.run.run_dir)
    with open(os.path.join(config.run.run_dir, "eval.json")) as f:
        saved = json.load(f)
    assert main(["rm", "eval", config.run.run_dir, "-o", str(tmp_path / "ev.json")]) == 0
    again = json.loads((tmp_path / "ev.json").read_text())
    assert again["n"] == len(saved["ids"]) and again["accuracy"] == pytest.approx(saved["eval"]["accuracy"])
    for a, b in zip(heads(rm), heads(cached["model"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_cache_is_reused_and_shared(tmp_path, monkeypatch):
    config = frozen_config(tmp_path, "sentence", "run", cache=True)
    first = train_rm(config, resume=False)
    files = os.listdir(os.path.join(config.run.run_dir, "features"))
    assert len(files) == 1 and files[0].endswith(".npz")

    def boom(*args, **kwargs):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(fx, "extract_features", boom)
    # a longer run (its schedule changes, so the change must be allowed); every row from the cache
    resumed = train_rm(dataclasses.replace(config, max_steps=6, epochs=3), resume=True, allow_config_change=True)
    assert resumed["steps"] == 6 and resumed["features"]["train"]["rows"] == 0
    assert resumed["features"]["train"]["reused_rows"] == 2 * resumed["train_pairs"]
    # A fresh run on the same pairs sharing the cache directory trains exactly like the first one.
    fresh = configs.replace(config, run_dir=str(tmp_path / "fresh"), features_dir=os.path.join(config.run.run_dir,
                                "features"))
    second = train_rm(fresh, resume=False)
    assert second["features"]["test"]["rows"] == 0 and second["eval"]["accuracy"] == first["eval"]["accuracy"]
    assert not os.path.exists(os.path.join(fresh.run.run_dir, "features"))
    # Another run on a subset of the same pairs, pointed at the same directory, computes nothing either.
    sub = configs.replace(config, run_dir=str(tmp_path / "sub"), features_dir=os.path.join(config.run.run_dir,
                              "features"), data=dataclasses.replace(config.data, max_train_pairs=16))
    assert train_rm(sub, resume=False)["features"]["train"]["reused_rows"] > 0


def test_cache_rows_match_the_model_and_other_settings_recompute(tmp_path):
    config = frozen_config(tmp_path, "sentence", "run", cache=True)
    rm, tok, end_id = build_reward_model(config)
    enc = encode(config, load_pairs(config.data, config.run.seed)[1][:3], tok, end_id)
    cache = fx.FeatureCache(str(tmp_path / "fx"), "sentence", fx.backbone_settings(config))
    feats = cache.features(rm, enc, batch_rows=4)
    assert feats.stats["rows"] == 6 and len(feats) == 3
    row = enc.rows[1][1]
    want = rm.end_hidden(row.ids[None], np.ones((1, len(row.ids)), np.int32), row.end_positions[None])[0]
    np.testing.assert_allclose(feats.hidden[feats.offsets[3]:feats.offsets[4]], want, rtol=1e-5, atol=1e-6)
    assert cache.features(rm, enc).stats["rows"] == 0
    other = fx.FeatureCache(str(tmp_path / "fx"), "sentence", fx.backbone_settings(configs.replace(config, seed=1)))
    assert other.path != cache.path and other.features(rm, enc).stats["rows"] == 6
    with pytest.raises(ValueError, match="response"):
        cache.features(rm, dataclasses.replace(enc, kind="response"))


def test_cache_features_needs_a_frozen_backbone(tmp_path):
    with pytest.raises(ValueError, match="cache_features.*freeze_backbone"):
        cfglib.load(RMConfig, os.path.join(ROOT, "configs/rm/tiny_cpu.yaml"), ["cache_features=true"])
