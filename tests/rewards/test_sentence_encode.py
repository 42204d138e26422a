"""Sentence splitting and END insertion: tricky texts, END positions, tokenizer and embedding extension."""

import numpy as np
import pytest

from jaxalign import tokenizer as toklib
from jaxalign.models import ModelConfig, forward, init_model
from jaxalign.rewards.sentence.encode import (
    END_TOKEN,
    add_end_token,
    encode_plain,
    encode_with_ends,
    prompt_ids,
    resize_embeddings,
    with_end_token,
)
from jaxalign.rewards.sentence.splitter import (
    get_splitter,
    line_splitter,
    register_splitter,
    rule_splitter,
    split_long,
    split_sentences,
)

TRICKY = [
    ("It costs $3.50 per pound. She buys 2.5 pounds.",
     ["It costs $3.50 per pound.", " She buys 2.5 pounds."]),
    ("Dr. Smith paid 3.5 dollars, i.e. a lot. Mr. Lee paid less!",
     ["Dr. Smith paid 3.5 dollars, i.e. a lot.", " Mr. Lee paid less!"]),
    ("Steps:\n1. Add 2 and 3.\n2. Multiply by 4.\n\nDone",
     ["Steps:", "\n1. Add 2 and 3.", "\n2. Multiply by 4.", "\n\nDone"]),
    ("- first item\n- second item. It has two sentences.",
     ["- first item", "\n- second item.", " It has two sentences."]),
    ("He said \"wait.\" Then he left? Yes. 5 + 5 = 10. Total: 1,000.25 apples.",
     ["He said \"wait.\"", " Then he left?", " Yes.", " 5 + 5 = 10.", " Total: 1,000.25 apples."]),
    ("J. Smith was at version 3.0.1 e.g. today.", ["J. Smith was at version 3.0.1 e.g. today."]),
    ("no punctuation at all", ["no punctuation at all"]),
    ("Trailing spaces.  \n", ["Trailing spaces.  \n"]),
]


@pytest.mark.parametrize("text,expected", TRICKY)
def test_rule_splitter_tricky_texts(text, expected):
    assert split_sentences(text) == expected
    assert "".join(expected) == text


def test_long_sentences_split_further_at_soft_breaks():
    s = "First we add the apples, then we add the pears; finally: we count everything we have."
    parts = split_long(s, 40)
    assert "".join(parts) == s and len(parts) == 3
    # Greedy: each piece runs to the last soft break that keeps it within 40 characters.
    assert parts == ["First we add the apples,", " then we add the pears; finally:", " we count everything we have."]
    assert all(len(p) <= 40 for p in parts[:-1])
    assert rule_splitter(s, max_chars=40) == parts
    assert split_long("x" * 50, 10) == ["x" * 50]  # no soft break: stays whole


def test_splitter_registry_and_coverage_check():
    assert split_sentences("a\nb\n\nc", "lines") == line_splitter("a\nb\n\nc") == ["a", "\nb", "\n\nc"]
    register_splitter("words", lambda t: [w for w in t.split(" ")])  # drops the spaces
    assert get_splitter("words")("a b") == ["a", "b"]
    with pytest.raises(ValueError, match="lost or changed"):
        split_sentences("a b", "words")
    with pytest.raises(KeyError, match="registered"):
        split_sentences("a", "nope")


@pytest.fixture(scope="module")
def tok():
    t = toklib.load("smollm2-135m-instruct")
    add_end_token(t)
    return t


def test_end_tokens_after_prompt_each_sentence_and_eos(tok):
    end_id = tok.convert_tokens_to_ids(END_TOKEN)
    assert end_id == add_end_token(tok)  # idempotent
    prompt = "How much?"
    response = "It costs 3.5 dollars. Dr. Smith paid.\n1. Add 2.\n2. Done!"
    enc = encode_with_ends(tok, prompt, response, end_id=end_id)
    ids = enc.ids.tolist()
    assert enc.sentences == ("It costs 3.5 dollars.", " Dr. Smith paid.", "\n1. Add 2.", "\n2. Done!")
    assert enc.num_ends == len(enc.sentences) + 2
    assert [i for i, t in enumerate(ids) if t == end_id] == enc.end_positions.tolist()
    head = prompt_ids(tok, prompt)
    assert ids[:len(head)] == head and enc.end_positions[0] == len(head)       # p_0 right after the prompt
    assert ids[-2:] == [tok.eos_token_id, end_id]                              # p_N right after EOS
    bounds = enc.end_positions.tolist()
    for k, sentence in enumerate(enc.sentences):                               # each segment is one sentence
        assert tok.decode(ids[bounds[k] + 1:bounds[k + 1]]) == sentence
    # token_ends: the last token of sentence k among the END-free response tokens.
    plain = [t for t in ids[len(head) + 1:] if t != end_id]
    assert plain[-1] == tok.eos_token_id and enc.token_ends[-1] == len(plain) - 1
    for k in range(len(enc.sentences)):
        assert plain[enc.token_ends[k]] == ids[bounds[k + 1] - 1]


def test_literal_end_text_is_not_an_end_token(tok):
    end_id = tok.convert_tokens_to_ids(END_TOKEN)
    enc = encode_with_ends(tok, "Say <END>.", "I say <END> now.", end_id=end_id)
    assert enc.num_ends == 3 and int((enc.ids == end_id).sum()) == 3
    plain = encode_plain(tok, "q", "I say <END> now.")
    assert end_id not in plain.tolist() and plain[-1] == tok.eos_token_id


def test_embedding_extension_keeps_old_rows_and_outputs():
    model = init_model(ModelConfig.tiny(vocab_size=40), seed=0)
    big = resize_embeddings(model, 43)
    assert big.config.vocab_size == 43
    old, new = np.asarray(model.embed.get_value()), np.asarray(big.embed.get_value())
    np.testing.assert_array_equal(new[:40], old)
    np.testing.assert_allclose(new[40:], np.broadcast_to(old.mean(0), (3, old.shape[1])), rtol=1e-5, atol=1e-7)
    ids = np.array([[1, 5, 7, 39]])
    np.testing.assert_allclose(np.asarray(forward(big, ids))[..., :40], np.asarray(forward(model, ids)), rtol=1e-5,
                               atol=1e-5)
    untied = init_model(ModelConfig.tiny(vocab_size=40, tie_embeddings=False), seed=0)
    grown = resize_embeddings(untied, 41)
    assert grown.lm_head.get_value().shape == (64, 41)
    with pytest.raises(ValueError, match="shrink"):
        resize_embeddings(model, 10)


def test_with_end_token_grows_the_model_to_the_tokenizer(tmp_path):
    texts = ["It costs 3.5 dollars. She pays.", "Dr. Smith adds 2 and 3."] * 20
    tok = toklib.train_sentencepiece(texts, str(tmp_path / "tok"), vocab_size=300)
    model = init_model(ModelConfig.tiny(vocab_size=len(tok)), seed=0)
    grown, end_id = with_end_token(model, tok)
    assert end_id == len(tok) - 1 and grown.config.vocab_size == len(tok)
