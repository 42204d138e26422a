"""The batched endogenous-reward scorer: equals the formula on full logits; sharded equals unsharded."""

import numpy as np
import pytest

from jaxalign import sharding
from jaxalign import tokenizer as toklib
from jaxalign.models import ModelConfig, forward, init_model
from jaxalign.rewards.endo_scorer import EndogenousScorer
from jaxalign.rewards.endogenous import token_rewards, verifier_logprob

PROMPTS = ["What is 2 + 3?", "Name a colour.", "Count to three, please.", "Hi", "Why?", "Add 10 and 20."]
RESPONSES = ["2 + 3 = 5. The answer is 5.", "Blue.", "One, two, three.", "Hello! How can I help you today?",
             "Because.", "10 + 20 = 30.\nThe answer is 30."]


@pytest.fixture(scope="module")
def setup():
    tok = toklib.load("smollm2-135m-instruct")
    model = init_model(ModelConfig.tiny(vocab_size=len(tok)), seed=0)
    return model, tok


def reference(model, ids, start, alpha, terminal):
    """`token_rewards` on the full logits of one unpadded row, restricted to the response."""
    ids = np.asarray(ids)[None]
    mask = (np.arange(ids.shape[1]) >= start)[None].astype(np.int32)
    r = token_rewards(forward(model, ids), ids, mask, alpha=alpha, terminal=terminal)
    return np.asarray(r)[0, start:]


@pytest.mark.parametrize("alpha,terminal", [(1.0, "zero"), (0.6, "bootstrap")])
def test_scorer_equals_the_formula_on_full_logits(setup, alpha, terminal):
    model, tok = setup
    scorer = EndogenousScorer(model, tok, alpha=alpha, terminal=terminal, batch_size=4, length_multiple=32, chunk=16)
    got = scorer.token_rewards(PROMPTS, RESPONSES)  # 6 pairs: two batches of 4, sorted by length
    scores = scorer.score(PROMPTS, RESPONSES)
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        ids, start = scorer.encode(p, r)
        assert ids[-1] == tok.eos_token_id and ids[:start] == scorer.prompt_ids(p)
        ref = reference(model, ids, start, alpha, terminal)
        assert got[i].shape == ref.shape
        np.testing.assert_allclose(got[i], ref, rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(scores[i], ref.sum(), rtol=2e-4, atol=2e-3)


def test_system_prompt_conditions_the_reward(setup):
    model, tok = setup
    plain = EndogenousScorer(model, tok, batch_size=2)
    principled = EndogenousScorer(model, tok, batch_size=2, system_prompt="Prefer short answers.")
    p_ids = principled.prompt_ids("Hi")
    assert tok.encode("Prefer short answers.", add_special_tokens=False)[0] in p_ids
    assert p_ids != plain.prompt_ids("Hi")
    assert not np.allclose(plain.score(["Hi"], ["Hello."]), principled.score(["Hi"], ["Hello."]))


def test_sharded_scoring_equals_unsharded(setup):
    model, tok = setup
    single = EndogenousScorer(model, tok, alpha=0.9, batch_size=4)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = EndogenousScorer(model, tok, alpha=0.9, batch_size=4, mesh=mesh)
    np.testing.assert_allclose(sharded.score(PROMPTS, RESPONSES), single.score(PROMPTS, RESPONSES), rtol=1e-4,
                               atol=1e-3)
    with pytest.raises(ValueError, match="multiple"):
        EndogenousScorer(model, tok, batch_size=3, mesh=mesh)


def test_verifier_special_case(setup):
    model, tok = setup
    scorer = EndogenousScorer(model, tok, alpha=0.5, batch_size=2)
    got = scorer.verify(["What is 2 + 3?"], ["5"])
    ids = scorer.prompt_ids("What is 2 + 3?", [{"role": "assistant", "content": "5"},
                                               {"role": "user", "content": "Is the answer correct?"}])
    last = forward(model, np.asarray(ids)[None])[:, -1]
    yes = tok.encode("Yes", add_special_tokens=False)[0]
    np.testing.assert_allclose(got, np.asarray(verifier_logprob(last, yes, 0.5)), rtol=1e-4)


def test_scorer_rejects_mismatched_inputs(setup):
    model, tok = setup
    with pytest.raises(ValueError, match="prompts"):
        EndogenousScorer(model, tok).score(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="alpha"):
        EndogenousScorer(model, tok, alpha=0.0)


def test_token_in_scoring_for_rollouts(setup):
    """Rollouts hand ids, not text: the token-in path equals the text path."""
    model, tok = setup
    scorer = EndogenousScorer(model, tok, batch_size=2)
    encoded = [scorer.encode(p, r) for p, r in zip(PROMPTS[:3], RESPONSES[:3])]
    for a, b in zip(scorer.token_rewards_ids(encoded), scorer.token_rewards(PROMPTS[:3], RESPONSES[:3])):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="prompt token"):
        scorer.token_rewards_ids([([5, 6, 7], 0)])
