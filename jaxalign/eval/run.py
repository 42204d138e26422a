"""`jaxalign eval`: a policy on one or more problem sets, with avg@k / pass@k and tool statistics."""

from __future__ import annotations

import dataclasses
import json
import logging
import typing

from jaxalign.config import ConfigError, FieldError, non_negative, positive, require
from jaxalign.data.tasks import TaskConfig, load_task
from jaxalign.eval.evaluate import EvalConfig, eval_engine, evaluate, format_table
from jaxalign.models.config import DTypeName
from jaxalign.rollout.prompts import SYSTEM_PROMPT
from jaxalign.rollout.types import RolloutConfig
from jaxalign.runlog.console import Progress
from jaxalign.runlog.files import check_output, write_text_atomic
from jaxalign.sampling.functional import SamplingConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSetConfig:
    """One evaluated problem set: a task source and which of its problems."""

    name: str
    """Shown in the table and the key of the set in the JSON results."""
    task: TaskConfig = TaskConfig()
    split: str = "eval"
    """"eval" (the held-out part), "train", or "all" (fixed sets: every problem, in file order)."""
    limit: int = 0
    """Evaluate only the first `limit` problems (0: all of the split)."""

    def __post_init__(self):
        require(self, "name", bool(self.name.strip()), "must not be empty")
        require(self, "split", self.split in ("eval", "train", "all"), "must be eval, train or all")
        non_negative(self, "limit")


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
    """JSON results file (empty: print only); checked for writability before the model loads."""
    compute_dtype: str = "float32"
    """Activation dtype: float32, bfloat16 or float16 (parameters stay float32)."""

    def __post_init__(self):
        require(self, "model", bool(self.model.strip()), "must name a checkpoint")
        require(self, "sets", len(self.sets) > 0, "must list at least one set")
        names = [s.name for s in self.sets]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise FieldError("sets", f"set names must be unique, repeated: {repeated}")
        positive(self, "sandbox_timeout_s", "sandbox_workers")
        dtypes = typing.get_args(DTypeName)
        require(self, "compute_dtype", self.compute_dtype in dtypes, f"must be one of {list(dtypes)}")


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
    """Evaluates the policy on every set; returns {set name: result} (also written to `output`).

    Everything that can fail on the user's input is checked before the model loads: the output path,
    the reward name and every set's problems.
    """
    from jaxalign import models, tokenizer
    from jaxalign.rewards.verify import get_reward
    from jaxalign.rollout.engine import RolloutEngine
    from jaxalign.sampling import Sampler
    from jaxalign.tools import PythonSandbox

    if config.output:
        check_output(config.output, "output")
    try:
        get_reward(config.eval.reward)
    except KeyError as e:
        raise ConfigError(f"eval.reward: {e.args[0]}") from None
    problem_sets = {}
    for i, s in enumerate(config.sets):
        problem_sets[s.name] = problems_of(s)
        if not problem_sets[s.name]:
            raise ConfigError(f"sets[{i}] ({s.name}): no problems in split {s.split!r} (limit {s.limit})")
    tok = tokenizer.load(config.tokenizer or config.model)
    model = models.load(config.model, dtype="float32", compute_dtype=config.compute_dtype)
    model = models.replace_config(model, kv_cache_dtype=config.rollout.kv_cache_dtype)
    k = config.eval.k
    results = {}
    with PythonSandbox(timeout_s=config.sandbox_timeout_s, workers=config.sandbox_workers,
                       max_idle_workers=max(2 * config.sandbox_workers, config.eval.batch_size)) as sandbox:
        engine = eval_engine(RolloutEngine(Sampler(model, tok), tok, sandbox, config.rollout), config.eval)
        for name, problems in problem_sets.items():
            log.info("evaluating %s: %d problems x %d samples", name, len(problems), k)
            with Progress(total=len(problems) * k, desc=f"eval {name}", unit="sample") as bar:
                results[name] = evaluate(engine, problems, config.eval, system_prompt=config.system_prompt,
                                         progress=bar)
        sandbox_stats = sandbox.stats()
    summary = {"model": config.model, "k": k, "temperature": engine.config.sampling.temperature,  # as sampled
               "max_response_tokens": config.rollout.max_response_tokens,
               "max_tool_calls": config.rollout.max_tool_calls, "sandbox": sandbox_stats, "sets": results}
    if config.output:
        write_text_atomic(config.output, json.dumps(summary, indent=2))
    return summary


def table(summary: dict) -> str:
    """The text table of a run_eval summary."""
    return format_table(summary["sets"])
