"""Evaluation: unbiased pass@k, avg@k scoring, and `jaxalign eval` end to end on a real (tiny) policy."""

import itertools
import json
import math

import pytest

from jaxalign import data, models, tokenizer
from jaxalign.cli.main import main
from jaxalign.eval import EvalConfig, evaluate, format_table, pass_at_k
from jaxalign.models.config import ModelConfig
from jaxalign.rollout.types import Trajectory


@pytest.mark.parametrize("n,c,k", [(4, 0, 1), (4, 1, 1), (4, 2, 2), (5, 3, 2), (6, 1, 4), (3, 3, 3)])
def test_pass_at_k_is_the_subset_probability(n, c, k):
    """pass@k = P(a random k-subset of the n samples holds a correct one), by enumeration."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    expected = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(expected)
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


class ScriptedEngine:
    """Returns fixed answer texts per prompt (a test double for RolloutEngine's interface)."""

    def __init__(self, tok, answers):
        self.tokenizer, self.answers, self.calls = tok, answers, 0

    def run(self, prompts, seed=0):
        out = []
        for p in prompts:
            question = self.tokenizer.decode(p)
            key = next(q for q in self.answers if q in question)
            text = self.answers[key][self.calls % len(self.answers[key])]
            self.calls += 1
            out.append(Trajectory(prompt_tokens=list(p), tokens=[1, 2, 3], loss_mask=[1, 0, 1], logprobs=[-1, 0, -1],
                                  tool_calls=text.count("```python"), text=text, final_text=text, finish_reason="eos"))
        return out


def test_avg_and_pass_at_k_by_hand():
    tok = tokenizer.load("smollm2-135m-instruct")
    problems = [data.MathProblem(id="a", question="What is 2+3?", answer="5", source="toy"),
                data.MathProblem(id="b", question="What is 7*6?", answer="42", source="toy")]
    # k=2, batch_size=1 so samples of one problem come from successive calls: a -> (right, wrong), b -> (wrong, wrong)
    engine = ScriptedEngine(tok, {"2+3": ["```python\nprint(2+3)\n```\n\\boxed{5}", "\\boxed{6}"],
                                  "7*6": ["\\boxed{41}", "no box 42"]})
    r = evaluate(engine, problems, EvalConfig(k=2, batch_size=1), system_prompt="")
    assert r["avg@2"] == pytest.approx(0.25) and r["pass@2"] == pytest.approx(0.5)
    assert r["pass@1"] == pytest.approx(0.25)
    assert r["tool_calls_per_traj"] == pytest.approx(0.25)
    assert [p["accuracy"] for p in r["problems"]] == [0.5, 0.0]
    assert [s["answer"] for s in r["problems"][1]["samples"]] == ["41", None]
    assert "avg@k" in format_table({"toy": r}) and "0.250" in format_table({"toy": r})
    assert math.isclose(r["response_tokens"], 3.0)


def test_eval_cli_runs_a_policy_on_two_sets(tmp_path, capsys):
    texts = [f"What is {i}+{i}? The answer is {2 * i}." for i in range(30)] * 5
    tok = tokenizer.train_sentencepiece(texts, str(tmp_path / "tok"), vocab_size=300)
    model = models.init_model(ModelConfig.tiny(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                               num_layers=1, num_heads=2, num_kv_heads=1), seed=0)
    models.save_hf(model, tmp_path / "policy", tokenizer=tok)
    problems = [data.MathProblem(id=f"p{i}", question=f"What is {i}+{i}?", answer=str(2 * i), source="toy")
                for i in range(5)]
    data.write_jsonl(tmp_path / "problems.jsonl", problems)
    (tmp_path / "eval.yaml").write_text(f"""
model: {tmp_path / 'policy'}
system_prompt: ""
sets:
  - name: toy
    task: {{source: jsonl, path: {tmp_path / 'problems.jsonl'}}}
    split: all
  - name: arith
    task: {{source: arithmetic, num_train: 4, num_eval: 3, num_steps: 2, digits: 2}}
eval: {{k: 2, batch_size: 8}}
rollout: {{max_response_tokens: 12, max_tool_calls: 1}}
""")
    out = tmp_path / "out" / "eval.json"
    assert main(["eval", str(tmp_path / "eval.yaml"), f"output={out}"]) == 0
    printed = capsys.readouterr().out
    assert "toy" in printed and "arith" in printed and "avg@k" in printed
    summary = json.loads(out.read_text())
    assert summary["k"] == 2 and summary["max_response_tokens"] == 12
    assert summary["sets"]["toy"]["n_problems"] == 5 and summary["sets"]["arith"]["n_problems"] == 3
    for r in summary["sets"].values():
        assert len(r["problems"]) == r["n_problems"]
        assert all(len(p["samples"]) == 2 for p in r["problems"])
        assert all(s["tokens"] <= 12 for p in r["problems"] for s in p["samples"])
        assert 0.0 <= r["avg@2"] <= r["pass@2"] <= 1.0


def test_eval_config_errors_name_the_field(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model: x\nsets:\n  - name: a\n    split: test\n")
    assert main(["eval", str(tmp_path / "bad.yaml")]) == 2
    assert "split must be eval, train or all" in capsys.readouterr().err
