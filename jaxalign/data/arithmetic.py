"""The tool-requiring demo task: multi-step integer arithmetic on large numbers.

A problem chains `num_steps` assignments, each reading the previous result (and sometimes an older
one), for example::

    Let a = 48213 * 9127. Let b = a - 38127. Let c = b % 9973. What is c?

A tiny model cannot multiply five-digit numbers in its head, but one `code_interpreter` call per
step solves it exactly, which is what makes the task a clean test of tool-integrated RL. The steps
are kept in ``meta["steps"]`` as ``{"var", "expr", "value"}`` dicts whose ``expr`` is a valid Python
expression over integer literals and earlier variable names, so a programmatic solver can write one
tool call per step, later calls reading earlier printed results.
"""

from __future__ import annotations

import ast
import dataclasses
import random
import string
from collections.abc import Mapping, Sequence
from typing import Any

from jaxalign.data.problems import MathProblem

OPS = ("+", "-", "*", "//", "%")
# Every value stays below this bound, inside int64 (2**63 - 1 ≈ 9.2e18), so answers fit int64 arrays
# and the first step (two literals of at most 9 digits) always fits under it.
MAX_VALUE = 10**18
_OP_WEIGHTS = {"*": 3, "+": 2, "-": 2, "//": 1, "%": 1}
_AST_OPS = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y, ast.Mult: lambda x, y: x * y,
            ast.FloorDiv: lambda x, y: x // y, ast.Mod: lambda x, y: x % y}


def _var_name(index: int) -> str:
    return string.ascii_lowercase[index] if index < 26 else f"v{index}"


def _apply(op: str, x: int, y: int) -> int:
    return {"+": x + y, "-": x - y, "*": x * y, "//": x // y if y else 0, "%": x % y if y else 0}[op]


def _allowed(op: str, x: int, y: int) -> bool:
    """Whether ``x op y`` is a sensible step: positive operands, positive result, below MAX_VALUE."""
    if op in ("//", "%"):
        # Divisor above 1 and below the dividend: no division by zero, no trivial 0 or x results,
        # and (operands being positive) no negative-modulo surprises between languages; a zero
        # remainder would make every later step trivial, so it is refused too.
        return 1 < y < x and _apply(op, x, y) > 0
    return 0 < _apply(op, x, y) < MAX_VALUE


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArithmeticTask:
    """Generator of multi-step arithmetic problems (deterministic given `seed`).

    Attributes:
      num_steps: assignments per problem (the difficulty in tool calls); 1 to 50.
      digits: digits of every integer literal; 1 to 9 (products of two literals stay below MAX_VALUE).
      seed: problems are a function of (seed, index), so ``generate(n)`` is a prefix of ``generate(m)``
        for n < m.
    """

    num_steps: int = 3
    digits: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.num_steps <= 50:
            raise ValueError(f"num_steps must be in [1, 50], got {self.num_steps}")
        if not 1 <= self.digits <= 9:
            raise ValueError(f"digits must be in [1, 9], got {self.digits}")

    def _literal(self, rng: random.Random) -> int:
        low = 10 ** (self.digits - 1) if self.digits > 1 else 2
        return rng.randint(low, 10**self.digits - 1)

    def _step(self, rng: random.Random, values: Mapping[str, int], last: str) -> tuple[str, int]:
        """One assignment reading `last` (and maybe an older variable): returns (expr, value)."""
        x = values[last]
        older = [v for v in values if v != last]
        for _ in range(100):
            if older and rng.random() < 0.3:
                y_name = rng.choice(older)
                y, y_text = values[y_name], y_name
            else:
                y = self._literal(rng)
                y_text = str(y)
            ops = [op for op in OPS if _allowed(op, x, y)]
            if ops:
                op = rng.choices(ops, weights=[_OP_WEIGHTS[o] for o in ops])[0]
                return f"{last} {op} {y_text}", _apply(op, x, y)
        # Unreachable in practice: `+` with a literal is always allowed while x < MAX_VALUE / 2, and `-`
        # or `//` otherwise; kept as a loud guard rather than an infinite loop.
        raise RuntimeError(f"no valid arithmetic step from {last} = {x}")

    def problem(self, index: int) -> MathProblem:
        """The problem at `index` (independent of every other index)."""
        rng = random.Random(f"jaxalign-arithmetic:{self.seed}:{self.num_steps}:{self.digits}:{index}")
        steps: list[dict[str, Any]] = []
        values: dict[str, int] = {}
        # The first step multiplies two fresh literals: the large product is what forces a tool call.
        x, y = self._literal(rng), self._literal(rng)
        steps.append({"var": "a", "expr": f"{x} * {y}", "value": x * y})
        values["a"] = x * y
        for i in range(1, self.num_steps):
            expr, value = self._step(rng, values, steps[-1]["var"])
            steps.append({"var": _var_name(i), "expr": expr, "value": value})
            values[_var_name(i)] = value
        final = steps[-1]["var"]
        question = " ".join(f"Let {s['var']} = {s['expr']}." for s in steps) + f" What is {final}?"
        if any("//" in s["expr"] or "%" in s["expr"] for s in steps):
            question += " (Here // is integer division and % is the remainder.)"
        solution = "\n".join(f"{s['var']} = {s['expr']} = {s['value']}" for s in steps)
        solution += f"\n#### {steps[-1]['value']}"
        return MathProblem(
            id=f"arith-{self.num_steps}x{self.digits}-s{self.seed}-{index:06d}", question=question,
            answer=str(steps[-1]["value"]), source="arithmetic", solution=solution,
            meta={"steps": steps, "num_steps": self.num_steps, "digits": self.digits, "seed": self.seed,
                  "index": index})

    def generate(self, n: int, start: int = 0) -> list[MathProblem]:
        """Problems ``start .. start + n - 1`` (ids unique across indices)."""
        if n < 0 or start < 0:
            raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
        return [self.problem(i) for i in range(start, start + n)]


def evaluate_expr(expr: str, env: Mapping[str, int]) -> int:
    """Value of an integer arithmetic expression over literals and the names in `env`.

    Only integer literals, names, unary minus and ``+ - * // %`` are accepted; the expression is parsed
    with `ast` and walked, never passed to `eval` (the text may come from a file or a model).
    """
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {expr!r} ({e.msg})") from e

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise ValueError(f"unknown name {node.id!r} in {expr!r}")
            return env[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
                raise ValueError(f"division by zero in {expr!r}")
            return _AST_OPS[type(node.op)](left, right)
        raise ValueError(f"unsupported syntax {type(node).__name__} in {expr!r}")

    return walk(tree.body)


def solve_steps(steps: Sequence[Mapping[str, Any]]) -> int:
    """Re-evaluate ``meta["steps"]`` from their expressions alone and return the last value.

    Recorded ``value`` fields are ignored: this is an independent check of the generator. Each
    ``var`` must be a new identifier; expressions may read only earlier variables.
    """
    if not steps:
        raise ValueError("no steps to solve")
    env: dict[str, int] = {}
    for i, step in enumerate(steps):
        var = step["var"]
        if not isinstance(var, str) or not var.isidentifier() or var in env:
            raise ValueError(f"steps[{i}]: var must be a new identifier, got {var!r}")
        env[var] = evaluate_expr(step["expr"], env)
    return env[steps[-1]["var"]]
