"""Memory estimates: exact state sizes from eval_shape, and the depth-extrapolated step peak within
10% of the compiled step's own memory analysis on the 8-device CPU mesh."""

import json
import os
import subprocess
import sys

from jaxalign import sharding
from jaxalign.models import ModelConfig
from jaxalign.plan import memory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_state_bytes_by_hand():
    config = ModelConfig.tiny(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                              num_kv_heads=2)  # tied embeddings, every matrix splits on fsdp=2 x tensor=2
    got = memory.state_bytes(config, (2, 2, 2))
    matrices = config.num_params() - (2 * config.num_layers + 1) * config.hidden_size  # minus norm scales
    norms = (2 * config.num_layers + 1) * config.hidden_size  # split on fsdp only
    assert got["params"] == 4 * (matrices // 4 + norms // 2)
    assert got["grads"] == got["params"]
    assert got["opt_state"] == 2 * got["params"] + 2 * 4  # mu, nu, and two int32 counts (Adam, lr schedule)


def test_estimate_within_ten_percent_of_the_compiled_step():
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    config = ModelConfig.tiny(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=5, num_heads=4,
                              num_kv_heads=2)
    step = memory.StepShape(kind="sft", rows=8, seq_len=64)
    est = memory.estimate(config, mesh, step)  # compiles 2- and 3-layer proxies
    actual = memory.compiled_bytes(config, mesh, step)
    assert est["method"].startswith("compiled 2- and 3-layer")
    assert abs(est["peak"] - actual["peak"]) <= 0.10 * actual["peak"], (est, actual)
    # the exact state sizes account for the step's arguments (the rest is the batch)
    state = est["params"] + est["opt_state"]
    assert state <= actual["argument"] <= state * 1.02 + 4 * 4 * 8 * 64


def test_script_prints_the_qwen3_4b_configs():
    for cfg in ("configs/sft/qwen3_4b_tpu.yaml", "configs/grpo/qwen3_4b_tpu.yaml"):  # --state-only: seconds
        out = subprocess.run([sys.executable, "scripts/estimate_memory.py", cfg, "--model-config",
                              "configs/model/qwen3_4b.yaml", "--devices", "16", "--state-only", "--hbm-gb", "95"],
                             cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "4.02B parameters" in out.stdout and "GiB per device" in out.stdout
        result = json.loads(out.stdout.split("RESULT ", 1)[1])
        per = result["per_device_bytes"]
        # fsdp over all 16 devices: f32 parameters are 4.02e9 * 4 / 16 bytes per device (norms replicate a bit)
        assert abs(per["params"] - ModelConfig.qwen3_4b().num_params() * 4 / 16) < 0.01 * per["params"]
        assert per["opt_state"] >= 2 * per["params"]
        assert result["phases"]["train_state"] == round((per["params"] + per["grads"] + per["opt_state"]) / 2**30, 3)
        assert result["fits"] == (per["peak"] <= 0.9 * 95e9)
