"""The compiled log-prob pass (GRPO old/ref log-probs): under the mesh, micro-batched, exact."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from flax import nnx

from jaxalign import models, sharding
from jaxalign.train.logprobs import compile_logprob_pass, target_logprobs


def test_values_equal_the_plain_pass_on_a_mesh():
    model = models.init_model(models.ModelConfig.tiny(vocab_size=64, num_layers=2), seed=1)
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 64, (16, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[3, :5] = 0  # a left-padded row
    batch = {"input_ids": ids, "attention_mask": mask, "positions": models.default_positions(mask)}
    want_logp, want_ent = target_logprobs(model, *(batch[k] for k in ("input_ids", "attention_mask", "positions")),
                                          with_entropy=True)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2), jax.devices()[:8])
    fn = compile_logprob_pass(graphdef, params, mesh, sharding.TRAIN_RULES, micro_batch=8)
    logp, ent = fn(params, batch)
    assert logp.sharding.spec[0] == ("data", "fsdp")
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(logp)[real], np.asarray(want_logp)[real], atol=1e-5)
    np.testing.assert_allclose(np.asarray(ent)[real], np.asarray(want_ent)[real], atol=1e-5)


def test_memory_on_32_devices_follows_the_micro_batch_not_the_batch():
    """Compiled on 32 fake devices (data 4 x fsdp 8): in micro-batches of 32 rows, 1024 rows need
    the same per-device memory as 256 (10% slack) and less than twice one micro-batch alone (the
    loop's carried outputs and buffers); the same 1024 rows in one pass need 4x more at least.
    Measured here: 17.3 MiB one micro-batch, 25.0 / 25.1 MiB for 256 / 1024 rows, 288 MiB one pass."""
    worker = os.path.join(os.path.dirname(__file__), "logprob_memory_worker.py")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, worker], capture_output=True, text=True, env=env, timeout=1200,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]
    mib = json.loads(done.stdout.strip().splitlines()[-1])
    one_micro = mib["32,None"]
    assert mib["1024,32"] <= 1.1 * mib["256,32"] and mib["1024,32"] < 2 * one_micro, mib
    assert mib["1024,None"] >= 4 * mib["1024,32"], mib
