import pytest

from jaxalign.data import format_stats, select_by_density, trajectory_stats
from tests.data.helpers import trajectory_with_calls

CALLS = [0, 2, 2, 5, 1]


@pytest.fixture
def records():
    return [trajectory_with_calls(f"t{i}", c) for i, c in enumerate(CALLS)]


def test_stats_by_hand(records):
    # Per trajectory: 2 + 2c messages; 14 + 14c characters (10 user, 4 + 8 code + 2 output per call, 4 final).
    stats = trajectory_stats(records)
    assert stats["count"] == 5 and stats["with_final_answer"] == 5
    assert stats["tool_calls"] == {"mean": 2.0, "median": 2.0, "min": 0.0, "max": 5.0, "total": 10.0}
    assert stats["tool_call_histogram"] == {0: 1, 1: 1, 2: 2, 5: 1}
    assert stats["messages"] == {"mean": 6.0, "median": 6.0, "min": 2.0, "max": 12.0, "total": 30.0}
    assert stats["chars"] == {"mean": 42.0, "median": 42.0, "min": 14.0, "max": 84.0, "total": 210.0}
    assert "tokens" not in stats


def test_token_counts_with_a_callable_or_an_encoder(records):
    words = trajectory_stats(records, tokenizer=str.split)  # one token per text: 2 + 3c, assistant 1 + 2c
    assert words["tokens"]["total"] == 40.0 and words["tokens"]["max"] == 17.0
    assert words["assistant_tokens"] == {"mean": 5.0, "median": 5.0, "min": 1.0, "max": 11.0, "total": 25.0}

    class CharTokenizer:
        def encode(self, text):
            return [ord(ch) for ch in text]

    chars = trajectory_stats(records, tokenizer=CharTokenizer())
    assert chars["tokens"] == trajectory_stats(records)["chars"]
    with pytest.raises(TypeError, match="tokenizer must have an encode"):
        trajectory_stats(records, tokenizer=3)


def test_empty_input():
    stats = trajectory_stats([])
    assert stats["count"] == 0 and stats["tool_calls"]["mean"] == 0.0 and stats["tool_call_histogram"] == {}
    assert "tool calls per trajectory" not in format_stats(stats)


def test_select_by_density(records):
    assert [r.id for r in select_by_density(records, min_tool_calls=2)] == ["t1", "t2", "t3"]
    assert [r.id for r in select_by_density(records)] == ["t0", "t1", "t2", "t3", "t4"]
    assert [r.id for r in select_by_density(records, top_k=2)] == ["t3", "t1"]  # tie 2-2 broken by id
    assert [r.id for r in select_by_density(records[::-1], top_k=3)] == ["t3", "t1", "t2"]
    assert [r.id for r in select_by_density(records, min_tool_calls=1, top_k=10)] == ["t3", "t1", "t2", "t4"]
    assert select_by_density(records, top_k=0) == []
    with pytest.raises(ValueError, match="min_tool_calls"):
        select_by_density(records, min_tool_calls=-1)


def test_format_stats_table_and_histogram(records):
    text = format_stats(trajectory_stats(records, tokenizer=str.split))
    lines = text.splitlines()
    assert lines[0] == "trajectories: 5   with final answer: 5"
    row = next(line for line in lines if line.startswith("tool_calls"))
    assert row.split()[1:] == ["2.00", "2.0", "0", "5", "10"]
    assert any(line.startswith("assistant_tokens") for line in lines)
    histogram = lines[lines.index("tool calls per trajectory") + 1:]
    assert histogram == ["0 | " + "#" * 20 + " 1", "1 | " + "#" * 20 + " 1", "2 | " + "#" * 40 + " 2",
                         "3 |  0", "4 |  0", "5 | " + "#" * 20 + " 1"]


def test_wide_histograms_are_bucketed():
    records = [trajectory_with_calls(f"t{c}", c) for c in (0, 1, 44, 45)]
    text = format_stats(trajectory_stats(records))
    histogram = text.splitlines()[text.splitlines().index("tool calls per trajectory") + 1:]
    assert len(histogram) == 16  # 46 values in buckets of 3
    assert histogram[0] == "  0-2 | " + "#" * 40 + " 2"
    assert histogram[-2:] == ["42-44 | " + "#" * 20 + " 1", "   45 | " + "#" * 20 + " 1"]
