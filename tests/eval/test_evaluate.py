"""Evaluation: unbiased pass@k, avg@k scoring, and `jaxalign eval` end to end on a real (tiny) policy."""

import io
import itertools
import json
import math

import pytest

from jaxalign import config, data, models, tokenizer
from jaxalign.cli.main import main
from jaxalign.config import ConfigError
from jaxalign.eval import EvalConfig, evaluate, format_table, pass_at_k
from jaxalign.eval.run import EvalRunConfig
from jaxalign.models.config import ModelConfig
from jaxalign.rollout.engine import RolloutEngine
from jaxalign.rollout.types import RolloutConfig, Trajectory
from jaxalign.runlog import Progress
from jaxalign.sampling import Sampler, SamplingConfig


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

    config = RolloutConfig()

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
    assert r["problems"][0]["question"] == "What is 2+3?"
    first, second = r["problems"][0]["samples"]
    assert first == {"text": "```python\nprint(2+3)\n```\n\\boxed{5}", "answer": "5", "reward": 1.0, "correct": True,
                     "tool_calls": 1, "tool_errors": 0, "tool_timeouts": 0, "finish": "eos", "tokens": 3}
    assert (second["text"], second["reward"], second["correct"]) == ("\\boxed{6}", 0.0, False)
    assert r["temperature"] == 1.0  # the engine's rollout temperature: no override
    json.dumps(r, allow_nan=False)  # the results file is strict JSON


def test_eval_temperature_is_checked():
    assert EvalConfig().temperature is None and EvalConfig(temperature=0.0).temperature == 0.0
    with pytest.raises(ConfigError, match=r"temperature: must be >= 0, got -0.5"):
        EvalConfig(temperature=-0.5)
    assert config.from_dict(EvalConfig, {"temperature": 0}).temperature == 0


def test_temperature_override_samples_like_a_greedy_engine_and_leaves_the_engine_alone():
    tok = tokenizer.load("smollm2-135m-instruct")
    model = models.init_model(ModelConfig.tiny(vocab_size=len(tok), num_layers=1, hidden_size=32,
                                               intermediate_size=32, num_heads=2, num_kv_heads=1))
    problems = [data.MathProblem(id=str(i), question=f"What is {i}+{i}?", answer=str(2 * i), source="toy")
                for i in range(3)]

    def engine(temperature):  # max_tool_calls=0: a call ends the trajectory, no sandbox needed
        rollout = RolloutConfig(max_response_tokens=12, max_tool_calls=0, steps_per_call=8,
                                sampling=SamplingConfig(temperature=temperature, top_p=0.9))
        return RolloutEngine(Sampler(model, tok), tok, None, rollout)

    def texts(result):
        return [s["text"] for p in result["problems"] for s in p["samples"]]

    sampling, greedy = engine(1.0), engine(0.0)
    before = sampling.config
    overridden = evaluate(sampling, problems, EvalConfig(k=2, batch_size=4, temperature=0.0), system_prompt="")
    reference = evaluate(greedy, problems, EvalConfig(k=2, batch_size=4), system_prompt="")
    assert texts(overridden) == texts(reference)
    assert overridden["temperature"] == reference["temperature"] == 0.0
    assert sampling.config is before and sampling.config.sampling.temperature == 1.0  # the training engine
    sampled = evaluate(sampling, problems, EvalConfig(k=2, batch_size=4), system_prompt="")
    assert sampled["temperature"] == 1.0 and texts(sampled) != texts(reference)  # the override did something
    with pytest.raises(ValueError, match="tool format"):
        sampling.with_config(RolloutConfig(tool_format="hermes"))


def test_progress_counts_samples_and_tokens(monkeypatch):
    monkeypatch.delenv("JAXALIGN_NO_PROGRESS", raising=False)
    tok = tokenizer.load("smollm2-135m-instruct")
    problems = [data.MathProblem(id=str(i), question=f"What is {i}+1?", answer=str(i + 1), source="toy")
                for i in range(3)]
    engine = ScriptedEngine(tok, {f"{i}+1": [f"\\boxed{{{i + 1}}}", "\\boxed{0}"] for i in range(3)})
    out = io.StringIO()
    with Progress(total=6, desc="eval toy", unit="sample", file=out) as bar:
        r = evaluate(engine, problems, EvalConfig(k=2, batch_size=4), system_prompt="", progress=bar)
    assert bar.tokens == 6 * 3  # every sample's tokens, both batches (4 + 2 samples)
    assert "eval toy" in out.getvalue() and "6/6" in out.getvalue()
    assert "acc=0.5" in out.getvalue() and r["avg@2"] == pytest.approx(0.5)


def test_eval_cli_runs_a_policy_on_two_sets(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JAXALIGN_NO_PROGRESS", raising=False)
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
eval: {{k: 2, batch_size: 8, temperature: 0.5}}
rollout: {{max_response_tokens: 12, max_tool_calls: 1}}
""")
    out = tmp_path / "out" / "eval.json"
    assert main(["eval", str(tmp_path / "eval.yaml"), f"output={out}"]) == 0
    printed, err = capsys.readouterr()
    assert "eval toy" in err and "10/10" in err and "eval arith" in err  # one progress bar per set
    assert "toy" in printed and "arith" in printed and "avg@k" in printed
    summary = json.loads(out.read_text())
    assert summary["k"] == 2 and summary["max_response_tokens"] == 12
    assert summary["temperature"] == 0.5  # eval.temperature, not the rollout's 1.0
    assert summary["sets"]["toy"]["n_problems"] == 5 and summary["sets"]["arith"]["n_problems"] == 3
    for r in summary["sets"].values():
        assert len(r["problems"]) == r["n_problems"]
        assert all(len(p["samples"]) == 2 for p in r["problems"])
        assert all(s["tokens"] <= 12 for p in r["problems"] for s in p["samples"])
        assert all(isinstance(s["text"], str) and s["finish"] for p in r["problems"] for s in p["samples"])
        assert 0.0 <= r["avg@2"] <= r["pass@2"] <= 1.0 and r["temperature"] == 0.5


def test_eval_config_errors_name_the_field(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model: x\nsets:\n  - name: a\n    split: test\n")
    assert main(["eval", str(tmp_path / "bad.yaml")]) == 2
    assert "sets[0].split: must be eval, train or all, got 'test'" in capsys.readouterr().err


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the eval run gets as far as loading a tokenizer or a model."""
    def refuse(*args, **kwargs):
        pytest.fail("the model or tokenizer was loaded before the input was checked")

    monkeypatch.setattr(models, "load", refuse)
    monkeypatch.setattr(tokenizer, "load", refuse)


def write_eval_yaml(tmp_path) -> str:
    path = tmp_path / "eval.yaml"
    path.write_text("model: some/policy\nsets:\n  - name: a\n    task: {source: arithmetic, num_eval: 2}\n")
    return str(path)


@pytest.mark.parametrize("where", ["parent_is_a_file", "is_a_directory"])
def test_unwritable_output_fails_before_the_model_loads(tmp_path, capsys, no_model_load, where):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "eval.json" if where == "parent_is_a_file" else tmp_path
    assert main(["eval", write_eval_yaml(tmp_path), f"output={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err
    assert (f"{tmp_path / 'file'} is a file, not a directory" if where == "parent_is_a_file"
            else "is a directory") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.yaml", "file"]  # no probe file left behind


def test_output_check_leaves_a_writable_directory_clean(tmp_path):
    from jaxalign.runlog.files import check_output, write_text_atomic

    target = tmp_path / "new" / "deeper" / "eval.json"
    check_output(str(target))
    assert list((tmp_path / "new" / "deeper").iterdir()) == []  # the parent is made, the probe removed
    write_text_atomic(str(target), json.dumps({"a": 1}))
    assert json.loads(target.read_text()) == {"a": 1} and len(list(target.parent.iterdir())) == 1


@pytest.mark.parametrize("override,message", [
    ("eval.k=0", "eval.k: must be > 0, got 0"),
    ("eval.batch_size=-1", "eval.batch_size: must be > 0, got -1"),
    ("model=''", "model: must name a checkpoint, got ''"),
    ("compute_dtype=float8", "compute_dtype: must be one of ['float32', 'bfloat16', 'float16'], got 'float8'"),
    ("sandbox_workers=0", "sandbox_workers: must be > 0, got 0"),
    ("eval.reward=nope", "eval.reward: unknown reward 'nope'"),
])
def test_bad_eval_values_give_one_line_naming_the_key(tmp_path, capsys, no_model_load, override, message):
    assert main(["eval", write_eval_yaml(tmp_path), override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_set_configs_are_checked_up_front():
    base = {"model": "m", "sets": [{"name": "a"}, {"name": "b", "limit": -1}]}
    with pytest.raises(ConfigError, match=r"^sets\[1\]\.limit: must be >= 0, got -1$"):
        config.from_dict(EvalRunConfig, base)
    with pytest.raises(ConfigError, match=r"^sets: set names must be unique, repeated: \['a'\]$"):
        config.from_dict(EvalRunConfig, {"model": "m", "sets": [{"name": "a"}, {"name": "b"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match=r"^sets\[0\]\.name: must not be empty"):
        config.from_dict(EvalRunConfig, {"model": "m", "sets": [{"name": " "}]})
    with pytest.raises(ConfigError, match=r"^sets: must list at least one set"):
        config.from_dict(EvalRunConfig, {"model": "m", "sets": []})


def test_an_empty_problem_set_fails_before_the_model_loads(tmp_path, capsys, no_model_load, monkeypatch):
    from jaxalign.eval import run

    # Which task settings yield no problems is the data loaders' business; the check is that none -> error.
    monkeypatch.setattr(run, "problems_of", lambda s: [])
    assert main(["eval", write_eval_yaml(tmp_path)]) == 2
    assert "sets[0] (a): no problems in split 'eval' (limit 0)" in capsys.readouterr().err
