"""The GRPO trainer: a trivially learnable task raises its reward; resume is exact."""

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
from jaxalign.rl.trainer import GRPOTrainer
from jaxalign.rollout import RolloutConfig
from jaxalign.sampling import SamplingConfig
from jaxalign.train import OptimConfig
from tests.configs import build

# Reward 1 when the response contains the answer ("7" for every prompt): trivially learnable, the
# policy only has to raise the probability of one token.
register_reward("says_answer", lambda text, answer: float(answer in text.replace("<|im_end|>", "")))


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpo")
    texts = [f"Say {i}. {i} {i + 1} ok yes no" for i in range(10)] * 20
    tok = tokenizer.train_sentencepiece(texts, str(d / "tok"), vocab_size=300)
    model = models.init_model(ModelConfig.tiny(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                               num_layers=2, num_heads=2, num_kv_heads=1), seed=0)
    models.save_hf(model, d / "policy", tokenizer=tok)
    problems = [data.MathProblem(id=f"p{i}", question=f"Say {i % 10}.", answer="7", source="toy")
                for i in range(40)]
    data.write_jsonl(d / "problems.jsonl", problems)
    return d


def config(d, run, **kw):
    base = dict(model=str(d / "policy"), task=TaskConfig(source="jsonl", path=str(d / "problems.jsonl"), num_train=32,
                                                          num_eval=8, holdout_fraction=0.2),
                prompts_per_step=4, group_size=8, mini_batches=2, steps=12, reward="says_answer", system_prompt="",
                rollout=RolloutConfig(max_response_tokens=6, max_tool_calls=0, steps_per_call=8,
                                      sampling=SamplingConfig(temperature=1.0)),
                optim=OptimConfig(learning_rate=3e-2, warmup_fraction=0.0, schedule="constant", weight_decay=0.0),
                eval=EvalConfig(k=4), run_dir=str(d / run), save_every=1000, save_trajectories_every=0,
                max_refill_rounds=0, mesh=sharding.MeshConfig(data=1, fsdp=1, tensor=1))
    base.update(kw)
    return build(GRPOConfig, **base)


def test_reward_rises_on_a_learnable_task(policy_dir):
    trainer = GRPOTrainer(config(policy_dir, "learn", steps=20))
    try:
        history = trainer.run(resume=False)["history"]
    finally:
        trainer.close()
    rewards = [h["reward"] for h in history]
    early, late = np.mean(rewards[:5]), np.mean(rewards[-5:])
    assert late > early + 0.15, rewards
    assert all(np.isfinite(h.get("loss", 0.0)) for h in history)
    trained = [h for h in history if "clip_frac" in h]
    assert trained and all(0 <= h["clip_frac"] <= 1 for h in trained)
    assert all(h["logp_mismatch"] < 1e-3 for h in trained)  # sampler and trainer agree on log-probs


def test_resume_is_exact(policy_dir):
    straight = GRPOTrainer(config(policy_dir, "straight", steps=4))
    try:
        straight.run(resume=False)
        want = jax.tree.leaves(nnx.state(straight.policy()))
    finally:
        straight.close()
    first = GRPOTrainer(config(policy_dir, "resumed", steps=4, save_every=2))
    try:  # stop after step 2, as if killed right after its checkpoint
        first.stages = (type(first.stages[0])(steps=2, max_response_tokens=6, max_tool_calls=0),)
        first.run(resume=False)
    finally:
        first.close()
    second = GRPOTrainer(config(policy_dir, "resumed", steps=4, save_every=2))
    try:
        assert second.run(resume=True)["steps"] == 4
        got = jax.tree.leaves(nnx.state(second.policy()))
    finally:
        second.close()
    for a, b in zip(want, got):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


register_reward("never", lambda text, answer: 0.0)


def test_a_step_without_any_group_with_signal_warns_and_leaves_the_policy_alone(policy_dir, caplog):
    trainer = GRPOTrainer(config(policy_dir, "no-signal", steps=2, reward="never", max_refill_rounds=1))
    try:
        before = jax.tree.leaves(nnx.state(trainer.policy()))
        with caplog.at_level("WARNING", logger="jaxalign.rl.trainer"):
            history = trainer.run(resume=False)["history"]
        after = jax.tree.leaves(nnx.state(trainer.policy()))
    finally:
        trainer.close()
    assert [h["updated"] for h in history] == [0.0, 0.0] and all(h["groups_kept"] == 0 for h in history)
    assert "GRPO step 1: all 8 groups had equal rewards (no learning signal) after 1 refill rounds" in caplog.text
    for a, b in zip(before, after):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert history[0]["sandbox_backend"] in (0.0, 1.0, 2.0)
