"""Multi-turn rollouts: token-in/token-out against the chat template, loss masks, budgets, stats."""

import numpy as np
import pytest

from jaxalign import models, tokenizer
from jaxalign.models import ModelConfig
from jaxalign.rollout import RolloutConfig, RolloutEngine
from jaxalign.sampling import SamplingConfig
from jaxalign.tools import PythonSandbox
from tests.rollout.scripted import ScriptedSampler


@pytest.fixture(scope="module")
def tok():
    return tokenizer.load("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def tiny(tok):
    return models.init_model(ModelConfig.tiny(vocab_size=len(tok), num_layers=1, hidden_size=32,
                                              intermediate_size=32, num_heads=2, num_kv_heads=1))


@pytest.fixture(scope="module")
def sandbox():
    with PythonSandbox(timeout_s=3.0, memory_mb=512) as sb:
        yield sb


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_token_in_token_out_oracle_hermes(tok, tiny, sandbox):
    """The rollout's ids equal the template's tokenization of the same conversation, and the loss
    mask covers exactly the assistant-generated tokens."""
    call = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "x = 6 * 7\\nprint(x)"}}\n</tool_call>'
    call2 = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "x + 1"}}\n</tool_call>'
    conv = [{"role": "user", "content": "What is 6 times 7, plus one?"},
            {"role": "assistant", "content": call}, {"role": "tool", "content": "42\n"},
            {"role": "assistant", "content": call2}, {"role": "tool", "content": "43\n"},
            {"role": "assistant", "content": "The answer is \\boxed{43}."}]
    prompt = tok.apply_chat_template(conv[:1], add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tok.apply_chat_template(conv, tokenize=True, return_dict=False)
    eos = tok.eos_token_id
    # The assistant-produced spans of `full`: each assistant content and its end-of-turn token.
    spans = []
    for i, msg in enumerate(conv[1:], start=1):
        if msg["role"] != "assistant":
            continue
        head = tok.apply_chat_template(conv[:i], add_generation_prompt=True, tokenize=True, return_dict=False)
        n = len(encode(tok, msg["content"])) + 1
        assert full[:len(head)] == head
        spans.append((len(head), len(head) + n))
    script = [t for a, b in spans for t in full[a:b]]
    assert full[spans[-1][1] - 1] == eos
    engine = RolloutEngine(ScriptedSampler(tiny, [script]), tok, sandbox,
                           RolloutConfig(tool_format="hermes", max_response_tokens=256, steps_per_call=8))
    [traj] = engine.run([prompt])
    expected = full[: spans[-1][1]]  # the template adds a newline after the final end-of-turn
    assert prompt + traj.tokens == expected
    mask = np.zeros(len(expected), int)
    for a, b in spans:
        mask[a:b] = 1
    assert traj.loss_mask == mask[len(prompt):].tolist()
    assert traj.tool_calls == 2 and traj.tool_errors == 0 and traj.finish_reason == "eos"
    assert [t["output"] for t in traj.turns if t["kind"] == "tool"] == ["42\n", "43\n"]  # state persisted
    assert "\\boxed{43}" in traj.final_text


def test_markdown_format_masks_and_exact_tokens(tok, tiny, sandbox):
    policy1 = "Let me compute.\n```python\nimport math\nprint(math.factorial(5))\n```"
    policy2 = "\nSo the answer is \\boxed{120}."
    prompt = encode(tok, "<|im_start|>user\nWhat is 5!?<|im_end|>\n<|im_start|>assistant\n")
    script = encode(tok, policy1) + encode(tok, policy2) + [tok.eos_token_id]
    sampler = ScriptedSampler(tiny, [script])
    engine = RolloutEngine(sampler, tok, sandbox, RolloutConfig(tool_format="markdown", max_response_tokens=200,
                                                               steps_per_call=4))
    [traj] = engine.run([prompt])
    n1 = len(encode(tok, policy1))
    tool_ids = traj.tokens[n1:len(traj.tokens) - len(script) + n1]
    assert traj.tokens == script[:n1] + tool_ids + script[n1:]  # sampled ids kept verbatim
    assert tok.decode(tool_ids) == "\n```output\n120\n```\n"
    assert traj.loss_mask == [1] * n1 + [0] * len(tool_ids) + [1] * (len(script) - n1)
    assert traj.logprobs[n1:n1 + len(tool_ids)] == [0.0] * len(tool_ids)
    assert traj.tool_calls == 1 and traj.finish_reason == "eos"


def test_policy_text_after_a_call_is_rolled_back(tok, tiny, sandbox):
    """A row that keeps generating past the closing fence (hallucinating an output) is cut back to
    the end of the call before the real output is appended."""
    call = "```python\nprint(2 + 2)\n```"
    hallucinated = "\n```output\n5\n```\nThe answer is"
    script = (encode(tok, call) + encode(tok, hallucinated) + [tok.eos_token_id]  # all dropped but the call
              + encode(tok, "The answer is \\boxed{4}") + [tok.eos_token_id])
    prompt = encode(tok, "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    sampler = ScriptedSampler(tiny, [script])
    engine = RolloutEngine(sampler, tok, sandbox, RolloutConfig(max_response_tokens=200, steps_per_call=64))
    engine.stops = engine.stops.__class__.build([tok.eos_token_id])  # no pause at fences: force overrun
    [traj] = engine.run([prompt])
    text = tok.decode(traj.tokens)
    assert text.startswith(call + "\n```output\n4\n```\n")
    assert "5" not in text.split("```output")[1].split("```")[0]
    assert text.endswith("The answer is \\boxed{4}<|im_end|>") and traj.finish_reason == "eos"
    assert len(traj.tokens) == len(traj.loss_mask) == len(traj.logprobs)


def test_budgets_and_error_stats(tok, tiny, sandbox):
    block = lambda code: encode(tok, f"```python\n{code}\n```")  # noqa: E731
    many_calls = sum((block(f"print({i})") for i in range(5)), []) + [tok.eos_token_id]
    errors = block("1/0") + block("import time\ntime.sleep(30)") + encode(tok, "done") + [tok.eos_token_id]
    long = encode(tok, "word " * 400)
    prompt = encode(tok, "<|im_start|>user\nGo<|im_end|>\n<|im_start|>assistant\n")
    sampler = ScriptedSampler(tiny, [many_calls, errors, long])
    engine = RolloutEngine(sampler, tok, PythonSandbox(timeout_s=3.0),  # sleep(30) times out; print under load does not
                           RolloutConfig(max_tool_calls=3, max_response_tokens=120, steps_per_call=16))
    a, b, c = engine.run([prompt] * 3)
    assert a.tool_calls == 3 and a.hit_tool_budget and a.finish_reason == "tool_budget"
    assert b.tool_calls == 2 and b.tool_errors == 1 and b.tool_timeouts == 1 and b.finish_reason == "eos"
    assert "ZeroDivisionError" in b.turns[1]["output"] and "TimeoutError" in b.turns[3]["output"]
    assert c.hit_token_budget and c.finish_reason == "token_budget" and len(c.tokens) <= 120
    assert engine.timings["generate_s"] > 0 and engine.timings["tool_s"] > 0


def test_tool_output_is_truncated_to_budget(tok, tiny, sandbox):
    script = encode(tok, "```python\nprint('x' * 5000)\n```") + [tok.eos_token_id]
    prompt = encode(tok, "<|im_start|>user\nGo<|im_end|>\n<|im_start|>assistant\n")
    engine = RolloutEngine(ScriptedSampler(tiny, [script]), tok, sandbox,
                           RolloutConfig(max_tool_output_tokens=32, max_response_tokens=400))
    [traj] = engine.run([prompt])
    tool_tokens = traj.loss_mask.count(0)
    assert tool_tokens <= 32 and "[output truncated]" in traj.text


def test_real_model_rollout_runs_end_to_end(tok, sandbox, smollm2_gguf):
    """SmolLM2-135M with a few-shot markdown prompt: whatever code it writes is executed.

    The examples are earlier chat turns (one instruction-following turn per example): a 135M model
    copies that pattern reliably, while examples inlined in one user message rarely produce a call.
    """
    from jaxalign.sampling import Sampler

    model = models.load(smollm2_gguf)
    history = []
    for expr, answer in [("12*13", "156"), ("2**5", "32")]:
        history += [{"role": "user", "content": f"What is {expr}? Use Python."},
                    {"role": "assistant", "content": f"```python\nprint({expr})\n```\n```output\n{answer}\n```\n"
                                                     f"The answer is \\boxed{{{answer}}}."}]
    questions = ["What is 123*45? Use Python.", "What is 2**10? Use Python.", "What is 1000-37? Use Python."]
    prompts = [tok.apply_chat_template(history + [{"role": "user", "content": q}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False) for q in questions]
    engine = RolloutEngine(Sampler(model, tok), tok, sandbox,
                           RolloutConfig(max_response_tokens=96, max_tool_calls=2, steps_per_call=16,
                                         sampling=SamplingConfig(temperature=0.7)))
    trajs = engine.run(prompts, seed=0)
    assert len(trajs) == 3
    for t in trajs:
        assert t.finish_reason in ("eos", "tool_budget", "token_budget")
        assert len(t.tokens) == len(t.loss_mask) == len(t.logprobs) <= 96
        assert all(lp <= 0 for lp, m in zip(t.logprobs, t.loss_mask) if m)
    assert sum(t.tool_calls for t in trajs) >= 2, [t.text for t in trajs]
    assert any("```output\n5535" in t.text or "```output\n1024" in t.text or "```output\n963" in t.text
               for t in trajs), [t.text for t in trajs]
