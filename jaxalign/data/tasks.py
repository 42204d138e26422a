"""Named problem sets for RL and evaluation, chosen by a config."""

from __future__ import annotations

import dataclasses
from typing import Literal

from jaxalign.config import non_negative, positive, require
from jaxalign.data.problems import MathProblem


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """Where training and held-out problems come from."""

    source: Literal["arithmetic", "gsm8k", "aime2025", "reasoning_gym", "jsonl"] = "arithmetic"
    num_train: int = 256
    """Training problems (procedural sources generate them; fixed sets are split)."""
    num_eval: int = 64
    """Held-out problems."""
    seed: int = 0
    num_steps: int = 3
    """arithmetic: steps per problem (tool calls a dense solution makes)."""
    digits: int = 5
    """arithmetic: digits of each literal."""
    rg_task: str = "basic_arithmetic"
    """reasoning_gym: the generator."""
    path: str = ""
    """jsonl: a problems file (schema: jaxalign.data)."""
    holdout_fraction: float = 0.2
    """Fixed sets (gsm8k, aime2025, jsonl): the held-out share."""

    def __post_init__(self):
        positive(self, "num_steps", "digits")
        non_negative(self, "num_train", "num_eval")
        require(self, "holdout_fraction", 0 <= self.holdout_fraction <= 1, "must be in [0, 1]")
        require(self, "path", self.source != "jsonl" or bool(self.path), "must name a problems JSONL for source=jsonl")


def load_task(config: TaskConfig) -> tuple[list[MathProblem], list[MathProblem]]:
    """(train, held-out) problems; procedural sources draw disjoint index ranges for the two."""
    from jaxalign import data

    if config.source == "arithmetic":
        task = data.ArithmeticTask(num_steps=config.num_steps, digits=config.digits, seed=config.seed)
        return task.generate(config.num_train), task.generate(config.num_eval, start=config.num_train)
    if config.source == "reasoning_gym":
        both = data.reasoning_gym_problems(config.rg_task, config.num_train + config.num_eval, seed=config.seed)
        return both[:config.num_train], both[config.num_train:]
    if config.source == "gsm8k":
        problems = data.load_gsm8k()
    elif config.source == "aime2025":
        problems = data.load_aime2025()
    else:
        problems = data.read_jsonl(config.path, "problems")
    train, held = data.split_problems(problems, config.holdout_fraction, seed=config.seed)
    return train[:config.num_train], held[:config.num_eval]
