"""Data layer: math problems, tool-use trajectories, preference pairs; JSONL and tfds array_record storage.

Schemas of every record kind, with example rows: ``print(jaxalign.data.docs)``.
"""

from jaxalign.data.arithmetic import ArithmeticTask, solve_steps
from jaxalign.data.builders import RecordSource, build_dataset, import_jsonl, load_dataset
from jaxalign.data.checks import DataError
from jaxalign.data.jsonl import KINDS, docs, read_jsonl, write_jsonl
from jaxalign.data.problems import MathProblem, load_aime2025, load_gsm8k, split_problems
from jaxalign.data.records import Message, PreferencePair, ToolCall, TrajectoryRecord
from jaxalign.data.rgym import reasoning_gym_problems, reasoning_gym_score
from jaxalign.data.stats import format_stats, select_by_density, trajectory_stats

__all__ = ["KINDS", "ArithmeticTask", "DataError", "MathProblem", "Message", "PreferencePair", "RecordSource",
           "ToolCall", "TrajectoryRecord", "build_dataset", "docs", "format_stats", "import_jsonl", "load_aime2025",
           "load_dataset", "load_gsm8k", "read_jsonl", "reasoning_gym_problems", "reasoning_gym_score",
           "select_by_density", "solve_steps", "split_problems", "trajectory_stats", "write_jsonl"]
