"""Reward-model modules and the Bradley-Terry step: heads vs independent numpy, padding, training moves."""

import functools

import jax
import numpy as np
import optax
from flax import nnx

from jaxalign.models import ModelConfig, default_positions, init_model
from jaxalign.rewards.sentence.aggregate import aggregate
from jaxalign.rewards.sentence.model import ResponseRewardModel, SentenceRewardModel
from jaxalign.rm.step import (
    make_rm_step,
    pair_loss,
    response_pair_scores,
    sentence_pair_scores,
    split_trainable,
)
from jaxalign.train.state import init_train_state


def sentence_model(m=8):
    return SentenceRewardModel(init_model(ModelConfig.tiny(vocab_size=40), seed=0), head_dim=m, rngs=nnx.Rngs(1))


def test_sentence_model_heads_match_numpy():
    rm = sentence_model()
    ids = np.array([[5, 6, 39, 7, 8, 39, 9, 39, 0, 0], [5, 39, 7, 39, 0, 0, 0, 0, 0, 0]], np.int32)
    mask = (np.arange(10) < np.array([[8], [4]])).astype(np.int32)
    pos = np.array([[2, 5, 7], [1, 3, 0]], np.int32)
    valid = np.array([[1, 1, 1], [1, 1, 0]], bool)
    r, s = rm(ids, mask, pos, valid)
    h = np.asarray(rm.backbone.hidden_states(ids, default_positions(mask), mask), np.float64)
    w = {k: np.asarray(getattr(rm, k).get_value(), np.float64) for k in
         ("value_w", "value_b", "query_w", "query_b", "key_w", "key_b")}
    for b, last in ((0, 7), (1, 3)):
        hb = h[b, pos[b]]
        values = hb @ w["value_w"] + w["value_b"]
        keys = hb @ w["key_w"] + w["key_b"]
        query = h[b, last] @ w["query_w"] + w["query_b"]  # at the last valid END
        r_ref, s_ref = aggregate(values[None], query[None], keys[None], valid[b:b + 1])
        np.testing.assert_allclose(np.asarray(r)[b], np.asarray(r_ref)[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(s)[b], np.asarray(s_ref)[0], rtol=1e-4, atol=1e-5)
    r_sum, _ = rm(ids, mask, pos, valid, use_attention=False)  # the ablation: R = sum of values
    values = np.einsum("bnd,d->bn", h[np.arange(2)[:, None], pos], w["value_w"]) + w["value_b"]
    np.testing.assert_allclose(np.asarray(r_sum), (values * valid).sum(-1), rtol=1e-4, atol=1e-5)


def test_response_model_reads_the_last_real_token_under_any_padding():
    rm = ResponseRewardModel(init_model(ModelConfig.tiny(vocab_size=40), seed=0), rngs=nnx.Rngs(1))
    row = [5, 6, 7, 8, 9]
    right = np.array([row + [0, 0, 0]], np.int32)
    left = np.array([[0, 0, 0] + row], np.int32)
    m_right = (right > 0).astype(np.int32)
    m_left = (left > 0).astype(np.int32)
    alone = rm(np.array([row], np.int32), np.ones((1, 5), np.int32))
    np.testing.assert_allclose(np.asarray(rm(right, m_right)), np.asarray(alone), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(rm(left, m_left)), np.asarray(alone), rtol=1e-5)
    h = np.asarray(rm.backbone.hidden_states(np.array([row]), default_positions(np.ones((1, 5))), np.ones((1, 5))))
    expected = h[0, -1] @ np.asarray(rm.value_w.get_value()) + float(rm.value_b.get_value())
    np.testing.assert_allclose(np.asarray(alone), [expected], rtol=1e-5)


def pair_batch():
    ids = np.array([[[5, 39, 6, 39, 2, 39], [5, 39, 7, 39, 8, 39]], [[5, 39, 9, 39, 0, 0], [5, 39, 2, 39, 0, 0]]],
                   np.int32)
    mask = (ids > 0).astype(np.int32)
    pos = np.array([[[1, 3, 5], [1, 3, 5]], [[1, 3, 0], [1, 3, 0]]], np.int32)
    valid = pos > 0
    valid[..., 0] = True
    return {"input_ids": ids, "attention_mask": mask, "end_positions": pos, "end_valid": valid,
            "pair_weight": np.ones((2,), np.float32)}


def test_no_attention_logit_scale_is_one_over_max_sentences():
    batch = pair_batch()
    batch["end_valid"][0, 1, 2] = False  # pair 0: 3 vs 2 END slots
    out = sentence_pair_scores(sentence_model(), batch, use_attention=False)
    np.testing.assert_allclose(np.asarray(out["scale"]), [1 / 3, 1 / 2])
    out = sentence_pair_scores(sentence_model(), batch)
    np.testing.assert_allclose(np.asarray(out["scale"]), [1.0, 1.0])
    assert out["sentence_rewards"].shape == (2, 2, 3)


def run_steps(model, scores_fn, batch, freeze, steps=15):
    graphdef, params, frozen = split_trainable(model, freeze)
    opt = optax.adam(1e-2)
    step = jax.jit(make_rm_step(graphdef, opt, functools.partial(pair_loss, scores_fn)))
    state = init_train_state(params, opt, frozen)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses, params


def test_bt_step_lowers_the_loss_for_both_kinds():
    batch = pair_batch()
    _, losses, _ = run_steps(sentence_model(), sentence_pair_scores, batch, freeze=False)
    assert losses[-1] < 0.5 * losses[0]
    rm = ResponseRewardModel(init_model(ModelConfig.tiny(vocab_size=40), seed=0), rngs=nnx.Rngs(1))
    _, losses, _ = run_steps(rm, response_pair_scores, batch, freeze=False)
    assert losses[-1] < 0.5 * losses[0]


def test_frozen_backbone_gets_no_update():
    state, losses, params = run_steps(sentence_model(), sentence_pair_scores, pair_batch(), freeze=True, steps=5)
    assert losses[-1] < losses[0]
    assert all(p[0] != "backbone" for p, _ in nnx.to_flat_state(state.params))
    assert any(p[0] == "backbone" for p, _ in nnx.to_flat_state(state.frozen))
    before = dict(nnx.to_flat_state(params))
    after = dict(nnx.to_flat_state(state.params))
    assert any(not np.allclose(before[k].get_value(), after[k].get_value()) for k in before)


def test_dense_rl_rewards_from_a_sentence_model():
    from jaxalign import tokenizer as toklib
    from jaxalign.rewards.sentence.encode import encode_with_ends, with_end_token
    from jaxalign.rewards.sentence.scoring import score_sentences

    tok = toklib.load("smollm2-135m-instruct")
    backbone, end_id = with_end_token(init_model(ModelConfig.tiny(vocab_size=len(tok)), seed=0), tok)
    rm = SentenceRewardModel(backbone, head_dim=8, rngs=nnx.Rngs(1))
    prompts, responses = ["What is 2 + 3?", "Hi"], ["2 + 3 = 5. The answer is 5.", "Hello!\nHow are you?"]
    out = score_sentences(rm, tok, end_id, prompts, responses, batch_size=4)
    for o, p, r in zip(out, prompts, responses):
        enc = encode_with_ends(tok, p, r, end_id=end_id)
        alone = rm(enc.ids[None], np.ones((1, len(enc.ids)), np.int32), enc.end_positions[None],
                   np.ones((1, enc.num_ends), bool))
        np.testing.assert_allclose(o["score"], float(alone[0][0]), rtol=1e-4, atol=1e-5)
        s = np.asarray(alone[1])[0]
        np.testing.assert_allclose(o["sentence_rewards"], s[1:], rtol=1e-4, atol=1e-5)  # s_0 dropped
        assert len(o["sentence_rewards"]) == len(o["sentences"]) + 1  # sentences, then the end-of-turn slot
        expected = np.zeros(int(enc.token_ends[-1]) + 1)
        expected[enc.token_ends] = s[1:]
        np.testing.assert_allclose(o["dense"], expected, rtol=1e-4, atol=1e-5)
