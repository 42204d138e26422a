"""Evaluation: avg@k, pass@k, tool statistics."""

from jaxalign.eval.evaluate import EvalConfig, evaluate, format_table, pass_at_k

__all__ = ["EvalConfig", "evaluate", "format_table", "pass_at_k"]
