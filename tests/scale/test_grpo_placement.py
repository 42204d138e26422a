"""GRPO with the policy, the sampler and the reference model on three different meshes."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxalign import data, models, sharding, tokenizer
from jaxalign.data.tasks import TaskConfig
from jaxalign.eval import EvalConfig
from jaxalign.models import ModelConfig
from jaxalign.rewards import register_reward
from jaxalign.rl.config import GRPOConfig
from jaxalign.rl.step import GRPOLossConfig
from jaxalign.rl.trainer import GRPOTrainer
from jaxalign.rollout import RolloutConfig
from jaxalign.sampling import SamplingConfig
from jaxalign.train import OptimConfig
from tests.configs import build

register_reward("scale_says_7", lambda text, answer: float(answer in text))


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpo_mesh")
    tok = tokenizer.train_sentencepiece([f"Say {i}. {i} {i + 1} ok yes no" for i in range(10)] * 20, str(d / "tok"),
                                        vocab_size=300)
    model = models.init_model(ModelConfig.tiny(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                               num_layers=2, num_heads=4, num_kv_heads=2), seed=0)
    models.save_hf(model, d / "policy", tokenizer=tok)
    data.write_jsonl(d / "problems.jsonl", [data.MathProblem(id=f"p{i}", question=f"Say {i % 10}.", answer="7",
                                                             source="toy") for i in range(20)])
    return d


def test_policy_sampler_and_reference_on_their_own_meshes(policy_dir):
    d = policy_dir
    config = build(
        GRPOConfig,
        model=str(d / "policy"), task=TaskConfig(source="jsonl", path=str(d / "problems.jsonl"), num_train=16,
                                                 num_eval=4, holdout_fraction=0.2),
        prompts_per_step=4, group_size=4, mini_batches=2, steps=2, reward="scale_says_7", system_prompt="",
        rollout=RolloutConfig(max_response_tokens=6, max_tool_calls=0, steps_per_call=8,
                              sampling=SamplingConfig(temperature=1.0)),
        loss=GRPOLossConfig(kl_coef=0.1), dynamic_sampling=False, micro_batches=2,  # accumulated: 1 row per device
        optim=OptimConfig(learning_rate=1e-2, warmup_fraction=0.0, schedule="constant", weight_decay=0.0),
        eval=EvalConfig(k=1), run_dir=str(d / "run"), save_every=1000, save_trajectories_every=0, export_hf=False,
        mesh=sharding.MeshConfig(data=2, fsdp=2, tensor=2),
        rollout_mesh=sharding.MeshConfig(data=1, fsdp=1, tensor=2),
        reference_mesh=sharding.MeshConfig(data=1, fsdp=4, tensor=1))
    trainer = GRPOTrainer(config)
    try:
        history = trainer.run(resume=False)["history"]
        p = trainer.placement
        assert p.train_mesh.devices.shape == (2, 2, 2)
        assert p.rollout_mesh.devices.shape == (1, 1, 2)
        assert p.reference_mesh.devices.shape == (1, 4, 1)
        rollout_devices = set(p.rollout_mesh.devices.flat)
        assert trainer.sampler.mesh == p.rollout_mesh and trainer.sampler.rules == sharding.ROLLOUT_RULES
        assert {dev for x in jax.tree.leaves(trainer.sampler.weights) for dev in x.devices()} <= rollout_devices
        q_ref = trainer.ref_params["layers"]["attn"]["q_proj"].get_value()
        assert q_ref.sharding.mesh == p.reference_mesh and q_ref.sharding.spec[1] == "fsdp"
        q = trainer.state.params["layers"]["attn"]["q_proj"].get_value()
        assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
        # After the last update the sampler holds exactly the trained weights (resharded, not stale).
        policy = trainer.policy()
        np.testing.assert_array_equal(np.asarray(trainer.sampler.weights.embed), np.asarray(policy.embed.get_value()))
        assert not np.array_equal(np.asarray(policy.embed.get_value()),
                                  np.asarray(nnx.state(models.load(d / "policy")).embed.get_value()))
    finally:
        trainer.close()
    assert len(history) == 2
    for h in history:
        assert np.isfinite(h["loss"]) and "kl_ref" in h
        assert h["logp_mismatch"] < 1e-3  # the rollout-mesh sampler and the training mesh agree on log-probs
