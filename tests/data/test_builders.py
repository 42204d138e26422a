import copy
import json
import os

import pytest

from jaxalign.data import (
    ArithmeticTask,
    DataError,
    build_dataset,
    import_jsonl,
    load_aime2025,
    load_dataset,
    load_gsm8k,
    reasoning_gym_problems,
    write_jsonl,
)
from jaxalign.data.jsonl import EXAMPLE_ROWS
from tests.data.helpers import preference_pairs, trajectory_for


def test_gsm8k_aime_and_reasoning_gym_read_back_identical(tmp_path):
    gsm8k = load_gsm8k()
    path = build_dataset("problems", gsm8k, tmp_path, "gsm8k")
    assert path == os.path.join(tmp_path, "gsm8k", "1.0.0")
    assert os.path.exists(os.path.join(path, "gsm8k-train.array_record-00000-of-00001"))
    source = load_dataset("problems", tmp_path, "gsm8k")
    assert len(source) == 1319
    assert list(source) == gsm8k  # order kept, every field identical
    assert source[1000] == gsm8k[1000] and source[-1] == gsm8k[-1] and source[5:8] == gsm8k[5:8]
    with pytest.raises(IndexError):
        source[1319]
    aime = load_aime2025()
    build_dataset("problems", aime, tmp_path, "aime2025")
    assert list(load_dataset("problems", tmp_path, "aime2025")) == aime
    rg = reasoning_gym_problems("gsm_symbolic", 3, seed=1) + reasoning_gym_problems("chain_sum", 3, seed=1)
    build_dataset("problems", rg, tmp_path, "rg")
    assert list(load_dataset("problems", tmp_path, "rg")) == rg


def test_arithmetic_splits_and_trajectories(tmp_path):
    problems = ArithmeticTask(num_steps=4, seed=3).generate(12)
    build_dataset("problems", problems[:9], tmp_path, "arith", splits={"test": problems[9:]})
    assert list(load_dataset("problems", tmp_path, "arith")) == problems[:9]
    assert list(load_dataset("problems", tmp_path, "arith", split="test")) == problems[9:]
    trajectories = [trajectory_for(p) for p in problems]
    build_dataset("trajectories", trajectories, tmp_path, "arith_sft")
    loaded = load_dataset("trajectories", tmp_path, "arith_sft")
    assert list(loaded) == trajectories and loaded[0].tool_calls == 4


def test_jsonl_files_import_identically(tmp_path):
    problems = ArithmeticTask(num_steps=2, seed=0).generate(5)
    trajectories = [trajectory_for(p) for p in problems]
    pairs = preference_pairs(load_gsm8k()[:5])
    for kind, records in [("trajectories", trajectories), ("preferences", pairs), ("problems", problems)]:
        write_jsonl(tmp_path / f"{kind}.jsonl", records)
        import_jsonl(kind, tmp_path / f"{kind}.jsonl", tmp_path / "tfds", f"my_{kind}")
        assert list(load_dataset(kind, tmp_path / "tfds", f"my_{kind}")) == records
    import_jsonl("preferences", tmp_path / "preferences.jsonl", tmp_path / "tfds", "pairs_eval", split="validation")
    assert list(load_dataset("preferences", tmp_path / "tfds", "pairs_eval", split="validation")) == pairs


def test_bad_jsonl_is_rejected_before_anything_is_written(tmp_path):
    bad = copy.deepcopy(EXAMPLE_ROWS["trajectories"])
    bad["messages"][1]["role"] = "bot"
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(EXAMPLE_ROWS["trajectories"]) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}: row 2: field 'messages\\[1\\].role': expected one of"):
        import_jsonl("trajectories", path, tmp_path / "tfds", "bad")
    assert not os.path.exists(tmp_path / "tfds" / "bad")


def test_build_and_load_errors(tmp_path):
    problems = ArithmeticTask(num_steps=1, seed=0).generate(3)
    build_dataset("problems", problems, tmp_path, "p")
    with pytest.raises(FileExistsError, match="already exists"):
        build_dataset("problems", problems[:1], tmp_path, "p")
    build_dataset("problems", problems[:1], tmp_path, "p", overwrite=True)
    assert list(load_dataset("problems", tmp_path, "p")) == problems[:1]
    with pytest.raises(ValueError, match="holds 'problems' records, not 'preferences'"):
        load_dataset("preferences", tmp_path, "p")
    with pytest.raises(ValueError, match="no split 'test'; available: \\['train'\\]"):
        load_dataset("problems", tmp_path, "p", split="test")
    with pytest.raises(FileNotFoundError, match="no dataset 'missing'"):
        load_dataset("problems", tmp_path, "missing")
    with pytest.raises(ValueError, match="dataset name must match"):
        build_dataset("problems", problems, tmp_path, "Bad/Name")
    with pytest.raises(ValueError, match="split 'test' has no records"):
        build_dataset("problems", problems, tmp_path, "q", splits={"test": []})
    with pytest.raises(TypeError, match="kind 'trajectories' takes TrajectoryRecord records"):
        build_dataset("trajectories", problems, tmp_path, "q")
    with pytest.raises(DataError, match="split 'train': records\\[1\\]: field 'id': duplicate id"):
        build_dataset("problems", [problems[0], problems[0]], tmp_path, "q")
    with pytest.raises(ValueError, match="unknown record kind 'problem'"):
        build_dataset("problem", problems, tmp_path, "q")
    assert not os.path.exists(tmp_path / "q")


def test_row_dicts_are_validated_and_accepted(tmp_path):
    row = EXAMPLE_ROWS["preferences"]
    build_dataset("preferences", [row, dict(row, id="pair-1")], tmp_path, "rows")
    source = load_dataset("preferences", tmp_path, "rows")
    assert [p.to_dict() for p in source] == [row, dict(row, id="pair-1")]
    with pytest.raises(DataError, match="^split 'train': records\\[0\\]: field 'chosen': required field is missing"):
        build_dataset("preferences", [{k: v for k, v in row.items() if k != "chosen"}], tmp_path, "rows2")
