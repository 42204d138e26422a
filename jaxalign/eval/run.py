"""`jaxalign eval`: a policy on one or more problem sets, with avg@k / pass@k and tool statistics."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

from jaxalign.data.tasks import TaskConfig, load_task
from jaxalign.eval.evaluate import EvalConfig, evaluate, format_table
from jaxalign.rollout.prompts import SYSTEM_PROMPT
from jaxalign.rollout.types import RolloutConfig
from jaxalign.sampling.functional import SamplingConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSetConfig:
    """One evaluated problem set: a task source and which of its problems."""

    name: str
    task: TaskConfig = TaskConfig()
    split: str = "eval"
    """"eval" (the held-out part), "train", or "all" (fixed sets: every problem, in file order)."""
    limit: int = 0
    """Evaluate only the first `limit` problems (0: all of the split)."""

    def __post_init__(self):
        if self.split not in ("eval", "train", "all"):
            raise ValueError(f"EvalSetConfig {self.name!r}: split must be eval, train or all, got {self.split!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalRunConfig:
    """`jaxalign eval CONFIG`: model, sets, sampling and budgets, where to write the JSON."""

    model: str
    """A Hugging Face directory, a .gguf file, or a registry name (smollm2-135m-instruct)."""
    tokenizer: str = ""
    """Defaults to the model's path."""
    sets: tuple[EvalSetConfig, ...] = (EvalSetConfig(name="gsm8k", task=TaskConfig(source="gsm8k")),)
    eval: EvalConfig = EvalConfig(k=4)
    rollout: RolloutConfig = RolloutConfig(sampling=SamplingConfig(temperature=1.0))
    system_prompt: str = SYSTEM_PROMPT
    sandbox_timeout_s: float = 5.0
    sandbox_workers: int = 4
    output: str = ""
    """JSON results file (empty: print only)."""
    compute_dtype: str = "float32"


def problems_of(s: EvalSetConfig) -> list:
    """The problems one set evaluates."""
    train, held = load_task(s.task)
    if s.split == "all":
        if s.task.source in ("gsm8k", "aime2025", "jsonl"):
            from jaxalign import data

            loaders = {"gsm8k": data.load_gsm8k, "aime2025": data.load_aime2025,
                       "jsonl": lambda: data.read_jsonl(s.task.path, "problems")}
            problems = loaders[s.task.source]()
        else:
            problems = train + held
    else:
        problems = held if s.split == "eval" else train
    return problems[:s.limit] if s.limit else problems


def run_eval(config: EvalRunConfig) -> dict:
    """Evaluates the policy on every set; returns {set name: result} (also written to `output`)."""
    from jaxalign import models, tokenizer
    from jaxalign.rollout.engine import RolloutEngine
    from jaxalign.sampling import Sampler
    from jaxalign.tools import PythonSandbox

    names = [s.name for s in config.sets]
    if len(set(names)) != len(names):
        raise ValueError(f"EvalRunConfig.sets: names must be unique, got {names}")
    tok = tokenizer.load(config.tokenizer or config.model)
    model = models.load(config.model, dtype="float32", compute_dtype=config.compute_dtype)
    results = {}
    with PythonSandbox(timeout_s=config.sandbox_timeout_s, workers=config.sandbox_workers,
                       max_idle_workers=max(2 * config.sandbox_workers, config.eval.batch_size)) as sandbox:
        engine = RolloutEngine(Sampler(model, tok), tok, sandbox, config.rollout)
        for s in config.sets:
            problems = problems_of(s)
            log.info("evaluating %s: %d problems x %d samples", s.name, len(problems), config.eval.k)
            results[s.name] = evaluate(engine, problems, config.eval, system_prompt=config.system_prompt)
        sandbox_stats = sandbox.stats()
    summary = {"model": config.model, "k": config.eval.k, "temperature": config.rollout.sampling.temperature,
               "max_response_tokens": config.rollout.max_response_tokens,
               "max_tool_calls": config.rollout.max_tool_calls, "sandbox": sandbox_stats, "sets": results}
    if config.output:
        os.makedirs(os.path.dirname(os.path.abspath(config.output)), exist_ok=True)
        tmp = config.output + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
        os.replace(tmp, config.output)
    return summary


def table(summary: dict) -> str:
    """The text table of a run_eval summary."""
    return format_table(summary["sets"])
