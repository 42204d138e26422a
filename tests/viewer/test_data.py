"""What the viewer reads: the GRPO trainer's saved trajectories, reward-map records, safe JSON embedding."""

import json
import os

import pytest

from jaxalign import tokenizer
from jaxalign.cli.main import main
from jaxalign.viewer import embed_json, load_run, read_reward_maps, render_page, write_report, write_reward_maps
from tests.viewer.conftest import GROUP, PROMPTS, STEPS

PAIR = {"id": "p1", "prompt": "What is 2 + 3?",
        "chosen": {"text": "It is 5. Done.", "score": 1.5, "sentences": ["It is 5. ", "Done."],
                   "sentence_rewards": [0.8, -0.1], "tokens": ["It", " is", " 5", ".", " Done", "."],
                   "token_rewards": [0.1, 0.0, 0.9, None, -0.2, 0.05]},
        "rejected": {"sentences": ["It is 6."], "sentence_rewards": [-0.7]}}


def test_trainer_saves_what_the_page_needs(grpo_run):
    files = sorted(os.listdir(os.path.join(grpo_run, "trajectories")))
    assert files == [f"step_{s:06d}.jsonl" for s in range(1, STEPS + 1)]
    tok = tokenizer.load(os.path.join(grpo_run, "..", "tok"))
    rows = [json.loads(line) for f in files for line in open(os.path.join(grpo_run, "trajectories", f))]
    assert len(rows) == STEPS * PROMPTS * GROUP
    assert {r["reward"] for r in rows} == {0.0, 1.0}  # the toy reward splits the samples
    checked = 0
    for r in rows:
        assert r["reward"] == float(len(r["final_text"] or r["text"]) % 2 == 0)
        assert len(r["token_text"]) == len(r["tokens"]) == len(r["loss_mask"])
        text, joined = tok.decode(r["tokens"]), "".join(r["token_text"])
        if "\ufffd" not in text:
            assert joined == text
            checked += 1
        else:  # random byte tokens: the decoder replaces a whole invalid byte run, pieces keep more
            rest = iter(joined)
            assert all(ch in rest for ch in text.replace("\ufffd", "")), (text, joined)
        assert sum(t["tokens"] for t in r["turns"]) == len(r["tokens"])
    assert checked >= 1


def test_token_pieces_keep_spaces_and_characters(grpo_run):
    tok = tokenizer.load(os.path.join(grpo_run, "..", "tok"))
    for text in ["Say 7. ok yes", "a 日本 b ☃ c", "```python\nprint(1)\n```"]:
        ids = tok.encode(text, add_special_tokens=False)
        pieces = tokenizer.token_pieces(tok, ids)
        assert len(pieces) == len(ids)
        assert "".join(pieces).replace("\ufffd", "") == tok.decode(ids)
    pieces = tokenizer.token_pieces(tok, tok.encode("ok yes", add_special_tokens=False))
    assert " yes" in pieces or " " in pieces  # the space is kept, not dropped as decoding one token would


def test_load_run_reads_metrics_and_trajectories(grpo_run):
    data = load_run(grpo_run)
    assert len(data["trajectories"]) == STEPS * PROMPTS * GROUP
    assert [p[0] for p in data["metrics"]["train/reward"]] == list(range(1, STEPS + 1))
    for key in ("train/accuracy", "train/tool_calls_per_traj", "train/response_tokens", "train/clip_frac",
                "train/approx_kl", "train/time_generate_s", "train/time_train_s"):
        assert len(data["metrics"][key]) == STEPS, key
    assert "time" not in data["metrics"] and "model:" in data["config"]
    t = data["trajectories"][0]
    assert t["num_policy_tokens"] == sum(t["loss_mask"]) and t["num_tokens"] == len(t["tokens"])


def test_embedded_json_cannot_close_the_script_element():
    evil = {"text": "</script><script>alert(1)</script><!-- \u2028 & </SCRIPT >"}
    out = embed_json(evil)
    assert "<" not in out and ">" not in out and "\u2028" not in out
    assert json.loads(out) == evil  # still the same data for JSON.parse


def test_page_is_self_contained(grpo_run):
    page = render_page(load_run(grpo_run))
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    assert "<link" not in page and "src=" not in page
    assert page.count("<script") == 2 and "Content-Security-Policy" in page


def test_reward_map_round_trip_and_errors(tmp_path):
    single = {"prompt": "x", "chosen": PAIR["rejected"]}
    path = write_reward_maps(tmp_path / "reward_maps" / "demo.jsonl", [PAIR, single])
    records = read_reward_maps(tmp_path)
    assert [r["id"] for r in records] == ["p1", ""] and records[0]["file"] == "demo.jsonl"
    assert records[0]["chosen"]["sentences_join"] is True and records[0]["chosen"]["token_rewards"][3] is None
    assert records[1]["rejected"] is None
    assert os.path.exists(path)
    bad = [({**PAIR, "chosn": {}}, "unknown keys"),
           ({"prompt": "x"}, "missing 'chosen'"),
           ({"prompt": "x", "chosen": {"text": "a"}}, "needs sentences"),
           ({"prompt": "x", "chosen": {"sentences": ["a", "b"], "sentence_rewards": [1.0]}}, "list of 2 numbers"),
           ({"prompt": "x", "chosen": {"tokens": ["a"], "token_rewards": ["high"]}}, "not a number"),
           ({"prompt": "x", "chosen": {"tokens": ["a"], "token_reward": [1.0]}}, "unknown keys")]
    for record, message in bad:
        with pytest.raises(ValueError, match=message):
            write_reward_maps(tmp_path / "bad.jsonl", [record])


def test_cli_writes_the_page(grpo_run, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["view", grpo_run, "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.read_text().startswith("<!DOCTYPE html>")
    assert main(["view", str(tmp_path / "missing")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        write_report(empty)


def test_serve_answers_only_with_the_page(grpo_run, tmp_path):
    import threading
    import urllib.error
    import urllib.request

    from jaxalign.cli.view import make_server

    path = write_report(grpo_run, tmp_path / "page.html")
    with make_server(path, port=0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            with urllib.request.urlopen(url + "/", timeout=10) as r:
                assert r.status == 200 and r.read() == open(path, "rb").read()
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(url + "/../config.yaml", timeout=10)
        finally:
            server.shutdown()
            thread.join(timeout=10)
