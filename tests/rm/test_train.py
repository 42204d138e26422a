"""Reward-model training runs: the trainer and CLI at small size, and (slow) beating chance on the benchmark."""

import dataclasses
import json
import os

import numpy as np
import pytest

from jaxalign import config as cfglib
from jaxalign.cli.main import main
from jaxalign.data import PreferencePair, write_jsonl
from jaxalign.models import ModelConfig
from jaxalign.rm.trainer import (
    RMConfig,
    RMDataConfig,
    evaluate_model,
    load_pairs,
    load_trained,
    train_rm,
)
from jaxalign.runlog import read_metrics
from jaxalign.train.optim import OptimConfig
from tests import configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["data.max_train_pairs=24", "data.max_test_pairs=12", "data.max_len=256", "data.length_multiple=256",
         "data.ends_multiple=16", "init.num_layers=1", "init.hidden_size=32", "init.intermediate_size=64",
         "init.num_heads=2", "init.num_kv_heads=1", "head_dim=8", "batch_size=8", "max_steps=3", "run.save_every=2",
         "run.log_every=1", "eval_batch_size=8"]


def small_config(tmp_path, kind: str) -> RMConfig:
    return cfglib.load(RMConfig, os.path.join(ROOT, "configs/rm/tiny_cpu.yaml"),
                       SMALL + [f"kind={kind}", f"run.run_dir={tmp_path / kind}"])


def test_sentence_rm_run_checkpoints_resumes_and_reloads(tmp_path):
    config = small_config(tmp_path, "sentence")
    summary = train_rm(config, resume=False)
    assert summary["steps"] == 3 and np.isfinite(summary["final_train"]["loss"])
    ev = summary["eval"]
    assert 0.0 <= ev["accuracy"] <= 1.0 and ev["n"] == summary["test_pairs"] > 0
    assert "localisation" in ev and set(ev["by_category"]) <= {"result", "operand", "final_answer"}
    rows = read_metrics(config.run.run_dir)
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3]
    assert any("eval/accuracy" in r for r in rows)
    # Resuming a finished run trains no further and evaluates the same weights.
    again = train_rm(config, resume=True)
    assert again["steps"] == 3 and again["eval"]["accuracy"] == ev["accuracy"]
    # The checkpoint reloads into a model that scores the test pairs exactly as at the end of training.
    loaded_config, rm, tok, end_id = load_trained(config.run.run_dir)
    assert loaded_config == config
    with open(os.path.join(config.run.run_dir, "eval.json")) as f:
        saved = json.load(f)
    test = {p.id: p for p in load_pairs(config.data, config.run.seed)[1]}
    result = evaluate_model(config, rm, tok, end_id, [test[i] for i in saved["ids"]])
    np.testing.assert_allclose(result["scores"]["chosen"], saved["scores"]["chosen"], rtol=1e-5, atol=1e-6)


def test_rm_cli_train_and_eval_with_user_pairs(tmp_path, capsys):
    run_dir = tmp_path / "response"
    assert main(["rm", "train", os.path.join(ROOT, "configs/rm/tiny_cpu.yaml"), *SMALL, f"run.run_dir={run_dir}",
                 "--kind", "response", "--no-resume"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["kind"] == "response"
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [PreferencePair(id=f"p{i}", prompt="What is 2 + 3?", chosen="2 + 3 = 5.",
                                       rejected=f"2 + 3 = {6 + i}.", category="toy") for i in range(3)])
    assert main(["rm", "eval", str(run_dir), "--pairs", str(pairs), "-o", str(tmp_path / "ev.json")]) == 0
    result = json.loads((tmp_path / "ev.json").read_text())
    assert result["n"] == 3 and set(result["by_category"]) == {"toy"} and "localisation" not in result
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "q", "chosen": "x", "rejected": "y"}\n{"id": "b", "prompt": "q", '
                   '"chosen": 3, "rejected": "y"}\n')
    assert main(["rm", "eval", str(run_dir), "--pairs", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "row 2" in err and "chosen" in err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sentence", "response"])
def test_tiny_rm_beats_chance_on_the_benchmark_test_split(tmp_path, kind):
    """Trained from scratch on the benchmark's train split (final-answer corruptions, short problems),
    scored on its test split: accuracy above chance by more than two binomial standard deviations."""
    from jaxalign import tokenizer as toklib
    from jaxalign.data import load_gsm8k, split_problems
    from jaxalign.rm.benchmark import gsm8k_response

    data = RMDataConfig(kinds=("final_answer",), max_len=192, length_multiple=192, ends_multiple=16)
    train_problems, _ = split_problems(load_gsm8k(strip_calculator=True), data.test_fraction, data.benchmark_seed)
    tok = toklib.train_sentencepiece([p.question for p in train_problems] + [gsm8k_response(p) for p in train_problems],
                                     str(tmp_path / "tok"), vocab_size=4000, split_digits=False)
    config = configs.build(RMConfig, kind=kind, init=ModelConfig.tiny(), tokenizer=tok.name_or_path, head_dim=32,
                           data=data,
                      batch_size=16, epochs=100, max_steps=200, eval_batch_size=32, save_every=10**6, log_every=50,
                      optim=OptimConfig(learning_rate=3e-3, weight_decay=0.0, warmup_fraction=0.05),
                      run_dir=str(tmp_path / kind))
    summary = train_rm(config, resume=False)
    ev = summary["eval"]
    assert ev["n"] >= 150
    assert ev["accuracy"] > 0.5 + 2 * np.sqrt(0.25 / ev["n"]), ev


def test_small_config_is_valid():
    config = RMConfig(init=ModelConfig.tiny(), data=RMDataConfig())
    assert dataclasses.replace(config, kind="response").kind == "response"
    with pytest.raises(ValueError, match="head_dim"):
        RMConfig(init=ModelConfig.tiny(), head_dim=7)
    with pytest.raises(ValueError, match="model"):
        RMConfig()
