"""Memory of the GRPO programs besides the train step (`jaxalign.plan.programs`): the rollout's
prepare / prefill / append / decode on a rollout mesh, compiled with abstract inputs, and the
estimator script's phases and verdict."""

import dataclasses
import json
import os
import subprocess
import sys

import jax

from jaxalign import sharding
from jaxalign.models import ModelConfig
from jaxalign.plan import programs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_rollout_programs_hold_the_cache_by_hand_and_extrapolate_in_depth():
    config = ModelConfig.tiny(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=5, num_heads=4,
                              num_kv_heads=2, kv_cache_dtype="bfloat16")
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
    shape = programs.RolloutShape(rows=8, cache_size=256, prompt_len=64, append_len=32, max_tokens=64)
    est = programs.rollout_bytes(config, mesh, shape)  # 2- and 3-layer proxies
    # k and v, per layer: rows split over fsdp (2), kv heads over tensor (2), bf16
    by_hand = 2 * 5 * (8 // 2) * (2 // 2) * 256 * config.head_dim * 2
    assert est["kv_cache"] == by_hand
    for name in ("prefill", "append", "decode"):  # each program holds the weights and the whole state
        assert est[name] >= est["weights"] + est["kv_cache"], (name, est)
    actual = programs.in_depth(lambda c: programs.rollout_bytes(c, mesh, shape), config, proxy_layers=(5, 6))
    for name, value in actual.items():
        assert abs(est[name] - value) <= 0.10 * value, (name, est, actual)


def test_logprob_pass_grows_with_the_micro_batch_not_the_batch():
    config = ModelConfig.tiny(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                              num_kv_heads=2)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    at = lambda rows, micro: programs.logprob_pass_bytes(config, mesh, rows, 256, micro)["logprob_pass"]  # noqa: E731
    small, large, whole = at(16, 8), at(64, 8), at(64, 64)
    # 48 more rows per 4 batch shards: 3 int32 inputs and 2 float32 outputs, and at most one copy of
    # the inputs regrouped into micro-batches; nothing that scales with the activations
    rows_io = (64 - 16) // 4 * 256 * (3 * 4 + 2 * 4)
    assert large - small <= 2 * rows_io, (small, large)
    assert whole - large > 2 * (large - small), (large, whole)  # activations follow the micro-batch


def test_script_phases_peak_and_verdict_on_a_small_grpo_config():
    cmd = [sys.executable, "scripts/estimate_memory.py", "configs/grpo/smollm2_135m_cpu.yaml", "run.mesh.fsdp=-1",
           "--model-config", "configs/model/tiny.yaml", "--devices", "8", "--hosts", "2", "--target", "cpu"]
    runs = {}
    for hbm in ("0.001", "100"):
        out = subprocess.run([*cmd, "--hbm-gb", hbm], cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[hbm] = json.loads(out.stdout.split("RESULT ", 1)[1])
    result = runs["100"]
    assert set(result["phases"]) == {"train_step", "logprob_pass", "rollout_prepare", "rollout_prefill",
                                     "rollout_append", "rollout_decode"}
    assert result["peak_gib"] == max(result["phases"].values()) == result["ours"]
    assert result["fits"] and not runs["0.001"]["fits"]
    assert result["unit"] == "GiB per device" and abs(result["baseline"] - 90e9 / 2**30) < 1e-3
    assert result["ratio"] == round(result["ours"] / result["baseline"], 3)
    per = result["per_device_bytes"]
    assert per["rollout_decode"] >= per["params"] + per["opt_state"] + per["rollout_kv_cache"]


def test_kv_cache_dtype_reaches_the_estimate():
    base = ModelConfig.tiny(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                            num_kv_heads=2)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
    shape = programs.RolloutShape(rows=4, cache_size=128, prompt_len=32, append_len=16, max_tokens=32)
    f32 = programs.rollout_bytes(base, mesh, shape)["kv_cache"]
    bf16 = programs.rollout_bytes(dataclasses.replace(base, kv_cache_dtype="bfloat16"), mesh, shape)["kv_cache"]
    assert f32 == 2 * bf16
