"""The sentence-level reward model (arXiv 2503.04793): splitter, END tokens, heads, aggregation, training.

    from jaxalign.rewards.sentence import aggregate, SentenceRewardModel, split_sentences
"""

from jaxalign.rewards.sentence.aggregate import (
    aggregate,
    bradley_terry_loss,
    dense_sentence_rewards,
    sentence_rewards,
    sum_of_values,
)
from jaxalign.rewards.sentence.encode import END_TOKEN, encode_with_ends, with_end_token
from jaxalign.rewards.sentence.model import ResponseRewardModel, SentenceRewardModel
from jaxalign.rewards.sentence.splitter import SPLITTERS, register_splitter, rule_splitter, split_sentences

__all__ = ["END_TOKEN", "SPLITTERS", "ResponseRewardModel", "SentenceRewardModel", "aggregate", "bradley_terry_loss",
           "dense_sentence_rewards", "encode_with_ends", "register_splitter", "rule_splitter", "sentence_rewards",
           "split_sentences", "sum_of_values", "with_end_token"]
