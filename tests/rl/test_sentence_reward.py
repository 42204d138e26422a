"""GRPO with a trained sentence-level reward model as the model reward (model_reward.kind=sentence)."""

import numpy as np

from jaxalign.rl.config import ModelRewardConfig
from jaxalign.rl.trainer import GRPOTrainer
from tests.rewards.test_protocol import sentence_end_tokens, tiny_rm  # noqa: F401  (module-scoped fixture)
from tests.rl.test_trainer import config, policy_dir  # noqa: F401  (module-scoped fixture)


def test_grpo_trains_on_sentence_rm_rewards(policy_dir, tiny_rm):  # noqa: F811
    # The policy's own (SentencePiece) vocabulary differs from the RM's: the reward re-tokenises the text.
    cfg = config(policy_dir, "sentence", steps=2,
                 model_reward=ModelRewardConfig(kind="sentence", model=tiny_rm, mode="dense", batch_size=8))
    trainer = GRPOTrainer(cfg)
    try:
        history = trainer.run(resume=False)["history"]
        kept = [t for t, _, _ in trainer._last_trajs]
        scored = {id(t): r for t, r in trainer.model_reward.last_scored}
    finally:
        trainer.close()
    assert len(history) == 2
    assert all(np.isfinite(v) for h in history for v in h.values() if isinstance(v, float))
    assert all("model_reward" in h for h in history)
    assert any("clip_frac" in h for h in history)  # at least one update ran
    reward = trainer.model_reward.reward
    assert kept and all(id(t) in scored for t in kept)
    for t in kept:  # the trained-on trajectories: rewards only on sentence ends (and the end-of-turn slot)
        r = scored[id(t)]
        # the policy's own text of each token (random byte tokens decode to U+FFFD: plain prefix decodes differ)
        text, cum = reward.response_text(t)
        ends = set(sentence_end_tokens(list(cum), text)) | {len(t.tokens) - 1}
        assert set(np.flatnonzero(r)) <= ends, (text, r)
        assert np.count_nonzero(r) >= 1
