"""`jaxalign demo` end to end at a reduced size: data, tokenizer, SFT, GRPO, evaluation, report, ablation."""

import dataclasses
import json
import os

from jaxalign import config
from jaxalign.cli.main import main
from jaxalign.demo import DemoConfig
from jaxalign.demo.pipeline import eval_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_evaluation_samples_at_eval_temperature():
    e = eval_config(DemoConfig(eval_temperature=0.0, eval_k=3, seed=2))
    assert (e.temperature, e.k, e.seed) == (0.0, 3, 9)
    # The defaults evaluate at the rollout temperature, as before eval_temperature was wired in: same numbers.
    shipped = config.load(DemoConfig, os.path.join(ROOT, "configs", "demo", "default.yaml"))
    for cfg in (DemoConfig(), shipped):
        assert cfg.eval_temperature == cfg.rl_temperature == 1.0


def test_demo_pipeline_runs_at_reduced_size_with_the_ablation(tmp_path, capsys):
    cfg = dataclasses.replace(DemoConfig().smaller(32), run_dir=str(tmp_path / "demo"), rl_max_response_tokens=64,
                              teacher_error_rate=0.5)
    overrides = [f"{f.name}={json.dumps(getattr(cfg, f.name))}" for f in dataclasses.fields(cfg)
                 if f.name != "model" and getattr(cfg, f.name) != getattr(DemoConfig(), f.name)]
    assert main(["demo", *overrides, "--ablation"]) == 0
    printed = capsys.readouterr().out
    run = tmp_path / "demo"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("sft_accuracy", "rl_accuracy", "tool_calls_per_traj", "minutes", "ablation"):
        assert key in summary, key
    assert set(summary["tool_calls_per_traj"]) == {"before", "after"}
    assert set(summary["ablation"]) == {"dense", "sparse"}
    assert 0.0 <= summary["sft_accuracy"] <= 1.0 and 0.0 <= summary["rl_accuracy"] <= 1.0
    for style in ("dense", "sparse"):
        assert (run / "data" / f"{style}.jsonl").stat().st_size > 0
        assert (run / f"sft-{style}" / "hf" / "model.safetensors").exists()
        assert (run / f"grpo-{style}" / "hf" / "model.safetensors").exists()
        metrics = [json.loads(line) for line in (run / f"grpo-{style}" / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics] == list(range(1, cfg.rl_steps + 1))
        assert all("train/reward" in m and "train/tool_calls_per_traj" in m for m in metrics)
        for name in (f"rl_{style}.png", f"sft_{style}.png"):
            assert os.path.getsize(run / name) > 5000, name  # a rendered figure, not an empty file
        before = json.loads((run / f"grpo-{style}" / "eval_before.json").read_text())
        assert before["n_problems"] == cfg.eval_problems and before["k"] == cfg.eval_k
        assert before["temperature"] == cfg.eval_temperature
    assert f"at temperature {cfg.eval_temperature} on" in summary["eval_protocol"]
    report = (run / "report.md").read_text()
    assert "Ablation: dense vs sparse" in report and "![rl_dense.png](rl_dense.png)" in report
    assert str(run / "report.md") in printed
    for style in ("dense", "sparse"):
        page = run / f"view_{style}.html"
        assert summary["viewer"][style] == str(page) and str(page) in printed
        assert page.stat().st_size > 10_000 and "<script" in page.read_text()
    # dense cold-start trajectories call the tool once per step, sparse ones once in all; the flawed
    # teacher's share stops early and boxes an intermediate (wrong) result, in both styles alike
    dense, sparse = ([json.loads(line) for line in (run / "data" / f"{s}.jsonl").read_text().splitlines()]
                     for s in ("dense", "sparse"))
    assert len(dense) == len(sparse) > 0
    flawed = [bool(r["meta"].get("teacher_error")) for r in dense]
    assert flawed == [bool(r["meta"].get("teacher_error")) for r in sparse] and any(flawed) and not all(flawed)
    for d, s, bad in zip(dense, sparse, flawed):
        calls = [sum(len(m.get("tool_calls") or []) for m in r["messages"]) for r in (d, s)]
        assert calls == ([1, 1] if bad else [cfg.num_steps, 1])
        assert d["final_answer"] == s["final_answer"]
