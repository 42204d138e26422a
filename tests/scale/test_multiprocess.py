"""Two processes on one machine (jax.distributed over a localhost coordinator, gloo CPU collectives)
train like one process, and their checkpoint restores in one process."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from jaxalign import config as cfglib
from jaxalign import data, sharding, tokenizer
from jaxalign.data.synthesis import synthesize_many
from jaxalign.models import ModelConfig
from jaxalign.sft.trainer import SFTConfig, SFTDataConfig, train_sft
from jaxalign.tools import PythonSandbox
from jaxalign.train import OptimConfig
from tests.configs import build

WORKER = os.path.join(os.path.dirname(__file__), "mp_sft_worker.py")
GRPO_WORKER = os.path.join(os.path.dirname(__file__), "mp_grpo_worker.py")
MESH = sharding.MeshConfig(data=2, fsdp=2, tensor=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("mp")
    problems = data.ArithmeticTask(num_steps=2, digits=3, seed=1).generate(12)
    with PythonSandbox() as sb:
        records = synthesize_many(problems, sb, "dense")
    data.write_jsonl(d / "dense.jsonl", records)
    texts = [m["content"] + "".join(c["arguments"]["code"] for c in m.get("tool_calls", []))
             for r in records for m in r.to_dict()["messages"]]
    tokenizer.train_sentencepiece(texts, str(d / "tok"), vocab_size=300)
    return d


def sft_config(d, run: str) -> SFTConfig:
    tok = tokenizer.load(d / "tok")
    init = ModelConfig.tiny(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                            num_kv_heads=2)
    return build(SFTConfig, init=init,
                     tokenizer=str(d / "tok"),
                     data=SFTDataConfig(trajectories=str(d / "dense.jsonl"), seq_len=384, packing=False),
                     optim=OptimConfig(learning_rate=1e-3, warmup_fraction=0.0, schedule="constant"),
                     batch_size=4, epochs=1, max_steps=3, save_every=3, log_every=1, run_dir=str(d / run),
                     mesh=MESH, export_hf=False)


def spawn_two(worker: str, spec: dict) -> list[str]:
    """Runs `worker` as processes 0 and 1 of one job; returns their logs (fails on a non-zero exit)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, worker, json.dumps(spec), str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = []
    try:
        for p in procs:
            # A deadline for a hang, not a speed bound: on a loaded 2-core machine two processes that
            # import JAX and compile under gloo take several times their quiet ~1 min.
            logs.append(p.communicate(timeout=1800)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i} failed:\n{log[-4000:]}"
    return logs


def flat_params(model) -> dict[str, np.ndarray]:
    return {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


def test_two_processes_train_like_one_and_restore_in_one(corpus):
    d = corpus
    out = d / "mp_params.npz"
    spec = {"config": cfglib.to_dict(sft_config(d, "two")), "port": free_port(), "out": str(out)}
    logs = spawn_two(WORKER, spec)
    for i, log in enumerate(logs):
        assert f"process {i} of 2: 3 steps, 4/8 devices" in log
    two = dict(np.load(out))
    for i in range(2):  # the multi-host pieces GRPO relies on, as each process saw them
        with open(f"{out}.{i}.json") as f:
            seen = json.load(f)
        assert seen["source_spans_hosts"] and seen["rollout_is_local"] and seen["rollout_values_equal"], seen
        assert seen["rollout_mesh"] == [1, 2, 2]  # this host's 4 devices, the training tensor size
        assert seen["rows"] == [4 * i, 4 * i + 4] and seen["batch_shape"] == [8, 3], seen
        assert seen["batch_sum"] == sum(range(24)) and seen["local_rows_back"], seen
        assert seen["gather_lists"] == [[0.0], [1.0, 1.0]] and seen["sum"] == 3.0, seen

    one = train_sft(sft_config(d, "one"))
    assert one["steps"] == 3
    ref = flat_params(one["model"])
    assert set(ref) == set(two)
    for k in ref:
        np.testing.assert_allclose(two[k], ref[k], atol=2e-5, rtol=1e-5, err_msg=k)
    init = flat_params(__import__("jaxalign.sft.trainer", fromlist=["load_policy"]).load_policy(
        "", sft_config(d, "x").init, "float32", 0))
    assert max(np.abs(ref[k] - init[k]).max() for k in ref) > 1e-3  # the steps really moved the weights

    # Only process 0 logged; both wrote their part of the step-3 checkpoint.
    assert sum(1 for _ in open(d / "two" / "metrics.jsonl")) == 3
    assert sorted(os.listdir(d / "two" / "checkpoints")) == ["3"]

    # The two-process checkpoint restores in one process, on a different mesh (1 device).
    shutil.copytree(d / "two", d / "restored")
    rcfg = sft_config(d, "restored")
    one_device = sharding.MeshConfig(data=1, fsdp=1, tensor=1)
    restored = train_sft(dataclasses.replace(rcfg, run=dataclasses.replace(rcfg.run, mesh=one_device)))
    assert restored["steps"] == 3
    got = flat_params(restored["model"])
    for k in ref:
        np.testing.assert_array_equal(got[k], two[k], err_msg=k)


@pytest.mark.slow
def test_two_process_grpo_hosts_roll_out_their_own_share(tmp_path):
    """Each host samples its half of the prompts on its own devices (own sandbox pool); the update is
    one global step, so both hosts end with the same policy and a sampler holding it."""
    from jaxalign import models
    from jaxalign.data.tasks import TaskConfig
    from jaxalign.eval import EvalConfig
    from jaxalign.rl.config import GRPOConfig
    from jaxalign.rollout import RolloutConfig
    from jaxalign.sampling import SamplingConfig

    tok = tokenizer.train_sentencepiece([f"Say {i}. {i} {i + 1} ok yes no" for i in range(10)] * 20,
                                        str(tmp_path / "tok"), vocab_size=300)
    models.save_hf(models.init_model(ModelConfig.tiny(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                                      num_layers=2, num_heads=4, num_kv_heads=2)),
                   tmp_path / "policy", tokenizer=tok)
    data.write_jsonl(tmp_path / "problems.jsonl", [data.MathProblem(id=f"p{i}", question=f"Say {i % 10}.",
                                                                    answer="7", source="toy") for i in range(20)])
    config = build(
        GRPOConfig,
        model=str(tmp_path / "policy"), task=TaskConfig(source="jsonl", path=str(tmp_path / "problems.jsonl"),
                                                        num_train=16, num_eval=4, holdout_fraction=0.2),
        prompts_per_step=4, group_size=4, mini_batches=2, steps=2, reward="mp_says_7", system_prompt="",
        rollout=RolloutConfig(max_response_tokens=6, max_tool_calls=0, steps_per_call=8,
                              sampling=SamplingConfig(temperature=1.0)),
        dynamic_sampling=False, optim=OptimConfig(learning_rate=1e-2, warmup_fraction=0.0, schedule="constant"),
        eval=EvalConfig(k=1), run_dir=str(tmp_path / "run"), save_every=2, save_trajectories_every=0,
        export_hf=False, sandbox_workers=1, mesh=MESH)
    out = tmp_path / "grpo"
    spawn_two(GRPO_WORKER, {"config": cfglib.to_dict(config), "port": free_port(), "out": str(out)})
    seen = []
    for i in range(2):
        with open(f"{out}.{i}.json") as f:
            seen.append(json.load(f))
    for s in seen:
        assert s["prompts_per_host"] == 2 and s["groups_seen"] == [4, 4]  # 2 groups per host, counted over both
        assert s["sampler_on_local_devices"] and s["sampler_embed_equals_policy"], s
        assert all(loss is not None and np.isfinite(loss) for loss in s["losses"])
    assert seen[0]["losses"] == seen[1]["losses"] and seen[0]["policy_checksum"] == seen[1]["policy_checksum"]
    assert sum(1 for _ in open(tmp_path / "run" / "metrics.jsonl")) == 2  # process 0 only
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]
