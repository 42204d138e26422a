"""`jaxalign endo score|eval` on a tiny saved model: scores match the scorer; bad rows are named."""

import json

import numpy as np
import pytest

from jaxalign import tokenizer as toklib
from jaxalign.cli.main import main
from jaxalign.data import PreferencePair, write_jsonl
from jaxalign.models import ModelConfig, init_model, save_hf
from jaxalign.rewards.endo_scorer import EndogenousScorer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = toklib.load("smollm2-135m-instruct")
    model = init_model(ModelConfig.tiny(vocab_size=len(tok)), seed=0)
    d = tmp_path_factory.mktemp("tiny_hf")
    save_hf(model, str(d), tokenizer=tok)
    return str(d), model, tok


def test_endo_score_file_and_single_pair(model_dir, tmp_path, capsys):
    path, model, tok = model_dir
    rows = [{"id": "a", "prompt": "What is 2 + 3?", "response": "5."}, {"prompt": "Hi", "response": "Hello there!"}]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["endo", "score", path, str(src), "--alpha", "0.5", "--system-prompt", "Be brief.", "--tokens",
                 "-o", str(tmp_path / "out.jsonl")]) == 0
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    ref = EndogenousScorer(model, tok, alpha=0.5, system_prompt="Be brief.")
    want = ref.token_rewards([r["prompt"] for r in rows], [r["response"] for r in rows])
    assert [g["id"] for g in got] == ["a", "1"]
    for g, w in zip(got, want):
        assert g["tokens"] == w.size
        np.testing.assert_allclose(g["reward"], w.sum(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(g["token_rewards"], w, atol=1e-4)
    capsys.readouterr()
    assert main(["endo", "score", path, "--prompt", "Hi", "--response", "Hello there!"]) == 0
    single = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(single["reward"], EndogenousScorer(model, tok).score(["Hi"], ["Hello there!"])[0],
                               rtol=1e-4, atol=1e-4)


def test_endo_score_names_the_bad_row_and_field(model_dir, tmp_path, capsys):
    path, _, _ = model_dir
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "q", "response": "r"}\n\n{"prompt": "q", "reply": "r"}\n')
    assert main(["endo", "score", path, str(src)]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "row 3" in err and "reply" in err
    src.write_text('{"prompt": "q"}\n')
    assert main(["endo", "score", path, str(src)]) == 2
    assert "response" in capsys.readouterr().err


def test_endo_eval_pairwise_accuracy(model_dir, tmp_path, capsys):
    path, model, tok = model_dir
    pairs = [PreferencePair(id=f"p{i}", prompt="What is 2 + 3?", chosen="2 + 3 = 5.", rejected=f"2 + 3 = {6 + i}.",
                            category="c" if i % 2 else "d") for i in range(4)]
    write_jsonl(tmp_path / "prefs.jsonl", pairs)
    assert main(["endo", "eval", path, "--pairs", str(tmp_path / "prefs.jsonl"), "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    scores = EndogenousScorer(model, tok).score(["What is 2 + 3?"] * 8, [p.chosen for p in pairs] +
                                                [p.rejected for p in pairs])
    expected = np.mean((scores[:4] > scores[4:]) + 0.5 * (scores[:4] == scores[4:]))
    assert result["n"] == 4 and result["accuracy"] == pytest.approx(expected)
    assert set(result["by_category"]) == {"c", "d"}
