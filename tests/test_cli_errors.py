"""Every anticipated mistake gives one line naming the field, file or flag, exit code 2, and writes nothing."""

import json
import os

import pytest

from jaxalign import data, models, tokenizer
from jaxalign.cli.main import main
from jaxalign.models import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SFT_CFG = os.path.join(ROOT, "configs/sft/smollm2_135m_cpu.yaml")
GRPO_CFG = os.path.join(ROOT, "configs/grpo/smollm2_135m_cpu.yaml")
RM_CFG = os.path.join(ROOT, "configs/rm/tiny_cpu.yaml")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small tokenizer (with and without a chat template), a tiny model, trajectories and pairs."""
    d = tmp_path_factory.mktemp("mistakes")
    problems = data.ArithmeticTask(num_steps=2, digits=2, seed=0).generate(4)
    from tests.data.helpers import trajectory_for

    data.write_jsonl(d / "dense.jsonl", [trajectory_for(p) for p in problems])
    (d / "empty.jsonl").write_text("")
    texts = [m["content"] for r in data.read_jsonl(d / "dense.jsonl", "trajectories") for m in r.to_dict()["messages"]]
    tok = tokenizer.train_sentencepiece(texts, str(d / "tok"), vocab_size=300)
    bare = tokenizer.load(d / "tok")
    bare.chat_template = None
    bare.save_pretrained(d / "tok-no-template")
    assert not tokenizer.load(d / "tok-no-template").chat_template
    models.save_hf(models.init_model(ModelConfig.tiny(vocab_size=64)), str(d / "small-vocab"), tokenizer=tok)
    pair = {"id": "p0", "prompt": "2+3?", "chosen": "It is 5.", "rejected": "It is 6."}
    (d / "pairs-empty-side.jsonl").write_text(json.dumps(pair) + "\n" + json.dumps({**pair, "id": "p1",
                                                                                     "rejected": " "}) + "\n")
    (d / "a-file").write_text("not a directory")
    return d


def one_line_error(capsys, argv, *needles):
    """Runs the CLI; asserts exit code 2 and a single stderr line holding every needle."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's errors (bad flags) exit from inside the parser
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def sft(files, *overrides):
    return ["sft", SFT_CFG, f"run.run_dir={files / 'runs' / 'sft'}", *overrides]


@pytest.mark.parametrize("overrides, needles", [
    ([], ["data.trajectories: runs/data/dense.jsonl does not exist", "jaxalign data synth runs/data/dense.jsonl"]),
    (["data.trajectories={d}/empty.jsonl"], ["empty.jsonl: no trajectories in the file"]),
    (["data.trajectories={d}/dense.jsonl", "tokenizer={d}/tok-no-template"], ["has no chat template"]),
    (["data.trajectories={d}/dense.jsonl", "model={d}/small-vocab", "tokenizer={d}/tok"],
     ["the tokenizer has", "embeds only 64"]),
    (["data.trajectories={d}/dense.jsonl", "data.min_tool_calls=9"], ["has >= 9 tool calls"]),
    (["run.save_every=0"], ["save_every: must be > 0, got 0"]),
    (["run.log_every=0"], ["log_every: must be > 0, got 0"]),
    (["data.seq_len=0"], ["data.seq_len: must be > 0, got 0"]),
    (["max_steps=-1"], ["max_steps: must be >= 0, got -1"]),
    (["batch_size=0"], ["batch_size: must be > 0, got 0"]),
    (["optim.learning_rate=-1"], ["optim.learning_rate: must be > 0"]),
    (["run.run_dir={d}/a-file"], ["is a file, not a directory"]),
])
def test_sft_mistakes(files, capsys, monkeypatch, overrides, needles):
    monkeypatch.chdir(files)  # the config's relative data path, as on a fresh checkout
    one_line_error(capsys, sft(files, *[o.format(d=files) for o in overrides]), *needles)
    assert not (files / "runs").exists()  # validated before the run directory was touched


@pytest.mark.parametrize("argv, needles", [
    (["grpo", GRPO_CFG, "steps=-1"], ["steps: must be > 0"]),
    (["grpo", GRPO_CFG, "prompts_per_step=0"], ["prompts_per_step: must be > 0, got 0"]),
    (["grpo", GRPO_CFG, "stages=[{steps: 0, max_response_tokens: 8, max_tool_calls: 1}]"], ["stages[0]"]),
    (["endo", "score", "m", "--batch-size", "0"], ["--batch-size: expected an integer > 0, got '0'"]),
    (["endo", "eval", "m", "--alpha", "0"], ["--alpha: expected a finite number > 0, got '0'"]),
    (["info", "smollm2-135m-instruct", "--dtype", "float7"], ["--dtype: invalid choice: 'float7'"]),
    (["data", "synth", "out.jsonl", "--n", "-5"], ["--n: expected an integer > 0, got '-5'"]),
    (["data", "stats", "missing.jsonl"], ["missing.jsonl: no such file"]),
    (["rm", "eval", "no-such-run"], ["no-such-run"]),
    (["rm", "train", RM_CFG, "--kind", "sentence", "max_steps=-1"], ["max_steps: must be >= 0, got -1"]),
    (["eval", os.path.join(ROOT, "configs/eval/demo.yaml"), "eval.k=0"], ["eval.k: must be > 0, got 0"]),
])
def test_other_commands(files, capsys, monkeypatch, argv, needles):
    monkeypatch.chdir(files)
    one_line_error(capsys, argv, *needles)


def test_preference_pair_with_an_empty_side_is_refused_naming_the_row(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    run = files / "runs" / "rm"
    one_line_error(capsys, ["rm", "train", RM_CFG, f"run.run_dir={run}", f"data.train={files}/pairs-empty-side.jsonl",
                            f"data.test={files}/pairs-empty-side.jsonl"],
                   "pairs-empty-side.jsonl: row 2: field 'rejected'")
    assert not run.exists()


def test_flags_between_config_and_overrides_are_parsed(capsys):
    # --kind after the config and before an override: both must be applied (the override fails loudly).
    one_line_error(capsys, ["rm", "train", RM_CFG, "--kind", "response", "batch_size=0", "--no-resume"],
                   "batch_size: must be > 0, got 0")
    one_line_error(capsys, ["rm", "train", RM_CFG, "--no-such-flag"], "unrecognized arguments: --no-such-flag")
