"""What the run viewer reads from a run directory, as plain JSON-ready data.

A run directory holds (each part optional, the page shows what is there):

- `metrics.jsonl`: `{"step", "time", "train/reward", ...}` per logged step (`jaxalign.runlog.MetricsLogger`);
- `config.yaml`: the run's configuration;
- `trajectories/step_*.jsonl`: sampled trajectories saved by the GRPO trainer (`Trajectory.to_dict()` plus
  `step`, `advantage`, `reward`, `prompt`, `token_text`);
- `reward_maps/*.jsonl`: per-sentence and per-token rewards of chosen / rejected responses (format below).

Reward-map records (one JSON object per line; `write_reward_maps` validates and writes them)::

    {"id": "pair-17",                       # optional, shown in the list
     "label": "sentence RM vs endogenous",  # optional
     "prompt": "What is 2 + 3?",
     "chosen": SIDE,
     "rejected": SIDE,                      # optional (a single response is shown alone)
     "meta": {...}}                         # optional, any JSON, shown as is

    SIDE = {"text": "...",                  # optional: the whole response
            "score": 1.25,                  # optional: the response-level reward
            "sentences": ["It is 5. ", "Done."], "sentence_rewards": [0.8, -0.1],   # sentence RM
            "tokens": ["It", " is", " 5", "."], "token_rewards": [0.1, 0.0, 0.9, null]}  # endogenous

A side needs sentences or tokens (or both); each list and its rewards have equal lengths; a reward
may be null (not scored, shown uncoloured). `sentences` and `tokens` are the response split into
consecutive pieces, whitespace included, so that they join to the response text; where sentences do
not join to `text`, the page separates them by a space. Token strings can come from
`jaxalign.tokenizer.token_pieces(tok, ids)`.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from jaxalign.errors import UserError
from jaxalign.runlog.metrics import METRICS_FILE, read_metrics

TRAJECTORY_DIR = "trajectories"
REWARD_MAP_DIR = "reward_maps"
RECORD_KEYS = ("id", "label", "prompt", "chosen", "rejected", "meta")
SIDE_KEYS = ("text", "score", "sentences", "sentence_rewards", "tokens", "token_rewards")
TRAJECTORY_FIELDS = ("step", "prompt", "reward", "advantage", "tool_calls", "tool_errors", "tool_timeouts",
                     "hit_tool_budget", "hit_token_budget", "finish_reason", "text", "final_text")


class ViewerError(UserError, ValueError):
    """A directory holds nothing the viewer can show, or a file in it is malformed; the message names it.

    A ValueError too, so callers of the library that caught ValueError before keep working.
    """


def _finite(x: Any, digits: int | None = None) -> float | None:
    """`x` as a float, None where missing or not finite (strict JSON has no NaN)."""
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return round(float(x), digits) if digits is not None else float(x)


def metric_series(records: Iterable[Mapping[str, Any]]) -> dict[str, list[list[float]]]:
    """`{"train/reward": [[step, value], ...], ...}` from metrics records (null values skipped)."""
    series: dict[str, list[list[float]]] = {}
    for r in records:
        for key, value in r.items():
            if key in ("step", "time"):
                continue
            v = _finite(value)
            if v is not None:
                series.setdefault(key, []).append([r["step"], v])
    return series


def compact_trajectory(row: Mapping[str, Any], file: str) -> dict[str, Any]:
    """The fields of a saved trajectory the page uses; older records (no reward, turns or token text) work too."""
    out: dict[str, Any] = {k: row.get(k) for k in TRAJECTORY_FIELDS}
    out["reward"], out["advantage"] = _finite(row.get("reward")), _finite(row.get("advantage"), 4)
    tokens = [int(t) for t in row.get("tokens", [])]
    out["tokens"] = tokens
    out["loss_mask"] = [int(m) for m in row.get("loss_mask", [])]
    out["logprobs"] = [_finite(x, 4) for x in row.get("logprobs", [])]
    out["token_text"] = row.get("token_text")
    out["num_tokens"] = len(tokens)
    out["num_policy_tokens"] = sum(out["loss_mask"])
    out["turns"] = row.get("turns") or [{"kind": "policy", "text": row.get("text", ""), "tokens": len(tokens)}]
    out["file"] = file
    return out


def read_trajectories(run_dir: str | os.PathLike, limit: int = 5000) -> list[dict[str, Any]]:
    """Saved trajectories of `run_dir/trajectories/step_*.jsonl` in step order, compacted, at most `limit`
    (the latest ones are kept)."""
    files = sorted(glob.glob(os.path.join(os.fspath(run_dir), TRAJECTORY_DIR, "step_*.jsonl")))
    rows: list[dict[str, Any]] = []
    for path in files:
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(compact_trajectory(json.loads(line), name))
                except (json.JSONDecodeError, TypeError, ValueError) as e:
                    raise ViewerError(f"{path}:{number}: not a trajectory record: {e}") from None
    rows.sort(key=lambda r: (r["step"] if isinstance(r["step"], int) else -1))
    return rows[-limit:]


def _check_keys(obj: Any, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {list(allowed)}")


def _pieces(side: Mapping[str, Any], what: str, where: str) -> tuple[list[str], list[float | None]] | None:
    pieces, rewards = side.get(what), side.get(f"{what[:-1]}_rewards")
    if pieces is None and rewards is None:
        return None
    if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces):
        raise ValueError(f"{where}.{what}: expected a list of strings")
    if not isinstance(rewards, list) or len(rewards) != len(pieces):
        raise ValueError(f"{where}.{what[:-1]}_rewards: expected a list of {len(pieces)} numbers (one per {what[:-1]})")
    for r in rewards:
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))):
            raise ValueError(f"{where}.{what[:-1]}_rewards: {r!r} is not a number or null")
    return pieces, [_finite(r, 5) for r in rewards]


def validate_side(side: Any, where: str) -> dict[str, Any]:
    """One response of a reward-map record, checked (see the module docstring), with non-finite rewards as None."""
    _check_keys(side, SIDE_KEYS, where)
    text = side.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{where}.text: expected a string")
    score = side.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise ValueError(f"{where}.score: expected a number")
    sentences, tokens = _pieces(side, "sentences", where), _pieces(side, "tokens", where)
    if sentences is None and tokens is None:
        raise ValueError(f"{where}: needs sentences + sentence_rewards or tokens + token_rewards")
    out: dict[str, Any] = {"text": text, "score": _finite(score, 5)}
    if sentences is not None:
        out["sentences"], out["sentence_rewards"] = sentences
        out["sentences_join"] = text is None or "".join(out["sentences"]) == text
    if tokens is not None:
        out["tokens"], out["token_rewards"] = tokens
    return out


def validate_reward_map(record: Any, where: str = "reward map") -> dict[str, Any]:
    """A reward-map record checked against the format of the module docstring; raises ValueError naming the field."""
    _check_keys(record, RECORD_KEYS, where)
    if not isinstance(record.get("prompt"), str):
        raise ValueError(f"{where}.prompt: expected a string")
    if "chosen" not in record:
        raise ValueError(f"{where}: missing 'chosen'")
    out = {"id": str(record.get("id", "")), "label": str(record.get("label", "")), "prompt": record["prompt"],
           "chosen": validate_side(record["chosen"], f"{where}.chosen"), "rejected": None,
           "meta": record.get("meta")}
    if record.get("rejected") is not None:
        out["rejected"] = validate_side(record["rejected"], f"{where}.rejected")
    return out


def write_reward_maps(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> str:
    """Validates `records` and writes them as JSONL to `path` (use `RUN_DIR/reward_maps/NAME.jsonl`); returns path."""
    path = os.fspath(path)
    lines = []
    for i, record in enumerate(records):
        validate_reward_map(record, f"record {i}")
        lines.append(json.dumps(record, allow_nan=False) + "\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return path


def read_reward_maps(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of `run_dir/reward_maps/*.jsonl`, validated, each with its file name."""
    out = []
    for path in sorted(glob.glob(os.path.join(os.fspath(run_dir), REWARD_MAP_DIR, "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = validate_reward_map(json.loads(line), f"{path}:{number}")
                except json.JSONDecodeError as e:
                    raise ViewerError(f"{path}:{number}: not JSON: {e}") from None
                except ValueError as e:  # the message already names the file, line and field
                    raise ViewerError(str(e)) from None
                out.append({**record, "file": os.path.basename(path)})
    return out


def is_run(path: str | os.PathLike) -> bool:
    """Whether `path` holds anything the page shows: metrics.jsonl, saved trajectories or reward maps."""
    path = os.fspath(path)
    return (os.path.isfile(os.path.join(path, METRICS_FILE))
            or bool(glob.glob(os.path.join(path, TRAJECTORY_DIR, "step_*.jsonl")))
            or bool(glob.glob(os.path.join(path, REWARD_MAP_DIR, "*.jsonl"))))


def load_run(run_dir: str | os.PathLike, *, max_trajectories: int = 5000) -> dict[str, Any]:
    """Everything the page shows about `run_dir`, as JSON-ready data.

    Raises ViewerError when `run_dir` is not a directory, holds nothing to show, or a file in it is malformed.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise ViewerError(f"{run_dir}: not a directory")
    try:
        metrics = read_metrics(run_dir) if os.path.exists(os.path.join(run_dir, METRICS_FILE)) else []
    except ValueError as e:  # names the file and line
        raise ViewerError(str(e)) from None
    config_path = os.path.join(run_dir, "config.yaml")
    config = open(config_path, encoding="utf-8").read() if os.path.exists(config_path) else ""
    data = {"name": os.path.basename(os.path.abspath(run_dir)), "path": os.path.abspath(run_dir), "config": config,
            "metrics": metric_series(metrics), "trajectories": read_trajectories(run_dir, max_trajectories),
            "reward_maps": read_reward_maps(run_dir)}
    if not (data["metrics"] or data["trajectories"] or data["reward_maps"]):
        raise ViewerError(f"{run_dir}: no {METRICS_FILE}, {TRAJECTORY_DIR}/step_*.jsonl or {REWARD_MAP_DIR}/*.jsonl")
    return data
