"""The reward protocol: outcome, endogenous and sentence rewards as [B, T] over response tokens."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import config as cfglib
from jaxalign import models
from jaxalign import tokenizer as toklib
from jaxalign.config import FieldError
from jaxalign.rewards import EndogenousReward, OutcomeReward
from jaxalign.rewards.endo_scorer import EndogenousScorer
from jaxalign.rewards.endogenous import token_rewards
from jaxalign.rewards.sentence.encode import encode_with_ends
from jaxalign.rewards.sentence.scoring import score_sentences
from jaxalign.rewards.sentence.splitter import split_sentences
from jaxalign.rl.config import ModelRewardConfig
from jaxalign.rm.trainer import RMConfig, train_rm
from jaxalign.rollout.types import Trajectory
from tests.rl.test_trainer import policy_dir  # noqa: F401  (module-scoped fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_RM = ["data.max_train_pairs=16", "data.max_test_pairs=8", "data.max_len=256", "data.length_multiple=256",
           "data.ends_multiple=16", "init.num_layers=1", "init.hidden_size=32", "init.intermediate_size=64",
           "init.num_heads=2", "init.num_kv_heads=1", "head_dim=8", "batch_size=8", "max_steps=2", "run.save_every=2",
           "run.log_every=1", "eval_batch_size=8"]


def train_tiny_rm(run_dir) -> str:
    """A sentence RM trained for 2 steps from scratch (configs/rm/tiny_cpu.yaml, shrunk): its run directory."""
    config = cfglib.load(RMConfig, os.path.join(ROOT, "configs/rm/tiny_cpu.yaml"),
                         TINY_RM + ["kind=sentence", f"run.run_dir={run_dir}"])
    train_rm(config, resume=False)
    return str(run_dir)


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    return train_tiny_rm(tmp_path_factory.mktemp("rm") / "sentence")


def decoded_lengths(tok, tokens):
    """The length of each decoded prefix tokens[:i + 1] (plain `decode`, independently of the reward)."""
    return [len(tok.decode(tokens[:i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False))
            for i in range(len(tokens))]


def sentence_end_tokens(lengths, text, splitter="rules"):
    """The first token whose prefix (of text length `lengths[i]`) reaches each sentence's end."""
    out, end = [], 0
    for s in split_sentences(text, splitter):
        end += len(s)
        out.append(next(i for i, n in enumerate(lengths) if n >= end))
    return out


def test_outcome_reward_sits_on_the_last_response_token():
    trajs = [Trajectory(prompt_tokens=[1, 2], tokens=[5, 6, 7], loss_mask=[1, 0, 1], text="so \\boxed{4}"),
             Trajectory(prompt_tokens=[1], tokens=[5], loss_mask=[1], text="x", final_text="\\boxed{3}"),
             Trajectory(prompt_tokens=[1], tokens=[5, 6], loss_mask=[1, 1], text="\\boxed{5}")]
    r = OutcomeReward("strict")(trajs, answers=["4", "3", "4"])
    assert r.dtype == np.float32 and r.shape == (3, 3)
    np.testing.assert_array_equal(r, [[0, 0, 1], [1, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="answers"):
        OutcomeReward("strict")(trajs)


def test_endogenous_reward_is_the_formula_on_policy_tokens(policy_dir):  # noqa: F811
    path = str(policy_dir / "policy")
    tok, model = toklib.load(path), models.load(path, dtype="float32")
    reward = EndogenousReward(EndogenousScorer(model, tok, alpha=0.5, terminal="bootstrap", batch_size=4))
    rng = np.random.default_rng(0)
    trajs = []
    for n_prompt, n_resp in [(5, 4), (3, 7), (6, 1)]:
        ids = rng.integers(3, len(tok), n_prompt + n_resp).tolist()
        mask = [1] * n_resp
        if n_resp > 3:
            mask[1] = mask[2] = 0  # tool-output tokens: no reward
        trajs.append(Trajectory(prompt_tokens=ids[:n_prompt], tokens=ids[n_prompt:], loss_mask=mask))
    got = reward(trajs)
    assert got.shape == (3, 7) and got.dtype == np.float32
    for b, t in enumerate(trajs):
        ids = jnp.asarray([t.prompt_tokens + t.tokens], jnp.int32)
        resp = jnp.asarray([[0] * len(t.prompt_tokens) + [1] * len(t.tokens)], jnp.int32)
        r = np.asarray(token_rewards(models.forward(model, ids), ids, resp, alpha=0.5, terminal="bootstrap"))[0]
        np.testing.assert_allclose(got[b, :len(t.tokens)], r[len(t.prompt_tokens):] * np.asarray(t.loss_mask),
                                   rtol=1e-4, atol=1e-4)
        assert np.all(got[b, len(t.tokens):] == 0)  # zero padding past the response


def test_sentence_reward_lands_on_sentence_ends_with_the_rms_own_rewards(tiny_rm):
    from jaxalign.rm.trainer import sentence_reward

    reward = sentence_reward(tiny_rm, toklib.load("smollm2-135m-instruct"), batch_size=4)
    rm, tok, end_id = reward.rm, reward.rm_tokenizer, reward.end_id
    prompts = ["What is 2 + 3?", "Say hi.", "What is 6 * 7?"]
    texts = ["2 + 3 = 5. The answer is 5.", "Hello!\nHow are you?", "6 * 7 = 42. So the answer is 42."]
    trajs = []
    for text in texts:  # the policy shares the RM's vocabulary here: response ids + end-of-turn
        ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
        trajs.append(Trajectory(prompt_tokens=[1, 2, 3], tokens=ids, loss_mask=[1] * len(ids)))
    got = reward(trajs, prompts=prompts)
    assert got.shape == (3, max(len(t.tokens) for t in trajs)) and got.dtype == np.float32
    scored = score_sentences(rm, tok, end_id, prompts, texts, batch_size=4)
    for b, (t, text, s) in enumerate(zip(trajs, texts, scored)):
        # the sentence ends, then the end-of-turn slot
        ends = sentence_end_tokens(decoded_lengths(tok, t.tokens[:-1]), text) + [len(t.tokens) - 1]
        assert len(set(ends)) == len(ends) == len(s["sentence_rewards"])
        want = np.zeros(got.shape[1], np.float32)
        want[ends] = s["sentence_rewards"]
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5)  # nonzero only on sentence ends
        assert np.count_nonzero(got[b]) == len(ends)
        # s_0 (the prompt) dropped: the rewards sum to v_last - v_0 (scoring.py)
        enc = encode_with_ends(tok, prompts[b], text, end_id=end_id)
        values = np.asarray(rm.heads(enc.ids[None], np.ones((1, len(enc.ids)), np.int32), enc.end_positions[None],
                                     np.ones((1, enc.num_ends), bool))[0])[0]
        np.testing.assert_allclose(got[b].sum(), values[-1] - values[0], rtol=1e-4, atol=1e-5)
    # A sentence ending on a tool-output token moves to the nearest preceding policy token.
    t = trajs[0]
    first_end = sentence_end_tokens(decoded_lengths(tok, t.tokens[:-1]), texts[0])[0]
    mask = list(t.loss_mask)
    mask[first_end] = mask[first_end - 1] = 0
    tool = Trajectory(prompt_tokens=t.prompt_tokens, tokens=t.tokens, loss_mask=mask)
    moved = reward([tool], prompts=prompts[:1])[0]
    want = got[0, :len(t.tokens)].copy()
    want[first_end - 2], want[first_end] = want[first_end], 0.0
    np.testing.assert_allclose(moved, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="prompt"):
        reward(trajs)


def test_sentence_kind_needs_the_rm_run_directory():
    with pytest.raises(FieldError, match="model.*run directory"):
        ModelRewardConfig(kind="sentence")
    assert ModelRewardConfig(kind="sentence", model="runs/rm").model == "runs/rm"
