"""The endogenous reward inside GRPO: token rewards equal the formula, and a run trains on them."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import models
from jaxalign.rewards.endogenous import token_rewards
from jaxalign.rl.advantages import token_advantages
from jaxalign.rl.config import ModelRewardConfig
from jaxalign.rl.model_reward import ModelReward
from jaxalign.rl.trainer import GRPOTrainer
from jaxalign.rollout.types import Trajectory
from tests.rl.test_trainer import config, policy_dir  # noqa: F401  (module-scoped fixture)


@pytest.mark.parametrize("alpha,terminal", [(1.0, "zero"), (0.5, "bootstrap")])
def test_token_rewards_are_the_formula_on_policy_tokens_plus_the_outcome(policy_dir, alpha, terminal):  # noqa: F811
    from jaxalign import tokenizer

    tok = tokenizer.load(str(policy_dir / "policy"))
    cfg = ModelRewardConfig(kind="endogenous", alpha=alpha, terminal=terminal, coef=0.5, outcome_coef=2.0,
                            batch_size=4)
    mr = ModelReward(cfg, str(policy_dir / "policy"), tok)
    rng = np.random.default_rng(0)
    trajs = []
    for n_prompt, n_resp in [(5, 4), (3, 7), (6, 1)]:
        ids = rng.integers(3, len(tok), n_prompt + n_resp).tolist()
        mask = [1] * n_resp
        if n_resp > 3:
            mask[1] = mask[2] = 0  # tool-output tokens: no reward
        trajs.append(Trajectory(prompt_tokens=ids[:n_prompt], tokens=ids[n_prompt:], loss_mask=mask,
                                logprobs=[0.0] * n_resp))
    outcome = np.array([1.0, 0.0, 1.0])
    got = mr.token_rewards(trajs, outcome)
    model = models.load(str(policy_dir / "policy"))
    for t, g, o in zip(trajs, got, outcome):
        ids = jnp.asarray([t.prompt_tokens + t.tokens], jnp.int32)
        resp = jnp.asarray([[0] * len(t.prompt_tokens) + [1] * len(t.tokens)], jnp.int32)
        r = np.asarray(token_rewards(models.forward(model, ids), ids, resp, alpha=alpha, terminal=terminal))[0]
        want = 0.5 * r[len(t.prompt_tokens):] * np.asarray(t.loss_mask)
        want[-1] += 2.0 * o
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)
    # advantages: the shared token-advantage rule over the group (here one group of 3)
    adv, sums = mr.advantages(trajs, outcome, 3, "unbiased")
    for a, b in zip(adv, token_advantages(got, 3, mode="dense")):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(sums, [g.sum() - 2.0 * o for g, o in zip(got, outcome)], rtol=1e-6)


def test_grpo_trains_on_dense_endogenous_rewards(policy_dir):  # noqa: F811
    cfg = config(policy_dir, "endo", steps=2, save_trajectories_every=1,
                 model_reward=ModelRewardConfig(kind="endogenous", mode="dense", batch_size=8))
    trainer = GRPOTrainer(cfg)
    try:
        before = np.asarray(trainer.policy().embed[...]).copy()
        history = trainer.run(resume=False)["history"]
        after = np.asarray(trainer.policy().embed[...])
    finally:
        trainer.close()
    assert len(history) == 2 and all("model_reward" in h and np.isfinite(h["model_reward"]) for h in history)
    # token rewards differ between samples, so every group carries signal and the policy is updated
    assert all(h["groups_kept"] == h["groups_seen"] for h in history) and all("clip_frac" in h for h in history)
    assert not np.allclose(before, after)
    rows = [json.loads(line) for line in (policy_dir / "endo" / "trajectories" / "step_000002.jsonl").open()]
    assert rows and all(isinstance(r["advantage"], float) for r in rows)
